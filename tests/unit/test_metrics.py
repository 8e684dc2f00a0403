"""The operator's own metrics (``postdeploy.kit.metrics``) and what is built on them.

Covers: each ``record_*`` call shows in the exposition with its labels; the reviews
gauge counts the latest phase and verdict of each review and forgets deleted ones (no
stale series); garbage collections are timed by generation; ``serve`` answers on
/metrics over HTTP; the Grafana dashboard and the chart's alert rules use only series
the operator exports (the rules also ``up``, which Prometheus adds to every target).
"""

from __future__ import annotations

import gc
import json
import pathlib
import re
import socket

import httpx
import prometheus_client
import pytest

from postdeploy.kit import metrics

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "postdeploy"
SERIES = re.compile(r"\b((?:postdeploy|process)_[a-z_]+)\b")


def sample(name: str, **labels: str) -> float | None:
    value = metrics.REGISTRY.get_sample_value(name, labels)
    return None if value is None else float(value)


def test_check_runs_durations_and_provider_errors() -> None:
    before = sample("postdeploy_check_runs_total", provider="http", state="Error") or 0.0
    errors = sample("postdeploy_provider_errors_total", provider="http") or 0.0
    metrics.record_check("http", "Error", 0.3, provider_error=True)
    metrics.record_check("http", "Passed", 0.02)
    assert sample("postdeploy_check_runs_total", provider="http", state="Error") == before + 1
    assert sample("postdeploy_provider_errors_total", provider="http") == errors + 1
    assert (sample("postdeploy_check_duration_seconds_bucket", provider="http", le="0.025") or 0) >= 1
    assert (sample("postdeploy_check_duration_seconds_count", provider="http") or 0) >= 2


def test_rollbacks_deliveries_and_completed_reviews() -> None:
    metrics.record_rollback("Deployment", "done")
    metrics.record_delivery("slack", "failed")
    metrics.record_review_completed("RolledBack")
    assert (sample("postdeploy_rollbacks_total", kind="Deployment", outcome="done") or 0) >= 1
    assert (sample("postdeploy_webhook_deliveries_total", kind="slack", outcome="failed") or 0) >= 1
    assert (sample("postdeploy_reviews_completed_total", verdict="RolledBack") or 0) >= 1


def test_reviews_gauge_shows_each_review_once_in_its_latest_state() -> None:
    metrics.record_review("shop", "r1", "immediate", "Passing")
    metrics.record_review("shop", "r2", "immediate", "Passing")
    assert sample("postdeploy_reviews", phase="immediate", verdict="Passing") == 2
    metrics.record_review("shop", "r1", "extended", "Failing")
    assert sample("postdeploy_reviews", phase="immediate", verdict="Passing") == 1
    assert sample("postdeploy_reviews", phase="extended", verdict="Failing") == 1
    metrics.forget_review("shop", "r1")
    metrics.forget_review("shop", "r2")
    assert sample("postdeploy_reviews", phase="extended", verdict="Failing") is None
    assert sample("postdeploy_reviews", phase="immediate", verdict="Passing") is None


def test_leader_and_build_info() -> None:
    metrics.set_leader(False)
    assert sample("postdeploy_leader") == 0
    metrics.set_leader(True)
    assert sample("postdeploy_leader") == 1
    text = prometheus_client.generate_latest(metrics.REGISTRY).decode()
    assert re.search(r'^postdeploy_build_info\{version="[^"]+"\} 1\.0$', text, re.MULTILINE)


def test_serve_answers_on_metrics() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics.serve(port, "127.0.0.1")
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    assert "postdeploy_build_info" in response.text and "process_resident_memory_bytes" in response.text


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((CHART / "dashboards" / "postdeploy.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    expressions += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return expressions


def test_dashboard_uses_only_exported_series() -> None:
    expressions = dashboard_expressions()
    used = {name for expr in expressions for name in SERIES.findall(expr)}
    assert used, "the dashboard queries nothing"
    assert not used - metrics.exported_names()
    # Every metric family of the operator has a panel.
    families = {
        "postdeploy_reviews",
        "postdeploy_reviews_completed_total",
        "postdeploy_check_runs_total",
        "postdeploy_check_duration_seconds_bucket",
        "postdeploy_provider_errors_total",
        "postdeploy_rollbacks_total",
        "postdeploy_webhook_deliveries_total",
        "postdeploy_leader",
        "postdeploy_run_delay_seconds_bucket",
    }
    assert families <= used


@pytest.mark.parametrize("template", ["prometheusrule.yaml"])
def test_alert_rules_use_only_exported_series(template: str) -> None:
    text = (CHART / "templates" / template).read_text()
    used = set(SERIES.findall(text)) - {"postdeploy_operator"}
    assert used and not used - metrics.exported_names()
    assert re.findall(r"\bup\{", text), "the down alert uses Prometheus's own up"


def test_garbage_collections_are_timed_by_generation() -> None:
    metrics.watch_gc_pauses()
    metrics.watch_gc_pauses()  # once per process, however often asked
    assert sum(1 for c in gc.callbacks if c == metrics._GC_PAUSES.hook) == 1
    before = sample("postdeploy_gc_pause_seconds_count", generation="2") or 0.0
    gc.collect()
    after = sample("postdeploy_gc_pause_seconds_count", generation="2") or 0.0
    assert after == before + 1
    total = sample("postdeploy_gc_pause_seconds_sum", generation="2") or 0.0
    assert total > 0
    inf = sample("postdeploy_gc_pause_seconds_bucket", generation="2", le="+Inf")
    assert inf == after
    # cumulative: each bucket holds at least the one below it
    counts = [
        sample("postdeploy_gc_pause_seconds_bucket", generation="2", le=le) or 0.0
        for le in ("0.001", "0.01", "0.05", "0.1", "0.25", "0.5", "1.0", "2.0", "5.0", "+Inf")
    ]
    assert counts == sorted(counts)
