"""The judge benchmark's arithmetic (``bench.judge_streams``, ``bench.judge``).

Covers PromQL's histogram_quantile as reimplemented here (interpolation, the +Inf
bucket, no observations), the daily traffic cycle (its mean and its trough), the
streams (window counts are sums of the minutes drawn, the 5xx share and latency
switch at the deployment, bucket counts add up to the requests), the latency mixture
(p95 raised by the asked factor with the mean unchanged, closed form and sampled),
what a simulated check measures (window, baseline, no data; the request rate of
the throughput check against a week earlier), a release judged through the real
decision code (failureLimit honoured, the failing minute), the Clopper-Pearson
interval and which checks failed the releases; for comparison checks (``bench.judge_compare``): the numpy
p-value path against ``decisions.sequential``'s, which ``failWhen`` lets runs be
skipped, the provider's batch grid, and the same outcome with and without skipping.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest
import yaml

from bench import judge, judge_compare, judge_streams
from postdeploy import defaults
from postdeploy.decisions import sequential

BOUNDS = (0.1, 0.25, 0.5)


def _stream(requests: list[int], errors: list[int], start: int, buckets: list[list[int]] | None = None):
    rows = np.array(buckets if buckets is not None else [[r, 0, 0, 0] for r in requests], dtype=np.int64)

    def running(values: np.ndarray) -> np.ndarray:
        return np.concatenate([np.zeros((1, *values.shape[1:]), dtype=np.int64), np.cumsum(values, axis=0)])

    segment = judge_streams.Segment(
        start,
        start + len(requests),
        1,
        running(np.array(requests, dtype=np.int64)),
        running(np.array(errors, dtype=np.int64)),
        running(rows),
    )
    return judge_streams.Stream(600, (segment,))


class TestHistogramQuantile:
    def test_interpolates_linearly_inside_the_bucket(self) -> None:
        # cumulative 10, 20, 20, 20: rank 15 of 20 is half-way through (0.1, 0.25].
        assert judge_streams.histogram_quantile(0.75, BOUNDS, [10, 10, 0, 0]) == pytest.approx(0.175)

    def test_first_bucket_starts_at_zero(self) -> None:
        assert judge_streams.histogram_quantile(0.5, BOUNDS, [10, 10, 0, 0]) == pytest.approx(0.1)
        assert judge_streams.histogram_quantile(0.25, BOUNDS, [10, 10, 0, 0]) == pytest.approx(0.05)

    def test_rank_in_the_inf_bucket_is_the_highest_finite_bound(self) -> None:
        assert judge_streams.histogram_quantile(0.95, BOUNDS, [1, 0, 0, 9]) == 0.5

    def test_no_observations_is_nan(self) -> None:
        assert math.isnan(judge_streams.histogram_quantile(0.95, BOUNDS, [0, 0, 0, 0]))

    def test_empty_buckets_below_the_rank_are_skipped(self) -> None:
        # cumulative 0, 4, 4, 4: rank 3.8 lies in (0.1, 0.25].
        expected = 0.1 + 0.15 * 0.95
        assert judge_streams.histogram_quantile(0.95, BOUNDS, [0, 4, 0, 0]) == pytest.approx(expected)


class TestTraffic:
    def test_daily_mean_is_the_level_and_night_is_a_fifth_of_the_peak(self) -> None:
        traffic = judge_streams.Traffic(20.0)
        minutes = np.arange(1440, dtype=np.float64)
        per_minute = traffic.per_minute(minutes)
        assert per_minute.sum() / 86400 == pytest.approx(20.0, rel=1e-9)
        assert per_minute.min() == pytest.approx(60 * 0.2 * traffic.peak, rel=1e-4)
        assert int(per_minute.argmin()) in (239, 240)  # 04:00
        assert int(per_minute.argmax()) in (959, 960)  # 16:00


class TestStreams:
    def test_window_counts_are_sums_of_the_minutes(self) -> None:
        stream = _stream([1, 2, 3, 4, 5, 6], [0, 1, 0, 1, 0, 1], start=-3)
        counts = stream.counts(-2, 1)
        assert (counts.requests, counts.errors) == (2 + 3 + 4, 1 + 0 + 1)
        assert counts.buckets.tolist() == [9, 0, 0, 0]
        with pytest.raises(ValueError, match="were not drawn"):
            stream.counts(-4, 0)

    def test_share_and_latency_switch_at_the_deployment(self) -> None:
        rng = np.random.default_rng(7)
        slow = judge_streams.Latency(median=100.0, sigma=0.1)  # every request above 10 s
        stream = judge_streams.draw_stream(
            rng,
            judge_streams.Traffic(5.0),
            300,
            [(-30, 0), (0, 30)],
            share_before=0.0,
            share_after=1.0,
            latency_before=judge_streams.Latency(),
            latency_after=slow,
        )
        before, after = stream.counts(-30, 0), stream.counts(0, 30)
        assert before.errors == 0 and after.errors == after.requests > 0
        assert int(before.buckets.sum()) == before.requests and int(after.buckets.sum()) == after.requests
        assert int(after.buckets[-1]) == after.requests  # all in +Inf
        assert stream.spans() == [(-30, 30)]  # touching spans are drawn as one

    def test_the_request_rate_may_change_at_the_deployment(self) -> None:
        stream = judge_streams.draw_stream(
            np.random.default_rng(5),
            judge_streams.Traffic(100.0, night_share=1.0),  # no daily cycle
            0,
            [(-60, 0), (0, 60)],
            share_before=0.002,
            share_after=0.002,
            latency_before=judge_streams.Latency(),
            latency_after=judge_streams.Latency(),
            traffic_after=0.5,
        )
        before, after = stream.counts(-60, 0), stream.counts(0, 60)
        assert before.requests / 3600 == pytest.approx(100.0, rel=0.01)
        assert after.requests / 3600 == pytest.approx(50.0, rel=0.01)

    def test_segments_are_as_coarse_as_the_windows_allow(self) -> None:
        # Six-minute before-windows over [-60, 0), minute windows over [-5, 30).
        plan = judge_streams.plan_segments([(-60, 0, 6), (-5, 30), (0, 30, 1)])
        assert plan == [(-60, -6, 6), (-6, -5, 1), (-5, 30, 1)] or plan == [(-60, -6, 6), (-6, 30, 1)]
        assert judge_streams.plan_segments([(-60, 0, 6), (0, 60, 15)]) == [(-60, 0, 6), (0, 60, 15)]
        assert judge_streams.plan_segments([(-7, 0, 6)]) == [(-7, 0, 1)]  # edges off the grid

    def test_blocks_add_up_and_a_window_may_not_cut_one(self) -> None:
        rng = np.random.default_rng(5)
        stream = judge_streams.draw_stream(
            rng,
            judge_streams.Traffic(1.0),
            0,
            [(-600, 0, 6), (-5, 10)],
            share_before=0.5,
            share_after=0.5,
            latency_before=judge_streams.Latency(),
            latency_after=judge_streams.Latency(),
        )
        assert [s.resolution for s in stream.segments] == [6, 1]
        whole = stream.counts(-600, 10)
        parts = [stream.counts(-600, -6), stream.counts(-6, 0), stream.counts(0, 10)]
        assert whole.requests == sum(p.requests for p in parts)
        assert whole.errors == sum(p.errors for p in parts)
        assert whole.buckets.tolist() == sum(p.buckets for p in parts).tolist()
        with pytest.raises(ValueError, match="cut blocks"):
            stream.counts(-599, 0)

    def test_error_share_and_rate_converge(self) -> None:
        rng = np.random.default_rng(3)
        stream = judge_streams.draw_stream(
            rng,
            judge_streams.Traffic(100.0),
            0,
            [(0, 1440)],
            share_before=0.002,
            share_after=0.002,
            latency_before=judge_streams.Latency(),
            latency_after=judge_streams.Latency(),
        )
        day = stream.counts(0, 1440)
        assert day.requests / 86400 == pytest.approx(100.0, rel=0.01)
        assert day.errors / day.requests == pytest.approx(0.002, rel=0.05)


class TestLatencyMixture:
    @pytest.mark.parametrize("increase", [0.25, 0.5, 1.0])
    def test_p95_rises_and_the_mean_stays(self, increase: float) -> None:
        base = judge_streams.Latency(median=0.1, sigma=0.5)
        mixed = judge_streams.mixture_for_p95(base, increase)
        assert mixed.quantile(0.95) == pytest.approx((1 + increase) * base.quantile(0.95), rel=1e-6)
        assert mixed.mean() == pytest.approx(base.mean(), rel=1e-9)
        assert mixed.fast < 1 < mixed.slow
        sample = mixed.sample(np.random.default_rng(11), 400_000)
        assert float(np.quantile(sample, 0.95)) == pytest.approx(mixed.quantile(0.95), rel=0.02)
        assert float(sample.mean()) == pytest.approx(base.mean(), rel=0.01)

    def test_base_quantile_is_the_lognormal_one(self) -> None:
        base = judge_streams.Latency(median=0.1, sigma=0.5)
        assert base.quantile(0.95) == pytest.approx(0.1 * math.exp(0.5 * 1.6448536269514722), rel=1e-9)
        assert base.bucket_shares(BOUNDS).sum() == pytest.approx(1.0)

    def test_an_impossible_increase_is_refused(self) -> None:
        with pytest.raises(ValueError, match="slow requests"):
            judge_streams.mixture_for_p95(judge_streams.Latency(), 20.0)


def _one_phase(checks: list[dict[str, object]], selector: str = 'job="{{target}}"') -> dict[str, object]:
    """A template of one 10-minute phase that runs ``checks`` every minute, rateWindow 2m."""
    phase = {"name": "immediate", "start": "0s", "end": "10m", "interval": "1m", "checks": checks}
    return {"spec": {"parameters": {"selector": selector, "rateWindow": "2m"}, "phases": [phase]}}


def _template(fail_when: str, failure_limit: int) -> dict[str, object]:
    query = (
        '(sum(rate(http_requests_total{ {{selector}}, code=~"5.." }[{{rateWindow}}])) or vector(0))'
        " / sum(rate(http_requests_total{ {{selector}} }[{{rateWindow}}]))"
    )
    error_rate = {
        "name": "error-rate",
        "prometheus": {"query": query},
        "baseline": {"preDeploy": True, "tolerance": 1},
        "failWhen": fail_when,
        "failureLimit": failure_limit,
    }
    return _one_phase([error_rate, {"name": "rollout", "kubernetes": {"measure": "rolloutComplete"}}])


class TestSimulatedCheck:
    def test_measures_the_window_before_the_run_against_the_one_before_the_deployment(self) -> None:
        rule = judge.load_rule("t", _template("value > baseline", 0))
        simulator = rule.simulators["error-rate"]
        # minutes -2..3: requests 10 each; errors 1, 0 before; 5, 5, 0, 0 after.
        stream = _stream([10] * 6, [1, 0, 5, 5, 0, 0], start=-2)
        measurement = simulator.measure(stream, 2, {})
        assert measurement.value == pytest.approx(10 / 20)
        assert measurement.baseline == pytest.approx(1 / 20)
        assert simulator.measure(stream, 4, {}).value == 0.0
        assert rule.spans() == [(-2, 10), (-2, 0)]

    def test_no_requests_is_no_data_and_no_baseline_leaves_it_empty(self) -> None:
        rule = judge.load_rule("t", _template("value > baseline", 0))
        simulator = rule.simulators["error-rate"]
        stream = _stream([0, 0, 0, 0, 4, 4], [0, 0, 0, 0, 1, 1], start=-2)
        assert simulator.measure(stream, 2, {}).state.value == "NoData"
        late = simulator.measure(stream, 4, {})
        assert late.value == pytest.approx(0.25) and late.baseline is None

    def test_only_request_checks_it_cannot_answer_are_listed_as_skipped(self) -> None:
        rule = judge.load_rule("t", _template("value > baseline", 0))
        assert set(rule.simulators) == {"error-rate"} and rule.skipped == ()


def _throughput_template(failure_limit: int) -> dict[str, object]:
    throughput = {
        "name": "throughput",
        "prometheus": {"query": "sum(rate(http_requests_total{ {{selector}} }[{{rateWindow}}]))"},
        "baseline": {"offset": "3m", "tolerance": 0.3},
        "failWhen": "abs(value - baseline) > baseline * tolerance",
        "failureLimit": failure_limit,
    }
    return _one_phase([throughput], selector='namespace="{{namespace}}", job="{{target}}"')


class TestRequestRate:
    def test_measures_requests_per_second_against_the_same_window_an_offset_earlier(self) -> None:
        rule = judge.load_rule("t", _throughput_template(0))
        simulator = rule.simulators["throughput"]
        # minutes -5..4: 60 requests a minute before the deployment, 30 after, none at minute 3.
        stream = _stream([60] * 5 + [30, 30, 30, 0, 30], [0] * 10, start=-5)
        measurement = simulator.measure(stream, 2, {})  # [0, 2) against [-3, -1)
        assert measurement.value == pytest.approx(60 / 120)
        assert measurement.baseline == pytest.approx(120 / 120)
        quiet = simulator.measure(stream, 4, {})  # [2, 4): 30 + 0 requests, not NoData
        assert quiet.value == pytest.approx(30 / 120) and quiet.state.value == "OK"
        assert rule.skipped == ()

    def test_a_third_failed_run_fails_the_check(self) -> None:
        rule = judge.load_rule("t", _throughput_template(2))
        stream = _stream([60] * 5 + [30] * 12, [0] * 17, start=-5)
        # Runs at minutes 2, 3, 4 see 30/min against 60/min three minutes earlier.
        assert judge.judge_release(rule, stream) == judge.Outcome(4, "throughput")

    def test_the_built_in_throughput_check_is_simulated_against_a_week_earlier(self) -> None:
        rule = judge.load_rule("new", defaults.manifest(), only=("throughput",))
        simulator = rule.simulators["throughput"]
        assert isinstance(simulator, judge.WindowRatio) and simulator.kind == "requests"
        assert simulator.window == 5 and simulator.baseline_at is not None
        assert simulator.baseline_at(60) == 60 - 7 * 24 * 60

    def test_an_increase_counts_the_requests_of_the_window(self, tmp_path: pathlib.Path) -> None:
        manifest = _throughput_template(0)
        phase = manifest["spec"]["phases"][0]  # type: ignore[index]
        phase["checks"][0]["prometheus"]["query"] = "sum(increase(http_requests_total{ {{selector}} }[2m]))"
        simulator = judge.load_rule("t", manifest).simulators["throughput"]
        assert isinstance(simulator, judge.WindowRatio) and simulator.kind == "request-count"
        stream = _stream([60] * 5 + [30] * 5, [0] * 10, start=-5)
        measurement = simulator.measure(stream, 2, {})
        assert measurement.value == 60.0 and measurement.baseline == 120.0
        # --template judges a file's template instead of the built-in one.
        path = tmp_path / "variant.yaml"
        path.write_text(yaml.safe_dump(manifest))
        arguments = ["--rules", "new", "--template", str(path), "--kinds", "healthy", "--releases", "2"]
        assert judge.main([*arguments, "--other-releases", "0", "--levels", "1", "--workers", "1"]) == 0

    def test_a_rate_with_a_code_matcher_is_not_all_requests(self) -> None:
        manifest = _throughput_template(0)
        phase = manifest["spec"]["phases"][0]  # type: ignore[index]
        query = 'sum(rate(http_requests_total{ {{selector}}, code="200" }[2m]))'
        phase["checks"][0]["prometheus"]["query"] = query
        assert judge.load_rule("t", manifest).skipped == ("throughput",)


class TestReferenceTests:
    @pytest.mark.parametrize(("after", "detected"), [(0.5, (True, True)), (1.0, (False, False))])
    def test_a_traffic_fall_against_its_known_mean_and_a_week_earlier(
        self, after: float, detected: tuple[bool, bool]
    ) -> None:
        traffic = judge_streams.Traffic(20.0)
        scenario = judge.Scenario("requests", "traffic", traffic_after=after)
        stream = judge_streams.draw_stream(
            np.random.default_rng(11),
            traffic,
            600,
            [(-judge.WEEK, -judge.WEEK + 10), (0, 10)],
            share_before=0.002,
            share_after=0.002,
            latency_before=judge_streams.Latency(),
            latency_after=judge_streams.Latency(),
            traffic_after=after,
        )
        assert judge.oracle_detects(scenario, stream, 0.01, 10, traffic) == detected


class TestJudgeRelease:
    def test_fails_on_the_run_past_the_failure_limit(self) -> None:
        rule = judge.load_rule("t", _template("value > 0.3", 2))
        # From minute 3 on every request fails; runs at minutes 4, 5, 6 see a share
        # above 0.3 (minute 4's window [2, 4) is half errors), the third fails the check.
        errors = [0, 0, 0, 0, 0, 10, 10, 10, 10, 10, 10, 10]
        stream = _stream([10] * 12, errors, start=-2)
        assert judge.judge_release(rule, stream) == judge.Outcome(6, "error-rate")

    def test_a_healthy_stream_passes(self) -> None:
        rule = judge.load_rule("t", _template("value > 0.3", 2))
        stream = _stream([10] * 12, [1] * 12, start=-2)
        assert judge.judge_release(rule, stream) == judge.Outcome(None, None)


class TestClopperPearson:
    def test_zero_failures_upper_bound(self) -> None:
        low, high = judge.clopper_pearson(0, 1000)
        assert low == 0.0
        assert high == pytest.approx(1 - 0.025 ** (1 / 1000), rel=1e-9)

    def test_all_failures_and_a_middle_case(self) -> None:
        assert judge.clopper_pearson(50, 50)[1] == 1.0
        low, high = judge.clopper_pearson(10, 100)
        assert low < 0.1 < high
        assert (low, high) == pytest.approx((0.0490, 0.1762), abs=5e-4)


def _compare_template(fail_when: str, failure_limit: int = 0) -> dict[str, object]:
    compare_errors = {
        "query": 'sum(increase(http_requests_total{ {{selector}}, code=~"5.." }[{{window}}]))',
        "step": "1m",
        "compare": {"total": "sum(increase(http_requests_total{ {{selector}} }[{{window}}]))", "alpha": 0.01},
    }
    compare_latency = {
        "query": "sum by (le) (increase(http_request_duration_seconds_bucket{ {{selector}} }[{{window}}]))",
        "step": "1m",
        "compare": {"buckets": True, "alpha": 0.01},
    }
    decision = {"failWhen": fail_when, "failureLimit": failure_limit}
    checks = [
        {"name": "errors", "prometheus": compare_errors, **decision},
        {"name": "latency", "prometheus": compare_latency, **decision},
    ]
    phase = {"name": "immediate", "start": "0s", "end": "25m", "interval": "1m", "checks": checks}
    return {"spec": {"parameters": {"selector": 'job="{{target}}"'}, "phases": [phase]}}


class TestComparisonChecks:
    def test_numpy_p_value_path_is_the_modules(self) -> None:
        rng = np.random.default_rng(17)
        n = rng.poisson(50, 120).astype(float)
        b = rng.poisson(300, 120).astype(float)
        n[5] = 0  # an uninformative batch, and one with no events at all
        x = rng.binomial(n.astype(int), 0.02).astype(float)
        y = rng.binomial(b.astype(int), 0.01).astype(float)
        x[7] = y[7] = 0
        batches = [sequential.CountBatch(*row) for row in zip(x, n, y, b, strict=True)]
        for min_effect in (0.0, 0.2):
            ours = judge_compare.p_value_path(x, n, y, b, min_effect=min_effect)
            theirs = sequential.p_value_path(batches, min_effect=min_effect)
            assert ours.tolist() == pytest.approx(theirs, rel=1e-9, abs=1e-300)
        assert min(theirs) < 1e-3  # the path went somewhere: the comparison is not vacuous

    @pytest.mark.parametrize(
        ("text", "screen"),
        [
            ("ratioLower > 1 + minEffect and pValue < alpha", (0.01, 1.2)),
            ("pValue < 0.001 && ratio > 2", (0.001, None)),
            ("(ratio > 2 or ratioLower > 3) and pValue < alpha and ratioLower > 1.5", (0.01, 1.5)),
            ("ratioLower > 1.2 or pValue < alpha", None),
            ("ratioLower > 1.2 and pValue < alpha or value > 10", None),
            ("value > 2", None),
            ("pValue <= alpha", None),
        ],
    )
    def test_runs_are_skipped_only_when_fail_when_needs_a_small_p_value(
        self, text: str, screen: tuple[float, float | None] | None
    ) -> None:
        found = judge_compare.screen_for(text, 0.01, 0.2)
        assert (None if found is None else (found.p_below, found.lower_above)) == screen

    def test_batches_and_before_windows_follow_the_providers_grid(self) -> None:
        rule = judge.load_rule("t", _compare_template("ratioLower > 1 + minEffect and pValue < alpha"))
        simulator = rule.simulators["errors"]
        # A run at minute 10 compares the 9 batches that ended a minute (SETTLE) before it.
        assert simulator.batches_at(10) == 9  # type: ignore[attr-defined]
        # After: minutes [0, 23) in 1-minute batches; before: six-minute windows mirrored.
        assert rule.spans()[:2] == [(0, 23, 1), (-138, 0, 6)]

    @pytest.mark.parametrize(("share", "slow"), [(0.002, 0.0), (0.004, 0.0), (0.02, 0.0), (0.002, 1.0)])
    def test_skipping_runs_changes_no_outcome(self, share: float, slow: float) -> None:
        fast = judge.load_rule("t", _compare_template("ratioLower > 1 + minEffect and pValue < alpha", 1))
        exact = judge.load_rule("t", _compare_template("ratioLower > 1 + minEffect and pValue < alpha", 1))
        for simulator in exact.simulators.values():
            simulator.exact = True  # type: ignore[attr-defined]
        latency = judge_streams.mixture_for_p95(judge.BASE_LATENCY, slow) if slow else judge.BASE_LATENCY
        outcomes = []
        for seed in range(2):
            stream = judge_streams.draw_stream(
                np.random.default_rng(seed),
                judge_streams.Traffic(20.0),
                600,
                fast.spans(),
                share_before=0.002,
                share_after=share,
                latency_before=judge.BASE_LATENCY,
                latency_after=latency,
            )
            outcome = judge.judge_release(fast, stream)
            assert outcome == judge.judge_release(exact, stream)
            outcomes.append(outcome.failed_at)
        measured = sum(s.exact_runs for s in fast.simulators.values())  # type: ignore[attr-defined]
        assert measured < sum(s.exact_runs for s in exact.simulators.values())  # type: ignore[attr-defined]
        if share >= 0.02 or slow:
            assert all(minute is not None for minute in outcomes)  # x10 errors, p95 x2: caught
        elif share == 0.002:
            assert outcomes == [None, None] and measured == 0


class TestReporting:
    def test_failed_releases_are_attributed_to_their_checks(self) -> None:
        tally = judge.Tally()
        for check in ("throughput", "error-rate", "throughput", None):
            tally.add(judge.Outcome(None if check is None else 5, check))
        assert judge._by_check(tally) == "throughput 2, error-rate 1"
        assert judge._by_check(judge.Tally()) == "-"

    def test_minute_by_which_95_percent_were_caught(self) -> None:
        assert judge._caught_by(list(range(1, 20)), 20) == "19 min"  # 19 of 20 = 95 %
        assert judge._caught_by([5] * 18, 20) == "-"  # only 90 % ever caught
        assert judge._caught_by([3, 1, 2, 40] * 25, 100) == "40 min"
