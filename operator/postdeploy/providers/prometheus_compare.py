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
  (or before-window's) length, by one range query per side and query, at the
  windows' end times. The built-in template counts with exact sample differences,
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
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from postdeploy.decisions import sequential, templating
from postdeploy.kit import durations, exceptions
from postdeploy.models.checks import Comparison, PrometheusCheck
from postdeploy.models.measurements import Measurement, ReviewContext

__all__ = ["SETTLE", "Grid", "grid", "measure"]

SETTLE = datetime.timedelta(seconds=60)  # a batch counts once it ended this long ago
MAX_BATCHES = 11_000  # Prometheus refuses range queries with more points

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

    def after_times(self) -> list[float]:
        """End of each batch: where ``increase(x[step])`` counts batch i."""
        return [self.deployed + (i + 1) * self.step for i in range(self.batches)]

    def before_window(self) -> float:
        return self.step if self.offset is not None else self.multiplier * self.step

    def before_times(self) -> list[float | None]:
        """End of each batch's before-window; None when it would reach past deployedAt."""
        if self.offset is None:
            return [self.deployed - self.multiplier * i * self.step for i in range(self.batches)]
        ends = [end - self.offset for end in self.after_times()]
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
    ask: RangeQuery, query: str, times: Sequence[float | None], key: Callable[[dict[str, str]], str]
) -> list[dict[str, float]]:
    """The query at each of ``times`` (equally spaced, ascending or descending; None
    skipped), as one range query."""
    present = [(i, t) for i, t in enumerate(times) if t is not None]
    result: list[dict[str, float]] = [{} for _ in times]
    if not present:
        return result
    first, last = min(t for _, t in present), max(t for _, t in present)
    step = abs(present[1][1] - present[0][1]) if len(present) > 1 else 60.0
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


async def measure(spec: PrometheusCheck, ctx: ReviewContext, ask: RangeQuery) -> Measurement:
    """One run of a comparison check: counts from Prometheus, decided nowhere here."""
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
    after_times: list[float | None] = list(batches_grid.after_times())
    before_times = batches_grid.before_times()
    try:
        if totals is None:
            after_slots, before_slots = await asyncio.gather(
                _range(ask, events_after, after_times, _le), _range(ask, events_before, before_times, _le)
            )
        else:
            after_slots, before_slots, after_totals, before_totals = await asyncio.gather(
                _range(ask, events_after, after_times, lambda _: ""),
                _range(ask, events_before, before_times, lambda _: ""),
                _range(ask, totals[0], after_times, lambda _: ""),
                _range(ask, totals[1], before_times, lambda _: ""),
            )
    except exceptions.QueryFailed as exc:
        return Measurement.error(str(exc), query=shown)

    try:
        if totals is None:
            result: sequential.RateComparison | sequential.HistogramComparison = await asyncio.to_thread(
                _compare_buckets, compare, after_slots, before_slots
            )
        else:
            counts = [
                _batch(a, at, b, bt)
                for a, at, b, bt in zip(after_slots, after_totals, before_slots, before_totals, strict=True)
            ]
            result = await asyncio.to_thread(
                sequential.compare_rates, counts, alpha=compare.alpha, min_effect=compare.min_effect
            )
    except ValueError as exc:  # no bucket bounds, or counts Prometheus should not give
        return Measurement.no_data(f"cannot compare: {exc}", query=shown)

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


def _batch(
    events_after: dict[str, float],
    total_after: dict[str, float],
    events_before: dict[str, float],
    total_before: dict[str, float],
) -> sequential.CountBatch:
    n, b = _count(total_after), _count(total_before)
    return sequential.CountBatch(min(_count(events_after), n), n, min(_count(events_before), b), b)


def _compare_buckets(
    compare: Comparison, after_slots: list[dict[str, float]], before_slots: list[dict[str, float]]
) -> sequential.HistogramComparison:
    les = {le for slot in (*after_slots, *before_slots) for le in slot}
    bounds = sorted(b for b in map(_parse_le, les) if not math.isnan(b))
    if not bounds or bounds[-1] != math.inf:
        raise ValueError("the query returned no buckets with an le label ending in +Inf")
    if compare.boundary is not None and compare.boundary not in bounds[:-1]:
        raise ValueError(f"boundary {compare.boundary:g} is not one of the buckets' le bounds")
    return sequential.compare_histograms(
        bounds,
        _bucket_rows(after_slots, bounds),
        _bucket_rows(before_slots, bounds),
        alpha=compare.alpha,
        quantile=compare.quantile,
        min_effect=compare.min_effect,
        boundary=compare.boundary,
    )
