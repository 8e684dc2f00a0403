"""The review daemon: one asyncio task per review, asleep until something is due.

kopf starts ``review_daemon`` for every PostDeploymentReview (also after an operator
restart) and stops it when the review is deleted. Each loop runs one engine tick,
writes the status through the status subresource, posts the tick's Events, then lets
the executor carry out the actions the tick decided (each step written to status
before and after it touches the target), then sleeps until the tick's wake-up time
or until ``review_changed`` reports a new spec or annotations. When the executor
changed something the loop ticks again at once, so the verdict shows it.

The daemon keeps the status it last wrote as its truth (a ``Ledger``): the live body
may lag behind its own writes. A completed review's daemon exits at once, unless an
action or a notification of it is unfinished (an operator stopped in between), so
finished reviews cost nothing but their place in kopf's watch.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping, Sequence
from typing import Any

import kopf
from kubernetes_asyncio.client.exceptions import ApiException

from postdeploy.actions import notifications
from postdeploy.engine import executions, ledgers, ticks

__all__ = ["review_changed", "review_daemon"]

GROUP, VERSION, PLURAL = ledgers.GROUP, ledgers.VERSION, ledgers.PLURAL
_ERROR_BACKOFF = 10.0


def _fingerprint(body: kopf.Body) -> tuple[Any, ...]:
    annotations = {k: v for k, v in (body.metadata.annotations or {}).items() if not k.startswith("kopf.")}
    return (body.metadata.get("generation"), tuple(sorted(annotations.items())))


@kopf.on.event(GROUP, VERSION, PLURAL)
async def review_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Wake the review's daemon when its spec or annotations change (not its status)."""
    wake: asyncio.Event | None = getattr(memo, "wake", None)
    seen = getattr(memo, "fingerprint", None)
    current = _fingerprint(body)
    if wake is not None and seen is not None and seen != current:
        wake.set()


def _post(objs: Sequence[Mapping[str, Any]], type_: str, reason: str, message: str) -> None:
    # kopf reads only apiVersion, kind and metadata of each object: plain dicts do.
    bodies: Any = [dict(o) for o in objs]
    kopf.event(bodies, type=type_, reason=reason, message=message)


async def _sleep(stopped: kopf.DaemonStopped, wake: asyncio.Event, seconds: float) -> None:
    if seconds <= 0:
        return
    waiters = {
        asyncio.ensure_future(stopped.wait()),
        asyncio.ensure_future(wake.wait()),
    }
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10.0)
async def review_daemon(
    body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo, logger: Any, **_: Any
) -> None:
    engine: ticks.Engine = memo.engine
    executor: executions.Executor = memo.executor
    memo.wake = asyncio.Event()
    name, namespace = str(body.metadata.name), str(body.metadata.namespace)
    ledger = ledgers.Ledger(engine.api, namespace, name, dict(body.get("status") or {}))
    review = notifications.ReviewRef(name, namespace, str(body.metadata.uid))
    receivers = len(body.spec.get("notifications") or [])
    if ledger.status.get("phase") == ticks.COMPLETED and not executions.has_work(ledger.status, receivers):
        return
    while not stopped:
        memo.wake.clear()
        memo.fingerprint = _fingerprint(body)
        snapshot = {"metadata": dict(body.metadata), "spec": dict(body.spec), "status": ledger.status}
        try:
            result = await engine.tick(copy.deepcopy(snapshot))
            if result.status is not None:
                await ledger.write(result.status)
            for event in result.events:
                kopf.event(body, type=event.type, reason=event.reason, message=event.message)
            acted = await executor.run(engine.api, review, dict(body.spec), ledger, _post)
        except ApiException as error:
            if error.status == 404:
                return  # the review is gone
            logger.warning("review tick failed: API %s %s; retrying", error.status, error.reason)
            await _sleep(stopped, memo.wake, _ERROR_BACKOFF)
            continue
        except Exception:
            logger.exception("review tick failed; retrying in %ss", _ERROR_BACKOFF)
            await _sleep(stopped, memo.wake, _ERROR_BACKOFF)
            continue
        if acted:
            continue  # tick again at once: the verdict and conditions show what was done
        if result.done:
            logger.info("review completed: verdict %s", ledger.status.get("verdict"))
            return
        if result.wake_at is None:
            await _sleep(stopped, memo.wake, engine.settings.max_sleep_seconds)
        else:
            delay = (result.wake_at - engine.clock()).total_seconds()
            await _sleep(stopped, memo.wake, max(0.0, delay) + 0.05)
