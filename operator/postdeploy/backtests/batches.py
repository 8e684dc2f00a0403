"""Prometheus requests of a replay, learned first and then asked as few range queries.

Used by ``postdeploy.backtests.replays``. A replay runs the review's Prometheus checks
twice through the real ``PrometheusProvider``:

1. with a ``ReplayApi`` in *recording* mode, which sends nothing and answers every
   request with an empty result, while it notes what the provider asked (query,
   evaluation second, range window and step). The provider computes these itself
   (aligned evaluation times, ``{{sinceDeploy}}``, ``range: phase``, baselines, limit
   queries), so nothing here re-derives them;
2. in *serving* mode, once ``prefetch`` has turned the notes into range queries: a
   request covered by one is answered from it, anything else is sent to Prometheus as
   asked. The replay starts while the range queries are still being asked
   (``prefetch`` registers every cover first): a request whose cover has not been
   answered yet waits for it, so Prometheus evaluates covers on its cores while this
   process replays the releases whose covers have arrived.

Why the answers are the same: a Prometheus range query from ``S`` to ``E`` at step
``d`` is the instant query evaluated at ``S, S + d, ...``; so instant requests of one
query at evaluation seconds in arithmetic progression (a check's slots, its
``offset`` baselines) are one range query, and range requests of one query and step
whose windows lie on a common grid (``range: phase`` windows growing slot by slot)
are slices of one range query over their union. A query rendered differently per
slot (``{{sinceDeploy}}`` in it) repeats no text and is sent slot by slot. A batched
query that Prometheus refuses (a string result, say) is not cached, and each request
it stood for is then sent on its own, so errors read as the operator's would.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import dataclasses
from collections.abc import Awaitable, Iterable
from typing import Any

from postdeploy.kit import exceptions
from postdeploy.providers.prometheus_api import PrometheusApi

__all__ = ["MAX_POINTS", "PREFETCH_CONCURRENCY", "Cover", "ReplayApi", "plan_covers"]

MAX_POINTS = 11_000  # Prometheus refuses range queries with more points per series
# Range queries asked at once by ``prefetch``: 4 keeps a 2-core Prometheus busy (194
# covers one by one took 9.6 s of a 69 s backtest, waiting).
PREFETCH_CONCURRENCY = 4
# A cover may evaluate at most this many times the points its requests need (the gaps
# between two releases' windows are evaluated for nothing).
_WASTE = 2.0


@dataclasses.dataclass(frozen=True)
class Cover:
    """One range query standing for several requests of the same query."""

    url: str
    query: str
    start: int
    end: int
    step: int

    @property
    def points(self) -> int:
        return (self.end - self.start) // self.step + 1


@dataclasses.dataclass
class _Served:
    cover: Cover
    matrix: list[dict[str, Any]] | None = None  # None until answered, or when refused
    by_time: dict[int, list[dict[str, Any]]] | None = None
    times: list[list[float]] | None = None  # each series' sample times, for slicing
    answered: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    async def ready(self) -> bool:
        """Wait for the cover's answer; False when Prometheus refused it."""
        if not self.answered.is_set():
            await self.answered.wait()
        return self.matrix is not None

    def instant(self, second: int) -> list[dict[str, Any]]:
        """The instant query's vector at ``second``, from the matrix."""
        assert self.matrix is not None
        if self.by_time is None:
            by_time: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
            for series in self.matrix:
                metric = series.get("metric") or {}
                for sample in series.get("values") or []:
                    by_time[round(float(sample[0]))].append({"metric": metric, "value": sample})
            self.by_time = dict(by_time)
        return self.by_time.get(second, [])

    def window(self, start: int, end: int) -> list[dict[str, Any]]:
        """The range query's matrix from ``start`` to ``end``, sliced from the cover's."""
        assert self.matrix is not None
        if self.times is None:
            self.times = [[float(s[0]) for s in series.get("values") or []] for series in self.matrix]
        sliced = []
        for series, times in zip(self.matrix, self.times, strict=True):
            lo, hi = bisect.bisect_left(times, start), bisect.bisect_right(times, end)
            if hi > lo:
                sliced.append({"metric": series.get("metric") or {}, "values": series["values"][lo:hi]})
        return sliced


def _runs(seconds: Iterable[int]) -> list[tuple[int, int, int]]:
    """Sorted distinct seconds cut into arithmetic runs ``(start, end, step)``;
    a lone second is a run of step 0."""
    ordered = sorted(set(seconds))
    runs: list[tuple[int, int, int]] = []
    i = 0
    while i < len(ordered):
        if i + 1 == len(ordered):
            runs.append((ordered[i], ordered[i], 0))
            break
        step = ordered[i + 1] - ordered[i]
        j = i + 1
        while j + 1 < len(ordered) and ordered[j + 1] - ordered[j] == step:
            j += 1
        runs.append((ordered[i], ordered[j], step))
        i = j + 1
    return runs


