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
import contextvars
from types import TracebackType

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


class _Measuring:
    """``measuring``'s context: classes, not ``contextlib`` generators, which cost a
    few per cent of the operator's CPU at thousands of measurements a minute."""

    __slots__ = ("_deadline", "_scope", "_token")

    def __init__(self, seconds: float) -> None:
        self._scope = asyncio.timeout(seconds)

    async def __aenter__(self) -> None:
        self._deadline = _Deadline(await self._scope.__aenter__())
        self._token = _current.set(self._deadline)

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._deadline.open = False
        _current.reset(self._token)
        await self._scope.__aexit__(kind, error, trace)  # raises TimeoutError when it expired


class _Queued:
    __slots__ = ("_deadline",)

    def __enter__(self) -> None:
        self._deadline = _current.get()
        if self._deadline is not None:
            self._deadline.stop()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._deadline is not None:
            self._deadline.resume()


def measuring(seconds: float) -> _Measuring:
    """``async with``: ``asyncio.timeout(seconds)`` for one measurement, less the time
    its requests wait in ``queued``; raises ``TimeoutError`` when the rest runs out."""
    return _Measuring(seconds)


def queued() -> _Queued:
    """``with``, around a wait for one of the process's own request slots: not counted
    against the current measurement's deadline (nothing outside ``measuring``)."""
    return _Queued()
