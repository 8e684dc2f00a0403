"""Filling a check's query with the review's values, safely for each query language.

Called by the providers before they send anything: ``prometheus`` (PromQL),
``alertmanager`` (matchers, which quote like PromQL), ``http`` (URLs and headers) and
``postgres``/``statistics`` (SQL parameters).

Templates name values as ``{{name}}`` (spaces inside the braces allowed); the values
are ``ReviewContext.template_values()``: ``target``, ``namespace``, ``kind``,
``version``, ``deployedAt``, ``review``, ``phaseStart``, ``phaseEnd``, the time windows
``sinceDeploy``, ``phaseElapsed`` and ``phaseLength`` (PromQL durations) and the
review's ``spec.parameters`` (over its template's). A name that has no value is an
error naming it, never an empty string that silently widens a label matcher.

Each language gets its own escaping, because a value is data and must not become
syntax: PromQL values are escaped for a double-quoted string literal (put the
placeholder inside ``"..."``: a target named ``a"} or vector(1) #`` stays one label
value), URL values are percent-encoded, and SQL never sees a value in its text at all,
only as a bound parameter (``%(name)s``). Regex metacharacters in a value used with
``=~`` keep their meaning: escaping is about quoting, not about regex semantics.

One exception, in PromQL only: a parameter named ``selector`` or ending in ``Selector``
(``podSelector``) is a list of label matchers that the review's or template's author
wrote, such as ``job="{{target}}"`` or ``app=~"{{target}}-.*", env="prod"``. It goes
into the query as written, after its own placeholders are filled in (escaped as
above), and only if the result is nothing but comma-separated matchers
(``label op "string"``): a target name still cannot leave its string, and a selector
cannot close the braces it sits in.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from postdeploy.models.measurements import ReviewContext

__all__ = [
    "escape_promql",
    "render",
    "render_promql",
    "render_url",
    "sql_parameters",
]

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}")
_PROMQL_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"})


def render(text: str, values: Mapping[str, str], escape: Callable[[str], str]) -> str:
    """Replace every ``{{name}}`` in ``text`` by ``escape(values[name])``.

    Raises ValueError naming every placeholder that has no value.
    """
    unknown = sorted({m.group(1) for m in _PLACEHOLDER.finditer(text)} - set(values))
    if unknown:
        known = ", ".join(sorted(values)) or "none"
        raise ValueError(
            f"unknown template value(s) {', '.join('{{' + u + '}}' for u in unknown)}; "
            f"known: {known}"
        )
    return _PLACEHOLDER.sub(lambda m: escape(values[m.group(1)]), text)


def escape_promql(value: str) -> str:
    """``value`` escaped for the inside of a PromQL (or Alertmanager) double-quoted string."""
    return value.translate(_PROMQL_ESCAPES)


def is_selector(name: str) -> bool:
    """Whether the value named ``name`` is a label-matcher fragment in PromQL."""
    return name == "selector" or name.endswith("Selector")


_MATCHER = re.compile(r'\s*[A-Za-z_][A-Za-z0-9_]*\s*(?:=~|!~|!=|=)\s*"(?:[^"\\\n]|\\.)*"\s*')


def check_matchers(name: str, text: str) -> str:
    """``text`` when it is one or more comma-separated PromQL label matchers; else ValueError."""
    position = 0
    while True:
        match = _MATCHER.match(text, position)
        if match is None:
            raise ValueError(
                f"{{{{{name}}}}} must be label matchers such as job=\"checkout\", separated by "
                f"commas; got {text!r}"
            )
        position = match.end()
        if position == len(text):
            return text
        if text[position] != ",":
            raise ValueError(f"{{{{{name}}}}}: expected ',' at column {position + 1} of {text!r}")
        position += 1


def render_promql(text: str, values: Mapping[str, str]) -> str:
    """A PromQL query (or Alertmanager matcher) with its placeholders filled in.

    Selector parameters (``is_selector``) used by ``text`` are filled in first and go
    in as matchers; every other value is escaped for a double-quoted string.

    Results are remembered per query and the values it actually uses: every review of
    a target renders the same queries every tick.
    """
    used = _placeholders(text)
    needed = set(used)
    for name in used:
        if is_selector(name) and name in values:
            needed |= _placeholders(values[name])
    if not needed <= values.keys():
        return _render_promql(text, values)  # raises, naming what is missing
    return _render_promql_cached(text, tuple(sorted((name, values[name]) for name in needed)))


@functools.lru_cache(maxsize=4096)
def _placeholders(text: str) -> frozenset[str]:
    return frozenset(m.group(1) for m in _PLACEHOLDER.finditer(text))


@functools.lru_cache(maxsize=16384)
def _render_promql_cached(text: str, values: tuple[tuple[str, str], ...]) -> str:
    return _render_promql(text, dict(values))


def _render_promql(text: str, values: Mapping[str, str]) -> str:
    data = {k: v for k, v in values.items() if not is_selector(k)}
    used = {m.group(1) for m in _PLACEHOLDER.finditer(text)}
    fragments = {
        name: check_matchers(name, render(values[name], data, escape_promql))
        for name in used
        if is_selector(name) and name in values
    }
    if not fragments:
        return render(text, values, escape_promql)
    marked = {**{k: escape_promql(v) for k, v in data.items()}, **fragments}
    return render(text, {**marked, **{k: v for k, v in values.items() if k not in marked}}, str)


def render_url(text: str, values: Mapping[str, str]) -> str:
    """A URL with its placeholders filled in, each value percent-encoded (``/`` too)."""
    return render(text, values, lambda value: urllib.parse.quote(value, safe=""))


def sql_parameters(ctx: ReviewContext) -> dict[str, Any]:
    """Named parameters for a psycopg query: ``%(deployed_at)s`` and friends.

    Times are timezone-aware datetimes (PostgreSQL receives ``timestamptz``), names and
    versions are strings. Both snake_case and the camelCase spelling of the PromQL
    templates work. The review's ``spec.parameters`` come last and may override, as
    in ``ReviewContext.template_values``. Unused parameters are simply not sent.
    """
    parameters: dict[str, Any] = {
        "deployed_at": ctx.deployed_at,
        "deployedAt": ctx.deployed_at,
        "version": ctx.version,
        "target": ctx.target.name,
        "namespace": ctx.target.namespace,
        "kind": ctx.target.kind,
        "review": ctx.review_name,
        "phase_start": ctx.phase_start,
        "phaseStart": ctx.phase_start,
        "phase_end": ctx.phase_end,
        "phaseEnd": ctx.phase_end,
        "now": ctx.now,
    }
    parameters.update(ctx.parameters)
    return parameters
