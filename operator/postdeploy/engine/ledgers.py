"""The review's newest status, and the one way to write it.

One ``Ledger`` per review, made by the scheduler (``postdeploy.engine.schedulers``)
from the status of the first watched body it sees. The tick, the action executor and the background
notification deliveries all write through it, one write at a time, and each write is
the whole status (a JSON merge patch of ``status`` through the status subresource).

The scheduler computes a tick from a snapshot while deliveries may finish meanwhile;
``write`` therefore keeps delivery outcomes already recorded (Delivered or Failed)
over the snapshot's older Pending, so a tick never makes a sent message look unsent.

Not every status is written at once (docs/engine.md, "When the status is written"):
a write the engine marks as not urgent (``urgent=False``: only re-measurements
changed — values, samples, run counts) is kept as the ledger's newest status and
written with the next urgent write, or by ``flush`` at the ledger's next refresh
time: the first point, at least half a step after the last write, of a grid of
``refresh_seconds`` steps offset per review by a hash of its namespace and name. So
a review that keeps passing is written once a step; a refresh comes 0.5 to 1.5
steps after a write; and reviews whose writes fell together (thousands created at
once, or an operator restarting) refresh at times spread over a whole step instead
of all together again, step after step. ``view`` and ``status`` show the
newest status, written or not, so the next tick continues from it; a restarted
operator continues from the last written one and measures again what was not written.

The status is held as compact JSON bytes, not as parsed objects: an idle review costs
its status's size in memory (a few kB), and ``view`` decodes a fresh copy.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import time
from collections.abc import Callable
from typing import Any

import orjson

from postdeploy.kit import kube
from postdeploy.models.crds import API_VERSION, REVIEWS
from postdeploy.models.reviews import Delivery

__all__ = ["Ledger", "keep_deliveries"]

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


def _encode(status: Status) -> bytes:
    return orjson.dumps(status)


class Ledger:
    def __init__(
        self,
        api: kube.Client,
        namespace: str,
        name: str,
        status: Status,
        *,
        refresh_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self._blob = _encode(status)
        self._unwritten = False  # the newest status is not yet written
        self._written_at = clock()
        # Where the review's refresh grid starts within a step: the same for a review in
        # every process, spread evenly over reviews.
        digest = hashlib.blake2b(f"{namespace}/{name}".encode(), digest_size=8).digest()
        self._offset = int.from_bytes(digest) / 2**64 * refresh_seconds
        self._lock = asyncio.Lock()
        self.writes = 0  # patches sent (the benchmark counts them)

    @property
    def status(self) -> Status:
        """The newest status (written or not): a copy, the caller's to change."""
        value: Status = orjson.loads(self._blob)
        return value

    @property
    def view(self) -> Status:
        """The newest status, decoded afresh from the ledger's bytes (so, a copy too).

        Kept for the readers that only look; every write replaces the bytes.
        """
        return self.status

    @property
    def unwritten(self) -> bool:
        """Whether the newest status is not yet written (only re-measurements changed)."""
        return self._unwritten

    def flush_at(self) -> float | None:
        """When (``clock``) the unwritten status is due to be written; None when all is written."""
        return self._refresh_at() if self._unwritten else None

    def _refresh_at(self) -> float:
        """The first point of this ledger's refresh grid at least half a step after the
        last write: between 0.5 and 1.5 ``refresh_seconds`` after it, and exactly one
        step after a write at a refresh time."""
        step = self.refresh_seconds
        if step <= 0:
            return self._written_at
        earliest = self._written_at + step / 2
        return earliest + (self._offset - earliest) % step

    def adopt(self, status: Status) -> None:
        """Take a status someone else wrote (the leader, while this replica stands by)."""
        self._blob = _encode(status)
        self._unwritten = False

    async def write(self, status: Status, *, urgent: bool = True) -> None:
        """Make ``status`` the newest; write it now when urgent or when the ledger's
        refresh time has come, else keep it for a later write (see the module docstring)."""
        async with self._lock:
            # Only a status with notifications can carry a delivery older than the
            # newest (``keep_deliveries``); others are compared as bytes, undecoded.
            merged = keep_deliveries(status, self.status) if status.get("notifications") else status
            blob = _encode(merged)
            if blob == self._blob and not (urgent and self._unwritten):
                return
            if not urgent and self.clock() < self._refresh_at():
                self._blob, self._unwritten = blob, True
                return
            await self._patch(merged)
            self._blob, self._unwritten, self._written_at = blob, False, self.clock()

    async def flush(self, *, force: bool = False) -> bool:
        """Write the unwritten status if it is due (or ``force``); whether it wrote."""
        async with self._lock:
            if not self._unwritten:
                return False
            if not force and self.clock() < self._refresh_at():
                return False
            await self._patch(self.status)
            self._unwritten, self._written_at = False, self.clock()
            return True

    async def record_delivery(self, message_id: str, delivery: Delivery) -> None:
        """Record one delivery's outcome (called from the notification tasks)."""
        async with self._lock:
            current = self.status
            status = self.status
            for item in status.get("notifications") or []:
                if item.get("id") != message_id:
                    continue
                item["deliveries"] = [
                    delivery.dump() if d.get("receiver") == delivery.receiver else d
                    for d in item.get("deliveries") or []
                ]
            if status != current:
                await self._patch(status)
                self._blob, self._unwritten, self._written_at = _encode(status), False, self.clock()

    async def _patch(self, status: Status) -> None:
        self.writes += 1
        # A JSON merge patch: custom resources take no strategic merge patch. The answer
        # is the whole review, which the watch brings anyway: not kept.
        await self.api.patch(
            kube.path(API_VERSION, REVIEWS, self.namespace, self.name, "status"),
            {"status": status},
            kube.MERGE_PATCH,
        )
