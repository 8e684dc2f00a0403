"""The prometheus provider against the test bed's Prometheus (backfilled history).

Covers:
- an instant query templated with the review's target and namespace, several series
  combined by ``aggregate``, the series in the details; a scalar result;
- baselines: ``offset`` and ``preDeploy`` give exactly what Prometheus says at those
  times; a baseline with no data leaves ``baseline`` empty with a note and the
  measurement OK;
- a range query reduced per series (also with more points than Prometheus allows
  at the requested step);
- trends over the memory leak in the history: the least-squares slope per hour, a
  Mann-Kendall "increasing", and hours until the memory limit (limits paired with
  their series by labels); a flat series never reaches its limit;
- a query with no series, or only NaN, is NoData; a bad query is an Error with
  Prometheus's words;
- a target name with double quotes cannot break out of the label matcher;
- Prometheus stopped, unreachable, or accepting connections but never answering is
  an Error measurement, never an exception.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from postdeploy.decisions.trends import NOT_GROWING_HOURS
from postdeploy.models.checks import Baseline, PrometheusCheck
from postdeploy.models.measurements import MeasurementState, ReviewContext
from postdeploy.providers.prometheus import PrometheusProvider
from testbed import observability as bed
from testbed import ports
from tests.contexts import make_context

pytest_plugins = ["tests.e2e.conftest_observability"]
pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
LEAKY_MEMORY = 'container_memory_working_set_bytes{namespace="{{namespace}}", job="leaky"}'
LEAKY_LIMIT = 'kube_pod_container_resource_limits{namespace="{{namespace}}", job="leaky", resource="memory"}'
CHECKOUT_RPS = 'sum by (pod) (rate(http_requests_total{namespace="{{namespace}}", service="{{target}}"}[5m]))'


@pytest.fixture
def prometheus_url(observability: dict[str, Any]) -> str:
    url: str = observability["env"]["PROMETHEUS_URL"]
    return url


@pytest.fixture
def history_end(observability: dict[str, Any]) -> datetime.datetime:
    """The time of the last backfilled sample: the history is exact up to here."""
    checkpoints = json.loads(pathlib.Path(observability["history"]["checkpoints"]).read_text())
    return datetime.datetime.fromtimestamp(checkpoints["timeline"]["end"], datetime.UTC)


@pytest.fixture
async def provider(prometheus_url: str) -> AsyncIterator[PrometheusProvider]:
    provider = PrometheusProvider(prometheus_url, timeout_seconds=10)
    yield provider
    await provider.close()


def _ctx(now: datetime.datetime, **kwargs: Any) -> ReviewContext:
    kwargs.setdefault("target_name", "checkout")
    return make_context(namespace="shop", now=now, **kwargs)


def _direct(prometheus_url: str, promql: str, at: datetime.datetime) -> list[float]:
    return sorted(float(r["value"][1]) for r in bed.query(prometheus_url, promql, at.timestamp()))


async def test_instant_query_combines_the_series(
    provider: PrometheusProvider, prometheus_url: str, history_end: datetime.datetime
) -> None:
    at = history_end - datetime.timedelta(hours=1)
    m = await provider.measure(PrometheusCheck(query=CHECKOUT_RPS), _ctx(at))
    assert m.state is MeasurementState.OK, m.message
    assert m.query == CHECKOUT_RPS.replace("{{namespace}}", "shop").replace("{{target}}", "checkout")
    per_pod = _direct(prometheus_url, m.query, at)
    assert len(per_pod) == 3
    assert m.value == pytest.approx(max(per_pod))
    assert m.details["seriesCount"] == 3
    assert all(s["labels"]["pod"].startswith("checkout-") for s in m.details["series"])
    assert [s["value"] for s in m.details["series"]] == pytest.approx(sorted(per_pod, reverse=True))
    total = await provider.measure(PrometheusCheck(query=CHECKOUT_RPS, aggregate="sum"), _ctx(at))
    assert total.value == pytest.approx(sum(per_pod))


async def test_scalar_result(provider: PrometheusProvider, history_end: datetime.datetime) -> None:
    m = await provider.measure(PrometheusCheck(query="scalar(vector(2)) * 3"), _ctx(history_end))
    assert m.state is MeasurementState.OK
    assert m.value == 6.0


async def test_baseline_by_offset_and_before_the_deployment(
    provider: PrometheusProvider, prometheus_url: str, history_end: datetime.datetime
) -> None:
    query = 'sum(rate(http_requests_total{namespace="shop", service="checkout"}[5m]))'
    at = history_end - datetime.timedelta(hours=1)
    week_ago = await provider.measure(PrometheusCheck(query=query), _ctx(at), Baseline(offset="1w"))
    assert week_ago.state is MeasurementState.OK
    assert week_ago.baseline == pytest.approx(
        _direct(prometheus_url, query, at - datetime.timedelta(weeks=1))[0]
    )
    assert week_ago.details["baselineAt"] == (at - datetime.timedelta(weeks=1)).isoformat()
    # The daily cycle makes the same hour a week ago comparable.
    assert week_ago.value is not None
    assert abs(week_ago.value - week_ago.baseline) / week_ago.baseline < 0.2

    deployed = at - datetime.timedelta(hours=2)
    before = await provider.measure(
        PrometheusCheck(query=query), _ctx(at, deployed_at=deployed), Baseline(pre_deploy=True)
    )
    assert before.baseline == pytest.approx(_direct(prometheus_url, query, deployed)[0])


async def test_a_settled_pre_deployment_baseline_is_kept_and_not_asked_again(
    provider: PrometheusProvider, prometheus_url: str, history_end: datetime.datetime
) -> None:
    query = 'sum(rate(http_requests_total{namespace="shop", service="checkout"}[5m]))'
    at = history_end - datetime.timedelta(hours=1)
    check, pre = PrometheusCheck(query=query), Baseline(pre_deploy=True)
    # One minute after the deployment the baseline may still change: measured, not kept.
    early = at - datetime.timedelta(minutes=1)
    fresh = await provider.measure(check, _ctx(at, deployed_at=early), pre)
    assert fresh.baseline == pytest.approx(_direct(prometheus_url, query, early)[0])
    assert fresh.memo is None
    # Two hours after it, the value is final and kept with its query and time.
    deployed = at - datetime.timedelta(hours=2)
    first = await provider.measure(check, _ctx(at, deployed_at=deployed), pre)
    expected = _direct(prometheus_url, query, deployed)[0]
    assert first.baseline == pytest.approx(expected)
    assert first.memo == {"baseline": {"query": query, "at": deployed.isoformat(), "value": first.baseline}}
    # A later run uses the kept value (planted here as 12345) and does not ask for it.
    asked = provider.coalescer.requests
    planted = {"baseline": {**first.memo["baseline"], "value": 12345.0}}
    later = at + datetime.timedelta(minutes=1)
    again = await provider.measure(check, _ctx(later, deployed_at=deployed, memo=planted), pre)
    assert again.state is MeasurementState.OK
    assert again.baseline == 12345.0
    assert again.memo is None  # nothing new to keep
    assert provider.coalescer.requests == asked + 1  # the current value only
    # A kept value of another query (the check was edited) is not used.
    other = {"baseline": {**planted["baseline"], "query": "vector(1)"}}
    edited = await provider.measure(check, _ctx(later, deployed_at=deployed, memo=other), pre)
    assert edited.baseline == pytest.approx(expected)


async def test_a_baseline_without_data_leaves_the_measurement_standing(
    provider: PrometheusProvider, history_end: datetime.datetime
) -> None:
    query = 'sum(rate(http_requests_total{namespace="shop", service="checkout"}[5m]))'
    m = await provider.measure(PrometheusCheck(query=query), _ctx(history_end), Baseline(offset="30d"))
    assert m.state is MeasurementState.OK
    assert m.baseline is None
    assert m.details["baselineNote"] == "no baseline: the query returned no series"


async def test_range_query_reduced_per_series(
    provider: PrometheusProvider, prometheus_url: str, history_end: datetime.datetime
) -> None:
    spec = PrometheusCheck(query=LEAKY_MEMORY, range="1h", step="60s", reduce="max")
    m = await provider.measure(spec, _ctx(history_end))
    assert m.state is MeasurementState.OK, m.message
    expected = _direct(
        prometheus_url, 'max_over_time(container_memory_working_set_bytes{job="leaky"}[1h])', history_end
    )
    assert m.value == pytest.approx(expected[0], rel=1e-6)
    # A week at one-second steps is more than Prometheus allows: the step is widened.
    wide = await provider.measure(
        PrometheusCheck(query=LEAKY_MEMORY, range="7d", step="1s", reduce="mean"), _ctx(history_end)
    )
    assert wide.state is MeasurementState.OK, wide.message


async def test_slope_of_the_memory_leak(provider: PrometheusProvider, history_end: datetime.datetime) -> None:
    spec = PrometheusCheck(query=LEAKY_MEMORY, range="12h", step="5m", trend="slope")
    m = await provider.measure(spec, _ctx(history_end))
    assert m.state is MeasurementState.OK, m.message
    assert m.value == pytest.approx(10 * MIB, rel=0.05)  # the history's leak: 10 MiB/h
    assert m.details["slopePerHour"] == m.value
    assert m.details["rSquared"] > 0.9
    assert m.details["pValue"] < 0.001
    assert m.details["labels"]["job"] == "leaky"


async def test_mann_kendall_sees_the_leak_increase(
    provider: PrometheusProvider, history_end: datetime.datetime
) -> None:
    spec = PrometheusCheck(query=LEAKY_MEMORY, range="6h", step="10m", trend="mannKendall")
    m = await provider.measure(spec, _ctx(history_end))
    assert m.state is MeasurementState.OK, m.message
    assert m.value is not None and m.value > 0.8
    assert m.details["trend"] == "increasing"
    assert m.details["pValue"] < 0.001


async def test_hours_until_the_memory_limit(
    provider: PrometheusProvider, history_end: datetime.datetime
) -> None:
    spec = PrometheusCheck(
        query=LEAKY_MEMORY, range="12h", step="5m", trend="timeToLimit", limit_query=LEAKY_LIMIT
    )
    m = await provider.measure(spec, _ctx(history_end))
    assert m.state is MeasurementState.OK, m.message
    # ~440 MiB growing by 10 MiB/h towards a 512 MiB limit: about seven hours.
    assert 5.5 < (m.value or 0) < 9
    assert m.details["growing"] is True
    assert m.details["limit"] == 512 * MIB
    assert m.details["hoursToLimit"] == m.value


async def test_limits_pair_with_their_series_by_labels(
    provider: PrometheusProvider, history_end: datetime.datetime
) -> None:
    # Three checkout pods, three limit series that carry extra labels (resource, unit).
    spec = PrometheusCheck(
        query='container_memory_working_set_bytes{namespace="shop", job="checkout"}',
        range="2h",
        step="1m",
        trend="timeToLimit",
        limit_query='kube_pod_container_resource_limits{namespace="shop", job="checkout", resource="memory"}',
    )
    m = await provider.measure(spec, _ctx(history_end))
    assert m.state is MeasurementState.OK, m.message
    assert "seriesWithoutLimit" not in m.details
    assert m.details["seriesCount"] == 3


async def test_a_flat_series_never_reaches_its_limit(
    provider: PrometheusProvider, history_end: datetime.datetime
) -> None:
    spec = PrometheusCheck(query=LEAKY_LIMIT, range="6h", step="10m", trend="timeToLimit", limit_query="1e12")
    m = await provider.measure(spec, _ctx(history_end))
    assert m.state is MeasurementState.OK, m.message
    assert m.value == NOT_GROWING_HOURS
    assert m.details["growing"] is False


async def test_no_series_and_nan_are_no_data(
    provider: PrometheusProvider, history_end: datetime.datetime
) -> None:
    none = await provider.measure(PrometheusCheck(query='up{job="no-such-job"}'), _ctx(history_end))
    assert none.state is MeasurementState.NO_DATA
    assert none.message == "the query returned no series"
    nan = await provider.measure(
        PrometheusCheck(query='sum(rate(http_requests_total{job="no-such-job"}[5m])) / 0 or vector(0) / 0'),
        _ctx(history_end),
    )
    assert nan.state is MeasurementState.NO_DATA
    ranged = await provider.measure(
        PrometheusCheck(query='up{job="no-such-job"}', range="1h", trend="slope"), _ctx(history_end)
    )
    assert ranged.state is MeasurementState.NO_DATA


async def test_a_bad_query_is_an_error_with_prometheus_words(
    provider: PrometheusProvider, history_end: datetime.datetime
) -> None:
    m = await provider.measure(PrometheusCheck(query="sum(rate(http_requests_total[5m])"), _ctx(history_end))
    assert m.state is MeasurementState.ERROR
    assert m.message.startswith("Prometheus refused the query: HTTP 400: bad_data:")
    assert "parse error" in m.message


async def test_quotes_in_the_target_cannot_break_out_of_the_matcher(
    provider: PrometheusProvider, history_end: datetime.datetime
) -> None:
    hostile = 'checkout"} or vector(1) or up{job="x'
    spec = PrometheusCheck(query='sum(up{job="{{target}}"})')
    m = await provider.measure(spec, _ctx(history_end, target_name=hostile))
    # Unescaped, the query would be valid PromQL answering 1 through vector(1).
    assert m.state is MeasurementState.NO_DATA, (m.state, m.value, m.message)
    assert m.query == 'sum(up{job="checkout\\"} or vector(1) or up{job=\\"x"})'


async def test_unreachable_prometheus_is_an_error(history_end: datetime.datetime) -> None:
    provider = PrometheusProvider(f"http://{ports.LOOPBACK}:{ports.free_port()}", timeout_seconds=2)
    m = await provider.measure(PrometheusCheck(query="up"), _ctx(history_end))
    await provider.close()
    assert m.state is MeasurementState.ERROR
    assert "is unreachable: Connection refused" in m.message
    no_url = await PrometheusProvider(None).measure(PrometheusCheck(query="up"), _ctx(history_end))
    assert no_url.state is MeasurementState.ERROR


async def test_a_prometheus_that_never_answers_is_an_error(history_end: datetime.datetime) -> None:
    with socket.socket() as silent:
        silent.bind((ports.LOOPBACK, 0))
        silent.listen(8)  # the kernel accepts connections; nobody ever answers
        url = f"http://{ports.LOOPBACK}:{silent.getsockname()[1]}"
        provider = PrometheusProvider(url, timeout_seconds=0.5)
        started = time.monotonic()
        m = await provider.measure(PrometheusCheck(query="up"), _ctx(history_end))
        await provider.close()
        assert time.monotonic() - started < 5
    assert m.state is MeasurementState.ERROR
    assert m.message == f"Prometheus at {url} did not answer within 0.5s"


async def test_a_stopped_prometheus_is_an_error(tmp_path: pathlib.Path) -> None:
    port = ports.free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1m\n")
    process = subprocess.Popen(
        [
            bed.PROMETHEUS_BIN,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address={ports.LOOPBACK}:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://{ports.LOOPBACK}:{port}"
    provider = PrometheusProvider(url, timeout_seconds=2)
    try:
        deadline = time.monotonic() + 30
        while not _ready(url):
            assert time.monotonic() < deadline, "the throwaway Prometheus did not start"
            time.sleep(0.2)
        now = datetime.datetime.now(datetime.UTC)
        running = await provider.measure(PrometheusCheck(query="vector(1)"), _ctx(now))
        assert running.state is MeasurementState.OK
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        # The next tick (a minute later): an answer for the same query and time would be
        # shared from the first call, as identical queries of one tick are.
        later = now + datetime.timedelta(minutes=1)
        stopped = await provider.measure(PrometheusCheck(query="vector(1)"), _ctx(later))
        assert stopped.state is MeasurementState.ERROR
        assert stopped.message == f"Prometheus at {url} is unreachable: Connection refused"
    finally:
        await provider.close()
        if process.poll() is None:
            process.kill()
            process.wait()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
