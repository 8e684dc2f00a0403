"""Webhook delivery, breach annotations and the status ledger's merge, without a cluster.

Covers: the JSON and Slack bodies carry review, check, value, threshold and the report
pointer; a delivery retries a 5xx or a network error with backoff and stops after the
configured attempts; a 4xx (other than 408/425/429) is final at once; a missing
Secret is an error like any other; a delivery already under way is not started twice
and a settled one never again; the ledger keeps settled outcomes over a tick's stale
Pending; breach annotations and their update at the end of the review.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Callable
from typing import Any

import httpx

from postdeploy.actions import annotations as breach_annotations
from postdeploy.actions import notifications
from postdeploy.engine import ledgers
from postdeploy.models.checks import SecretKeyRef
from postdeploy.models.reviews import Delivery, NotificationRecord, NotificationTarget

NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)
REVIEW = notifications.ReviewRef("spike", "shop", "0b8a2f4e")
RECEIVER = NotificationTarget(name="team", url_secret_ref=SecretKeyRef(name="hook", key="url"))


def payload() -> dict[str, Any]:
    return notifications.message(
        "breach",
        "breach-error-rate",
        review=REVIEW,
        summary="Deployment/checkout 1.1.0: check error-rate failed",
        target="Deployment/checkout",
        version="1.1.0",
        verdict="Failing",
        at=NOW,
        check="error-rate",
        value=0.6,
        threshold="value > 0.2",
    )


def test_json_message_fields() -> None:
    body = notifications.body(payload(), "json")
    assert body["id"] == "0b8a2f4e/breach-error-rate" and body["event"] == "breach"
    assert body["review"] == {"name": "spike", "namespace": "shop", "uid": "0b8a2f4e"}
    assert (body["check"], body["value"], body["threshold"]) == ("error-rate", 0.6, "value > 0.2")
    assert body["report"] == "kubectl postdeploy report spike -n shop"


def test_slack_message_is_an_incoming_webhook_body() -> None:
    body = notifications.body({**payload(), "dryRun": True}, "slack")
    assert set(body) == {"text", "blocks"}
    assert body["text"].startswith("Deployment/checkout 1.1.0") and "dry run" in body["text"]
    fields = " ".join(f["text"] for f in body["blocks"][1]["fields"])
    assert "error-rate" in fields and "value > 0.2" in fields and "kubectl postdeploy report" in fields


class Hooks:
    """A receiver answering from a script of status codes (or exceptions)."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer)


async def deliver(
    hooks: Hooks, attempts: int = 3, secret: Callable[..., Any] | None = None
) -> list[Delivery]:
    async def read_secret(namespace: str, name: str, key: str) -> str:
        return "http://hooks.example/team"

    reported: list[Delivery] = []

    async def report(message_id: str, delivery: Delivery) -> None:
        reported.append(delivery)

    async with httpx.AsyncClient(transport=httpx.MockTransport(hooks)) as http:
        notifier = notifications.Notifier(http, secret or read_secret, attempts=attempts, backoff=0.001)
        record = notifications.record("breach-error-rate", payload(), [RECEIVER], NOW)
        assert notifier.dispatch(REVIEW, [RECEIVER], lambda: [record], report) == 1
        assert notifier.dispatch(REVIEW, [RECEIVER], lambda: [record], report) == 0  # under way already
        while notifier.busy(REVIEW):
            await asyncio.sleep(0.001)
        await notifier.close()
    return reported


async def test_retries_until_delivered() -> None:
    hooks = Hooks(503, httpx.ConnectError("refused"), 200)
    [outcome] = await deliver(hooks, attempts=5)
    assert outcome.state == "Delivered" and outcome.attempts == 3
    assert len(hooks.seen) == 3 and hooks.seen[-1].url == "http://hooks.example/team"


async def test_gives_up_after_the_configured_attempts() -> None:
    hooks = Hooks(500)
    [outcome] = await deliver(hooks, attempts=3)
    assert (outcome.state, outcome.attempts, outcome.error) == ("Failed", 3, "HTTP 500")
    assert len(hooks.seen) == 3


async def test_a_client_error_is_final_at_once_but_429_is_retried() -> None:
    hooks = Hooks(404)
    [outcome] = await deliver(hooks, attempts=5)
    assert (outcome.state, outcome.attempts) == ("Failed", 1)
    hooks = Hooks(429, 200)
    [outcome] = await deliver(hooks, attempts=5)
    assert (outcome.state, outcome.attempts) == ("Delivered", 2)


