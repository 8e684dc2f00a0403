"""End-to-end tests of the observability test bed (``testbed/observability.py``).

What they cover, against real Prometheus, Alertmanager and sample-app processes on
127.0.0.1 (one bed per session, the ``observability`` fixture):

a. Backfilled history is served as generated: a value from a week ago (instant query
   with ``time=`` one week back, and the same series with ``offset 1w``) equals the
   generator's checkpoint; the traffic a week ago at the same hour is similar to the
   traffic at the end of the history (the daily cycle).
b. The memory leak in the history: ``deriv`` over 24 h of the ``leaky`` series is
   positive and ``predict_linear`` over 24 h projects above its memory limit; the
   latency creep (``creepy`` p95 rising over the last day) and the error spike three
   days ago are there too.
c. Steering the sample app: error rate 0 -> 0.5 shows up as the 5xx share in
   Prometheus (polled); invalid control input is refused with 400 and changes nothing.
d. The ``CheckoutHighErrorRate`` rule fires into Alertmanager (API v2 shows it active,
   ``severity=critical``, ``namespace=shop``, ``service=checkout``) after steering errors
   up, and is gone after steering back, in under 60 s.
e. An alert posted directly to ``/api/v2/alerts`` shows up, and disappears once its
   ``endsAt`` passes.
f. ``stop()`` cleans up: a second, separate bed (six hours of history) is started and
   stopped; none of its processes remains and all its ports can be bound again.

Tests that steer the sample app restore its settings.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from testbed import observability as bed
from testbed import ports, sampleapp

pytestmark = pytest.mark.e2e

# The fixture module is a plugin, not an import: one session-wide bed for all users.
pytest_plugins = ["tests.e2e.conftest_observability"]

T = TypeVar("T")
WEEK = 7 * 86400
ERROR_SHARE_10S = (
    'sum(rate(http_requests_total{namespace="shop",service="checkout",code=~"5.."}[10s]))'
    ' / sum(rate(http_requests_total{namespace="shop",service="checkout"}[10s]))'
)


def _poll(what: str, fetch: Callable[[], T], ok: Callable[[T], bool], timeout: float) -> T:
    """Call ``fetch`` until ``ok`` holds for its result; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = fetch()
        if ok(last):
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not reached within {timeout:.0f}s (last: {last!r})")
        time.sleep(0.5)


def _scalar(prom: str, promql: str, at: float | None = None) -> float | None:
    result = bed.query(prom, promql, at)
    if not result:
        return None
    return float(result[0]["value"][1])


