"""The watch on PostDeploymentReviews: it feeds the scheduler, nothing more.

kopf calls ``review_event`` for every review it lists at start and for every change
after; the scheduler (``postdeploy.engine.schedulers``, started by
``postdeploy.handlers.lifecycle``) decides when each review ticks. A raw event
handler keeps kopf from storing any state on the reviews: no finalizer, no progress
annotations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import kopf

from postdeploy.engine import ledgers, schedulers

__all__ = ["post_event", "review_event"]

GROUP, VERSION, PLURAL = ledgers.GROUP, ledgers.VERSION, ledgers.PLURAL


def post_event(objs: Sequence[Mapping[str, Any]], type_: str, reason: str, message: str) -> None:
    # kopf reads only apiVersion, kind and metadata of each object: plain dicts do.
    bodies: Any = [dict(o) for o in objs]
    kopf.event(bodies, type=type_, reason=reason, message=message)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def review_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    scheduler: schedulers.Scheduler = memo.scheduler
    if type == "DELETED":
        scheduler.forget(str(body.metadata.namespace), str(body.metadata.name))
    else:
        scheduler.observe(body)
