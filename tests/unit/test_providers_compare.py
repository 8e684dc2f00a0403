"""The Prometheus provider's comparison mode, against a fake range-query function.

``prometheus_compare.measure`` takes the function that runs range queries, so these
tests hand it one that computes counts from a model of a service (the real
Prometheus path is covered by ``tests/e2e/test_judge.py``).

Covers:
- the batch grid: anchored at deployedAt, only batches that ended SETTLE ago, the
  mirrored before-windows (multiplier) and ``offset`` ones, windows past deployedAt
  dropped; too many batches and an offset shorter than a step are invalid;
- ``{{window}}`` templated per side; the queries sent and the value/details reported
  (ratio, ratioLower, ratioUpper, pValue, alpha, minEffect, counts);
- a doubled error share fails ``ratioLower > 1 + minEffect and pValue < alpha``, an
  unchanged one does not; histogram buckets by ``le``;
- quiet: no complete batch or too few requests is NoData "not enough traffic yet";
  Prometheus failing is an Error; the model refuses compare with range or without
  exactly one of total/buckets; a baseline with compare is an Error.
"""

from __future__ import annotations

import datetime
import math
import random
import re
import threading
from typing import Any

import pydantic
import pytest

from postdeploy.decisions import conditions, sequential
from postdeploy.kit import exceptions
from postdeploy.models.checks import PrometheusCheck
from postdeploy.models.measurements import MeasurementState
from postdeploy.providers import prometheus_compare
from postdeploy.providers.prometheus import PrometheusProvider
from tests.contexts import NOW, make_context
from tests.promql import PART, parts

DEPLOYED = NOW - datetime.timedelta(minutes=31)
EVENTS = 'sum(increase(http_requests_total{job="shop", code=~"5.."}[{{window}}]))'
TOTAL = 'sum(increase(http_requests_total{job="shop"}[{{window}}]))'
BUCKETS = 'sum by (le) (increase(http_request_duration_seconds_bucket{job="shop"}[{{window}}]))'
FAIL_WHEN = conditions.parse("ratioLower > 1 + minEffect and pValue < alpha")


def test_together_asks_both_counts_labelled_apart() -> None:
    query = prometheus_compare.together("sum(a) or vector(0)", "sum(b)")
    assert parts(query) == ("sum(a) or vector(0)", "sum(b)")
    assert query == (
        'label_replace((sum(a) or vector(0)), "postdeploy_part", "events", "", "") '
        'or label_replace((sum(b)), "postdeploy_part", "total", "", "")'
    )


class FakePrometheus:
    """Counts of a service at ``rps`` with ``share`` errors before and ``share * rise``
    after the deployment, as ``increase(...[w])`` at each evaluation time."""

    def __init__(self, rps: float = 20.0, share: float = 0.01, rise: float = 1.0, fail: bool = False) -> None:
        self.rps, self.share, self.rise, self.fail = rps, share, rise, fail
        self.asked: list[tuple[str, float, float, float]] = []

    def count(self, query: str, at: float, window: float) -> float:
        deployed = DEPLOYED.timestamp()
        after = max(0.0, at - max(deployed, at - window))
        before = window - after
        total = self.rps * window
        if 'code=~"5.."' not in query:
            return total
        return self.rps * self.share * (before + self.rise * after)

    async def __call__(self, query: str, start: float, end: float, step: float) -> Any:
        self.asked.append((query, start, end, step))
        if self.fail:
            raise exceptions.QueryFailed("Prometheus at http://127.0.0.1:9 is unreachable")
        together = parts(query)
        if together is not None:  # a rate's events and requests in one query
            answers = []
            for part, asked in zip(("events", "total"), together, strict=True):
                for series in await self.answer(asked, start, end, step):
                    answers.append({**series, "metric": {**series["metric"], PART: part}})
            return answers
        return await self.answer(query, start, end, step)

    async def answer(self, query: str, start: float, end: float, step: float) -> Any:
        window = float(re.search(r"\[(\d+)s\]", query).group(1))  # type: ignore[union-attr]
        times = [start + i * step for i in range(round((end - start) / step) + 1)]
        if "bucket" in query:
            return [
                {"metric": {"le": le}, "values": [[t, str(self.buckets(t, window, le))] for t in times]}
                for le in ("0.1", "0.25", "0.5", "+Inf")
            ]
        return [{"metric": {}, "values": [[t, str(self.count(query, t, window))] for t in times]}]

    def buckets(self, at: float, window: float, le: str) -> float:
        total = self.rps * window
        slow_share = 0.05 * (self.rise if at > DEPLOYED.timestamp() else 1.0)
        return {"0.1": 0.7 * total, "0.25": (1 - slow_share) * total, "0.5": 0.99 * total, "+Inf": total}[le]


