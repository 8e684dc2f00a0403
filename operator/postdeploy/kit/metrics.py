"""The operator's own Prometheus metrics, and the server that exposes them on /metrics.

``postdeploy run --metrics-port PORT`` calls ``serve``. The engine and the actions
record what happens through the ``record_*`` functions (each a line at the place the
thing happens); nothing here does I/O but the server. Every metric lives in
``REGISTRY`` (with the process metrics), so what the dashboard and the alert rules
may use is exactly ``exported_names()``, which a test checks.

- ``postdeploy_build_info{version}``                       1
- ``postdeploy_leader``                                    1 on the replica that acts
- ``postdeploy_reviews{phase, verdict}``                   reviews known now
- ``postdeploy_reviews_completed_total{verdict}``
- ``postdeploy_check_runs_total{provider, state}``         one per measurement
- ``postdeploy_check_duration_seconds{provider}``          histogram of the same
- ``postdeploy_run_delay_seconds``                         histogram: how long after its
                                                           run time a run began (lag)
- ``postdeploy_provider_errors_total{provider}``           data source down, bad answer
- ``postdeploy_rollbacks_total{kind, outcome}``
- ``postdeploy_webhook_deliveries_total{kind, outcome}``   notifications sent or failed
- ``postdeploy_comparison_runs_total{way}``                comparison checks' runs that
                                                           added to their kept test
                                                           (``added``) or counted every
                                                           batch (``counted``)
- ``postdeploy_comparison_kept{what}``                     kept tests (``tests``) and
                                                           the numbers they hold
                                                           (``numbers``, bounded by
                                                           ``prometheus_compare.MAX_KEPT``)
- ``postdeploy_gc_pause_seconds{generation}``              histogram: how long each
                                                           garbage collection stopped
                                                           the process (``watch_gc_pauses``,
                                                           called by ``postdeploy run``)
"""

from __future__ import annotations

import bisect
import collections
import functools
import gc
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from typing import Any

import prometheus_client
from prometheus_client import core, registry

__all__ = [
    "REGISTRY",
    "exported_names",
    "forget_review",
    "record_check",
    "record_comparison",
    "record_delivery",
    "record_review",
    "record_review_completed",
    "record_rollback",
    "serve",
    "set_leader",
    "watch_gc_pauses",
]

REGISTRY = prometheus_client.CollectorRegistry(auto_describe=True)
prometheus_client.ProcessCollector(registry=REGISTRY)
prometheus_client.PlatformCollector(registry=REGISTRY)

# Measurements take from milliseconds (kubernetes reads) to the measure timeout (30 s).
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