def _merge(url: str, query: str, step: int, windows: list[tuple[int, int]]) -> list[Cover]:
    """Windows on one grid of ``step`` merged into covers of at most MAX_POINTS points
    that evaluate at most ``_WASTE`` times the points the windows need."""
    covers: list[Cover] = []
    current: tuple[int, int, int] | None = None  # start, end, needed points
    for start, end in sorted(windows):
        if current is None:
            current = (start, end, (end - start) // step + 1)
            continue
        c_start, c_end, needed = current
        new_end = max(c_end, end)
        extra = max(0, (end - max(start, c_end + step)) // step + 1)
        points = (new_end - c_start) // step + 1
        if points <= MAX_POINTS and points <= _WASTE * (needed + extra):
            current = (c_start, new_end, needed + extra)
        else:
            covers.append(Cover(url, query, c_start, c_end, step))
            current = (start, end, (end - start) // step + 1)
    if current is not None:
        covers.append(Cover(url, query, current[0], current[1], step))
    return [c for c in covers if c.points <= MAX_POINTS]


def plan_covers(
    instants: Iterable[tuple[str, str, int]], ranges: Iterable[tuple[str, str, int, int, int]]
) -> list[Cover]:
    """Range queries covering recorded requests: instant ``(url, query, second)`` and
    range ``(url, query, start, end, step)``. Requests left uncovered are sent as asked."""
    by_query: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
    for url, query, second in instants:
        by_query[(url, query)].append(second)
    # (url, query, step, start mod step) -> windows on that grid
    grids: dict[tuple[str, str, int, int], list[tuple[int, int]]] = collections.defaultdict(list)
    for (url, query), seconds in by_query.items():
        for start, end, step in _runs(seconds):
            if step > 0:
                grids[(url, query, step, start % step)].append((start, end))
    for url, query, start, end, step in ranges:
        if step > 0:
            grids[(url, query, step, start % step)].append((start, end))
    covers: list[Cover] = []
    for (url, query, step, _), windows in grids.items():
        covers.extend(_merge(url, query, step, windows))
    return covers


class ReplayApi(PrometheusApi):
    """``PrometheusApi`` that records requests, or serves them from prefetched covers."""

    def __init__(self, timeout_seconds: float = 30, connections: int = 8) -> None:
        super().__init__(timeout_seconds, connections)
        self.recording = False
        self.instants: set[tuple[str, str, int]] = set()
        self.ranges: set[tuple[str, str, int, int, int]] = set()
        self._served: dict[tuple[str, str], list[_Served]] = collections.defaultdict(list)
        self.sent: collections.Counter[str] = collections.Counter()  # requests Prometheus got
        self.answered = 0  # requests answered from a cover

    def prefetch(self, covers: Iterable[Cover], concurrency: int = PREFETCH_CONCURRENCY) -> Awaitable[None]:
        """Ask every cover once, ``concurrency`` at a time (Prometheus evaluates them on
        its own cores). Every cover is registered here, in the given order, before the
        returned awaitable asks the first: requests made meanwhile wait for their cover
        (run it as a task next to the replay), and a request is always answered from
        the same cover; a refused cover is passed over (its requests go one by one)."""
        listed = [_Served(cover) for cover in covers]
        for served in listed:
            self._served[(served.cover.url, served.cover.query)].append(served)
        return self._fetch(listed, concurrency)

    async def _fetch(self, listed: list[_Served], concurrency: int) -> None:
        limit = asyncio.Semaphore(max(1, concurrency))

        async def ask(served: _Served) -> None:
            cover = served.cover
            try:
                async with limit:
                    matrix = await self._send_range(
                        cover.url, cover.query, cover.start, cover.end, cover.step
                    )
                served.matrix = matrix if isinstance(matrix, list) else None
            except exceptions.QueryFailed:
                served.matrix = None
            finally:  # whatever happened, nobody waits for this cover any more
                served.answered.set()

        await asyncio.gather(*(ask(served) for served in listed))

    async def _send_range(self, url: str, query: str, start: float, end: float, step: float) -> Any:
        self.sent["range"] += 1
        return await super().query_range(url, query, start, end, step)

    async def query(self, url: str, query: str, time: float) -> Any:
        second = round(time)
        if self.recording:
            self.instants.add((url, query, second))
            return []
        for served in self._served.get((url, query), ()):
            cover = served.cover
            if cover.start <= second <= cover.end and (second - cover.start) % cover.step == 0:
                if not await served.ready():
                    continue
                self.answered += 1
                return served.instant(second)
        self.sent["instant"] += 1
        return await super().query(url, query, time)

    async def query_range(self, url: str, query: str, start: float, end: float, step: float) -> Any:
        first, last, every = round(start), round(end), round(step)
        if self.recording:
            if every == step:
                self.ranges.add((url, query, first, last, every))
            return []
        for served in self._served.get((url, query), ()):
            cover = served.cover
            if (
                cover.step == every == step
                and cover.start <= first
                and last <= cover.end
                and (first - cover.start) % every == 0
            ):
                if not await served.ready():
                    continue
                self.answered += 1
                return served.window(first, last)
        return await self._send_range(url, query, start, end, step)
