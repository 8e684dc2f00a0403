"""Collections of a namespace (its Deployments, its pods...) as the API server last
said, kept up to date by one list and a watch.

The kubernetes provider read a review's target and listed its pods at every tick: at
2,000 reviews in their immediate phase that was about 2,000 GETs and 2,000 LISTs a
minute for the API server to serve, and as many answers for the operator to decode
(docs/benchmarks.md, "Scale"). A ``Mirror`` instead lists one collection once (a
namespace's objects of one resource), then watches it from the list's
``resourceVersion`` and applies every event, so a read costs a dict lookup and the API
server sends each change once, to one watch, whatever the number of reviews reading it.

``Mirrors.collection(path, kind)`` is the one way to read: the collection's objects by
name when its mirror is *live*, else None, and the caller reads from the API server as
before; ``Mirrors.derived`` the same for a value computed from them (a target's pods,
out of its namespace's), kept until the collection next changes. A mirror is live
from its first list until its watch breaks; it is not live:

- before its first list has answered (the first read of a collection starts its
  mirror and reads from the API server itself);
- from the moment its watch breaks (a connection error, an ERROR event, an expired
  ``resourceVersion``) until it has watched or listed again (retried after 1 s,
  doubling up to a minute); a watch the server ends after its ``timeoutSeconds``
  (``WATCH_SECONDS``) is resumed from the last ``resourceVersion`` without listing;
- when it cannot be kept: the list or watch is refused (403: the operator may not
  watch it; 404: the resource is not served, an Argo Rollout without its CRD) or the
  collection holds more than ``max_objects`` objects; then no mirror of it is tried
  again for ``REFUSED_SECONDS``.

So an API server that is down or refuses is seen as such by the caller's own reads
(an Error measurement, never a stale answer), and a mirror is at most what the API
server said one watch event earlier. A hung API server (the connection open, nothing
sent) is noticed after ``kube.WATCH_READ_SECONDS`` (90 s) at most: that long a mirror
can answer what the server last said.

A mirror no one has read for ``idle_seconds`` is stopped. Objects are kept as the API
server sent them but for ``metadata.managedFields`` and the
``kubectl.kubernetes.io/last-applied-configuration`` annotation, with ``kind`` set
(a list's items have none); callers must not change them. Only collections the
operator's callers name are mirrored: a review's own namespace (its target and the
target's pods), never a namespace no review reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Hashable, Mapping
from typing import Any, TypeVar

from postdeploy.kit import kube

__all__ = ["REFUSED_SECONDS", "WATCH_SECONDS", "Mirror", "Mirrors"]

Obj = dict[str, Any]
logger = logging.getLogger(__name__)

WATCH_SECONDS = 55  # the API server ends each watch after this long; it is resumed at once
REFUSED_SECONDS = 600.0  # a collection that cannot be mirrored is read directly this long
_RETRY_SECONDS = (1.0, 60.0)  # a broken watch is retried after 1 s, doubling up to 60 s
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_DERIVED_LIMIT = 1024  # derived values kept per mirror (selectors of its namespace's targets)
T = TypeVar("T")


class Refused(Exception):
    """The collection cannot be mirrored (not allowed, not served, too large)."""


def _kept(obj: Obj, kind: str) -> Obj:
    metadata = obj.get("metadata") or {}
    if "managedFields" in metadata or _LAST_APPLIED in (metadata.get("annotations") or {}):
        metadata = {k: v for k, v in metadata.items() if k != "managedFields"}
        annotations = metadata.get("annotations")
        if annotations and _LAST_APPLIED in annotations:
            metadata["annotations"] = {k: v for k, v in annotations.items() if k != _LAST_APPLIED}
        obj = {**obj, "metadata": metadata}
    obj["kind"] = kind
    return obj


class Mirror:
    """One collection (``path``, e.g. ``kube.path("v1", "pods", "team")``) kept by list
    and watch while ``run`` runs. ``objects`` by name; ``live`` as the module says."""

    def __init__(self, api: kube.Client, path: str, kind: str, max_objects: int) -> None:
        self.api = api
        self.path = path
        self.kind = kind
        self.max_objects = max_objects
        self.objects: dict[str, Obj] = {}
        self.live = False
        self.used = 0.0  # when last read (``Mirrors.clock``)
        self.lists = 0  # lists asked (the first, and one after each expired watch)
        self.watches = 0  # watches opened
        self.events = 0  # ADDED, MODIFIED and DELETED events applied
        self.changes = 0  # lists and events applied: what was derived before is stale
        self._derived: dict[Hashable, tuple[int, Any]] = {}

    async def run(self) -> None:
        """List, then watch until cancelled; raises Refused when it cannot be kept."""
        version: str | None = None
        delay = _RETRY_SECONDS[0]
        while True:
            listed = False
            try:
                if version is None:
                    version, listed = await self._list(), True
                version = await self._watch(version)
                delay = _RETRY_SECONDS[0]
            except kube.ApiError as error:
                self.live = False
                if error.status in (403, 404, 405):
                    raise Refused(f"{error.status} {error.reason}: {error.message}") from None
                if error.status == 410 and not listed:
                    version = None  # expired: list afresh (after a wait if the list's own did)
                    continue
                logger.info("Mirror of %s: %s %s; again in %.0f s", self.path, error.status, error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_SECONDS[1])
                version = None  # events may have been missed while broken: list afresh

    async def _list(self) -> str:
        self.lists += 1
        listing = await self.api.get(self.path, limit=self.max_objects + 1)
        items = listing.get("items") or []
        if len(items) > self.max_objects or (listing.get("metadata") or {}).get("continue"):
            raise Refused(f"more than {self.max_objects} objects")
        self.objects = {item["metadata"]["name"]: _kept(item, self.kind) for item in items}
        self.changes += 1
        self.live = True
        return str(listing["metadata"]["resourceVersion"])

    async def _watch(self, version: str) -> str:
        """Apply the events of one watch from ``version``; the last version seen.
        ApiError when the watch breaks (410 when ``version`` has expired)."""
        self.watches += 1
        events = self.api.watch(
            self.path, resourceVersion=version, allowWatchBookmarks=True, timeoutSeconds=WATCH_SECONDS
        )
        async with contextlib.aclosing(events):  # the connection released however this ends
            version = await self._apply(events, version)
        self.live = True
        return version

    async def _apply(self, events: AsyncIterator[Obj], version: str) -> str:
        async for event in events:
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                code, reason = int(obj.get("code") or 0), str(obj.get("reason") or "")
                raise kube.ApiError(code, reason, str(obj.get("message") or ""))
            metadata = obj.get("metadata") or {}
            version = str(metadata.get("resourceVersion") or version)
            if kind == "BOOKMARK":
                continue
            self.events += 1
            self.changes += 1
            if kind == "DELETED":
                self.objects.pop(str(metadata.get("name")), None)
            elif kind in ("ADDED", "MODIFIED"):
                self.objects[metadata["name"]] = _kept(obj, self.kind)
                if len(self.objects) > self.max_objects:
                    raise Refused(f"more than {self.max_objects} objects")
        return version

    def derived(self, key: Hashable, derive: Callable[[Mapping[str, Obj]], T]) -> T:
        """``derive(objects)``, kept under ``key`` until the collection changes (the
        pods of one selector, read by every review of the target and several checks)."""
        kept = self._derived.get(key)
        if kept is not None and kept[0] == self.changes:
            value: T = kept[1]
            return value
        if len(self._derived) >= _DERIVED_LIMIT:
            self._derived.clear()
        value = derive(self.objects)
        self._derived[key] = (self.changes, value)
        return value


class Mirrors:
    """The operator's mirrors, started by the first read of a collection and stopped
    when unread for ``idle_seconds``; ``max_objects`` 0 keeps no mirror at all."""

    def __init__(
        self,
        api: kube.Client,
        max_objects: int = 5000,
        idle_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.max_objects = max_objects
        self.idle_seconds = idle_seconds
        self.clock = clock
        self._mirrors: dict[str, tuple[Mirror, asyncio.Task[None]]] = {}
        self._refused: dict[str, float] = {}  # path -> until when it is not tried
        self._swept = clock()

    def collection(self, path: str, kind: str) -> Mapping[str, Obj] | None:
        """The collection's objects by name if its mirror is live; else None (and its
        mirror is started unless one runs or it was refused lately). Call from the
        event loop."""
        if self.max_objects <= 0:
            return None
        now = self.clock()
        if now - self._swept >= min(60.0, self.idle_seconds):
            self._sweep(now)
        entry = self._mirrors.get(path)
        if entry is None:
            if self._refused.get(path, 0.0) > now:
                return None
            mirror = Mirror(self.api, path, kind, self.max_objects)
            mirror.used = now
            task = asyncio.create_task(self._keep(mirror), name=f"mirror {path}")
            self._mirrors[path] = (mirror, task)
            return None
        mirror = entry[0]
        mirror.used = now
        return mirror.objects if mirror.live else None

    def derived(
        self, path: str, kind: str, key: Hashable, derive: Callable[[Mapping[str, Obj]], T]
    ) -> T | None:
        """``derive`` of the collection while its mirror is live (kept until the
        collection changes: ``Mirror.derived``); else None, as ``collection``."""
        if self.collection(path, kind) is None:
            return None
        return self._mirrors[path][0].derived(key, derive)

    async def _keep(self, mirror: Mirror) -> None:
        try:
            await mirror.run()
        except Refused as reason:
            logger.info(
                "Not mirroring %s (%s): read directly for %.0f s", mirror.path, reason, REFUSED_SECONDS
            )
            self._refused[mirror.path] = self.clock() + REFUSED_SECONDS
        except Exception:  # a bug here must only cost the mirror: reads go to the API server
            logger.exception("Mirror of %s failed", mirror.path)
            self._refused[mirror.path] = self.clock() + REFUSED_SECONDS
        finally:
            mirror.live = False
            current = self._mirrors.get(mirror.path)
            if current is not None and current[0] is mirror:
                del self._mirrors[mirror.path]

    def _sweep(self, now: float) -> None:
        self._swept = now
        for path, (mirror, task) in list(self._mirrors.items()):
            if now - mirror.used >= self.idle_seconds:
                mirror.live = False
                task.cancel()
                del self._mirrors[path]
        self._refused = {p: until for p, until in self._refused.items() if until > now}

    def mirrored(self) -> dict[str, Mirror]:
        """The running mirrors by path (tests, metrics)."""
        return {path: mirror for path, (mirror, _) in self._mirrors.items()}

    async def close(self) -> None:
        tasks = [task for _, task in self._mirrors.values()]
        self._mirrors.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
