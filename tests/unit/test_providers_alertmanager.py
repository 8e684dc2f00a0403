"""The alertmanager provider against an ``httpx.MockTransport`` Alertmanager.

Covers:
- the request: ``/api/v2/alerts`` with one ``filter`` per templated matcher and
  silenced, inhibited and unprocessed alerts excluded;
- the value counts active alerts only (a suppressed alert in the answer is ignored);
  no alerts is the value 0, not NoData; the details name the alerts;
- a target name with a double quote cannot add a matcher of its own;
- Alertmanager down, timing out, or refusing a matcher is an Error, never an exception;
- no URL at all, or an unknown template name, is an Error naming the problem;
- credentials in the URL never reach a message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from postdeploy.models.checks import AlertmanagerCheck
from postdeploy.models.measurements import Measurement, MeasurementState
from postdeploy.providers.alertmanager import AlertmanagerProvider
from tests.contexts import make_context

Handler = Callable[[httpx.Request], httpx.Response]
URL = "http://alertmanager.test:9093"


def _alert(name: str, state: str = "active", **labels: str) -> dict[str, Any]:
    return {
        "labels": {"alertname": name, **labels},
        "annotations": {},
        "startsAt": "2026-11-26T11:50:00Z",
        "endsAt": "2026-11-26T12:50:00Z",
        "updatedAt": "2026-11-26T11:59:00Z",
        "fingerprint": f"{name}-fp",
        "receivers": [{"name": "team"}],
        "status": {"state": state, "silencedBy": [], "inhibitedBy": []},
    }


async def _measure(
    handler: Handler, matchers: list[str], url: str | None = URL, target: str = "shop", **spec: Any
) -> Measurement:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        provider = AlertmanagerProvider(client, default_url=url)
        check = AlertmanagerCheck(matchers=matchers, **spec)
        return await provider.measure(check, make_context(target_name=target))


async def test_request_filters_by_matchers_and_excludes_suppressed_alerts() -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[])

    m = await _measure(record, ['severity="critical"', 'service=~"{{target}}.*"'])
    (request,) = seen
    assert request.url.path == "/api/v2/alerts"
    assert request.url.params.get_list("filter") == ['severity="critical"', 'service=~"shop.*"']
    assert request.url.params["active"] == "true"
    assert request.url.params["silenced"] == "false"
    assert request.url.params["inhibited"] == "false"
    assert request.url.params["unprocessed"] == "false"
    assert m.query == '{severity="critical", service=~"shop.*"}'


async def test_no_matching_alert_is_zero_not_no_data() -> None:
    m = await _measure(lambda r: httpx.Response(200, json=[]), ['severity="critical"'])
    assert m.state is MeasurementState.OK
    assert m.value == 0.0
    assert m.details["alerts"] == []


async def test_counts_only_active_alerts_and_names_them() -> None:
    alerts = [
        _alert("HighErrorRate", severity="critical", service="shop"),
        _alert("PodCrashLooping", severity="critical", pod="shop-1"),
        _alert("DiskFull", state="suppressed", severity="critical"),
    ]
    m = await _measure(lambda r: httpx.Response(200, json=alerts), ['severity="critical"'])
    assert m.state is MeasurementState.OK
    assert m.value == 2.0
    assert m.details["alertNames"] == ["HighErrorRate", "PodCrashLooping"]
    assert m.details["alerts"][0]["labels"]["service"] == "shop"
    assert m.details["alerts"][0]["startsAt"] == "2026-11-26T11:50:00Z"


async def test_details_list_at_most_twenty_alerts_but_count_all() -> None:
    alerts = [_alert(f"Alert{i}", severity="warning") for i in range(25)]
    m = await _measure(lambda r: httpx.Response(200, json=alerts), [])
    assert m.value == 25.0
    assert len(m.details["alerts"]) <= 20


async def test_a_quote_in_the_target_name_cannot_add_a_matcher() -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[])

    await _measure(record, ['service="{{target}}"'], target='x", severity!="none')
    assert seen[0].url.params.get_list("filter") == ['service="x\\", severity!=\\"none"']


async def test_alertmanager_down_is_an_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    m = await _measure(refuse, [], url="http://admin:hunter2@alertmanager.test:9093")
    assert m.state is MeasurementState.ERROR
    assert m.message == (
        "Alertmanager at http://alertmanager.test:9093 is unreachable: [Errno 111] Connection refused"
    )
    assert "hunter2" not in m.message


async def test_timeout_is_an_error() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    m = await _measure(slow, [])
    assert m.state is MeasurementState.ERROR
    assert "did not answer in time" in m.message


async def test_a_bad_matcher_is_an_error_with_alertmanagers_words() -> None:
    m = await _measure(
        lambda r: httpx.Response(400, json="bad matcher format: severity=="), ["severity=="]
    )
    assert m.state is MeasurementState.ERROR
    assert m.message == "Alertmanager answered HTTP 400: bad matcher format: severity=="


@pytest.mark.parametrize("body", [b"<html/>", b'{"alerts": []}'])
async def test_an_answer_that_is_not_a_list_of_alerts_is_an_error(body: bytes) -> None:
    m = await _measure(lambda r: httpx.Response(200, content=body), [])
    assert m.state is MeasurementState.ERROR


async def test_no_url_is_an_error() -> None:
    m = await _measure(lambda r: httpx.Response(200, json=[]), [], url=None)
    assert m.state is MeasurementState.ERROR
    assert "no Alertmanager URL" in m.message


async def test_the_checks_address_wins_over_the_default() -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[])

    await _measure(record, [], address="http://other.test:9093/am/")
    assert str(seen[0].url).startswith("http://other.test:9093/am/api/v2/alerts?")


async def test_unknown_template_name_is_an_error() -> None:
    m = await _measure(lambda r: httpx.Response(200, json=[]), ['team="{{team}}"'])
    assert m.state is MeasurementState.ERROR
    assert "{{team}}" in m.message
