"""Identical reads share one request: in flight together, or within a short TTL.

Used by providers whose reads repeat across checks and reviews in the same moment
(the kubernetes provider, while its namespace's mirror is not live, reads a workload
once for the checks of a tick and once for all reviews of the same target in that
second, and a node once for all its pods' reviews; the prometheus provider
sends an identical query at the same evaluation second once). Failures are shared
with the callers that were waiting on them but never cached.

``concurrency`` bounds the requests actually made at once (the data source's load);
callers answered by a request in flight or a remembered answer never wait for a
slot, so sharing is never held up behind unrelated requests. The wait for a slot - a
request's own, or that of the request a caller shares - does not count against the
measurement's deadline (``kit.deadlines``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

from postdeploy.kit import deadlines

__all__ = ["Coalescer"]

T = TypeVar("T")


class Coalescer(Generic[T]):
    def __init__(
        self,
        ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        limit: int = 10000,
        concurrency: int | None = None,
    ) -> None:
        self.ttl = ttl
        self._slots = asyncio.Semaphore(concurrency) if concurrency else None
        self.clock = clock
        self.limit = limit
        self._done: dict[Hashable, tuple[float, T]] = {}
        # A request in flight: its answer, and whether it holds a slot (or needs none).
        self._flying: dict[Hashable, tuple[asyncio.Future[T], asyncio.Event]] = {}
        self.requests = 0  # requests actually made
        self.shared = 0  # calls answered by another call's request

    async def run(self, key: Hashable, factory: Callable[[], Awaitable[T]]) -> T:
        now = self.clock()
        cached = self._done.get(key)
        if cached is not None and now - cached[0] < self.ttl:
            self.shared += 1
            return cached[1]
        flying = self._flying.get(key)
        if flying is not None:
            self.shared += 1
            shared, sent = flying
            if not sent.is_set():
                with deadlines.queued():
                    await sent.wait()
            return await asyncio.shield(shared)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        sent = asyncio.Event()
        self._flying[key] = (future, sent)
        self.requests += 1
        try:
            if self._slots is None:
                sent.set()
                result = await factory()
            else:
                if self._slots.locked():
                    with deadlines.queued():
                        await self._slots.acquire()
                else:
                    await self._slots.acquire()
                sent.set()
                try:
                    result = await factory()
                finally:
                    self._slots.release()
        except BaseException as error:
            sent.set()  # also when cancelled while queued: the callers sharing it see why
            future.set_exception(error)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        else:
            future.set_result(result)
            self._remember(key, result)
            return result
        finally:
            self._flying.pop(key, None)

    def _remember(self, key: Hashable, value: Any) -> None:
        now = self.clock()
        if len(self._done) >= self.limit:
            self._done = {k: v for k, v in self._done.items() if now - v[0] < self.ttl}
            if len(self._done) >= self.limit:
                self._done.clear()
        self._done[key] = (now, value)
