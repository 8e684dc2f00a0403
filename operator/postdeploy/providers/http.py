"""HTTP checks: any JSON endpoint, with a JSONPath picking the value.

Called by ``postdeploy.engine`` for a check with an ``http`` block
(``models.checks.HttpCheck``). The engine builds one ``HttpProvider`` at start-up
with the operator's shared ``httpx.AsyncClient`` and closes that client at clean-up;
it resolves ``authSecretRef`` into ``ctx.secrets["token"]``, sent as a bearer token.

One run: the URL is templated (values percent-encoded), headers are templated as
plain text, the request is sent with the check's timeout; a status other than
``expectStatus`` is an Error naming the status. The JSON answer is searched with the
JSONPath (``jsonpath_ng.ext``: filters such as ``$.items[?(@.name == "x")].count``
work). The path must select exactly one value: none is NoData, JSON ``null`` is
NoData, several are an Error. Numbers are the value, ``true``/``false`` are 1/0,
strings holding a number (as some APIs send them) are that number; anything else is
an Error. The token never appears in a message, a detail or a log line. With an
egress allowlist (``--egress-allow``) a rendered URL outside it, or a ``Host``
header, is an Error naming the rule, and nothing is sent.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

import httpx
from jsonpath_ng.ext import parser as jsonpath

from postdeploy.decisions import confinement, templating
from postdeploy.kit import details as details_
from postdeploy.kit import durations
from postdeploy.models.checks import Baseline, HttpCheck
from postdeploy.models.measurements import Measurement, ReviewContext

__all__ = ["HttpProvider"]

logger = logging.getLogger(__name__)


class HttpProvider:
    """Measures a value in a JSON document served over HTTP(S)."""
    limits_itself = False

    def __init__(self, client: httpx.AsyncClient, egress: Sequence[confinement.UrlPrefix] = ()) -> None:
        self._client = client
        self._egress = tuple(egress)

    async def measure(
        self, spec: HttpCheck, ctx: ReviewContext, baseline: Baseline | None = None
    ) -> Measurement:
        """Fetch and pick the value. ``baseline`` is ignored: an endpoint has no history."""
        values = ctx.template_values()
        try:
            url = templating.render_url(spec.url, values)
            headers = {
                name: templating.render(value, values, lambda text: text)
                for name, value in spec.headers.items()
            }
            timeout = durations.parse_duration(spec.timeout).total_seconds()
            path = _parse_path(spec.json_path)
        except ValueError as exc:
            return Measurement.error(f"invalid check: {exc}", query=f"{spec.method} {spec.url}")
        shown = details_.redact_url(url)
        query = f"{spec.method} {shown}"
        refusal = confinement.egress_refusal(url, self._egress)
        if refusal is None and self._egress and any(name.lower() == "host" for name in headers):
            # Another Host on an allowed address could reach another virtual host.
            refusal = f"a Host header is not allowed with an egress allowlist: {confinement.EGRESS_RULE}"
        if refusal is not None:  # nothing is sent, the token least of all
            return Measurement.error(f"spec.http.url: {refusal}", query=query)
        token = ctx.secrets.get("token")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        secrets = [token, urllib.parse.urlsplit(url).password]

        logger.debug("HTTP check %s", query)
        started = time.monotonic()
        try:
            response = await self._client.request(
                spec.method, url, headers=headers, timeout=timeout
            )
        except httpx.TimeoutException:
            return Measurement.error(f"{shown} did not answer within {timeout:g}s", query=query)
        except httpx.HTTPError as exc:
            reason = details_.scrub(str(exc) or type(exc).__name__, secrets)[:200]
            return Measurement.error(f"request to {shown} failed: {reason}", query=query)
        info: dict[str, Any] = {
            "status": response.status_code,
            "elapsedSeconds": round(time.monotonic() - started, 3),
        }
        if response.status_code != spec.expect_status:
            return Measurement.error(
                f"expected HTTP {spec.expect_status}, got {response.status_code} "
                f"{response.reason_phrase}".rstrip(),
                query=query,
                details=info,
            )
        try:
            document = response.json()
        except ValueError:
            kind = response.headers.get("content-type", "no content type")
            return Measurement.error(f"the answer is not JSON ({kind})", query=query, details=info)

        matches = [match.value for match in path.find(document)]
        info["jsonPath"] = spec.json_path
        if not matches:
            return Measurement.no_data(
                f"jsonPath {spec.json_path} matched nothing", query=query, details=info
            )
        if len(matches) > 1:
            return Measurement.error(
                f"jsonPath {spec.json_path} matched {len(matches)} values; make it select one",
                query=query,
                details=info,
            )
        raw = matches[0]
        if isinstance(raw, (str, int, float, bool)):
            info["raw"] = details_.json_value(raw)
        return _to_measurement(raw, spec.json_path, query, info)


@functools.lru_cache(maxsize=256)
def _parse_path(text: str) -> Any:
    try:
        return jsonpath.parse(text)
    except Exception as exc:  # jsonpath_ng raises its own and a few builtin errors
        raise ValueError(f"invalid jsonPath {text!r}: {exc}") from None


def _to_measurement(raw: Any, path: str, query: str, info: dict[str, Any]) -> Measurement:
    if raw is None:
        return Measurement.no_data(f"the value at {path} is null", query=query, details=info)
    if isinstance(raw, bool):
        return Measurement.ok(1.0 if raw else 0.0, query=query, details=info)
    number: float | None = None
    if isinstance(raw, (int, float, str)):
        try:
            number = float(raw)
        except (ValueError, OverflowError):  # not a number; an integer beyond float's range
            number = None
    if number is None:
        kinds: dict[type, str] = {dict: "an object", list: "a list", str: "a string"}
        kind = kinds.get(type(raw), type(raw).__name__)
        return Measurement.error(
            f"the value at {path} is {kind}, not a number", query=query, details=info
        )
    if not math.isfinite(number):
        return Measurement.no_data(f"the value at {path} is {raw}", query=query, details=info)
    return Measurement.ok(number, query=query, details=info)
