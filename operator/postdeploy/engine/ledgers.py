"""The review's status as last written, and the one way to write it.

One ``Ledger`` per review, made by the scheduler (``postdeploy.engine.schedulers``)
from the status of the first watched body it sees. The tick, the action executor and the background
notification deliveries all write through it, one write at a time, and each write is
the whole status (a JSON merge patch of ``status`` through the status subresource).

The scheduler computes a tick from a snapshot while deliveries may finish meanwhile;
``write`` therefore keeps delivery outcomes already recorded (Delivered or Failed)
over the snapshot's older Pending, so a tick never makes a sent message look unsent.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from postdeploy.models.reviews import Delivery

__all__ = ["GROUP", "PLURAL", "VERSION", "Ledger", "keep_deliveries"]

GROUP, VERSION, PLURAL = "postdeploy.io", "v1alpha1", "postdeploymentreviews"
Status = dict[str, Any]


def keep_deliveries(new: Status, current: Status) -> Status:
    """``new``, with the settled delivery outcomes of ``current`` kept."""
    settled = {
        (item.get("id"), d.get("receiver")): d
        for item in current.get("notifications") or []
        for d in item.get("deliveries") or []
        if d.get("state") != "Pending"
    }
    if not settled:
        return new
    merged = copy.deepcopy(new)
    for item in merged.get("notifications") or []:
        item["deliveries"] = [
            settled.get((item.get("id"), d.get("receiver")), d) for d in item.get("deliveries") or []
        ]
    return merged


class Ledger:
    def __init__(self, api: client.ApiClient, namespace: str, name: str, status: Status) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self._status = copy.deepcopy(status)
        self._lock = asyncio.Lock()

    @property
    def status(self) -> Status:
        """A copy of the status as last written."""
        return copy.deepcopy(self._status)

    @property
    def view(self) -> Status:
        """The status as last written, not copied: read it, never change it.

        Every write replaces the whole dict, so a view taken before a write keeps
        showing the status of that moment. At thousands of reviews the copies that
        ``status`` makes were a tenth of the operator's CPU (docs/benchmarks.md).
        """
        return self._status

    def adopt(self, status: Status) -> None:
        """Take a status someone else wrote (the leader, while this replica stands by)."""
        self._status = copy.deepcopy(status)

    async def write(self, status: Status) -> None:
        async with self._lock:
            merged = keep_deliveries(status, self._status)
            if merged != self._status:
                await self._patch(merged)
                self._status = merged

    async def record_delivery(self, message_id: str, delivery: Delivery) -> None:
        """Record one delivery's outcome (called from the notification tasks)."""
        async with self._lock:
            status = copy.deepcopy(self._status)
            for item in status.get("notifications") or []:
                if item.get("id") != message_id:
                    continue
                item["deliveries"] = [
                    delivery.dump() if d.get("receiver") == delivery.receiver else d
                    for d in item.get("deliveries") or []
                ]
            if status != self._status:
                await self._patch(status)
                self._status = status

    async def _patch(self, status: Status) -> None:
        response = await client.CustomObjectsApi(self.api).patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            self.name,
            {"status": status},
            # Custom resources take no strategic merge patch, which the client would
            # otherwise pick for a dict; the stubs omit _content_type.
            _content_type="application/merge-patch+json",  # type: ignore[call-arg]
            # The answer is the whole review, which the watch brings anyway: not decoded.
            _preload_content=False,
        )
        try:
            body = await response.read()
        finally:
            response.release()
        if not 200 <= response.status <= 299:
            error = ApiException(status=response.status, reason=response.reason)
            error.body = body.decode(errors="replace")
            raise error