def _spec(**compare: Any) -> PrometheusCheck:
    compare.setdefault("total", TOTAL)
    if compare.get("buckets"):
        compare.pop("total")
    return PrometheusCheck(query=BUCKETS if compare.get("buckets") else EVENTS, step="60s", compare=compare)


async def _measure(fake: FakePrometheus, spec: PrometheusCheck, **context: Any) -> Any:
    ctx = make_context(deployed_at=context.pop("deployed_at", DEPLOYED), **context)
    return await prometheus_compare.measure(spec, ctx, fake)


async def test_batches_are_anchored_at_the_deployment_and_settled() -> None:
    fake = FakePrometheus()
    measurement = await _measure(fake, _spec())
    # 31 minutes since the deployment, the last minute not settled: 30 batches.
    assert measurement.details["batches"] == 30
    deployed = DEPLOYED.timestamp()
    after = [a for a in fake.asked if "[60s]" in a[0]]
    before = [a for a in fake.asked if "[360s]" in a[0]]
    assert {a[1:] for a in after} == {(deployed + 60, deployed + 30 * 60, 60)}
    assert {a[1:] for a in before} == {(deployed - 6 * 29 * 60, deployed, 360)}
    assert measurement.details["totalAfter"] == 20 * 60 * 30
    assert measurement.details["totalBefore"] == 20 * 360 * 30
    assert measurement.details["beforeWindow"] == "360s"


async def test_an_offset_compares_each_batch_with_itself_a_week_earlier() -> None:
    fake = FakePrometheus()
    measurement = await _measure(fake, _spec(offset="1w"))
    week = 7 * 86400
    deployed = DEPLOYED.timestamp()
    assert {a[1:] for a in fake.asked} == {
        (deployed + 60 - week, deployed + 1800 - week, 60),
        (deployed + 60, deployed + 1800, 60),
    }
    assert measurement.details["totalBefore"] == measurement.details["totalAfter"]
    assert measurement.details["offset"] == "1w" and measurement.details["multiplier"] is None


async def test_offset_windows_reaching_past_the_deployment_carry_nothing() -> None:
    fake = FakePrometheus()
    measurement = await _measure(fake, _spec(offset="10m"))
    # Only the first 10 batches have a copy that ends by deployedAt.
    assert measurement.details["totalBefore"] == 20 * 60 * 10


async def test_a_doubled_error_share_fails_and_an_unchanged_one_passes() -> None:
    regressed = await _measure(FakePrometheus(rise=2.0), _spec(alpha=0.005, min_effect=0.2))
    healthy = await _measure(FakePrometheus(rise=1.0), _spec(alpha=0.005, min_effect=0.2))
    assert regressed.state is MeasurementState.OK and healthy.state is MeasurementState.OK
    assert regressed.value == pytest.approx(2.0)
    assert FAIL_WHEN.evaluate({k: v for k, v in regressed.details.items() if isinstance(v, float)})
    assert not FAIL_WHEN.evaluate({k: v for k, v in healthy.details.items() if isinstance(v, float)})
    assert healthy.value == pytest.approx(1.0)
    assert healthy.details["ratioLower"] < 1.0 < healthy.details["ratioUpper"]
    assert (healthy.details["alpha"], healthy.details["minEffect"]) == (0.005, 0.2)
    assert "[60s]" in (healthy.query or "") and 'code=~"5.."' in (healthy.query or "")
    assert healthy.details["totalQuery"].endswith("[60s]))")
    assert "after vs" in healthy.message