_BUILD = prometheus_client.Gauge(
    "postdeploy_build_info", "The running operator's version.", ["version"], registry=REGISTRY
)
_LEADER = prometheus_client.Gauge(
    "postdeploy_leader",
    "1 when this replica runs the reviews (the Lease holder, or alone).",
    registry=REGISTRY,
)
_COMPLETED = prometheus_client.Counter(
    "postdeploy_reviews_completed", "Reviews that reached a verdict.", ["verdict"], registry=REGISTRY
)
_CHECK_RUNS = prometheus_client.Counter(
    "postdeploy_check_runs",
    "Measurements taken, by provider and resulting check state.",
    ["provider", "state"],
    registry=REGISTRY,
)
_CHECK_DURATION = prometheus_client.Histogram(
    "postdeploy_check_duration_seconds",
    "How long one measurement took.",
    ["provider"],
    buckets=_DURATION_BUCKETS,
    registry=REGISTRY,
)
_RUN_DELAY = prometheus_client.Histogram(
    "postdeploy_run_delay_seconds",
    "How long after its run time (its slot's start on the evaluation grid) a check run began.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
_PROVIDER_ERRORS = prometheus_client.Counter(
    "postdeploy_provider_errors",
    "Measurements that failed for the data source's sake (down, refused, malformed).",
    ["provider"],
    registry=REGISTRY,
)
_ROLLBACKS = prometheus_client.Counter(
    "postdeploy_rollbacks",
    "Rollbacks, by target kind and outcome (done, dry-run, skipped, failed).",
    ["kind", "outcome"],
    registry=REGISTRY,
)
_DELIVERIES = prometheus_client.Counter(
    "postdeploy_webhook_deliveries",
    "Notification webhook deliveries, by kind (webhook, slack) and outcome (delivered, failed).",
    ["kind", "outcome"],
    registry=REGISTRY,
)


_COMPARISON_RUNS = prometheus_client.Counter(
    "postdeploy_comparison_runs",
    "Comparison checks' runs, by way: added to their kept test, or counted every batch "
    "(a first run, after a restart, an eviction or a moved latency boundary).",
    ["way"],
    registry=REGISTRY,
)
_COMPARISONS_KEPT = prometheus_client.Gauge(
    "postdeploy_comparison_kept",
    "Comparison tests kept in memory (what=tests) and the numbers they hold (what=numbers).",
    ["what"],
    registry=REGISTRY,
)


class _Reviews(registry.Collector):
    """``postdeploy_reviews{phase, verdict}``, counted at scrape time from the last
    phase and verdict recorded per review, so a review that moves on leaves no stale
    series behind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the scrape runs in the server's thread
        self._states: dict[tuple[str, str], tuple[str, str]] = {}

    def record(self, namespace: str, name: str, phase: str, verdict: str) -> None:
        with self._lock:
            self._states[(namespace, name)] = (phase, verdict)

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._states.pop((namespace, name), None)

    def collect(self) -> Iterator[core.Metric]:
        with self._lock:
            counts = collections.Counter(self._states.values())
        family = core.GaugeMetricFamily(
            "postdeploy_reviews",
            "Reviews the operator knows, by phase and verdict.",
            labels=["phase", "verdict"],
        )
        for (phase, verdict), count in sorted(counts.items()):
            family.add_metric([phase, verdict], count)
        yield family


_REVIEWS = _Reviews()
REGISTRY.register(_REVIEWS)

_GC_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


class _GcPauses(registry.Collector):
    """``postdeploy_gc_pause_seconds{generation}``: each garbage collection's pause, timed
    by a ``gc.callbacks`` hook. A collection holds the GIL, so its pause stops the event
    loop: runs due meanwhile start late (``postdeploy_run_delay_seconds``). The hook only
    adds to plain lists, no lock and no metric object: a collection may start in a
    thread that holds a metric's lock. The scrape reads the lists."""

    def __init__(self) -> None:
        self._started = 0.0
        self._counts = [[0] * (len(_GC_BUCKETS) + 1) for _ in range(3)]  # per bucket, not cumulative
        self._sums = [0.0, 0.0, 0.0]

    def hook(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        seconds = time.perf_counter() - self._started
        generation = min(2, max(0, int(info.get("generation", 2))))
        self._counts[generation][bisect.bisect_left(_GC_BUCKETS, seconds)] += 1
        self._sums[generation] += seconds

    def collect(self) -> Iterator[core.Metric]:
        family = core.HistogramMetricFamily(
            "postdeploy_gc_pause_seconds",
            "How long each garbage collection stopped the process, by generation.",
            labels=["generation"],
        )
        # "0.001" ... "5.0", "+Inf": as prometheus_client writes a histogram's bounds
        bounds = [*(repr(b) for b in _GC_BUCKETS), "+Inf"]
        for generation in range(3):
            running, buckets = 0, []
            for bound, count in zip(bounds, list(self._counts[generation]), strict=True):
                running += count
                buckets.append((bound, float(running)))
            family.add_metric([str(generation)], buckets, sum_value=self._sums[generation])
        yield family


_GC_PAUSES = _GcPauses()
REGISTRY.register(_GC_PAUSES)


def _version() -> str:
    try:
        return metadata.version("postdeploy")
    except metadata.PackageNotFoundError:
        return "unknown"


_BUILD.labels(version=_version()).set(1)
_LEADER.set(1)


def record_review(namespace: str, name: str, phase: str, verdict: str) -> None:
    """The review's current phase and verdict (after each tick that wrote its status)."""
    _REVIEWS.record(namespace, name, phase or "Pending", verdict or "Pending")


def forget_review(namespace: str, name: str) -> None:
    """The review was deleted."""
    _REVIEWS.forget(namespace, name)


def record_review_completed(verdict: str) -> None:
    _COMPLETED.labels(verdict=verdict).inc()


@functools.cache
def _check_series(provider: str, state: str) -> tuple[Any, Any]:
    """The labelled children ``record_check`` counts every run in, looked up once per
    label pair (``labels()`` parses its arguments at every call: 1.8 % of the
    operator's samples with 2,000 reviews). Providers and states are a few names each."""
    return _CHECK_RUNS.labels(provider=provider, state=state), _CHECK_DURATION.labels(provider=provider)


def record_check(provider: str, state: str, seconds: float, *, provider_error: bool = False) -> None:
    """One measurement: its provider, the check state it led to, its duration."""
    runs, duration = _check_series(provider, state)
    runs.inc()
    duration.observe(seconds)
    if provider_error:
        _PROVIDER_ERRORS.labels(provider=provider).inc()


def record_comparison(added: bool, tests: int, numbers: int) -> None:
    """A comparison run that added to its kept test (or counted every batch), and
    what the kept tests hold after it."""
    _COMPARISON_RUNS.labels(way="added" if added else "counted").inc()
    _COMPARISONS_KEPT.labels(what="tests").set(tests)
    _COMPARISONS_KEPT.labels(what="numbers").set(numbers)


def record_run_delay(seconds: float) -> None:
    """A check run began ``seconds`` after its run time (``decisions.phases.run_time``)."""
    _RUN_DELAY.observe(max(0.0, seconds))


def record_rollback(kind: str, outcome: str) -> None:
    _ROLLBACKS.labels(kind=kind, outcome=outcome).inc()


def record_delivery(kind: str, outcome: str) -> None:
    _DELIVERIES.labels(kind=kind, outcome=outcome).inc()


def set_leader(leader: bool) -> None:
    """Whether this replica runs the reviews (the election calls it on every change)."""
    _LEADER.set(1 if leader else 0)


def watch_gc_pauses() -> None:
    """Time every garbage collection from now on (once per process)."""
    if _GC_PAUSES.hook not in gc.callbacks:
        gc.callbacks.append(_GC_PAUSES.hook)


def exported_names() -> set[str]:
    """Every series name a scrape can show, with the suffixes counters and histograms add."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        if family.type == "counter":
            names.update({f"{family.name}_total", f"{family.name}_created"})
        elif family.type == "histogram":
            names.update(f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count", "created"))
        names.update(sample.name for sample in family.samples)
    return names


def serve(port: int, addr: str = "0.0.0.0") -> threading.Thread:
    """Serve ``REGISTRY`` on http://ADDR:PORT/metrics from a daemon thread."""
    _server, thread = prometheus_client.start_http_server(port, addr=addr, registry=REGISTRY)
    return thread
