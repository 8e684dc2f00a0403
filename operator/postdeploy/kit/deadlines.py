"""A measurement's deadline, stopped while its requests wait for the process's own slots.

The engine gives each measurement ``POSTDEPLOY_MEASURE_TIMEOUT`` (``engine/registry.py``)
against a provider that hangs. The providers that share reads between checks bound the
requests they send at once themselves (``providers/coalescing.py``), so a request may
first wait for a slot behind other reviews' requests; that wait is the operator's own
queue, not the data source being slow, and counting it made an operator far behind its
schedule report its own backlog as the data source's Errors (docs/benchmarks.md, "The
runs of 2026-12-02, 12:09-13:57 UTC"). ``measuring`` arms the deadline; ``queued``
marks a wait that does not count against it: the deadline stops while any request of
the measurement waits there and runs on, with the time it had left, when none does.
Each request keeps its own timeout once sent (Prometheus's, Alertmanager's, the
Kubernetes client's).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator

__all__ = ["measuring", "queued"]


class _Deadline:
    """One measurement's ``asyncio.Timeout``, stopped while ``waiting`` > 0. ``open``
    turns False when the measurement ends: a request it started may still be queued
    then, in a task it left behind, and must not touch the finished timeout."""

    def __init__(self, scope: asyncio.Timeout) -> None:
        self.scope = scope
        self.waiting = 0
        self.left = 0.0  # seconds the deadline had when it was stopped
        self.open = True

    def stop(self) -> None:
        self.waiting += 1
        when = self.scope.when()
        if self.waiting == 1 and when is not None and self._running():
            self.left = max(0.0, when - asyncio.get_running_loop().time())
            self.scope.reschedule(None)

    def resume(self) -> None:
        self.waiting -= 1
        if self.waiting == 0 and self.scope.when() is None and self._running():
            self.scope.reschedule(asyncio.get_running_loop().time() + self.left)

    def _running(self) -> bool:
        return self.open and not self.scope.expired()


_current: contextvars.ContextVar[_Deadline | None] = contextvars.ContextVar("deadline", default=None)


@contextlib.asynccontextmanager
async def measuring(seconds: float) -> AsyncIterator[None]:
    """``asyncio.timeout(seconds)`` for one measurement, less the time its requests
    wait in ``queued``; raises ``TimeoutError`` when the rest runs out."""
    async with asyncio.timeout(seconds) as scope:
        deadline = _Deadline(scope)
        token = _current.set(deadline)
        try:
            yield
        finally:
            deadline.open = False
            _current.reset(token)


@contextlib.asynccontextmanager
async def queued() -> AsyncIterator[None]:
    """A wait for one of the process's own request slots: not counted against the
    current measurement's deadline (nothing outside ``measuring``)."""
    deadline = _current.get()
    if deadline is None:
        yield
        return
    deadline.stop()
    try:
        yield
    finally:
        deadline.resume()