async def test_histogram_buckets_compare_the_slow_tail() -> None:
    regressed = await _measure(FakePrometheus(rise=3.0), _spec(buckets=True))
    healthy = await _measure(FakePrometheus(rise=1.0), _spec(buckets=True))
    assert regressed.details["boundary"] == healthy.details["boundary"] == 0.25
    assert regressed.value == pytest.approx(3.0)
    assert regressed.details["pValue"] < 0.005 < healthy.details["pValue"]
    assert healthy.details["quantileBefore"] == pytest.approx(healthy.details["quantileAfter"])


async def test_quiet_services_are_inconclusive_not_failed() -> None:
    too_early = await _measure(FakePrometheus(), _spec(), deployed_at=NOW - datetime.timedelta(seconds=90))
    assert too_early.state is MeasurementState.NO_DATA
    assert too_early.message.startswith("not enough traffic yet (0 requests")
    # 0.01 rps: 0.6 requests per batch, rounded to 1: 30 in 30 batches.
    quiet = await _measure(FakePrometheus(rps=0.01), _spec(min_requests=100))
    assert quiet.state is MeasurementState.NO_DATA
    assert quiet.message.startswith("not enough traffic yet (30 requests")


async def test_prometheus_failing_is_an_error_not_a_failure() -> None:
    measurement = await _measure(FakePrometheus(fail=True), _spec())
    assert measurement.state is MeasurementState.ERROR
    assert "unreachable" in measurement.message


async def test_a_baseline_with_compare_is_an_error() -> None:
    from postdeploy.models.checks import Baseline

    provider = PrometheusProvider("http://127.0.0.1:9")
    try:
        measurement = await provider.measure(_spec(), make_context(), Baseline(pre_deploy=True))
    finally:
        await provider.close()
    assert measurement.state is MeasurementState.ERROR and "baseline" in measurement.message