async def test_a_missing_secret_is_an_error_not_a_crash() -> None:
    async def missing(namespace: str, name: str, key: str) -> str:
        raise LookupError(f"Secret {namespace}/{name} not found")

    hooks = Hooks(200)
    [outcome] = await deliver(hooks, attempts=2, secret=missing)
    assert outcome.state == "Failed" and outcome.error == "Secret shop/hook not found" and not hooks.seen


async def test_settled_deliveries_are_not_sent_again() -> None:
    done = NotificationRecord(
        id="completion",
        event="completion",
        created_at=NOW.isoformat(),
        deliveries=[Delivery(receiver="team", state="Delivered", attempts=1)],
    )

    async def report(message_id: str, delivery: Delivery) -> None:
        raise AssertionError("nothing to report")

    async def read_secret(namespace: str, name: str, key: str) -> str:
        raise AssertionError("nothing to send")

    async with httpx.AsyncClient() as http:
        notifier = notifications.Notifier(http, read_secret)
        assert notifier.dispatch(REVIEW, [RECEIVER], lambda: [done], report) == 0


async def test_one_receiver_gets_messages_in_order_even_when_added_meanwhile() -> None:
    messages = [notifications.record("breach-a", {**payload(), "event": "breach"}, [RECEIVER], NOW)]
    hooks = Hooks(200)
    outcomes: list[str] = []

    async def report(message_id: str, delivery: Delivery) -> None:
        outcomes.append(message_id)
        if message_id == "breach-a":  # the rollback happens while the breach is being told
            messages.append(
                notifications.record("rollback", {**payload(), "event": "rollback"}, [RECEIVER], NOW)
            )
        for item in messages:
            if item.id == message_id:
                item.deliveries = [delivery]

    async def read_secret(namespace: str, name: str, key: str) -> str:
        return "http://hooks.example/team"

    async with httpx.AsyncClient(transport=httpx.MockTransport(hooks)) as http:
        notifier = notifications.Notifier(http, read_secret, backoff=0.001)
        assert notifier.dispatch(REVIEW, [RECEIVER], lambda: messages, report) == 1
        while notifier.busy(REVIEW):
            await asyncio.sleep(0.001)
    assert outcomes == ["breach-a", "rollback"]
    assert [json.loads(r.content)["event"] for r in hooks.seen] == ["breach", "rollback"]


def test_ledger_keeps_settled_outcomes_over_a_stale_tick() -> None:
    def status(state: str) -> dict[str, Any]:
        record = notifications.record("breach-a", payload(), [RECEIVER], NOW)
        record.deliveries[0].state = state  # type: ignore[assignment]
        return {"phase": "immediate", "notifications": [record.dump()]}

    current = status("Delivered")
    stale = {**status("Pending"), "phase": "extended"}
    merged = ledgers.keep_deliveries(stale, current)
    assert merged["phase"] == "extended"
    assert merged["notifications"][0]["deliveries"][0]["state"] == "Delivered"
    assert ledgers.keep_deliveries(current, status("Pending")) == current


def test_breach_annotations_and_their_end() -> None:
    set_ = breach_annotations.breach(
        check="error-rate", value=0.6, threshold="value > 0.2", review="shop/spike", at="t"
    )
    assert set_ == {
        "postdeploy.io/breach": "active",
        "postdeploy.io/breach-check": "error-rate",
        "postdeploy.io/breach-value": "0.6",
        "postdeploy.io/breach-threshold": "value > 0.2",
        "postdeploy.io/breach-review": "shop/spike",
        "postdeploy.io/breach-at": "t",
    }
    current = {k: v for k, v in set_.items() if v is not None}
    assert breach_annotations.final(current, review="shop/spike", verdict="RolledBack") == {
        "postdeploy.io/breach": "RolledBack"
    }
    # A later release that passed its review clears an earlier review's breach.
    cleared = breach_annotations.final(current, review="shop/next", verdict="Passed")
    assert cleared == dict.fromkeys(current)
    assert breach_annotations.final(current, review="shop/next", verdict="Failed") == {}
    assert breach_annotations.final({}, review="shop/spike", verdict="Failed") == {}
