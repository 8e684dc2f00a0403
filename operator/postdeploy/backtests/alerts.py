"""Alertmanager checks replayed from the alerting rules' own queries.

Used by ``postdeploy.backtests.replays``. Alertmanager keeps no history, but the
alerts it would have held came from Prometheus alerting rules, whose queries can be
evaluated at any past time. An ``alertmanager`` check (count the active alerts that
match its matchers) becomes, for the replay, a ``prometheus`` check with
``aggregate: count`` over one PromQL expression that stands for the alerts of every
rule (from Prometheus's ``/api/v1/rules``) whose labels can match:

- a matcher on ``alertname`` or on a label the rule sets itself is decided against
  the rule (a rule it excludes is left out);
- an equality matcher on any other label filters the query's series
  (``and on (label)`` a one-series vector carrying the value); a ``!=``, ``=~`` or
  ``!~`` matcher on such a label cannot be written in PromQL that way, and the check
  is then not replayed (listed, with that reason);
- a rule with ``for`` counts only series present at every evaluation of its group over
  that long (``count_over_time((query)[for:interval]) >= for / interval``).

What this cannot know: silences and inhibitions (Alertmanager's, at that time),
``keepFiringFor``, and rules that did not exist then or were different. The replayed
query is in each run's status like any other. Rule queries see the history with the
resolution it was kept at: a rule using ``rate(x[30s])`` finds nothing in data kept
every minute.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from postdeploy.decisions import templates, templating
from postdeploy.models.checks import Check

__all__ = ["Rule", "fetch_rules", "translate"]

_MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$')


@dataclasses.dataclass(frozen=True)
class Rule:
    name: str
    query: str
    labels: Mapping[str, str]
    for_seconds: float
    interval_seconds: float


async def fetch_rules(url: str, timeout: float = 30) -> list[Rule]:
    """The alerting rules Prometheus at ``url`` evaluates; raises ``httpx.HTTPError``."""
    async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
        response = await client.get(f"{url.rstrip('/')}/api/v1/rules", params={"type": "alert"})
        response.raise_for_status()
        groups = (response.json().get("data") or {}).get("groups") or []
    rules = []
    for group in groups:
        interval = float(group.get("interval") or 60)
        for rule in group.get("rules") or []:
            if rule.get("type") == "alerting":
                rules.append(
                    Rule(
                        name=str(rule.get("name")),
                        query=str(rule.get("query")),
                        labels={str(k): str(v) for k, v in (rule.get("labels") or {}).items()},
                        for_seconds=float(rule.get("duration") or 0),
                        interval_seconds=interval,
                    )
                )
    return rules


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _holds(op: str, actual: str, wanted: str) -> bool:
    if op == "=":
        return actual == wanted
    if op == "!=":
        return actual != wanted
    matched = re.fullmatch(wanted, actual) is not None
    return matched if op == "=~" else not matched


def _rule_query(rule: Rule, filters: Sequence[tuple[str, str]]) -> str:
    query = f"({rule.query})"
    if rule.for_seconds > 0:
        evaluations = max(1, math.ceil(rule.for_seconds / rule.interval_seconds))
        query = (
            f"(count_over_time({query}[{rule.for_seconds:g}s:{rule.interval_seconds:g}s]) >= {evaluations})"
        )
    for label, value in filters:
        replacement = _quote(value.replace("$", "$$"))
        query = f'({query} and on ({label}) label_replace(vector(1), "{label}", {replacement}, "", ""))'
    return f'label_replace({query}, "alertname", {_quote(rule.name)}, "", "")'


def translate(
    check: templates.ResolvedCheck, rules: Sequence[Rule], values: Mapping[str, str]
) -> templates.ResolvedCheck | str:
    """The check as a Prometheus count over the rules' queries, or why it cannot be."""
    block = check.spec.alertmanager
    assert block is not None
    parsed = []
    for text in block.matchers:
        try:
            rendered = templating.render_promql(text, values)
        except ValueError as error:
            return f"matcher {text!r}: {error}"
        match = _MATCHER.match(rendered)
        if match is None:
            return f'matcher {rendered!r} is not label op "value"'
        parsed.append((match.group(1), match.group(2), _unquote(match.group(3))))
    parts = []
    for rule in rules:
        static = {**rule.labels, "alertname": rule.name}
        filters = []
        excluded = False
        for label, op, wanted in parsed:
            if label in static:
                excluded = excluded or not _holds(op, static[label], wanted)
            elif op == "=":
                filters.append((label, wanted))
            else:
                return (
                    f"matcher {label}{op}{_quote(wanted)} is on a label rule {rule.name} takes from its "
                    "query; only = can be replayed there"
                )
        if excluded:
            continue
        if "{{" in rule.query:
            return f"rule {rule.name}'s query holds '{{{{', which the replay would read as a placeholder"
        parts.append(_rule_query(rule, filters))
    # No rule can raise a matching alert: a query with no series (a count of 0).
    query = " or ".join(parts) if parts else "vector(0) > 1"
    dumped: dict[str, Any] = check.spec.model_dump(by_alias=True, exclude_none=True)
    dumped.pop("alertmanager", None)
    dumped["prometheus"] = {"query": query, "aggregate": "count"}
    return dataclasses.replace(check, spec=Check.model_validate(dumped))