def test_invalid_grids_are_refused() -> None:
    ctx = make_context(deployed_at=NOW - datetime.timedelta(days=10))
    spec = _spec()
    with pytest.raises(ValueError, match="at most 11000 points"):
        prometheus_compare.grid(spec, spec.compare, ctx)  # type: ignore[arg-type]
    short = _spec(offset="30s")
    with pytest.raises(ValueError, match="shorter than one step"):
        prometheus_compare.grid(short, short.compare, make_context())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "block",
    [
        {"query": EVENTS, "range": "1h", "compare": {"total": TOTAL}},
        {"query": EVENTS, "compare": {}},
        {"query": EVENTS, "compare": {"total": TOTAL, "buckets": True}},
        {"query": EVENTS, "compare": {"total": TOTAL, "alpha": 0}},
    ],
)
def test_the_model_refuses_impossible_comparisons(block: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        PrometheusCheck.model_validate(block)


def test_the_before_window_of_batch_i_mirrors_it() -> None:
    grid = prometheus_compare.Grid(deployed=1000.0, step=60.0, batches=3, multiplier=6, offset=None)
    assert grid.after_times() == [1060.0, 1120.0, 1180.0]
    assert grid.before_times() == [1000.0, 640.0, 280.0]
    assert math.isclose(grid.before_window(), 360.0)


# --- Runs that continue the earlier runs' test (the provider's memory) --------------

# The fakes' counts never change once a batch ended: keep a batch as soon as it counts.
SETTLED = datetime.timedelta(0)


class NoisyPrometheus(FakePrometheus):
    """Counts with Poisson-like noise that depends only on the window (so a batch
    answers the same at every run), and on request an extra ``le`` bound."""

    def __init__(self, *args: Any, extra_le_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.extra_le_after = extra_le_after

    def count(self, query: str, at: float, window: float) -> float:
        mean = super().count(query, at, window)
        rng = random.Random(f"{round(at)}/{round(window)}/{'5..' in query}")
        return max(0.0, round(mean + rng.gauss(0.0, math.sqrt(mean + 1.0))))

    async def answer(self, query: str, start: float, end: float, step: float) -> Any:
        result = await super().answer(query, start, end, step)
        if "bucket" in query and self.extra_le_after is not None and end > self.extra_le_after:
            times = [start + i * step for i in range(round((end - start) / step) + 1)]
            window = float(re.search(r"\[(\d+)s\]", query).group(1))  # type: ignore[union-attr]
            result.append(
                {"metric": {"le": "1"}, "values": [[t, str(0.999 * self.rps * window)] for t in times]}
            )
        return result


def _same_details(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for name, value in a.items():
        if isinstance(value, float) and math.isfinite(value):
            assert math.isclose(value, b[name], rel_tol=1e-9, abs_tol=1e-12), name
        else:
            assert value == b[name], name
    assert a["pValue"] == b["pValue"]


@pytest.mark.parametrize(("buckets", "rise"), [(False, 1.0), (False, 1.6), (True, 1.0), (True, 2.0)])
async def test_runs_with_memory_equal_fresh_runs_and_ask_only_the_new_batches(
    buckets: bool, rise: float
) -> None:
    memory = prometheus_compare.Comparisons(hold=SETTLED)
    spec = _spec(buckets=True) if buckets else _spec(alpha=0.005, min_effect=0.2)
    fake = NoisyPrometheus(rps=2.0, share=0.05, rise=rise)
    minute = datetime.timedelta(minutes=1)
    deployed = DEPLOYED.timestamp()
    counted = 0
    for minutes in (3, 4, 5, 9, 10, 24, 25, 26, 47, 90, 91, 180):
        ctx = make_context(
            deployed_at=DEPLOYED, now=DEPLOYED + minutes * minute + datetime.timedelta(seconds=5)
        )
        fake.asked.clear()
        kept = await prometheus_compare.measure(spec, ctx, fake, memory, "http://p")
        asked = list(fake.asked)
        fresh = await prometheus_compare.measure(spec, ctx, fake)
        assert kept.state is fresh.state and kept.message == fresh.message
        _same_details(kept.details, fresh.details)
        # Only the batches closed since the last run were asked for.
        batches = kept.details["batches"]
        after = {a[1:] for a in asked if "[60s]" in a[0]}
        assert after == {(deployed + (counted + 1) * 60, deployed + batches * 60, 60)}
        counted = batches
    assert memory.added == 11 and memory.rebuilt == 1 and len(memory) == 1


async def test_a_failed_query_leaves_the_kept_test_as_it_was() -> None:
    memory = prometheus_compare.Comparisons(hold=SETTLED)
    fake = NoisyPrometheus(rps=5.0)
    await prometheus_compare.measure(_spec(), make_context(deployed_at=DEPLOYED), fake, memory)
    later = make_context(deployed_at=DEPLOYED, now=NOW + datetime.timedelta(minutes=10))
    fake.fail = True
    assert (await prometheus_compare.measure(_spec(), later, fake, memory)).state is MeasurementState.ERROR
    fake.fail = False
    kept = await prometheus_compare.measure(_spec(), later, fake, memory)
    _same_details(kept.details, (await prometheus_compare.measure(_spec(), later, fake)).details)
    assert kept.details["batches"] == 40 and memory.added == 1


async def test_a_bucket_bound_not_seen_before_counts_every_batch_afresh() -> None:
    memory = prometheus_compare.Comparisons(hold=SETTLED)
    spec = _spec(buckets=True)
    fake = NoisyPrometheus(rps=5.0, extra_le_after=(NOW + datetime.timedelta(minutes=5)).timestamp())
    await prometheus_compare.measure(spec, make_context(deployed_at=DEPLOYED), fake, memory)
    later = make_context(deployed_at=DEPLOYED, now=NOW + datetime.timedelta(minutes=10))
    kept = await prometheus_compare.measure(spec, later, fake, memory)
    _same_details(kept.details, (await prometheus_compare.measure(spec, later, fake)).details)
    assert memory.rebuilt == 2 and memory.added == 0


async def test_the_kept_tests_are_bounded_and_an_evicted_one_is_recounted() -> None:
    memory = prometheus_compare.Comparisons(max_kept=100, hold=SETTLED)
    fake = NoisyPrometheus(rps=5.0)
    for hours in (1, 2, 3):  # three deployments: 90, 150 and 210 batches, 3 numbers each
        ctx = make_context(deployed_at=NOW - datetime.timedelta(hours=hours, minutes=31))
        await prometheus_compare.measure(_spec(), ctx, fake, memory, "http://p")
    assert len(memory) == 1 and memory.kept > 3 * 210  # the last one (and its memo), over the bound alone
    evicted = make_context(deployed_at=NOW - datetime.timedelta(hours=1, minutes=31))
    kept = await prometheus_compare.measure(_spec(), evicted, fake, memory, "http://p")
    _same_details(kept.details, (await prometheus_compare.measure(_spec(), evicted, fake)).details)
    assert memory.rebuilt == 4


async def test_a_histogram_without_buckets_yet_is_not_asked_again_until_they_come() -> None:
    memory = prometheus_compare.Comparisons(hold=SETTLED)
    spec = _spec(buckets=True)
    fake = NoisyPrometheus(rps=5.0)
    fake.buckets_from = (DEPLOYED + datetime.timedelta(minutes=20)).timestamp()  # type: ignore[attr-defined]
    original = fake.__call__

    async def sparse(query: str, start: float, end: float, step: float) -> Any:
        result = await original(query, start, end, step)
        cut = fake.buckets_from  # type: ignore[attr-defined]
        return [
            {**series, "values": [v for v in series["values"] if v[0] >= cut or "[360s]" in query]}
            for series in result
            if "[60s]" in query or cut <= end
        ]

    early = make_context(deployed_at=DEPLOYED, now=DEPLOYED + datetime.timedelta(minutes=10, seconds=5))
    first = await prometheus_compare.measure(spec, early, sparse, memory)
    assert first.state is MeasurementState.NO_DATA and "no buckets" in first.message
    assert memory.kept == 0 and len(memory) == 1
    later = make_context(deployed_at=DEPLOYED, now=DEPLOYED + datetime.timedelta(minutes=12, seconds=5))
    fake.asked.clear()
    second = await prometheus_compare.measure(spec, later, sparse, memory)
    assert second.state is MeasurementState.NO_DATA
    # Batches 9 and 10 only (the first run counted 9), and the before-windows of the
    # next AHEAD batches with theirs.
    ahead = 10 + prometheus_compare.AHEAD
    assert {a[1] for a in fake.asked} == {
        DEPLOYED.timestamp() + 10 * 60,
        DEPLOYED.timestamp() - 6 * 60 * ahead,
    }
    last = make_context(deployed_at=DEPLOYED, now=DEPLOYED + datetime.timedelta(minutes=40, seconds=5))
    kept = await prometheus_compare.measure(spec, last, sparse, memory)
    _same_details(kept.details, (await prometheus_compare.measure(spec, last, sparse)).details)


class LatePrometheus(NoisyPrometheus):
    """As NoisyPrometheus, but the last ``late`` seconds before ``clock`` are missing
    half their errors (scrapes that have not landed yet)."""

    def __init__(self, *args: Any, late: float = 150.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.late, self.clock = late, 0.0

    def count(self, query: str, at: float, window: float) -> float:
        value = super().count(query, at, window)
        return value // 2 if 'code=~"5.."' in query and at > self.clock - self.late else value


@pytest.mark.parametrize("hold", [prometheus_compare.HOLD, SETTLED])
async def test_the_newest_batches_are_recounted_until_held_so_late_scrapes_count(
    hold: datetime.timedelta,
) -> None:
    memory = prometheus_compare.Comparisons(hold=hold)
    spec = _spec(alpha=0.005, min_effect=0.2)
    fake = LatePrometheus(rps=5.0, share=0.05, rise=1.3)
    deployed = DEPLOYED.timestamp()
    kept_before = 0
    for minutes in (10, 11, 12, 20, 21):
        now = DEPLOYED + datetime.timedelta(minutes=minutes, seconds=5)
        fake.clock = now.timestamp()
        fake.asked.clear()
        ctx = make_context(deployed_at=DEPLOYED, now=now)
        kept = await prometheus_compare.measure(spec, ctx, fake, memory, "http://p")
        after = {a[1:] for a in fake.asked if "[60s]" in a[0]}
        batches = kept.details["batches"]
        assert after == {(deployed + (kept_before + 1) * 60, deployed + batches * 60, 60)}
        grid = prometheus_compare.grid(spec, spec.compare, ctx)  # type: ignore[arg-type]
        kept_before = prometheus_compare.firm(grid, now, hold)
        assert kept_before == (batches - 4 if hold else batches)  # 5 min after the end vs 1 min
    # Later the late scrapes have landed: a recount sees every error.
    fake.clock = 1e12
    fresh = await prometheus_compare.measure(spec, ctx, fake)
    kept = await prometheus_compare.measure(spec, ctx, fake, memory, "http://p")
    if hold:
        _same_details(kept.details, fresh.details)
    else:  # kept at once, the undercounted batches stay undercounted
        assert kept.details["eventsAfter"] < fresh.details["eventsAfter"]


class MovingTailPrometheus(NoisyPrometheus):
    """Before ``DEPLOYED - 30 min`` the slow tail is thinner, so as the mirrored
    before-windows reach further back the p95's nearest bound moves from 0.25 to 0.1."""

    def buckets(self, at: float, window: float, le: str) -> float:
        if at > DEPLOYED.timestamp() - 1800:
            return super().buckets(at, window, le)
        total = self.rps * window
        return {"0.1": 0.94 * total, "0.25": 0.995 * total, "0.5": 0.999 * total, "+Inf": total}[le]


@pytest.mark.parametrize("hold", [prometheus_compare.HOLD, SETTLED])
async def test_a_moved_latency_boundary_is_counted_afresh_and_kept_again(hold: datetime.timedelta) -> None:
    memory = prometheus_compare.Comparisons(hold=hold)
    spec = _spec(buckets=True)
    fake = MovingTailPrometheus(rps=5.0)
    boundaries = []
    for minutes in range(8, 60):
        now = DEPLOYED + datetime.timedelta(minutes=minutes, seconds=5)
        ctx = make_context(deployed_at=DEPLOYED, now=now)
        kept = await prometheus_compare.measure(spec, ctx, fake, memory, "http://p")
        fresh = await prometheus_compare.measure(spec, ctx, fake)
        _same_details(kept.details, fresh.details)
        boundaries.append(kept.details["boundary"])
    assert boundaries[0] == 0.25 and boundaries[-1] == 0.1
    # Built once; when the boundary moved, counted afresh and built again. With the
    # hold, the copy holding the newest batches sees the move first, and a test built
    # from the held batches alone still has the old boundary: a few runs count afresh
    # until the held batches move it too. Then every run adds to the kept test.
    assert 3 <= memory.rebuilt <= (8 if hold else 3) and memory.added >= 52 - memory.rebuilt - 4
    assert boundaries.index(0.1) > 5


def _before_windows_asked(fake: NoisyPrometheus, deployed: float) -> set[float]:
    """The evaluation times of the before-window range queries ``fake`` was asked (those
    ending by the deployment)."""
    return {
        start + i * step
        for _, start, end, step in fake.asked
        if end <= deployed
        for i in range(round((end - start) / step) + 1)
    }


async def test_a_rate_asks_a_before_window_again_only_until_it_has_settled() -> None:
    """A batch's before-window lies before the deployment: once it ended ``HOLD`` ago its
    counts cannot change, so the batches recounted at every run (the newest, not yet
    kept) ask it once; a run that asks one asks those of the next ``AHEAD`` batches with
    it, so the runs that close them ask none; the results equal a fresh recount's."""
    memory = prometheus_compare.Comparisons()
    spec = _spec(alpha=0.005, min_effect=0.2)
    fake = NoisyPrometheus(rps=5.0, share=0.05, rise=1.3)
    deployed = DEPLOYED.timestamp()
    seen: set[float] = set()
    assert prometheus_compare.AHEAD == 15
    for minutes in (2, 3, 4, 6, 7, 8, 12, 13, 20, 21, 22, 23):
        now = DEPLOYED + datetime.timedelta(minutes=minutes, seconds=5)
        ctx = make_context(deployed_at=DEPLOYED, now=now)
        fake.asked.clear()
        kept = await prometheus_compare.measure(spec, ctx, fake, memory, "http://p")
        asked = _before_windows_asked(fake, deployed)
        # Events and requests in one range query a window: two queries, one without a before-window.
        assert len(fake.asked) == (2 if asked else 1), fake.asked
        assert all(parts(query) for query, *_ in fake.asked)
        if minutes <= 6:
            # Batch 0's before-window ends at the deployment: asked until it settled (and
            # one range query spans the ones between).
            assert deployed in asked
        else:
            # Since, only before-windows never asked before, and none at all when no batch is new.
            assert asked.isdisjoint(seen), sorted(t - deployed for t in asked & seen)
            # The run at minute 6 (5 batches) asked batches 5-19 ahead; the one at minute
            # 22 asks batch 20's and 21-35 ahead.
            assert len(asked) == {22: 16}.get(minutes, 0), minutes
        seen |= asked
        _same_details(kept.details, (await prometheus_compare.measure(spec, ctx, fake)).details)


async def test_a_histogram_keeps_its_settled_before_rows_too() -> None:
    """The same for a histogram's before-window bucket rows (kept packed, fifteen pairs
    of numbers a batch): asked once they settled, the next AHEAD with them; the results
    equal a fresh recount's."""
    memory = prometheus_compare.Comparisons()
    spec = _spec(buckets=True)
    fake = NoisyPrometheus(rps=5.0)
    deployed = DEPLOYED.timestamp()
    seen: set[float] = set()
    for minutes in (2, 3, 6, 7, 12, 21, 22, 23):
        now = DEPLOYED + datetime.timedelta(minutes=minutes, seconds=5)
        ctx = make_context(deployed_at=DEPLOYED, now=now)
        fake.asked.clear()
        kept = await prometheus_compare.measure(spec, ctx, fake, memory, "http://p")
        asked = _before_windows_asked(fake, deployed)
        if minutes >= 7:
            assert asked.isdisjoint(seen), sorted(t - deployed for t in asked & seen)
            assert len(asked) == {22: 16}.get(minutes, 0), minutes
        seen |= asked
        _same_details(kept.details, (await prometheus_compare.measure(spec, ctx, fake)).details)
    key = next(iter(memory._states))
    assert memory._states[key].before_rows, "the rows ahead are kept"


def test_a_packed_before_row_unpacks_to_the_same_buckets() -> None:
    slot = {"0.1": 3.0, "+Inf": 10.0, "0.25": 7.0, "1e-3": 0.0}
    row = prometheus_compare._packed(slot)
    assert row is not None and len(row) == 8
    unpacked = prometheus_compare._unpacked(row)
    assert {prometheus_compare._parse_le(le): v for le, v in unpacked.items()} == {
        prometheus_compare._parse_le(le): v for le, v in slot.items()
    }
    assert prometheus_compare._packed({"0.1": 1.0, "fast": 2.0}) is None


async def test_a_young_test_is_looked_at_on_the_loop_a_long_one_in_a_thread() -> None:
    """Below ``INLINE_BATCHES`` batches a look runs on the event loop's thread (a
    millisecond or so); a test of more - days of batches counted afresh - runs in a
    worker thread, so the loop goes on meanwhile."""
    threads: list[int] = []

    def add(accumulator: sequential.RateAccumulator, part: slice) -> None:
        threads.append(threading.get_ident())

    def look(accumulator: sequential.RateAccumulator, part: slice) -> str:
        threads.append(threading.get_ident())
        return f"{part.start}:{part.stop}"

    accumulator = sequential.RateAccumulator(alpha=0.005)
    young = prometheus_compare.INLINE_BATCHES - 1
    looked = await prometheus_compare._looked(accumulator, add, look, young - 5, young)
    assert looked == f"{young - 5}:{young}"
    assert threads == [threading.get_ident()] * 2
    threads.clear()
    accumulator.batches = 4000
    assert await prometheus_compare._looked(accumulator, add, look, 1, 6) == "1:6"
    assert len(set(threads)) == 1 and threads[0] != threading.get_ident()
