"""One scheduler for all reviews: a heap of wake-up times and bounded concurrent ticks.

Made at start-up by ``postdeploy.handlers.lifecycle`` and fed by the watch handler in
``postdeploy.handlers.reviews``, which reports every review it sees (``observe``) and
every deletion (``forget``). The scheduler keeps, per review, the latest metadata and
spec from the watch (without ``managedFields``) and the newest status it computed
itself (a ``Ledger``, which holds it as compact JSON and writes it when it matters:
the watched body may lag behind its own writes), and one wake-up time. Its loop runs the reviews
that are due — one engine tick, the status write, the tick's Events, then the
executor's actions — at most ``concurrency`` at a time, and sleeps until the next
wake-up or until a spec or annotation change makes a review due at once.

Compared with one kopf daemon per review this holds no task per idle review, puts no
finalizer on reviews (kopf adds one for every daemon, so a review could not be deleted
while the operator is away), and never looks at a completed review again: once it is
finished with nothing left to do (no pending action or notification), only its uid
is kept, not its status, metadata or spec.

A tick that raises (a bug, or an API error) is contained to its review: the review
gets condition ``TickFailed`` (True, with the error) and a Warning Event, and is
tried again after ``tick_backoff_seconds``, doubling with each failure in a row up to
``tick_max_backoff_seconds``; the first failure is logged with its traceback, repeats
in one line. The next tick that succeeds sets ``TickFailed`` False. Other reviews
keep their schedule meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from postdeploy.actions import notifications
from postdeploy.decisions import verdicts
from postdeploy.engine import executions, ledgers, ticks
from postdeploy.kit import kube, logs, metrics
from postdeploy.models import crds
from postdeploy.models.reviews import COMPLETED, INVALID, ReviewStatus

__all__ = ["Scheduler"]

logger = logging.getLogger(__name__)
Key = tuple[str, str]  # namespace, name
Poster = Callable[[Sequence[Mapping[str, Any]], str, str, str], None]
TICK_FAILED = "TickFailed"


def _named(key: Key) -> dict[str, str]:
    """Log-record fields naming the review (the JSON log format prints them)."""
    return {"review": f"{key[0]}/{key[1]}"}


def fingerprint(metadata: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes a review due at once when it changes: its spec and annotations."""
    annotations = {k: v for k, v in (metadata.get("annotations") or {}).items() if not k.startswith("kopf.")}
    return (metadata.get("generation"), tuple(sorted(annotations.items())))


@dataclasses.dataclass
class _Entry:
    metadata: dict[str, Any]
    spec: dict[str, Any]
    ledger: ledgers.Ledger
    fingerprint: tuple[Any, ...]
    wake_at: float | None = None  # monotonic; None: not scheduled (done)
    running: bool = False
    again: bool = False  # changed while running: run again right after
    done: bool = False  # completed, with nothing left to do
    failures: int = 0  # ticks in a row that raised


