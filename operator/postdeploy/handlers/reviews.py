"""The watch on PostDeploymentReviews: it feeds the scheduler, nothing more.

kopf calls ``review_event`` for every review it lists at start and for every change
after; the scheduler (``postdeploy.engine.schedulers``, started by
``postdeploy.handlers.lifecycle``) decides when each review ticks. A raw event
handler keeps kopf from storing any state on the reviews: no finalizer, no progress
annotations.
"""

from __future__ import annotations

from typing import Any

import kopf

from postdeploy.engine import ledgers, schedulers

__all__ = ["review_event"]

GROUP, VERSION, PLURAL = ledgers.GROUP, ledgers.VERSION, ledgers.PLURAL


@kopf.on.event(GROUP, VERSION, PLURAL)
async def review_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    scheduler: schedulers.Scheduler = memo.scheduler
    if type == "DELETED":
        scheduler.forget(str(body.metadata.namespace), str(body.metadata.name))
    else:
        scheduler.observe(body)
