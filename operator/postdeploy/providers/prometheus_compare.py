"""The Prometheus provider's comparison mode: counts after vs before the deployment.

Called by ``postdeploy.providers.prometheus.PrometheusProvider`` for a check whose
``prometheus`` block has ``compare`` (``models.checks.Comparison``). This module only
asks Prometheus for counts and hands them to ``postdeploy.decisions.sequential``,
which compares them and words the value and details (docs/judge.md); ``failWhen``
decides.

The batch grid is fixed by deployedAt and ``step`` alone, so every run - of any
phase, after any restart - rebuilds the same batches and the same test:

- batch i covers ``[deployedAt + i*step, deployedAt + (i+1)*step)``; a batch counts
  once it ended ``SETTLE`` (or one step, if shorter) ago: its last scrapes have
  landed, so it will not change at a later run;
- its before-window is ``[deployedAt - m*(i+1)*step, deployedAt - m*i*step)`` with
  ``m = multiplier`` (mirrored, m times as long), or with ``offset`` the batch itself
  ``offset`` earlier (batches whose copy would end after deployedAt have none);
- per batch the templated query is evaluated with ``{{window}}`` set to the batch's
  (or before-window's) length, by one range query per side at the windows' end
  times (a rate asks its events and its requests in the same query: ``together``).
  The built-in template counts with exact sample differences,
  ``sum((x - x offset {{window}}) >= 0 or (x + 0))`` (a series that is new or was
  reset counts from 0): every event lands in exactly one batch, a count stays a
  count. ``increase(x[{{window}}])`` works too, but it extrapolates from the
  samples inside the window - with two samples per window it doubles half of the
  events - which spreads counts wider than the test assumes.

Counts are rounded to whole numbers and events capped at the requests of their
batch. A batch Prometheus has no requests for counts as none: history beyond
retention only makes the test less sure, never wrong. Prometheus down or refusing a
query is an Error measurement; no request since the deployment (or fewer than
``minRequests`` and no significant rise) is NoData, an Inconclusive run with "not
enough traffic yet (N requests ...)".

Incremental: the provider keeps each comparison's running test (``Comparisons``),
so a run asks Prometheus only for the batches it has not kept (same URL, rendered
queries, deployedAt, grid and ``compare`` block) and adds them to the kept test
(``decisions.sequential.RateAccumulator``, ``HistogramAccumulator``), whose result
equals the test recomputed over all batches. A batch is kept only once it ended
``HOLD`` ago: the newer ones, whose last scrapes could still land (a slow scrape, a
late remote write), are asked and counted afresh at every run and looked at on top
of the kept test (``look``: one bound search, no copy of the test), never added to it;
so a late scrape corrects the count of its batch as a full recount would. Their
before-windows lie before the deployment: they are asked again only until they
ended ``HOLD`` ago, then kept with the state until their batch is (a rate's two counts;
a histogram's bucket counts packed, two numbers a bucket); a run that asks one asks
with it those of the next ``AHEAD`` batches (they have ended too), so most runs ask no
before-window at all. A run
costs then what its newest batches cost, instead of growing
with the review's age (at 4,320 one-minute batches, 72 hours, the full recomputation
took 0.2-0.3 s of CPU a run). Nothing is written anywhere: an operator that
restarts (or a test evicted from the bounded memory, ``MAX_KEPT``) counts every
batch afresh at its next run and gets the same answer. A query that fails leaves the
kept test as it was; a run that raises or is cancelled half-way drops it.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import itertools
import math
import weakref
from array import array
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Any, TypeVar

from postdeploy.decisions import sequential, templating
from postdeploy.kit import durations, exceptions, metrics
from postdeploy.models.checks import Comparison, PrometheusCheck
from postdeploy.models.measurements import Measurement, ReviewContext

__all__ = ["HOLD", "MAX_KEPT", "SETTLE", "Comparisons", "Grid", "firm", "grid", "measure", "settled_by"]

SETTLE = datetime.timedelta(seconds=60)  # a batch counts once it ended this long ago
# A kept test holds a batch once it ended this long ago; newer batches are counted
# afresh at every run (their last scrapes could still land).
HOLD = datetime.timedelta(minutes=5)
MAX_BATCHES = 11_000  # Prometheus refuses range queries with more points
# What the comparisons' states may keep together, in 8-byte numbers (128 MB): three
# numbers a batch with events, in arrays, and 20 a memo point (a dict entry of up to
# 160 bytes; ``sequential._MEMO_POINT_NUMBERS``). Sized for 10,000 active reviews of the
# built-in template in a steady stream (docs/benchmarks.md): about 3,000 of them in
# the extended phase, two comparisons each, up to 1,440 batches.
MAX_KEPT = 16_000_000
# A rate comparison that asks a before-window asks those of this many batches to come
# with it (one range query, a point each): they are fixed and long ended, so the runs
# that close those batches ask none (one of a run's two range queries).
AHEAD = 15
# What a kept before-window count costs, in 8-byte numbers: a dict entry holding a
# tuple of two floats (about 150 bytes).
_BEFORE_NUMBERS = 20

# Runs a range query (query, start, end, step) -> data.result; the provider passes
# one that goes through its coalescer and pooled API.
RangeQuery = Callable[[str, float, float, float], Awaitable[Any]]


@dataclasses.dataclass(frozen=True)
class Grid:
    """Where the batches and their before-windows lie (Unix seconds)."""

    deployed: float
    step: float
    batches: int
    multiplier: int
    offset: float | None

    def after_times(self, start: int = 0) -> list[float]:
        """End of each batch from ``start`` on: where ``increase(x[step])`` counts batch i."""
        return [self.deployed + (i + 1) * self.step for i in range(start, self.batches)]

    def before_window(self) -> float:
        return self.step if self.offset is not None else self.multiplier * self.step

    def before_times(self, start: int = 0) -> list[float | None]:
        """End of each batch's before-window from ``start`` on; None when it would
        reach past deployedAt."""
        return self.before_ends(start, self.batches)

    def before_ends(self, first: int, last: int) -> list[float | None]:
        """End of the before-window of batches ``first`` to ``last - 1``, complete or
        not yet (a before-window is fixed by the grid alone); None when it would reach
        past deployedAt."""
        if self.offset is None:
            return [self.deployed - self.multiplier * i * self.step for i in range(first, last)]
        ends = [self.deployed + (i + 1) * self.step - self.offset for i in range(first, last)]
        return [end if end <= self.deployed + 1e-6 else None for end in ends]


def grid(spec: PrometheusCheck, compare: Comparison, ctx: ReviewContext) -> Grid:
    """The batches complete by ``ctx.now``; ValueError for a step or offset that cannot work."""
    step = durations.parse_duration(spec.step).total_seconds()
    if step < 1:
        raise ValueError(f"step {spec.step} is shorter than a second")
    offset = durations.parse_duration(compare.offset).total_seconds() if compare.offset else None
    if offset is not None and offset < step:
        raise ValueError(f"offset {compare.offset} is shorter than one step ({spec.step})")
    settle = min(SETTLE.total_seconds(), step)
    elapsed = (ctx.now - ctx.deployed_at).total_seconds() - settle
    batches = max(0, math.floor(elapsed / step + 1e-9))
    if batches > MAX_BATCHES:
        raise ValueError(
            f"{batches} batches of {spec.step} since the deployment; Prometheus answers at "
            f"most {MAX_BATCHES} points: set a longer step"
        )
    return Grid(ctx.deployed_at.timestamp(), step, batches, compare.multiplier, offset)


def settled_by(batches: Grid, now: datetime.datetime, hold: datetime.timedelta = HOLD) -> float:
    """The time (Unix seconds) by which a window must have ended to be kept: ``hold``
    (at least a batch's settling time) before ``now``."""
    return now.timestamp() - max(hold.total_seconds(), min(SETTLE.total_seconds(), batches.step))


def firm(batches: Grid, now: datetime.datetime, hold: datetime.timedelta = HOLD) -> int:
    """How many of the batches ended ``hold`` (at least their settling time) before
    ``now``: those a kept test may hold; the rest are counted afresh at each run."""
    elapsed = settled_by(batches, now, hold) - batches.deployed
    return min(batches.batches, max(0, math.floor(elapsed / batches.step + 1e-9)))


def _by_time(
    result: Any, start: float, step: float, count: int, key: Callable[[dict[str, str]], str]
) -> list[dict[str, float]]:
    """Per evaluation time (index from ``start`` in ``step``s), the sum of the finite
    samples of each ``key(labels)``; times without samples are empty."""
    if not isinstance(result, list):
        raise exceptions.QueryFailed(f"unexpected answer from Prometheus: {type(result).__name__}")
    slots: list[dict[str, float]] = [{} for _ in range(count)]
    for item in result:
        if not isinstance(item, dict):
            raise exceptions.QueryFailed("unexpected answer from Prometheus: not a list of series")
        name = key({str(k): str(v) for k, v in (item.get("metric") or {}).items()})
        for sample in item.get("values") or []:
            try:
                at, value = float(sample[0]), float(sample[1])
            except (TypeError, ValueError, IndexError):
                continue
            index = round((at - start) / step)
            if math.isfinite(value) and 0 <= index < count and abs(at - start - index * step) < 1:
                slots[index][name] = slots[index].get(name, 0.0) + max(0.0, value)
    return slots


async def _range(
    ask: RangeQuery,
    query: str,
    times: Sequence[float | None],
    step: float,
    key: Callable[[dict[str, str]], str],
) -> list[dict[str, float]]:
    """The query at each of ``times`` (``step`` apart, ascending or descending; None
    skipped), as one range query."""
    present = [(i, t) for i, t in enumerate(times) if t is not None]
    result: list[dict[str, float]] = [{} for _ in times]
    if not present:
        return result
    first, last = min(t for _, t in present), max(t for _, t in present)
    slots = _by_time(await ask(query, first, last, step), first, step, round((last - first) / step) + 1, key)
    for i, t in present:
        result[i] = slots[round((t - first) / step)]
    return result


def _count(slot: dict[str, float]) -> float:
    return float(round(sum(slot.values())))


def _le(labels: dict[str, str]) -> str:
    return labels.get("le", "")


def _bucket_rows(slots: list[dict[str, float]], bounds: list[float]) -> list[list[float]]:
    """Cumulative counts per bound for each batch: rounded, missing buckets filled
    from the bound below, and kept non-decreasing (each bucket is extrapolated on its
    own, so neighbours can disagree by a fraction)."""
    rows = []
    for slot in slots:
        by_bound = {_parse_le(le): value for le, value in slot.items()}
        row, running = [], 0.0
        for bound in bounds:
            running = max(running, float(round(by_bound.get(bound, running))))
            row.append(running)
        rows.append(row)
    return rows


def _parse_le(text: str) -> float:
    try:
        return float(text)  # "+Inf" parses as inf
    except ValueError:
        return math.nan


@dataclasses.dataclass(eq=False)
class _State:
    # None: a histogram whose every batch so far came without buckets (no data yet).
    accumulator: sequential.RateAccumulator | sequential.HistogramAccumulator | None
    bounds: frozenset[float]  # the le bounds seen so far (histograms; empty for rates)
    empty_batches: int = 0  # batches counted without buckets, when ``accumulator`` is None
    # Rates: the before-window counts (events, requests) of batches not yet kept whose
    # before-window ended ``hold`` ago, by batch index - up to ``AHEAD`` batches not yet
    # closed among them: they cannot change, so a run does not ask them again.
    before: dict[int, tuple[float, float]] = dataclasses.field(default_factory=dict)
    # Histograms: the same for their before-windows' bucket counts (``_packed``).
    before_rows: dict[int, array[float]] = dataclasses.field(default_factory=dict)

    @property
    def batches(self) -> int:
        return self.accumulator.batches if self.accumulator is not None else self.empty_batches

    @property
    def size(self) -> int:
        kept = self.accumulator.size if self.accumulator is not None else 0
        rows = sum(_BEFORE_NUMBERS + len(row) for row in self.before_rows.values())
        return kept + _BEFORE_NUMBERS * len(self.before) + rows


class Comparisons:
    """What earlier runs of each comparison counted, so a run adds only the batches
    closed since (see the module docstring). Keyed by everything that fixes the
    batches and the test: the Prometheus URL, the rendered queries, deployedAt, the
    grid and the ``compare`` block. So a phase's continuation of a check (the same
    queries, grid and parameters) continues the same state, and a change of any of
    them starts afresh.

    Bounded: the states together keep at most ``max_kept`` 8-byte numbers (each
    state's ``size``: three a batch with events and the bound searches' memo at its bytes'
    worth; a histogram drops
    its bucket rows once added, ``keep_rows=False``); beyond it the least recently
    used are dropped, and their next run recomputes from Prometheus. ``added`` /
    ``rebuilt`` count runs that added to a state and runs that counted every batch
    (also the ``postdeploy_comparison_runs_total`` metric). ``hold``: how long after
    its end a batch is kept (``HOLD``; the backtest, whose history has long settled,
    keeps at once)."""

    def __init__(self, max_kept: int = MAX_KEPT, hold: datetime.timedelta = HOLD) -> None:
        self.max_kept = max_kept
        self.hold = hold
        self._states: collections.OrderedDict[Hashable, _State] = collections.OrderedDict()
        self._sizes: dict[Hashable, int] = {}  # each state's size when last put
        self._locks: weakref.WeakValueDictionary[Hashable, asyncio.Lock] = weakref.WeakValueDictionary()
        self.kept = 0  # numbers kept by all states (as of their last run)
        self.added = 0
        self.rebuilt = 0

    def __len__(self) -> int:
        return len(self._states)

    def lock(self, key: Hashable) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    def get(self, key: Hashable) -> _State | None:
        state = self._states.get(key)
        if state is not None:
            self._states.move_to_end(key)
        return state

    def put(self, key: Hashable, state: _State) -> None:
        self._states[key] = state
        self._states.move_to_end(key)
        self.kept += state.size - self._sizes.get(key, 0)
        self._sizes[key] = state.size
        while self.kept > self.max_kept and len(self._states) > 1:
            self.discard(next(iter(self._states)))

    def discard(self, key: Hashable) -> None:
        self._states.pop(key, None)
        self.kept -= self._sizes.pop(key, 0)


async def measure(
    spec: PrometheusCheck,
    ctx: ReviewContext,
    ask: RangeQuery,
    memory: Comparisons | None = None,
    source: str = "",
) -> Measurement:
    """One run of a comparison check: counts from Prometheus, decided nowhere here.

    With ``memory`` (the provider's), the batches counted by earlier runs of the same
    comparison are not asked again: only those closed since are queried and added.
    ``source`` names the Prometheus ``ask`` goes to (part of the state's key)."""
    compare = spec.compare
    assert compare is not None
    try:
        batches_grid = grid(spec, compare, ctx)
        values = ctx.template_values()
        after_window = durations.promql_duration(datetime.timedelta(seconds=batches_grid.step))
        before_window = durations.promql_duration(datetime.timedelta(seconds=batches_grid.before_window()))
        events_after = templating.render_promql(spec.query, {**values, "window": after_window})
        events_before = templating.render_promql(spec.query, {**values, "window": before_window})
        totals = (
            (
                templating.render_promql(compare.total, {**values, "window": after_window}),
                templating.render_promql(compare.total, {**values, "window": before_window}),
            )
            if compare.total
            else None
        )
    except ValueError as exc:
        return Measurement.error(f"invalid check: {exc}", query=spec.query)
    shown = events_after
    if batches_grid.batches == 0:
        return Measurement.no_data(
            f"not enough traffic yet (0 requests: the first {spec.step} batch is counted "
            f"once it ended and settled)",
            query=shown,
        )
    queries = _Queries(events_after, events_before, totals)
    g = batches_grid
    key = (
        source,
        events_after,
        events_before,
        totals,
        g.deployed,
        g.step,
        g.multiplier,
        g.offset,
        compare.model_dump_json(),
    )
    try:
        if memory is None:
            everything = batches_grid.batches
            result, _ = await _count_and_compare(ask, queries, batches_grid, compare, None, everything)
        else:
            firm_batches = firm(batches_grid, ctx.now, memory.hold)
            async with memory.lock(key):
                state = memory.get(key)
                if state is not None and state.batches > firm_batches:
                    # Another run is ahead (a later clock): count this one afresh, keep that.
                    result, _ = await _count_and_compare(
                        ask, queries, batches_grid, compare, None, batches_grid.batches
                    )
                else:
                    try:
                        result, kept = await _count_and_compare(
                            ask,
                            queries,
                            batches_grid,
                            compare,
                            state,
                            firm_batches,
                            settled_by(batches_grid, ctx.now, memory.hold),
                        )
                    except exceptions.QueryFailed:
                        raise  # before anything was added: the state stands
                    except sequential.BoundaryMoved:
                        # The latency boundary moved and the kept test has no rows to
                        # rebuild from: count every batch afresh now, and again into a
                        # new test at the next run.
                        memory.discard(key)
                        memory.rebuilt += 1
                        everything = batches_grid.batches
                        result, _ = await _count_and_compare(
                            ask, queries, batches_grid, compare, None, everything
                        )
                        kept = None
                    except BaseException:
                        memory.discard(key)  # possibly half-added: the next run counts afresh
                        raise
                    if kept is not None:
                        memory.put(key, kept)
                        if kept is state:
                            memory.added += 1
                        else:
                            memory.rebuilt += 1
                    metrics.record_comparison(kept is not None and kept is state, len(memory), memory.kept)
    except exceptions.QueryFailed as exc:
        return Measurement.error(str(exc), query=shown)
    except ValueError as exc:  # no bucket bounds, or counts Prometheus should not give
        return Measurement.no_data(f"cannot compare: {exc}", query=shown)

    if result is None:
        return Measurement.no_data(
            "cannot compare: the query returned no buckets with an le label ending in +Inf", query=shown
        )
    report = sequential.measurement_details(result, min_requests=compare.min_requests)
    details = {
        **report.details,
        "step": spec.step,
        "beforeWindow": before_window,
        "multiplier": compare.multiplier if compare.offset is None else None,
        "offset": compare.offset,
    }
    if totals is not None:
        details["totalQuery"] = totals[0]
    if report.value is None:
        return Measurement.no_data(report.message, query=shown, details=details)
    return Measurement.ok(report.value, query=shown, details=details, message=report.message)


@dataclasses.dataclass(frozen=True)
class _Queries:
    events_after: str
    events_before: str
    totals: tuple[str, str] | None  # requests after and before; None: histogram buckets


# A rate's events and requests are asked in one range query per window: each series
# labelled with which count it is (``together``), so Prometheus gets half the requests.
PART = "postdeploy_part"


def together(events: str, total: str) -> str:
    """One query answering both ``events`` and ``total``, each series labelled
    ``PART="events"`` or ``PART="total"`` (label sets apart, so ``or`` keeps both)."""
    return (
        f'label_replace(({events}), "{PART}", "events", "", "") '
        f'or label_replace(({total}), "{PART}", "total", "", "")'
    )


def _part(labels: dict[str, str]) -> str:
    return labels.get(PART, "")


def _split(slots: list[dict[str, float]]) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """``together``'s answers per time as (events, requests), each as ``_one`` keys it."""
    events = [{"": slot["events"]} if "events" in slot else {} for slot in slots]
    totals = [{"": slot["total"]} if "total" in slot else {} for slot in slots]
    return events, totals


async def _slots(
    ask: RangeQuery,
    queries: _Queries,
    batches: Grid,
    start: int,
    state: _State | None = None,
    settled: float = -math.inf,
) -> tuple[list[dict[str, float]], ...]:
    """Per batch from ``start`` on: the after- and before-window answers (by ``le``
    for buckets), then for rates the requests after and before. The before-window
    answers that ``state`` holds are not asked again; those asked whose window ended by
    ``settled`` (and the next ``AHEAD`` batches', see :func:`_before_times`) are put in
    it."""
    after_times: list[float | None] = list(batches.after_times(start))
    ends = batches.before_times(start)
    after_step, before_step = batches.step, batches.before_window()
    if queries.totals is None:
        rows = state.before_rows if state is not None else {}
        before_times = _before_times(batches, start, ends, rows, state is not None, settled)
        after, before = await asyncio.gather(
            _range(ask, queries.events_after, after_times, after_step, _le),
            _range(ask, queries.events_before, before_times, before_step, _le),
        )
        for i, end in enumerate(before_times):
            row = rows.get(start + i)
            if i < len(ends) and row is not None:
                before[i] = _unpacked(row)
            elif state is not None and end is not None and end <= settled:
                packed = _packed(before[i])
                if packed is not None:
                    rows[start + i] = packed
        return after, before[: len(ends)]
    known = state.before if state is not None else {}
    before_times = _before_times(batches, start, ends, known, state is not None, settled)
    both_after, both_before = await asyncio.gather(
        _range(ask, together(queries.events_after, queries.totals[0]), after_times, after_step, _part),
        _range(ask, together(queries.events_before, queries.totals[1]), before_times, before_step, _part),
    )
    (after, after_totals), (before, before_totals) = _split(both_after), _split(both_before)
    for i, end in enumerate(before_times):
        counted = known.get(start + i)
        if i < len(ends) and counted is not None:
            before[i], before_totals[i] = {"": counted[0]}, {"": counted[1]}
        elif state is not None and end is not None and end <= settled:
            known[start + i] = (_count(before[i]), _count(before_totals[i]))
    return after, before[: len(ends)], after_totals, before_totals[: len(ends)]


def _before_times(
    batches: Grid,
    start: int,
    ends: list[float | None],
    known: Mapping[int, object],
    ahead: bool,
    settled: float,
) -> list[float | None]:
    """The before-window ends to ask: those of the batches from ``start`` on not
    ``known``, and - when any is asked and ``ahead`` - the next ``AHEAD`` batches'
    that have ended by ``settled`` and are not known (asking anyway, the same range
    query brings them: they lie before the deployment, so all but the first have ended
    long since, and the runs that close those batches ask no before-window at all)."""
    times = [None if start + i in known else end for i, end in enumerate(ends)]
    if ahead and any(t is not None for t in times):
        coming = batches.before_ends(batches.batches, batches.batches + AHEAD)
        times += [
            end if end is not None and end <= settled and batches.batches + j not in known else None
            for j, end in enumerate(coming)
        ]
    return times


def _packed(slot: dict[str, float]) -> array[float] | None:
    """A histogram's before-window answer kept compactly: (bound, count) pairs in one
    array; None when an ``le`` label is not a number (not kept: asked again)."""
    pairs = sorted((_parse_le(le), value) for le, value in slot.items())
    if any(math.isnan(bound) for bound, _ in pairs):
        return None
    return array("d", itertools.chain.from_iterable(pairs))


def _unpacked(row: array[float]) -> dict[str, float]:
    """The answer ``_packed`` kept, with ``le`` labels that parse to the same bounds
    ("inf" for "+Inf")."""
    return {repr(bound): count for bound, count in zip(row[::2], row[1::2], strict=True)}


def _one(_: dict[str, str]) -> str:
    return ""


async def _count_and_compare(
    ask: RangeQuery,
    queries: _Queries,
    batches: Grid,
    compare: Comparison,
    state: _State | None,
    firm_batches: int,
    settled: float = -math.inf,
) -> tuple[sequential.RateComparison | sequential.HistogramComparison | None, _State]:
    """Asks the counts of the batches ``state`` has not counted (all without one) and
    compares. The first ``firm_batches`` are added to the state; the later ones are
    looked at on top of it (``look``) and not kept. Returns the result (None: a
    histogram query that has returned no buckets at all yet) and the state holding the
    firm batches: ``state`` itself when it could be continued, else a new one (a
    histogram whose answers bring an ``le`` bound the state had not seen is counted
    afresh, as its earlier batches' rows would have been filled differently)."""
    start = state.batches if state is not None else 0
    slots = await _slots(ask, queries, batches, start, state, settled)
    if queries.totals is not None:
        after, before, after_totals, before_totals = slots
        counts = [_batch(*row) for row in zip(after, after_totals, before, before_totals, strict=True)]
        if state is None or not isinstance(state.accumulator, sequential.RateAccumulator):
            state = _State(
                sequential.RateAccumulator(alpha=compare.alpha, min_effect=compare.min_effect), frozenset()
            )
        rates = state.accumulator
        assert isinstance(rates, sequential.RateAccumulator)

        def add_counts(accumulator: sequential.RateAccumulator, part: slice) -> None:
            accumulator.add(counts[part])

        def look_counts(accumulator: sequential.RateAccumulator, part: slice) -> sequential.RateComparison:
            return accumulator.look(counts[part])

        cut = firm_batches - start
        result = await _looked(rates, add_counts, look_counts, cut, len(counts))
        return result, _pruned(state)
    after, before = slots
    seen = _bounds(after, before)
    if state is not None and not seen <= state.bounds:
        state, start = None, 0
        after, before = await _slots(ask, queries, batches, 0)
        seen = _bounds(after, before)
    if state is None or state.accumulator is None:
        if not seen:  # no buckets in any batch yet: nothing to compare, nothing to ask again
            state = state or _State(None, frozenset())
            state.empty_batches = firm_batches
            return None, state
        bounds = sorted(seen)
        if bounds[-1] != math.inf:
            raise ValueError("the query returned no buckets with an le label ending in +Inf")
        if compare.boundary is not None and compare.boundary not in bounds[:-1]:
            raise ValueError(f"boundary {compare.boundary:g} is not one of the buckets' le bounds")
        fresh = sequential.HistogramAccumulator(
            bounds,
            alpha=compare.alpha,
            quantile=compare.quantile,
            min_effect=compare.min_effect,
            boundary=compare.boundary,
            keep_rows=False,  # a moved boundary is counted afresh (measure)
        )
        state = _State(fresh, frozenset(bounds))
    histogram = state.accumulator
    assert isinstance(histogram, sequential.HistogramAccumulator)
    bounds = list(histogram.bounds)
    rows_after, rows_before = _bucket_rows(after, bounds), _bucket_rows(before, bounds)

    def add_rows(accumulator: sequential.HistogramAccumulator, part: slice) -> None:
        accumulator.add(rows_after[part], rows_before[part])

    def look_rows(
        accumulator: sequential.HistogramAccumulator, part: slice
    ) -> sequential.HistogramComparison:
        return accumulator.look(rows_after[part], rows_before[part])

    cut = firm_batches - start
    result = await _looked(histogram, add_rows, look_rows, cut, len(rows_after))
    return result, _pruned(state)


def _pruned(state: _State) -> _State:
    """``state`` without the before-window answers of batches it now holds."""
    for index in [i for i in state.before if i < state.batches]:
        del state.before[index]
    for index in [i for i in state.before_rows if i < state.batches]:
        del state.before_rows[index]
    return state


_Accumulator = TypeVar("_Accumulator", sequential.RateAccumulator, sequential.HistogramAccumulator)


# A test of fewer batches than this is looked at on the event loop: a look then costs
# about a millisecond (``bench.judge_looks``' young test), 8-9 ms when all 127 batches
# are counted afresh (``compare_rates`` / ``compare_histograms`` on a loaded machine),
# while handing it to a worker thread costs 65-115 microseconds of CPU and the loop's
# wait for the GIL back. Larger tests - counted afresh over days of batches after a
# restart - go to a thread, so the loop goes on.
INLINE_BATCHES = 128


async def _looked(
    accumulator: _Accumulator,
    add: Callable[[_Accumulator, slice], None],
    look: Callable[[_Accumulator, slice], Any],
    cut: int,
    count: int,
) -> Any:
    """Adds batches ``[:cut]`` of the ones asked to ``accumulator`` and looks at
    ``[cut:]`` on top of it without adding them: one bound search, no copy of the kept
    test. On the event loop for a young test, else in a worker thread."""

    def add_and_look() -> Any:
        add(accumulator, slice(0, cut))
        return look(accumulator, slice(cut, count))

    if accumulator.batches + count < INLINE_BATCHES:
        return add_and_look()
    return await asyncio.to_thread(add_and_look)


def _bounds(*slot_lists: list[dict[str, float]]) -> frozenset[float]:
    les = {le for slots in slot_lists for slot in slots for le in slot}
    return frozenset(b for b in map(_parse_le, les) if not math.isnan(b))


def _batch(
    events_after: dict[str, float],
    total_after: dict[str, float],
    events_before: dict[str, float],
    total_before: dict[str, float],
) -> sequential.CountBatch:
    n, b = _count(total_after), _count(total_before)
    return sequential.CountBatch(min(_count(events_after), n), n, min(_count(events_before), b), b)
