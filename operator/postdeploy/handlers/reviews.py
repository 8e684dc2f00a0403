"""The watch on PostDeploymentReviews: it feeds the scheduler, nothing more.

kopf calls ``review_event`` for every review it lists at start and for every change
after; the scheduler (``postdeploy.engine.schedulers``, started by
``postdeploy.handlers.lifecycle``) decides when each review ticks. A raw event
handler keeps kopf from storing any state on the reviews: no finalizer, no progress
annotations. With ``--selector`` only reviews whose labels match are handled, so
several operator deployments can share a cluster: the start-up handler
(``postdeploy.handlers.lifecycle``) puts the parsed selector in kopf's memo as
``memo.shard``, from the Settings ``postdeploy run`` passed in.
"""

from __future__ import annotations

from typing import Any

import kopf

from postdeploy.engine import schedulers
from postdeploy.models.crds import GROUP, REVIEWS, VERSION

__all__ = ["review_event"]



@kopf.on.event(GROUP, VERSION, REVIEWS)
async def review_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    scheduler: schedulers.Scheduler = memo.scheduler
    # A review relabelled out of this shard is forgotten here and picked up by its new one.
    if type == "DELETED" or not memo.shard.matches(body.metadata.labels):
        scheduler.forget(str(body.metadata.namespace), str(body.metadata.name))
    else:
        scheduler.observe(body)
