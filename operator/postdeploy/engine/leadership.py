"""Leader election on a coordination.k8s.io Lease: one replica ticks, the others wait.

Used by the scheduler when ``POSTDEPLOY_LEADER_LEASE=<namespace>/<name>`` is set (the
chart sets it whenever it runs more than one replica). Every replica watches every
review, so a standby holds the same index as the leader and takes over within one
lease duration of the leader's death; only the holder of the Lease runs ticks. A
leader that cannot renew stops ticking ``renew_deadline`` after its last renewal,
before anyone else may take the Lease, so two replicas never act at once. Updates use
the Lease's resourceVersion (optimistic concurrency): of two replicas racing for an
expired Lease, the API server lets exactly one win.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

from postdeploy.kit import kube, times

__all__ = ["Leadership"]

logger = logging.getLogger(__name__)
_LEASES = "coordination.k8s.io/v1"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _micro(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Leadership:
    def __init__(
        self,
        api: kube.Client,
        namespace: str,
        name: str,
        identity: str,
        *,
        duration: float = 15.0,
        renew_every: float = 3.0,
        renew_deadline: float = 10.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.api = api
        self.namespace, self.name, self.identity = namespace, name, identity
        self.duration, self.renew_every, self.renew_deadline = duration, renew_every, renew_deadline
        self.on_change = on_change
        self._renewed_at: float | None = None  # monotonic time of our last successful renewal

    @property
    def is_leader(self) -> bool:
        return self._renewed_at is not None and time.monotonic() - self._renewed_at < self.renew_deadline

    async def run(self) -> None:
        """Keep trying to hold the Lease until cancelled."""
        was = False
        try:
            while True:
                try:
                    if await self._try():
                        self._renewed_at = time.monotonic()
                except (kube.ApiError, OSError, TimeoutError) as error:
                    logger.warning("leader election: %s", error)
                except Exception:  # never let the election die silently: keep trying
                    logger.exception("leader election failed; retrying")
                now = self.is_leader
                if now != was:
                    logger.info("leadership %s (%s)", "acquired" if now else "lost", self.identity)
                    was = now
                    if self.on_change is not None:
                        self.on_change(now)
                await asyncio.sleep(self.renew_every)
        finally:
            if self.is_leader:
                await self._release()

    def _lease(self, spec: dict[str, Any], resource_version: str | None = None) -> Any:
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version  # optimistic concurrency
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}

    async def _write(self, body: Any, *, create: bool) -> bool:
        """Create or replace the Lease; False when another replica got there first."""
        try:
            if create:
                await self.api.create(kube.path(_LEASES, "leases", self.namespace), body)
            else:
                await self.api.replace(kube.path(_LEASES, "leases", self.namespace, self.name), body)
        except kube.ApiError as conflict:
            if conflict.status == 409:
                return False
            raise
        return True

    async def _try(self) -> bool:
        now = _now()
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.duration),
            "renewTime": _micro(now),
        }
        lease = await self.api.read(kube.path(_LEASES, "leases", self.namespace, self.name))
        if lease is None:
            first = {**spec, "acquireTime": _micro(now), "leaseTransitions": 0}
            return await self._write(self._lease(first), create=True)
        current = lease.get("spec") or {}
        holder = current.get("holderIdentity")
        renewed = times.parse_or_none(current.get("renewTime"))
        expired = renewed is None or (now - renewed).total_seconds() > (
            current.get("leaseDurationSeconds") or self.duration
        )
        if holder != self.identity and holder and not expired:
            return False
        ours = holder == self.identity
        acquired = times.parse_or_none(current.get("acquireTime"))
        spec["acquireTime"] = _micro(acquired) if ours and acquired else _micro(now)
        spec["leaseTransitions"] = (current.get("leaseTransitions") or 0) + (0 if ours else 1)
        return await self._write(self._lease(spec, lease["metadata"].get("resourceVersion")), create=False)

    async def _release(self) -> None:
        """Give the Lease up on a clean stop, so a standby need not wait for it to expire."""
        try:
            lease = await self.api.get(kube.path(_LEASES, "leases", self.namespace, self.name))
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            spec = {
                "holderIdentity": "",
                "leaseDurationSeconds": int(self.duration),
                "renewTime": _micro(_now()),
            }
            if await self._write(self._lease(spec, lease["metadata"].get("resourceVersion")), create=False):
                self._renewed_at = None
        except (kube.ApiError, OSError, TimeoutError) as error:
            logger.warning("could not release the Lease: %s", error)
