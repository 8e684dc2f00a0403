"""Webhook messages about a review's state changes, delivered in the background.

``postdeploy.engine.executions`` creates one message per state change (a check's
breach, a pause, a rollback, the review's completion) as a ``NotificationRecord`` in
the review's status, with one ``Delivery`` per receiver named in
``spec.notifications``. The record is written before anything is sent, and its id
(``breach-CHECK``, ``pause``, ``rollback``, ``completion``) is unique in the review,
so a repeated tick or a restarted operator never makes a second message for the
same change.

``Notifier`` sends the pending deliveries in asyncio tasks of its own (one sender per
review and receiver, so each receiver gets a review's messages in the order they
happened), so a slow or failing receiver never holds up a review: each delivery is
retried with exponential backoff and jitter, a bounded number of times; a 4xx answer other than 408/425/429
is final at once. The outcome is reported back through a callback that writes it to
the review's status; a delivery still Pending after a restart is sent again (at
least once: a receiver can drop repeats by the message's ``id``). With an egress
allowlist (``--egress-allow``) a URL outside it is never posted to: the delivery
fails at once, naming the rule (``postdeploy.decisions.confinement``).

Formats: ``json`` posts the message itself; ``slack`` posts an incoming-webhook body
(``text`` plus Block Kit sections), which Slack-compatible receivers (Mattermost,
Rocket.Chat, Teams workflows) also accept.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

import httpx

from postdeploy.decisions import confinement
from postdeploy.models.checks import SecretKeyRef
from postdeploy.models.reviews import Delivery, NotificationRecord, NotificationTarget

__all__ = ["Notifier", "ReviewRef", "body", "message", "record"]

logger = logging.getLogger(__name__)
_PERMANENT_EXCEPT = frozenset({408, 425, 429})

SecretReader = Callable[[str, str, str], Awaitable[str]]  # (namespace, name, key) -> value
Reporter = Callable[[str, Delivery], Coroutine[Any, Any, None]]  # (message id, final delivery state)


@dataclasses.dataclass(frozen=True)
class ReviewRef:
    name: str
    namespace: str
    uid: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def message(
    event: str,
    message_id: str,
    *,
    review: ReviewRef,
    summary: str,
    target: str | None,
    version: str | None,
    verdict: str | None,
    at: datetime.datetime,
    check: str | None = None,
    value: float | None = None,
    threshold: str | None = None,
    action: Mapping[str, Any] | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """The message as posted in the ``json`` format."""
    return {
        "id": f"{review.uid}/{message_id}",
        "event": event,
        "summary": summary,
        "review": {"name": review.name, "namespace": review.namespace, "uid": review.uid},
        "target": target,
        "version": version,
        "verdict": verdict,
        "check": check,
        "value": value,
        "threshold": threshold,
        "action": dict(action) if action is not None else None,
        "dryRun": dry_run,
        "report": f"kubectl postdeploy report {review.name} -n {review.namespace}",
        "at": at.isoformat(),
    }


def record(
    message_id: str,
    payload: Mapping[str, Any],
    receivers: Sequence[NotificationTarget],
    now: datetime.datetime,
) -> NotificationRecord:
    return NotificationRecord(
        id=message_id,
        event=str(payload.get("event")),
        created_at=now.isoformat(),
        payload=dict(payload),
        deliveries=[Delivery(receiver=r.name) for r in receivers],
    )


def _slack(payload: Mapping[str, Any]) -> dict[str, Any]:
    review = payload.get("review") or {}
    fields = [
        ("Review", f"{review.get('namespace')}/{review.get('name')}"),
        ("Target", payload.get("target")),
        ("Version", payload.get("version")),
        ("Verdict", payload.get("verdict")),
        ("Check", payload.get("check")),
        ("Value", payload.get("value")),
        ("Threshold", payload.get("threshold")),
        ("Report", f"`{payload.get('report')}`"),
    ]
    summary = str(payload.get("summary", ""))
    if payload.get("dryRun"):
        summary += " (dry run: nothing was changed)"
    return {
        "text": summary,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{summary}*"}},
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{name}*\n{value}"}
                    for name, value in fields
                    if value is not None
                ],
            },
        ],
    }


def body(payload: Mapping[str, Any], format_: str) -> dict[str, Any]:
    """What is posted to a receiver of the given format."""
    return _slack(payload) if format_ == "slack" else dict(payload)


class Notifier:
    """Delivers pending messages in background tasks; one per operator, built at start-up."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        read_secret: SecretReader,
        *,
        attempts: int = 6,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        timeout: float = 10.0,
        egress: Sequence[confinement.UrlPrefix] = (),
    ) -> None:
        self.http = http
        self.egress = tuple(egress)
        self.read_secret = read_secret
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    def dispatch(
        self,
        review: ReviewRef,
        receivers: Sequence[NotificationTarget],
        pending: Callable[[], Sequence[NotificationRecord]],
        report: Reporter,
    ) -> int:
        """Start a sender for each receiver with Pending deliveries and none running.

        ``pending`` gives the review's messages as last written; a sender reads it again
        after each delivery, so messages added meanwhile are sent by the same sender, in
        the order they were created. Returns how many senders started.
        """
        by_name = {r.name: r for r in receivers}
        waiting = {d.receiver for item in pending() for d in item.deliveries if d.state == "Pending"}
        started = 0
        for name in sorted(waiting):
            key = (review.key, name)
            if key in self._tasks:
                continue
            task = asyncio.create_task(self._sender(review, name, by_name.get(name), pending, report))
            self._tasks[key] = task
            task.add_done_callback(lambda _, key=key: self._tasks.pop(key, None))  # type: ignore[misc]
            started += 1
        return started

    async def _sender(
        self,
        review: ReviewRef,
        name: str,
        receiver: NotificationTarget | None,
        pending: Callable[[], Sequence[NotificationRecord]],
        report: Reporter,
    ) -> None:
        """Deliver one receiver's pending messages one after another, oldest first."""
        tried: set[str] = set()
        while True:
            found = [
                (item, d)
                for item in pending()
                if item.id not in tried
                for d in item.deliveries
                if d.receiver == name and d.state == "Pending"
            ]
            if not found:
                return
            item, delivery = found[0]
            tried.add(item.id)
            if receiver is None:
                now = datetime.datetime.now(datetime.UTC).isoformat()
                gone = delivery.model_copy(
                    update={"state": "Failed", "at": now, "error": "receiver no longer in spec.notifications"}
                )
                await self._report(review, report, item.id, gone)
            else:
                await self._deliver(review, item, delivery, receiver, report)

    def busy(self, review: ReviewRef) -> bool:
        return any(key[0] == review.key for key in self._tasks)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _post(self, url: str, content: Mapping[str, Any]) -> str | None:
        """None when delivered; else the error, prefixed 'final: ' when a retry is pointless."""
        try:
            response = await self.http.post(url, json=content, timeout=self.timeout)
        except httpx.HTTPError as error:
            return f"{type(error).__name__}: {error}"[:300]
        if response.is_success:
            return None
        text = f"HTTP {response.status_code}"
        if 400 <= response.status_code < 500 and response.status_code not in _PERMANENT_EXCEPT:
            return f"final: {text}"
        return text

    async def _deliver(
        self,
        review: ReviewRef,
        item: NotificationRecord,
        delivery: Delivery,
        receiver: NotificationTarget,
        report: Reporter,
    ) -> None:
        attempts, error = delivery.attempts, None
        content = body(item.payload, receiver.format)
        while attempts < self.attempts:
            attempts += 1
            error = await self._attempt(review, receiver.url_secret_ref, content)
            if error is None or error.startswith("final: "):
                break
            if attempts < self.attempts:
                delay = min(self.max_backoff, self.backoff * 2 ** (attempts - 1))
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
        now = datetime.datetime.now(datetime.UTC).isoformat()
        if error is None:
            outcome = Delivery(receiver=receiver.name, state="Delivered", attempts=attempts, at=now)
        else:
            logger.warning(
                "review %s: notification %s to %s failed after %d attempt(s): %s",
                review.key, item.id, receiver.name, attempts, error,
            )
            outcome = Delivery(
                receiver=receiver.name, state="Failed", attempts=attempts, at=now,
                error=error.removeprefix("final: "),
            )
        await self._report(review, report, item.id, outcome)

    @staticmethod
    async def _report(review: ReviewRef, report: Reporter, message_id: str, outcome: Delivery) -> None:
        try:
            await report(message_id, outcome)
        except Exception:  # the status write failed: the delivery stays Pending and is sent again
            logger.exception("review %s: cannot record notification %s", review.key, message_id)

    async def _attempt(self, review: ReviewRef, ref: SecretKeyRef, content: Mapping[str, Any]) -> str | None:
        try:
            url = (await self.read_secret(review.namespace, ref.name, ref.key)).strip()
        except LookupError as problem:
            return str(problem)
        refusal = confinement.egress_refusal(url, self.egress, secret=True)
        if refusal is not None:  # never sent; a retry would be refused the same way
            return f"final: Secret {ref.name}: {refusal}"
        return await self._post(url, content)
