"""The watch on PostDeploymentReviews: it feeds the scheduler, nothing more.

kopf calls ``review_event`` for every review it lists at start and for every change
after; the scheduler (``postdeploy.engine.schedulers``, started by
``postdeploy.handlers.lifecycle``) decides when each review ticks. A raw event
handler keeps kopf from storing any state on the reviews: no finalizer, no progress
annotations. With ``--selector`` (``POSTDEPLOY_SELECTOR``) only reviews whose labels
match are handled, so several operator deployments can share a cluster.
"""

from __future__ import annotations

import os
from typing import Any

import kopf

from postdeploy.decisions import selectors
from postdeploy.engine import schedulers
from postdeploy.models.crds import GROUP, REVIEWS, VERSION

__all__ = ["review_event"]



_SHARD = selectors.parse(os.environ.get("POSTDEPLOY_SELECTOR", ""))


@kopf.on.event(GROUP, VERSION, REVIEWS)
async def review_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    scheduler: schedulers.Scheduler = memo.scheduler
    # A review relabelled out of this shard is forgotten here and picked up by its new one.
    if type == "DELETED" or not _SHARD.matches(body.metadata.labels):
        scheduler.forget(str(body.metadata.namespace), str(body.metadata.name))
    else:
        scheduler.observe(body)
