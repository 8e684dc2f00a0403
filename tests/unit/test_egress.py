"""The egress allowlist where requests leave: http checks and notification webhooks.

Covers: an http check whose rendered URL is outside the allowlist is an Error that
names the rule, and no request (so no bearer token) is sent; placeholders cannot
smuggle another host past the rule; a URL inside the allowlist is fetched; a webhook
URL read from a Secret outside the allowlist fails at once (no retry), never posted,
and the message does not show the Secret's path; an empty allowlist changes nothing.
Review-level URLs (spec.providers, addresses) are refused before a tick runs:
tests/unit/test_confinement.py.
"""

from __future__ import annotations

import asyncio
import datetime

import httpx

from postdeploy.actions import notifications
from postdeploy.decisions import confinement
from postdeploy.models.checks import HttpCheck, SecretKeyRef
from postdeploy.models.measurements import Measurement, MeasurementState
from postdeploy.models.reviews import Delivery, NotificationTarget
from postdeploy.providers.http import HttpProvider
from tests.contexts import make_context

ALLOWED = (confinement.parse_url_prefix("http://api.test/stats"),)
TOKEN = "tok-egress-secret"


class Recorder:
    def __init__(self) -> None:
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return httpx.Response(200, json={"value": 3})


async def measure(
    url: str,
    allowed: tuple[confinement.UrlPrefix, ...] = ALLOWED,
    headers: dict[str, str] | None = None,
    **values: str,
) -> tuple[Measurement, list[httpx.Request]]:
    recorder = Recorder()
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
        check = HttpCheck.model_validate({"url": url, "jsonPath": "$.value", "headers": headers or {}})
        result = await HttpProvider(client, allowed).measure(
            check, make_context(secrets={"token": TOKEN}, parameters=values or None)
        )
    return result, recorder.seen


async def test_an_http_check_outside_the_allowlist_sends_nothing() -> None:
    result, seen = await measure("http://api.test.evil.example/stats")
    assert result.state is MeasurementState.ERROR
    assert result.message.startswith("spec.http.url: http://api.test.evil.example/stats is not under")
    assert "--egress-allow" in result.message
    assert seen == []


async def test_a_placeholder_cannot_bring_another_host() -> None:
    # Values are percent-encoded (../../admin becomes ..%2F..%2Fadmin), and an encoded
    # slash is refused, as a server might decode it into a path that leaves the prefix.
    result, seen = await measure("http://api.test/stats/{{where}}", where="../../admin")
    assert result.state is MeasurementState.ERROR and "encoded slash" in result.message
    assert seen == []
    result, seen = await measure("http://{{host}}/stats", host="evil.example")
    assert result.state is MeasurementState.ERROR and seen == []


async def test_a_host_header_cannot_pick_another_virtual_host() -> None:
    result, seen = await measure("http://api.test/stats", headers={"HOST": "internal.example"})
    assert result.state is MeasurementState.ERROR and "Host header" in result.message
    assert seen == []
    result, seen = await measure("http://api.test/stats", allowed=(), headers={"Host": "internal.example"})
    assert result.state is MeasurementState.OK


async def test_an_http_check_inside_the_allowlist_is_fetched_with_its_token() -> None:
    result, seen = await measure("http://api.test/stats/v1")
    assert result.state is MeasurementState.OK and result.value == 3
    assert [r.headers["authorization"] for r in seen] == [f"Bearer {TOKEN}"]


async def test_an_empty_allowlist_allows_any_url() -> None:
    result, seen = await measure("http://elsewhere.test/x", allowed=())
    assert result.state is MeasurementState.OK and len(seen) == 1


async def test_a_webhook_url_outside_the_allowlist_fails_at_once_unsent() -> None:
    recorder = Recorder()

    async def read_secret(namespace: str, name: str, key: str) -> str:
        return "https://hooks.evil.example/T000/B000/s3cr3tpath\n"

    reported: list[Delivery] = []

    async def report(message_id: str, delivery: Delivery) -> None:
        reported.append(delivery)

    receiver = NotificationTarget(name="team", url_secret_ref=SecretKeyRef(name="hook", key="url"))
    review = notifications.ReviewRef("r", "team-a", "uid")
    now = datetime.datetime(2026, 11, 30, tzinfo=datetime.UTC)
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as http:
        notifier = notifications.Notifier(http, read_secret, attempts=5, backoff=0.001, egress=ALLOWED)
        record = notifications.record("completion", {"review": "r"}, [receiver], now)
        notifier.dispatch(review, [receiver], lambda: [record], report)
        while notifier.busy(review):
            await asyncio.sleep(0.001)
    assert recorder.seen == []
    assert [(d.state, d.attempts) for d in reported] == [("Failed", 1)]
    error = reported[0].error or ""
    assert error.startswith("Secret hook: https://hooks.evil.example/… is not under an allowed prefix")
    assert "s3cr3tpath" not in error