class Scheduler:
    def __init__(
        self,
        engine: ticks.Engine,
        executor: executions.Executor,
        post: Poster,
        *,
        concurrency: int = 256,
        clock: Callable[[], float] = time.monotonic,
        leadership: Callable[[], bool] | None = None,
    ) -> None:
        self.engine = engine
        self.executor = executor
        self.post = post
        self.clock = clock
        self._entries: dict[Key, _Entry] = {}
        # Reviews finished with nothing left to do, by key: the uid only. Their entry (the
        # status, about 16 kB for the built-in template, with metadata and spec) is dropped.
        self._finished: dict[Key, str] = {}
        self._heap: list[tuple[float, int, Key]] = []
        self._order = itertools.count()
        self._changed = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self.ticks = 0
        # Without leader election every replica is the leader of what it watches.
        self.is_leader: Callable[[], bool] = leadership or (lambda: True)

    # --- what the watch reports ----------------------------------------------------------

    def observe(self, body: Mapping[str, Any]) -> None:
        # managedFields is the largest part of a review's metadata and nothing here
        # reads it: not kept per review.
        metadata = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
        key = (str(metadata.get("namespace")), str(metadata.get("name")))
        uid = str(metadata.get("uid", ""))
        if key in self._finished:
            if self._finished[key] == uid:
                return  # finished: nothing to do, ever
            del self._finished[key]  # deleted and created again under the same name
        spec = dict(body.get("spec") or {})
        entry = self._entries.get(key)
        status = dict(body.get("status") or {})
        if entry is None:
            ledger = ledgers.Ledger(
                self.engine.api,
                key[0],
                key[1],
                status,
                refresh_seconds=self.engine.settings.status_refresh_seconds,
                clock=self.clock,
            )
            entry = _Entry(metadata, spec, ledger, fingerprint(metadata))
            self._entries[key] = entry
            if self._is_finished(entry):
                self._retire(key, entry)  # finished before we saw it: nothing to do, ever
                return
            self._schedule(key, self.clock())
            return
        entry.metadata, entry.spec = metadata, spec
        if not self.is_leader():
            # Standing by: the leader writes the status; follow it.
            entry.ledger.adopt(status)
            if self._is_finished(entry) and not entry.running:
                self._retire(key, entry)
                return
        current = fingerprint(metadata)
        if current != entry.fingerprint:
            entry.fingerprint = current
            if entry.running:
                entry.again = True
            elif entry.wake_at is not None or entry.ledger.view.get("phase") == INVALID:
                self._schedule(key, self.clock())

    @staticmethod
    def _is_finished(entry: _Entry) -> bool:
        status = entry.ledger.view
        receivers = len(entry.spec.get("notifications") or [])
        entry.done = status.get("phase") == COMPLETED and not executions.has_work(status, receivers)
        return entry.done

    def _retire(self, key: Key, entry: _Entry) -> None:
        """Keep only the uid of a review finished with nothing left to do."""
        self._entries.pop(key, None)
        self._finished[key] = str(entry.metadata.get("uid", ""))

    def leadership_changed(self, leader: bool) -> None:
        """On becoming leader, run every unfinished review at once (from the status the
        previous leader left, which standing by kept up to date)."""
        if leader:
            for key, entry in self._entries.items():
                if not entry.done:
                    entry.wake_at = None
                    self._schedule(key, self.clock())
        self._changed.set()

    def forget(self, namespace: str, name: str) -> None:
        known = self._entries.pop((namespace, name), None) is not None  # heap items are skipped
        if self._finished.pop((namespace, name), None) is not None or known:
            metrics.forget_review(namespace, name)

    @property
    def active(self) -> int:
        return sum(1 for e in self._entries.values() if e.wake_at is not None or e.running)

    # --- the loop ------------------------------------------------------------------------

    def _schedule(self, key: Key, when: float) -> None:
        entry = self._entries.get(key)
        if entry is None:
            return
        if entry.wake_at is not None and entry.wake_at <= when:
            return  # already due earlier
        entry.wake_at = when
        heapq.heappush(self._heap, (when, next(self._order), key))
        self._changed.set()

    async def run(self) -> None:
        """Run until cancelled."""
        try:
            while True:
                self._changed.clear()
                now = self.clock()
                if not self.is_leader():
                    logger.debug("not the leader: %d review(s) wait", len(self._heap))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), timeout=1.0)
                    continue
                while self._heap and self._heap[0][0] <= now:
                    when, _, key = heapq.heappop(self._heap)
                    entry = self._entries.get(key)
                    if entry is None or entry.wake_at != when or entry.running:
                        continue  # forgotten, rescheduled, or already running
                    entry.wake_at = None
                    entry.running = True
                    await self._slots.acquire()
                    task = asyncio.create_task(self._step(key, entry))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                delay = self._heap[0][0] - self.clock() if self._heap else 3600.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=max(0.0, delay))
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def backoff(self, failures: int) -> float:
        """Seconds before the next try after ``failures`` failed ticks in a row (>= 1)."""
        settings = self.engine.settings
        return float(
            min(settings.tick_max_backoff_seconds, settings.tick_backoff_seconds * 2 ** min(failures - 1, 60))
        )

    async def _step(self, key: Key, entry: _Entry) -> None:
        """One tick of one review; schedules its next."""
        next_at: float | None = None
        try:
            next_at = await self._tick(key, entry)
            if entry.failures:
                entry.failures = 0
                await self._report_recovery(key, entry)
        except kube.ApiError as error:
            if error.status == 404:
                self.forget(*key)
                return
            # "API error 409 Conflict: <the API server's message>"; status 0: not reached.
            failure = f"API error {error.status} {error.reason}: {error.message}"
            next_at = await self._failed(key, entry, failure)
        except Exception as error:
            next_at = await self._failed(key, entry, f"{type(error).__name__}: {error}", trace=True)
        finally:
            self._slots.release()
            entry.running = False
            if entry.again:
                entry.again = False
                next_at = self.clock()
            if next_at is not None and key in self._entries:
                self._schedule(key, next_at)

    async def _failed(self, key: Key, entry: _Entry, error: str, trace: bool = False) -> float:
        """A tick raised: log, condition and Event; the time of the next try."""
        entry.failures += 1
        delay = self.backoff(entry.failures)
        error = logs.redact(error)[:500]
        message = f"tick failed ({entry.failures} in a row): {error}; next try in {delay:g}s"
        if trace and entry.failures == 1:
            logger.exception("review %s/%s: %s", *key, message, extra=_named(key))
        else:
            logger.warning("review %s/%s: %s", *key, message, extra=_named(key))
        self.post([self._reference(entry)], "Warning", TICK_FAILED, message)
        await self._set_tick_condition(key, entry, "True", TICK_FAILED, message)
        return self.clock() + delay

    async def _report_recovery(self, key: Key, entry: _Entry) -> None:
        await self._set_tick_condition(key, entry, "False", "TickSucceeded", "the last tick succeeded")

    async def _set_tick_condition(
        self, key: Key, entry: _Entry, flag: str, reason: str, message: str
    ) -> None:
        """Write TickFailed into the review's status; a failure to write is only logged."""
        try:
            status = ReviewStatus.model_validate(entry.ledger.view)
            status.conditions = verdicts.set_condition(
                status.conditions,
                TICK_FAILED,
                flag,
                reason,
                message,
                self.engine.clock(),
                entry.metadata.get("generation"),
            )
            await entry.ledger.write(status.dump())
        except Exception as error:  # the status itself may be what fails
            logger.warning(
                "review %s/%s: cannot record %s=%s: %s", *key, TICK_FAILED, flag, error, extra=_named(key)
            )

    async def _tick(self, key: Key, entry: _Entry) -> float | None:
        self.ticks += 1
        logger.debug("tick %s/%s", *key, extra=_named(key))
        ledger = entry.ledger
        # The newest status, decoded afresh from the ledger's bytes; metadata and spec
        # are not copied: the tick never changes its input.
        snapshot = {"metadata": entry.metadata, "spec": entry.spec, "status": ledger.view}
        result = await self.engine.tick(snapshot)
        if result.status is not None:
            # Written now when it matters (or is old), else kept for a later write.
            await ledger.write(result.status, urgent=result.urgent)
            status = result.status
            metrics.record_review(*key, str(status.get("phase") or ""), str(status.get("verdict") or ""))
        else:
            await ledger.flush()
        involved = [self._reference(entry)]
        for event in result.events:
            self.post(involved, event.type, event.reason, event.message)
            # The log tells the same story as the Events, each line naming its review.
            level = logging.WARNING if event.type == "Warning" else logging.INFO
            logger.log(level, "%s: %s", event.reason, event.message, extra=_named(key))
        review = notifications.ReviewRef(key[1], key[0], str(entry.metadata.get("uid", "")))
        acted = await self.executor.run(self.engine.api, review, dict(entry.spec), ledger, self.post)
        if acted:
            return self.clock()  # tick again at once: the verdict shows what was done
        if result.done:
            await ledger.flush(force=True)
            verdict = str(ledger.view.get("verdict") or "Unknown")
            logger.info("review %s/%s completed: verdict %s", *key, verdict, extra=_named(key))
            entry.done = True
            metrics.record_review_completed(verdict)
            self._retire(key, entry)
            return None
        if result.wake_at is None:
            next_at = self.clock() + self.engine.settings.max_sleep_seconds
        else:
            delay = (result.wake_at - self.engine.clock()).total_seconds()
            logger.debug("%s/%s: next tick in %.1fs", *key, delay, extra=_named(key))
            next_at = self.clock() + max(0.0, delay) + 0.05
        flush_at = ledger.flush_at()  # an unwritten status is written by then at the latest
        return next_at if flush_at is None else min(next_at, flush_at + 0.05)

    @staticmethod
    def _reference(entry: _Entry) -> dict[str, Any]:
        return {
            "apiVersion": crds.API_VERSION,
            "kind": "PostDeploymentReview",
            "metadata": {
                "name": entry.metadata.get("name"),
                "namespace": entry.metadata.get("namespace"),
                "uid": entry.metadata.get("uid"),
                "resourceVersion": entry.metadata.get("resourceVersion"),
            },
        }
