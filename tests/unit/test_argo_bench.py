"""The Argo Rollouts comparison's own arithmetic (bench/argo.py): measurement counts,
schedule lag, write counts and ratios read from the objects and metrics both tools
leave, and the objects it creates carry the same two queries for both tools."""

from __future__ import annotations

import datetime

from bench import argo
from testbed import bench


def _run(*metrics: tuple[int, list[tuple[str, str, str]]]) -> dict[str, object]:
    results = []
    for count, measurements in metrics:
        results.append(
            {
                "name": f"m{len(results)}",
                "count": count,
                "measurements": [
                    {"startedAt": s, "finishedAt": f, "phase": phase} for s, f, phase in measurements
                ],
            }
        )
    return {"status": {"metricResults": results}}


def test_measurements_are_each_metrics_count_not_the_ten_kept() -> None:
    runs = [_run((25, []), (3, [])), _run((1, [])), {"status": {}}, {}]
    assert argo.argo_measurements(runs) == 29


def test_lag_is_start_minus_previous_finish_plus_interval_and_only_in_the_window() -> None:
    run = _run(
        (
            3,
            [
                ("2026-11-30T12:00:00Z", "2026-11-30T12:00:01Z", "Successful"),
                ("2026-11-30T12:01:03Z", "2026-11-30T12:01:03Z", "Successful"),
                ("2026-11-30T12:02:03Z", "2026-11-30T12:02:04Z", "Successful"),
            ],
        )
    )
    since = datetime.datetime(2026, 11, 30, 12, 0, 30, tzinfo=datetime.UTC).timestamp()
    assert argo.argo_lags([run], 60.0, since) == [2.0, 0.0]
    later = datetime.datetime(2026, 11, 30, 12, 1, 30, tzinfo=datetime.UTC).timestamp()
    assert argo.argo_lags([run], 60.0, later) == [0.0]


def test_outcomes_name_each_metrics_latest_phase() -> None:
    run = _run(
        (2, [("2026-11-30T12:00:00Z", "2026-11-30T12:00:00Z", "Failed"), ("a", "b", "Successful")]),
        (0, []),
    )
    assert argo.argo_outcomes([run]) == {"m0 Successful": 1, "m1 none": 1}


def test_writes_by_verb_on_the_tools_resources() -> None:
    text = "\n".join(
        [
            'apiserver_request_total{code="200",resource="analysisruns",verb="PUT"} 7',
            'apiserver_request_total{code="201",resource="events",verb="POST"} 2',
            'apiserver_request_total{code="200",resource="leases",verb="PUT"} 100',
            'apiserver_request_total{code="200",resource="analysisruns",verb="GET"} 50',
        ]
    )
    assert argo.writes_by(text, {"analysisruns", "events"}) == {
        "APPLY": 0.0,
        "DELETE": 0.0,
        "PATCH": 0.0,
        "POST": 2.0,
        "PUT": 7.0,
    }
    assert sum(argo.writes_by(text, None).values()) == 109.0


def test_ratio_is_ours_over_theirs_and_dash_where_meaningless() -> None:
    assert argo.ratio(1.0, 4.0) == "0.25"
    assert argo.ratio(1.0, 0.0) == "-"
    assert argo.ratio(float("nan"), 1.0) == "-"


def test_both_tools_measure_the_same_two_queries() -> None:
    run = argo.analysis_run("a", "svc-007", "http://127.0.0.1:9090", "60s")
    when = datetime.datetime(2026, 11, 30, tzinfo=datetime.UTC)
    ours = argo.review("r", "svc-007", "60s", when)
    theirs = [
        m["provider"]["prometheus"]["query"].replace("{{args.target}}", "svc-007")
        for m in run["spec"]["metrics"]
    ]
    checks = ours["spec"]["phases"][0]["checks"]
    assert theirs == [c["prometheus"]["query"] for c in checks]
    assert theirs[0] == bench.ERROR_RATE.replace("{{namespace}}", "bench").replace("{{target}}", "svc-007")
    assert ours["spec"]["useDefaultTemplate"] is False
    assert all(m["interval"] == "60s" for m in run["spec"]["metrics"])


def test_table_puts_both_tools_and_their_ratio_in_one_row() -> None:
    row = {
        "n": 100,
        "measurements": 200,
        "measurements_per_min": 200.0,
        "cpu_per_1000": 2.0,
        "cores": 0.1,
        "peak_rss_mb": 100.0,
        "rss_mb": 90.0,
        "rss_per_1000_mb": 1000.0,
        "queries": 200,
        "queries_per_measurement": 1.0,
        "api_writes_by_verb": {"PUT": 100.0},
        "api_writes_per_measurement": 0.5,
        "api_writes_all_resources_per_min": 60.0,
        "apiserver_cores": 0.2,
        "lag_p50": 0.0,
        "lag_p99": 1.0,
        "lag_samples": 10,
        "outcomes": {},
        "bed_cores": {"machine": 1.5},
        "window": 120.0,
    }
    out = {
        "scale": [
            {**row, "tool": "argo"},
            {**row, "tool": "postdeploy", "cpu_per_1000": 1.0},
            {**row, "tool": "argo", "n": 2100, "peak_rss_mb": 300.0},
            {**row, "tool": "postdeploy", "n": 2100, "peak_rss_mb": 200.0},
        ],
        "breach": {"argo": [1.0, 2.0, 3.0], "postdeploy": [1.0, 1.0, 1.5]},
        "uptime": [{"at": "start", "load": "1.0 1.0 1.0"}],
        "argo": {"version": "v1.9.0"},
    }
    text = argo.table(out)
    assert "| CPU s / 1,000 measurements | 100 | 2.00 | 1.00 | 0.50 |" in text
    assert "| breach to action p50 (s) | 3 / 3 runs | 2.00 | 1.00 | 0.50 |" in text
    assert "start: 1.0 1.0 1.0" in text
    # growth between the smallest and largest size, per 1,000: (300 - 100) / 2,000 * 1,000
    assert "| RSS growth per 1,000 analyses (MB) | 100 to 2,100 | 100 | 50 | 0.50 |" in text