def _selector(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


@contextlib.contextmanager
def _steered(control_url: str, changes: dict[str, Any]) -> Iterator[dict[str, Any]]:
    before = sampleapp.settings(control_url)
    try:
        yield sampleapp.steer(control_url, changes)
    finally:
        sampleapp.steer(control_url, {key: before[key] for key in changes})


def _checkout_alerts(am: str) -> list[dict[str, Any]]:
    return bed.alerts(am, [f'alertname="{bed.ALERT_NAME}"'])


# -- a. history ----------------------------------------------------------------------


def test_week_old_values_are_the_generated_ones(observability: dict[str, Any]) -> None:
    prom = observability["env"]["PROMETHEUS_URL"]
    checkpoints = json.loads(Path(observability["history"]["checkpoints"]).read_text())
    tl = checkpoints["timeline"]
    week_ago = int((time.time() - WEEK) // 3600 * 3600)
    assert tl["start"] <= week_ago <= tl["end"]
    pods = observability["pods"]
    wanted = [
        ("http_requests_total", {"pod": pods[0], "code": "200", "handler": "/api/cart"}),
        ("http_request_duration_seconds_bucket", {"pod": pods[1], "le": "0.1"}),
        ("container_memory_working_set_bytes", {"pod": pods[2]}),
        ("app_errors_total", {"pod": pods[0], "type": "ValidationError"}),
    ]
    checked = 0
    for row in checkpoints["series"]:
        for name, match in wanted:
            if row["name"] != name or any(row["labels"].get(k) != v for k, v in match.items()):
                continue
            expected = row["values"][str(week_ago)]
            selector = _selector(name, row["labels"])
            at_time = _scalar(prom, selector, at=week_ago)
            with_offset = _scalar(prom, f"{selector} offset 1w", at=week_ago + WEEK)
            assert at_time is not None, selector
            assert with_offset is not None, selector
            assert math.isclose(at_time, expected, rel_tol=1e-9), (selector, at_time, expected)
            assert math.isclose(with_offset, expected, rel_tol=1e-9), (selector, with_offset)
            assert row["labels"]["namespace"] == "shop"
            assert row["labels"]["job"] == row["labels"]["service"] == "checkout"
            checked += 1
            break
    assert checked >= len(wanted)

    # Same hour a week earlier: the daily cycle makes the two loads comparable.
    def load(offset: str) -> float | None:
        selector = f'http_requests_total{{namespace="shop",job="checkout"}}[30m]{offset}'
        return _scalar(prom, f"sum(rate({selector}))", at=tl["end"])

    now_load, week_load = load(""), load(" offset 1w")
    assert now_load and week_load
    assert abs(now_load / week_load - 1.0) < 0.1

    # The cycle peaks at 15:00 and bottoms out at 03:00 UTC (1.55 vs 0.45 of the mean):
    # compare the last such hours in the history, whatever the hour of the test run (two
    # loads 12 h apart are equal twice a day, so "now vs 12 h ago" failed by the clock).
    def last_hour_of_day(hour: int) -> int:
        at = tl["end"] // 86400 * 86400 + hour * 3600
        return at if at <= tl["end"] else at - 86400

    def load_at(at: int) -> float | None:
        selector = 'http_requests_total{namespace="shop",job="checkout"}[30m]'
        return _scalar(prom, f"sum(rate({selector}))", at=at)

    peak, trough = load_at(last_hour_of_day(15) + 900), load_at(last_hour_of_day(3) + 900)
    assert peak and trough
    assert peak / trough > 2.5, ("the daily cycle should show (expected ~3.4)", peak, trough)


# -- b. leak, creep, spike -------------------------------------------------------------


def test_leaky_memory_is_projected_above_its_limit(observability: dict[str, Any]) -> None:
    prom = observability["env"]["PROMETHEUS_URL"]
    leaky = 'container_memory_working_set_bytes{namespace="shop",job="leaky"}'
    slope = _scalar(prom, f"deriv({leaky}[24h])")
    projected = _scalar(prom, f"predict_linear({leaky}[24h], 86400)")
    # The history ends ~5 min before the bed started: read the limit over a window.
    limit = _scalar(
        prom,
        'max_over_time(kube_pod_container_resource_limits{namespace="shop",job="leaky",'
        'resource="memory"}[1h])',
    )
    assert slope is not None and projected is not None and limit is not None
    assert slope > 1000, f"expected a leak of ~2.9 kB/s, got {slope} B/s"
    assert projected > limit, (projected, limit)
    # The healthy checkout pods do not leak.
    healthy = _scalar(
        prom,
        'max(predict_linear(container_memory_working_set_bytes{namespace="shop",'
        'job="checkout",instance=""}[24h], 86400))',
    )
    assert healthy is not None and healthy < limit


def test_latency_creep_and_error_spike_in_history(observability: dict[str, Any]) -> None:
    prom = observability["env"]["PROMETHEUS_URL"]
    tl = observability["history"]["timeline"]
    p95 = (
        "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket"
        '{namespace="shop",job="creepy"}[30m])))'
    )
    early = _scalar(prom, p95, at=tl["creep_start"])
    late = _scalar(prom, p95, at=tl["end"])
    assert early is not None and late is not None
    assert early < 0.25 < 0.5 < late, (early, late)

    share = (
        'sum(rate(http_requests_total{namespace="shop",job="checkout",code=~"5.."}[1h]))'
        ' / sum(rate(http_requests_total{namespace="shop",job="checkout"}[1h]))'
    )
    during = _scalar(prom, share, at=tl["spike_end"])
    day_before = _scalar(prom, share, at=tl["spike_end"] - 86400)
    assert during is not None and day_before is not None
    assert 0.12 < during < 0.18, during
    assert day_before < 0.01, day_before


# -- c. steering ----------------------------------------------------------------------


def test_steering_error_rate_changes_the_5xx_share(observability: dict[str, Any]) -> None:
    env = observability["env"]
    prom, control = env["PROMETHEUS_URL"], env["SAMPLEAPP_CONTROL_URL"]
    with _steered(control, {"error_rate": 0.0}):
        _poll("5xx share near 0", lambda: _scalar(prom, ERROR_SHARE_10S), _below(0.02), 40)
        with _steered(control, {"error_rate": 0.5}) as now:
            assert now["error_rate"] == 0.5
            assert sampleapp.settings(control)["error_rate"] == 0.5
            share = _poll("5xx share near 0.5", lambda: _scalar(prom, ERROR_SHARE_10S), _above(0.35), 30)
            assert share is not None and share < 0.65


def test_control_api_refuses_invalid_settings(observability: dict[str, Any]) -> None:
    control = observability["env"]["SAMPLEAPP_CONTROL_URL"]
    before = sampleapp.settings(control)
    bodies: list[dict[str, Any]] = [
        {"error_rate": 2},
        {"rps": "many"},
        {"nonsense": 1},
        {"error_types": []},
    ]
    for body in bodies:
        response = httpx.post(control, json=body, timeout=5)
        assert response.status_code == 400, body
        assert "error" in response.json()
    assert sampleapp.settings(control) == before


def _below(limit: float) -> Callable[[float | None], bool]:
    return lambda value: value is not None and value < limit


def _above(limit: float) -> Callable[[float | None], bool]:
    return lambda value: value is not None and value > limit


# -- d. the alerting rule --------------------------------------------------------------


def test_error_rule_fires_and_resolves_in_alertmanager(observability: dict[str, Any]) -> None:
    env = observability["env"]
    am, control = env["ALERTMANAGER_URL"], env["SAMPLEAPP_CONTROL_URL"]
    sampleapp.steer(control, {"error_rate": 0.0})
    # An earlier test may have left errors in the rule's 30 s window.
    _poll("no CheckoutHighErrorRate yet", lambda: _checkout_alerts(am), lambda a: not a, 60)
    began = time.monotonic()
    with _steered(control, {"error_rate": 0.5}):
        firing = _poll("CheckoutHighErrorRate active", lambda: _checkout_alerts(am), bool, 40)
        fired_after = time.monotonic() - began
    (alert,) = firing
    assert alert["status"]["state"] == "active"
    for key, value in {"severity": "critical", "namespace": "shop", "service": "checkout"}.items():
        assert alert["labels"][key] == value
    _poll("CheckoutHighErrorRate resolved", lambda: _checkout_alerts(am), lambda a: not a, 50)
    total = time.monotonic() - began
    assert total < 60, f"fired after {fired_after:.1f}s, resolved after {total:.1f}s"


# -- e. posting alerts directly ----------------------------------------------------------


def test_posted_alert_shows_and_expires(observability: dict[str, Any]) -> None:
    am = observability["env"]["ALERTMANAGER_URL"]
    marker = uuid.uuid4().hex
    ends_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=6)
    bed.post_alert(
        am,
        {"alertname": "TestbedDirect", "namespace": "shop", "severity": "warning", "run": marker},
        {"summary": "posted by test_observability"},
        ends_at=ends_at,
    )
    matchers = [f'run="{marker}"']
    (shown,) = _poll("posted alert listed", lambda: bed.alerts(am, matchers), bool, 10)
    assert shown["labels"]["alertname"] == "TestbedDirect"
    assert shown["annotations"]["summary"] == "posted by test_observability"
    assert shown["status"]["state"] == "active"
    _poll("posted alert expired", lambda: bed.alerts(am, matchers), lambda a: not a, 20)
    assert dt.datetime.now(dt.UTC) >= ends_at - dt.timedelta(seconds=1)


# -- f. stop ---------------------------------------------------------------------------


def test_stop_leaves_no_process_and_no_port(observability: dict[str, Any], tmp_path: Path) -> None:
    state = bed.start(tmp_path / "second", history_days=0.25)
    try:
        assert set(state["pids"]) == {"prometheus", "alertmanager", "sampleapp"}
        assert not set(state["ports"].values()) & set(observability["ports"].values())
        for port in state["ports"].values():
            assert not ports.is_port_free(port), f"port {port} should be in use"
    finally:
        bed.stop(state)
    for name, pid in state["pids"].items():
        assert not Path(f"/proc/{pid}").exists() or _zombie_or_other(pid, state, name), name
    for name, port in state["ports"].items():
        assert ports.is_port_free(port), f"{name} port {port} still in use"
    # The session bed is untouched.
    assert httpx.get(f"{observability['env']['PROMETHEUS_URL']}/-/ready", timeout=5).is_success


def _zombie_or_other(pid: int, state: dict[str, Any], name: str) -> bool:
    """A reused pid (another process now) or an unreaped zombie counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0] == "Z" or int(fields[19]) != state["starttimes"][name]
