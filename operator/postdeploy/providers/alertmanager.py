"""Alertmanager checks: how many alerts matching some matchers are firing right now.

Called by ``postdeploy.engine`` for a check with an ``alertmanager`` block
(``models.checks.AlertmanagerCheck``). The engine builds one ``AlertmanagerProvider``
at start-up with the operator's shared ``httpx.AsyncClient`` (and closes that client).

One run asks ``GET {url}/api/v2/alerts`` with every templated matcher as a ``filter``
parameter and ``active=true&silenced=false&inhibited=false&unprocessed=false``, and
counts the alerts whose ``status.state`` is ``active`` (the filter is repeated on our
side in case an older Alertmanager ignores a parameter). The value is that count: no
matching alert is the value 0, a real answer, not NoData. The details name the alerts
(up to 20, with labels and ``startsAt``). Matcher values are escaped like PromQL
strings, so a target name cannot add a matcher of its own.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from typing import Any

import httpx

from postdeploy.decisions import phases, templating
from postdeploy.kit import details as details_
from postdeploy.models.checks import AlertmanagerCheck, Baseline
from postdeploy.models.measurements import Measurement, ReviewContext
from postdeploy.providers import coalescing

__all__ = ["ALERTS_SHOWN", "AlertmanagerProvider"]

logger = logging.getLogger(__name__)

ALERTS_SHOWN = 20
_STATE_FILTERS = {"active": "true", "silenced": "false", "inhibited": "false", "unprocessed": "false"}


class AlertmanagerProvider:
    """Counts firing alerts through Alertmanager's API v2."""
    limits_itself = True

    def __init__(
        self, client: httpx.AsyncClient, default_url: str | None = None, concurrency: int | None = None
    ) -> None:
        self._client = client
        self._default_url = default_url
        # Reviews of one namespace ask the same question many times a minute; an answer
        # is shared by the runs of the same second (the evaluation step).
        self._answers: coalescing.Coalescer[httpx.Response] = coalescing.Coalescer(
            ttl=2 * phases.EVALUATION_STEP, concurrency=concurrency
        )

    async def measure(
        self, spec: AlertmanagerCheck, ctx: ReviewContext, baseline: Baseline | None = None
    ) -> Measurement:
        """Count matching active alerts. ``baseline`` is ignored: Alertmanager has no history."""
        try:
            matchers = [templating.render_promql(m, ctx.template_values()) for m in spec.matchers]
        except ValueError as exc:
            return Measurement.error(f"invalid check: {exc}", query=_describe(spec.matchers))
        query = _describe(matchers)
        base = (spec.address or self._default_url or "").rstrip("/")
        if not base:
            return Measurement.error(
                "no Alertmanager URL: set alertmanager.address in the check, the review's "
                "providers, or the operator's default",
                query=query,
            )
        where = details_.redact_url(base)
        params = httpx.QueryParams({"filter": matchers, **_STATE_FILTERS})
        logger.debug("Alertmanager alerts at %s matching %s", where, query)
        bucket = phases.aligned(ctx.now).timestamp()
        try:
            response = await self._answers.run(
                (base, str(params), bucket),
                lambda: self._client.get(f"{base}/api/v2/alerts", params=params),
            )
        except httpx.TimeoutException:
            return Measurement.error(f"Alertmanager at {where} did not answer in time", query=query)
        except httpx.HTTPError as exc:
            reason = details_.scrub(_reason(exc), [urllib.parse.urlsplit(base).password])
            return Measurement.error(f"Alertmanager at {where} is unreachable: {reason}", query=query)
        if response.status_code != 200:
            return Measurement.error(
                f"Alertmanager answered HTTP {response.status_code}: {_body_text(response)}",
                query=query,
            )
        try:
            alerts = response.json()
        except ValueError:
            return Measurement.error(f"{where} did not answer with JSON", query=query)
        if not isinstance(alerts, list):
            return Measurement.error(f"{where} did not answer with a list of alerts", query=query)

        active = [a for a in alerts if isinstance(a, dict) and _state(a) == "active"]
        active.sort(key=lambda a: str(a.get("startsAt", "")))
        names = sorted({str((a.get("labels") or {}).get("alertname", "")) for a in active} - {""})
        details = {
            "count": len(active),
            "alertNames": names,
            "alerts": [
                {
                    "name": (a.get("labels") or {}).get("alertname"),
                    "labels": details_.json_value(a.get("labels") or {}),
                    "startsAt": a.get("startsAt"),
                }
                for a in active[:ALERTS_SHOWN]
            ],
        }
        return Measurement.ok(float(len(active)), query=query, details=details_.fit(details, "alerts"))


def _describe(matchers: list[str]) -> str:
    """The matchers as Alertmanager and amtool write them: ``{a="1", b=~"x.*"}``."""
    return "{" + ", ".join(matchers) + "}"


def _state(alert: dict[str, Any]) -> str | None:
    status = alert.get("status")
    return status.get("state") if isinstance(status, dict) else None


def _body_text(response: httpx.Response) -> str:
    """Alertmanager's error text: a JSON string (or a JSON object with a message)."""
    text = response.text.strip()
    try:
        decoded = json.loads(text)
    except ValueError:
        return text[:300] or response.reason_phrase
    if isinstance(decoded, str):
        return decoded[:300]
    if isinstance(decoded, dict) and "message" in decoded:
        return str(decoded["message"])[:300]
    return text[:300]


def _reason(exc: httpx.HTTPError) -> str:
    cause = exc.__cause__ or exc.__context__
    text = str(exc) or (str(cause) if cause else "") or type(exc).__name__
    return text[:200]
