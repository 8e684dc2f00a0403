"""The benchmark's own arithmetic: what it counts must be what it claims to count.

Covers the query-log reading (repeats in the same alignment window versus a later
one, rule evaluations and torn lines left out, the offset honoured), the schedule
lag (steady-state slots only) and the fleet exporter's series (valid exposition
format, counters growing at their stated rates, the pod names the template's pod
selector matches).
"""

from __future__ import annotations

import datetime
import json
import math
import pathlib
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from postdeploy.models.crds import REVIEWS
from testbed import bench, fleet

T0 = datetime.datetime(2026, 11, 26, 12, 0, 0, tzinfo=datetime.UTC)


def _entry(query: str, at: str, served: datetime.datetime, *, rule: bool = False) -> str:
    entry: dict[str, object] = {
        "params": {"query": query, "start": at, "end": at, "step": 0},
        "ts": served.isoformat().replace("+00:00", "Z"),
    }
    entry["ruleGroup" if rule else "httpRequest"] = {"name": "x"}
    return json.dumps(entry) + "\n"


def test_query_log_repeats_are_split_by_alignment_window(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "queries.jsonl"
    before = _entry("up", "12:00:00", T0)
    log.write_text(before)
    offset = log.stat().st_size
    second = datetime.timedelta(seconds=1)
    with log.open("a") as handle:
        handle.write(_entry("up", "12:00:00", T0 + second))  # seen before the offset: not counted
        handle.write(_entry("a", "12:00:00", T0 + 2 * second))
        handle.write(_entry("a", "12:00:00", T0 + 3 * second))  # same window: coalescing missed it
        handle.write(_entry("a", "12:00:00", T0 + 20 * second))  # a later window: asked again
        handle.write(_entry("a", "12:00:15", T0 + 21 * second))  # another evaluation time
        handle.write(_entry("a", "12:00:00", T0 + 22 * second, rule=True))  # a rule evaluation
        handle.write('{"params": {"query": "tor')  # a line still being written
    assert bench._queries_sent(log, offset, 15.0) == {"total": 5, "repeated": 1, "again": 1}
    assert bench._queries_sent(tmp_path / "missing.jsonl", 0, 15.0) == {"total": 0, "repeated": 0, "again": 0}


def test_lag_is_run_time_minus_slot_time_from_the_second_slot_on() -> None:
    def check(slot: int, run: datetime.datetime) -> dict[str, object]:
        return {"lastSlot": slot, "lastRun": run.isoformat()}

    review = {
        "status": {
            "deployedAt": T0.isoformat(),
            "checks": [
                check(0, T0 + datetime.timedelta(seconds=40)),  # the first slot waits for creation
                check(3, T0 + datetime.timedelta(seconds=180.25)),
                check(2, T0 + datetime.timedelta(seconds=121.5)),
                {"lastSlot": -1},
            ],
        }
    }
    assert sorted(bench._lags([review, {"status": {}}], 60.0)) == [0.25, 1.5]


def test_fleet_series_are_valid_and_grow_at_their_rates() -> None:
    services = fleet.Fleet("bench", ["svc-000", "svc-001"])
    try:
        start = services.started
        early = _samples(services.exposition(start + 10))
        late = _samples(services.exposition(start + 70))
    finally:
        services.stop()
    ok = ("http_requests_total", "svc-001", "200")
    failed = ("http_requests_total", "svc-001", "500")
    requests = (late[ok] + late[failed]) - (early[ok] + early[failed])
    assert requests == pytest.approx(fleet.RPS * 60, rel=1e-3)
    assert (late[failed] - early[failed]) / requests == pytest.approx(fleet.ERROR_SHARE, rel=1e-3)
    assert late[("http_request_duration_seconds_bucket", "svc-001", "+Inf")] == late[
        ("http_request_duration_seconds_count", "svc-001", "")
    ]
    # The built-in template's pod selector for the target svc-001.
    assert re.fullmatch(r"svc-001-[a-z0-9]+(-[a-z0-9]+)?", fleet.pod_of("svc-001"))


def _samples(text: str) -> dict[tuple[str, str, str], float]:
    samples: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            key = (sample.name, labels.get("job", ""), labels.get("code", labels.get("le", "")))
            samples[key] = sample.value
    return samples


def test_a_steady_stream_review_starts_from_the_status_it_would_have() -> None:
    template = {
        "spec": {
            "phases": [
                {
                    "name": "immediate",
                    "start": "0s",
                    "end": "2h",
                    "interval": "1m",
                    "checks": [{"name": "a", "prometheus": {}}],
                },
                {
                    "name": "extended",
                    "start": "2h",
                    "end": "24h",
                    "interval": "15m",
                    "checks": [{"name": "b", "kubernetes": {}}],
                },
                {
                    "name": "business",
                    "start": "24h",
                    "end": "72h",
                    "interval": "1h",
                    "checks": [{"name": "c", "http": {}}],
                },
            ]
        }
    }
    now = datetime.datetime(2026, 1, 3, tzinfo=datetime.UTC)
    status = bench._steady_status(template, now - datetime.timedelta(hours=3, minutes=20), now, "svc-001")
    assert status["phase"] == "extended"
    assert [p["state"] for p in status["phases"]] == ["Completed", "Running", "Pending"]
    checks = {c["name"]: c for c in status["checks"]}
    assert (checks["a"]["state"], checks["a"]["lastSlot"], checks["a"]["provider"]) == (
        "Passed",
        119,
        "prometheus",
    )
    assert (checks["b"]["state"], checks["b"]["lastSlot"]) == ("Running", 5)  # 80 min into the phase
    assert "c" not in checks


def test_histogram_quantiles_are_the_bounds_of_the_buckets_holding_them() -> None:
    before = {0.1: 5.0, 0.5: 5.0, 2.0: 5.0, float("inf"): 5.0}
    after = {0.1: 95.0, 0.5: 104.0, 2.0: 105.0, float("inf"): 105.0}  # 100 new runs
    assert bench.bucket_quantile(before, after, 50) == 0.1
    assert bench.bucket_quantile(before, after, 99) == 0.5
    assert bench.bucket_quantile(before, after, 100) == 2.0
    assert math.isnan(bench.bucket_quantile(after, after, 99))  # no runs in between


def test_the_share_above_a_bound_counts_the_runs_in_higher_buckets() -> None:
    before = {0.5: 5.0, 2.0: 5.0, 5.0: 6.0, float("inf"): 6.0}
    after = {0.5: 90.0, 2.0: 103.0, 5.0: 105.0, float("inf"): 106.0}  # 100 new runs, 2 above 2 s
    assert bench.share_above(before, after, 2.0) == pytest.approx(0.02)
    assert bench.share_above(before, after, 0.5) == pytest.approx(0.15)
    assert math.isnan(bench.share_above(after, after, 2.0))
    assert math.isnan(bench.share_above(before, after, 3.0))  # not a bucket bound


def test_pauses_above_a_bound_are_counted_between_two_readings() -> None:
    before = {0.5: 10.0, 1.0: 11.0, float("inf"): 11.0}
    after = {0.5: 30.0, 1.0: 32.0, float("inf"): 35.0}  # 24 new: 20 up to 0.5 s, 1 in (0.5, 1], 3 above
    assert bench._count_above(before, after, 0.5) == 4
    assert bench._count_above(before, after, 1.0) == 3
    assert math.isnan(bench._count_above(before, after, 2.0))


def _operator_metrics(runs: int, late: int, young: int) -> str:
    inf = "+Inf"
    return (
        "# TYPE postdeploy_check_runs_total counter\n"
        f'postdeploy_check_runs_total{{provider="prometheus",state="Passed"}} {runs - 1}\n'
        'postdeploy_check_runs_total{provider="http",state="Error"} 1.0\n'
        f'postdeploy_run_delay_seconds_bucket{{le="2.0"}} {runs - late}\n'
        f'postdeploy_run_delay_seconds_bucket{{le="{inf}"}} {runs}\n'
        f'postdeploy_gc_pause_seconds_bucket{{generation="0",le="0.5"}} {young}\n'
        f'postdeploy_gc_pause_seconds_bucket{{generation="0",le="{inf}"}} {young}\n'
    )


def test_one_scrape_gives_runs_delays_and_collections_and_shards_add_up() -> None:
    inf = float("inf")
    reading = bench.Reading.parse(_operator_metrics(runs=100, late=3, young=7))
    assert reading == bench.Reading(
        runs=100.0, delays={2.0: 97.0, inf: 100.0}, gc={"0": {0.5: 7.0, inf: 7.0}}
    )
    silent = bench.Reading.parse(None)  # the operator did not answer
    assert math.isnan(silent.runs) and silent.delays == {} and silent.gc == {}

    class Scraped:
        def __init__(self, text: str) -> None:
            self.text = text

        def reading(self) -> bench.Reading:
            return bench.Reading.parse(self.text)

    shards = object.__new__(bench.Shards)  # two processes' readings, not their processes
    shards.operators = [Scraped(_operator_metrics(100, 3, 7)), Scraped(_operator_metrics(50, 1, 2))]  # type: ignore[list-item]
    summed = shards.reading()
    assert summed.runs == 150.0
    assert summed.delays == {2.0: 146.0, inf: 150.0}
    assert summed.gc == {"0": {0.5: 9.0, inf: 9.0}}


def test_collections_are_counted_per_generation_between_two_readings() -> None:
    inf = float("inf")
    before = {"0": {0.5: 10.0, 1.0: 10.0, inf: 10.0}, "1": {0.5: 2.0, 1.0: 2.0, inf: 2.0}}
    after = {
        "0": {0.5: 40.0, 1.0: 41.0, inf: 41.0},  # 31 new, 1 in (0.5, 1]
        "1": {0.5: 3.0, 1.0: 3.0, inf: 5.0},  # 3 new, 2 above 1 s
        "2": {0.5: 0.0, 1.0: 0.0, inf: 1.0},  # first seen after the window opened
    }
    pauses = bench.gc_pauses_between(before, after)
    assert pauses == {
        "0": {"count": 31.0, "over_0.5s": 1.0, "over_1s": 0.0},
        "1": {"count": 3.0, "over_0.5s": 2.0, "over_1s": 2.0},
        "2": {"count": 1.0, "over_0.5s": 1.0, "over_1s": 1.0},
    }
    assert bench._collections(pauses) == (
        "young 31 (1 over 0.5 s, 0 over 1 s), middle 3 (2 over 0.5 s, 2 over 1 s), "
        "full 1 (1 over 0.5 s, 1 over 1 s)"
    )


def test_an_all_immediate_row_says_how_late_every_run_was_and_what_paused_it() -> None:
    row = {
        "kind": "active",
        "n": 4000,
        "checks_per_min": 52000.0,
        "lag_p50": 0.08,
        "lag_p99": 0.61,
        "run_delay_p50": 0.1,
        "run_delay_p99": 0.5,
        "runs_later_than_2s": 0.0012,
        "gc_pauses": {"0": {"count": 5.0, "over_0.5s": 0.0, "over_1s": 0.0}},
        "cpu_per_1000_checks": 0.81,
        "cores": 0.71,
        "apiserver_cores": 0.36,
        "peak_rss_mb": 383.0,
        "prometheus_queries_per_min": 27429.0,
        "distinct_queries": 500,
        "api_writes_per_min": 810.0,
        "status_kb_max": 11.2,
        "warmup_s": 1200.0,
    }
    text = bench.table([row], 120.0)
    cells = "52000 | 0.08 | 0.61 | 0.81 | 0.71 | 0.36 | 383 | 27429 (500) | 810 | 11.2"
    assert f"| 4,000 active | {cells} |" in text
    every_run = "every run in the window (the operator's run-delay histogram, bucket bounds)"
    assert f"- 4,000 active, {every_run}: p50 0.1 s, p99 0.5 s, 0.12 % later than 2 s" in text
    assert "- 4,000 active: collections in the window: young 5 (0 over 0.5 s, 0 over 1 s)" in text


class _Growing:
    """Stands in for the operator, the API-server counters and the bed's CPU reader:
    every reading adds a fixed amount, so each warm-up row's rates are known."""

    def __init__(self) -> None:
        self.readings = 0

    def _next(self) -> int:
        self.readings += 1
        return self.readings

    def reading(self) -> bench.Reading:
        n = self._next()
        delays = {0.5: 90.0 * n, 2.0: 99.0 * n, float("inf"): 100.0 * n}  # 1 in 100 later than 2 s
        return bench.Reading(runs=100.0 * n, delays=delays, gc={})

    def cpu_seconds(self) -> float:
        return 0.0

    def api_writes(self) -> float:
        return 0.0

    def begin(self) -> None:
        pass

    def cores(self, elapsed: float) -> dict[str, float]:
        return {"kube-apiserver": 0.25, "machine": 1.5}


def test_the_warm_up_is_reported_step_by_step() -> None:
    fake = _Growing()
    rows = bench.warm_up(fake, fake, fake, seconds=0.25, step=0.1)  # type: ignore[arg-type]
    assert len(rows) == 3  # 0.1 + 0.1 + the 0.05 left
    for row in rows:
        assert row["checks_per_min"] > 0
        assert row["run_delay_p50"] == 0.5
        assert row["run_delay_p99"] == 2.0
        assert row["runs_later_than_2s"] == pytest.approx(0.01)
        assert row["apiserver_cores"] == 0.25
        assert row["machine_cores"] == 1.5
        assert math.isnan(row["prometheus_cores"])
    assert [row["at_s"] for row in rows] == [0, 0, 0]  # whole seconds since the start


def test_a_warm_up_step_before_the_operator_answers_counts_no_runs() -> None:
    class Starting(_Growing):
        def reading(self) -> bench.Reading:
            return bench.Reading.parse(None if self._next() == 1 else "postdeploy_check_runs_total 50\n")

    fake = Starting()
    rows = bench.warm_up(fake, fake, fake, seconds=0.1, step=0.1)  # type: ignore[arg-type]
    assert rows[0]["checks_per_min"] > 0  # 0 before, 50 after
    assert math.isnan(rows[0]["run_delay_p99"])


def _prometheus_metrics(iterations: int, missed: int, group_s: float, query_s: float, queries: int) -> str:
    group = 'rule_group="/bed/rules.yml;checkout"'
    return (
        "# TYPE prometheus_rule_group_iterations_total counter\n"
        f"prometheus_rule_group_iterations_total{{{group}}} {iterations}\n"
        f"prometheus_rule_group_iterations_missed_total{{{group}}} {missed}\n"
        'prometheus_rule_group_duration_seconds{quantile="0.5"} 0.001\n'
        f"prometheus_rule_group_duration_seconds_sum {group_s}\n"
        f"prometheus_rule_group_duration_seconds_count {iterations}\n"
        f'prometheus_engine_query_duration_seconds_sum{{slice="inner_eval"}} {query_s}\n'
        f'prometheus_engine_query_duration_seconds_count{{slice="inner_eval"}} {queries}\n'
        'prometheus_engine_query_duration_seconds_sum{slice="queue_time"} 99\n'
        'prometheus_engine_query_duration_seconds_count{slice="queue_time"} 99\n'
    )


def test_prometheus_own_work_is_read_from_its_metrics_with_and_without_labels() -> None:
    before = bench.prometheus_counters(_prometheus_metrics(100, 0, 0.2, 1.0, 500))
    after = bench.prometheus_counters(_prometheus_metrics(160, 3, 0.5, 4.0, 1500))
    assert before["queries_run"] == 500  # the queue-time slice is not counted
    work = bench.prometheus_work_between(before, after)
    assert work == {
        "rule_iterations": 60,
        "rule_iterations_missed": 3,
        "rule_group_ms": 5.0,  # 0.3 s over 60 evaluations
        "query_ms": 3.0,  # 3 s over 1,000 queries
    }
    assert math.isnan(bench.prometheus_work_between(before, before)["query_ms"])


def test_the_hot_path_packages_are_named_as_installed() -> None:
    named = bench.packages().split(", ")
    assert named[0].startswith("python 3.")
    assert [entry.split()[0] for entry in named[1:]] == list(bench.HOT_PACKAGES)
    assert all(entry.split()[1] != "-" for entry in named)  # every name is a distribution here


def test_api_server_writes_and_reads_come_from_one_metrics_text() -> None:
    text = (
        "# TYPE apiserver_request_total counter\n"
        f'apiserver_request_total{{code="200",resource="{REVIEWS}",verb="PATCH"}} 40\n'
        'apiserver_request_total{code="201",resource="events",verb="POST"} 5\n'
        'apiserver_request_total{code="201",resource="configmaps",verb="POST"} 7\n'  # not ours: no write
        f'apiserver_request_total{{code="200",resource="{REVIEWS}",verb="LIST"}} 3\n'
        'apiserver_request_total{code="200",resource="pods",verb="GET"} 2\n'
        'apiserver_request_total{code="200",resource="",verb="GET"} 1\n'
    )
    assert bench._api_writes(text) == 45.0
    assert bench._api_reads(text) == {REVIEWS: 3.0, "pods": 2.0, "?": 1.0}


def test_a_reading_parses_what_the_operator_itself_exports() -> None:
    from prometheus_client import generate_latest

    from postdeploy.kit import metrics

    def read() -> bench.Reading:
        return bench.Reading.parse(generate_latest(metrics.REGISTRY).decode())

    before = read()
    for _ in range(3):
        metrics.record_check("prometheus", "Passed", 0.01)
    metrics.record_run_delay(0.3)
    metrics.record_run_delay(5.0)
    after = read()
    assert after.runs - before.runs == 3.0
    assert bench.share_above(before.delays, after.delays, 2.0) == 0.5  # one of the two later than 2 s
