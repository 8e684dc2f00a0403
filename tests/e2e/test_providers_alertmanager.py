"""The alertmanager provider against the test bed's real Alertmanager (API v2).

Covers:
- an alert posted to Alertmanager is counted by matchers templated from the review,
  with its name, labels and start in the details;
- a silenced alert is not counted;
- a target name with quotes stays one matcher value (Alertmanager accepts the query
  and finds nothing), while a malformed matcher is an Error in Alertmanager's words.
"""

from __future__ import annotations

import datetime
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from postdeploy.models.checks import AlertmanagerCheck
from postdeploy.models.measurements import MeasurementState
from postdeploy.providers.alertmanager import AlertmanagerProvider
from testbed import observability as bed
from tests.contexts import make_context

pytest_plugins = ["tests.e2e.conftest_observability"]
pytestmark = pytest.mark.e2e


@pytest.fixture
async def provider(observability: dict[str, Any]) -> AsyncIterator[AlertmanagerProvider]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield AlertmanagerProvider(client, observability["env"]["ALERTMANAGER_URL"])


def _post(url: str, probe: str, **labels: str) -> None:
    bed.post_alert(
        url,
        {"alertname": "ProviderProbe", "probe": probe, "severity": "critical", **labels},
        ends_at=datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=2),
    )


async def test_a_firing_alert_is_counted_and_a_silenced_one_is_not(
    provider: AlertmanagerProvider, observability: dict[str, Any]
) -> None:
    url = observability["env"]["ALERTMANAGER_URL"]
    probe = uuid.uuid4().hex
    _post(url, probe, service="payments", namespace="billing")
    check = AlertmanagerCheck(
        matchers=['severity="critical"', 'service=~"{{target}}"', 'namespace="{{namespace}}"',
                  f'probe="{probe}"']
    )
    ctx = make_context(target_name="payments", namespace="billing")
    m = await provider.measure(check, ctx)
    assert m.state is MeasurementState.OK, m.message
    assert m.value == 1.0
    assert m.details["alertNames"] == ["ProviderProbe"]
    assert m.details["alerts"][0]["labels"]["probe"] == probe
    assert m.details["alerts"][0]["startsAt"]

    now = datetime.datetime.now(datetime.UTC)
    silence = {
        "matchers": [{"name": "probe", "value": probe, "isRegex": False, "isEqual": True}],
        "startsAt": now.isoformat(),
        "endsAt": (now + datetime.timedelta(minutes=5)).isoformat(),
        "createdBy": "postdeploy-tests",
        "comment": "silenced by the provider test",
    }
    httpx.post(f"{url}/api/v2/silences", json=silence, timeout=5).raise_for_status()
    deadline = time.monotonic() + 10
    tick = 0
    while True:
        # Each poll is a later tick: answers within one aligned window are shared.
        tick += 1
        later = make_context(
            target_name="payments", namespace="billing", now=ctx.now + datetime.timedelta(minutes=tick)
        )
        silenced = await provider.measure(check, later)
        if silenced.value == 0.0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert silenced.state is MeasurementState.OK
    assert silenced.value == 0.0


async def test_quotes_in_the_target_stay_inside_the_matcher_value(provider: AlertmanagerProvider) -> None:
    ctx = make_context(target_name='x", severity!="none')
    m = await provider.measure(AlertmanagerCheck(matchers=['service="{{target}}"']), ctx)
    assert m.state is MeasurementState.OK, m.message
    assert m.value == 0.0


async def test_a_malformed_matcher_is_an_error(provider: AlertmanagerProvider) -> None:
    m = await provider.measure(AlertmanagerCheck(matchers=["severity"]), make_context())
    assert m.state is MeasurementState.ERROR
    assert m.message == "Alertmanager answered HTTP 400: bad matcher format: severity"
