"""Kubernetes Events on reviews and targets, posted by the operator itself.

Used by the scheduler for the Events a tick derives and by the action executor for
rollbacks and notifications. ``post`` returns at once; the Event is created in the
background (a few at a time), and a failure to post is logged, never raised: an
Event is a courtesy to the reader of ``kubectl describe``, not part of the review's
state. kopf's own ``kopf.event`` only works inside its handlers' context, which the
scheduler's loop is not.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from postdeploy.kit import kube

__all__ = ["EventPoster"]

logger = logging.getLogger(__name__)
COMPONENT = "postdeploy"


class EventPoster:
    def __init__(self, api: kube.Client, concurrency: int = 8) -> None:
        self.api = api
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self.posted = 0

    def post(self, objs: Sequence[Mapping[str, Any]], type_: str, reason: str, message: str) -> None:
        for obj in objs:
            task = asyncio.get_running_loop().create_task(self._create(obj, type_, reason, message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _create(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        metadata = obj.get("metadata") or {}
        namespace = str(metadata.get("namespace") or "default")
        now = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
        body: Any = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{metadata.get('name')}.{secrets.token_hex(8)}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": metadata.get("name"),
                "namespace": namespace,
                "uid": metadata.get("uid"),
            },
            "type": type_,
            "reason": reason[:128],
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        async with self._slots:
            try:
                await self.api.create(kube.path("v1", "events", namespace), body)
                self.posted += 1
            except (kube.ApiError, OSError, TimeoutError) as error:
                logger.warning(
                    "could not post Event %s on %s/%s: %s", reason, namespace, metadata.get("name"), error
                )

    async def flush(self) -> None:
        """Wait for the Events in flight (at clean-up)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
