"""Eight days of deterministic metric history, backfilled into Prometheus.

The generator models the sample Deployment ``shop/checkout`` (and two helper
workloads) minute by minute, writes the samples as an OpenMetrics file with explicit
timestamps and turns that file into TSDB blocks with::

    promtool tsdb create-blocks-from openmetrics FILE DATADIR

A Prometheus started on ``DATADIR`` serves the history at once.

Everything is a pure function of the seed, the pod names and the anchor time ``now``:
``random.Random(seed)`` supplies every bit of noise, in a fixed order.

Timeline (all times relative to ``now``; ``H`` = ``now`` rounded down to the hour)
-------------------------------------------------------------------------------------

* Samples every 60 s, on timestamps that are multiples of 60 s, from
  ``E - 8 days`` to ``E`` inclusive, where ``E`` = ``now - 5 min`` rounded down to
  the minute (so the live scrapes that follow never fall inside a backfilled block).
* Whole range, ``job="checkout"`` (pods ``checkout-<hash>-<id>``, 3 by default):
  normal traffic with a daily cycle: ``rate = base * (1 + 0.55 * sin(2*pi*(h - 9)/24))``
  for the UTC hour of day ``h`` (peak ~15:00 UTC, trough ~03:00 UTC) plus ~3 % noise,
  so "the same hour a week ago" sees the same load. Base per pod: 12 req/s
  ``GET /api/cart`` and 3 req/s ``POST /api/checkout``. Normal errors: 0.3 % ``500``,
  0.1 % ``503``; 1.5 % ``404`` on the cart, 1 % ``422`` on checkout. Latency is
  log-normal: cart median 35 ms (p95 ~80 ms), checkout median 120 ms (p95 ~250 ms).
  Memory working set: a 30-minute garbage-collection sawtooth between ~180 and
  ~230 MiB (limit 512 MiB, request 256 MiB); CPU ~0.02 + 0.004 s/s per req/s.
* ``[H - 72 h, H - 71 h)``, ``job="checkout"``: **error-rate spike**: 11 % ``500``
  plus 4 % ``503`` (5xx share ~15 %), latency medians x2.5, ``app_errors_total`` of
  ``type="TimeoutError"`` and ``type="DatabaseError"`` follow the 503s and 500s.
* ``job="leaky"`` (one pod ``leaky-<hash>-<id>``, ``GET /api/report`` at 2 req/s):
  memory flat at ~200 MiB until ``E - 24 h``, then a **memory leak** growing linearly by
  10 MiB/h (≈ 2913 B/s) to ~440 MiB at ``E``; limit 512 MiB. ``deriv(...[24h])`` is
  positive and ``predict_linear(...[24h], 86400)`` projects ~680 MiB, above the limit.
* ``job="creepy"`` (one pod ``creepy-<hash>-<id>``, ``GET /api/search`` at 5 req/s):
  median latency 50 ms (p95 ~110 ms) until ``E - 24 h``, then a **latency creep**: the
  median rises linearly to 400 ms at ``E`` (p95 ~0.9 s).

Every series carries ``namespace="shop"``, ``pod``, ``container``, ``job`` and
``service`` (the three equal the workload name). Metric families:
``http_requests_total{method,handler,code}``, ``http_request_duration_seconds``
(histogram, ``prometheus_client``'s default buckets, ``le`` spelt the same way),
``container_memory_working_set_bytes``,
``kube_pod_container_resource_limits{resource="memory",unit="byte"}`` and
``kube_pod_container_resource_requests`` (same labels), both also with
``resource="cpu",unit="core"`` (checkout: request 0.25, limit 1; leaky: 0.1 and 0.5;
creepy: 0.25 and 1; constant, like kube-state-metrics reports them),
``container_cpu_usage_seconds_total`` and ``app_errors_total{type}``.

Besides the blocks, :func:`backfill` writes a JSON file of checkpoints: every series'
value at each whole hour, so tests can compare what Prometheus returns with what was
generated.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import time
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import Histogram

__all__ = [
    "CHECKOUT_RPS_PER_POD",
    "DEFAULT_SEED",
    "LATENCY_BUCKETS",
    "MIB",
    "Family",
    "HistoryResult",
    "Metric",
    "Timeline",
    "backfill",
    "build",
    "checkout_rps",
    "default_pods",
    "helper_pods",
    "pod_name",
    "timeline",
    "write_openmetrics",
]

DEFAULT_SEED = 20240607
MIB = 1024 * 1024
STEP = 60
DAYS = 8.0
END_LAG = 300
LATENCY_BUCKETS: tuple[float, ...] = tuple(Histogram.DEFAULT_BUCKETS)
NAMESPACE = "shop"
_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


@dataclass(frozen=True)
class Timeline:
    """The anchor times of the generated history (Unix seconds)."""

    now: float
    start: int
    end: int
    step: int
    spike_start: int
    spike_end: int
    leak_start: int
    creep_start: int

    def timestamps(self) -> range:
        """Every sample timestamp, oldest first."""
        return range(self.start, self.end + 1, self.step)


def timeline(now: float | None = None, days: float = DAYS) -> Timeline:
    """The timeline for a history ending ~5 minutes before ``now``."""
    if now is None:
        now = time.time()
    end = int((now - END_LAG) // STEP * STEP)
    start = end - int(days * 86400) // STEP * STEP
    hour = int(now // 3600 * 3600)
    return Timeline(
        now=now,
        start=start,
        end=end,
        step=STEP,
        spike_start=hour - 72 * 3600,
        spike_end=hour - 71 * 3600,
        leak_start=end - 24 * 3600,
        creep_start=end - 24 * 3600,
    )


@dataclass
class Metric:
    """One labelled metric of a family: its samples, one array per series."""

    labels: dict[str, str]
    # (sample-name suffix, extra labels, values) in exposition order.
    samples: list[tuple[str, dict[str, str], array[float]]] = field(default_factory=list)


@dataclass
class Family:
    """An OpenMetrics metric family."""

    name: str
    type: str
    help: str
    metrics: list[Metric] = field(default_factory=list)


@dataclass(frozen=True)
class HistoryResult:
    """What :func:`backfill` produced."""

    timeline: Timeline
    datadir: Path
    openmetrics_file: Path | None
    checkpoints_file: Path
    series: int
    samples: int
    seconds: float


def pod_name(rng: random.Random, workload: str) -> str:
    """A Deployment-style pod name, ``<workload>-<10-char hash>-<5-char id>``."""
    template = "".join(rng.choice(_HASH_ALPHABET) for _ in range(10))
    suffix = "".join(rng.choice(_HASH_ALPHABET) for _ in range(5))
    return f"{workload}-{template}-{suffix}"


def default_pods(seed: int = DEFAULT_SEED, count: int = 3) -> list[str]:
    """The deterministic default ``checkout`` pod names (the same ReplicaSet hash)."""
    rng = random.Random(f"pods-{seed}")
    template = "".join(rng.choice(_HASH_ALPHABET) for _ in range(10))
    pods: list[str] = []
    while len(pods) < count:
        suffix = "".join(rng.choice(_HASH_ALPHABET) for _ in range(5))
        name = f"checkout-{template}-{suffix}"
        if name not in pods:
            pods.append(name)
    return pods


def helper_pods(seed: int = DEFAULT_SEED) -> tuple[str, str]:
    """The pod names of the ``leaky`` and the ``creepy`` workloads."""
    leaky = pod_name(random.Random(f"leaky-{seed}"), "leaky")
    creepy = pod_name(random.Random(f"creepy-{seed}"), "creepy")
    return leaky, creepy


def _phi(x: float) -> float:
    """Standard normal CDF."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _le_text(le: float) -> str:
    """A bucket bound spelt as ``prometheus_client`` spells it (``1.0``, ``+Inf``)."""
    return "+Inf" if math.isinf(le) else repr(le)


def _daily(ts: int) -> float:
    hour = (ts % 86400) / 3600.0
    return 1.0 + 0.55 * math.sin(2.0 * math.pi * (hour - 9.0) / 24.0)


CHECKOUT_RPS_PER_POD = 12.0 + 3.0  # GET /api/cart + POST /api/checkout, before the daily cycle


def checkout_rps(at: float, pods: int) -> float:
    """The history's mean request rate of ``checkout`` at time ``at`` (any day: the cycle
    is daily), for live traffic that continues it (``testbed.bed``)."""
    return CHECKOUT_RPS_PER_POD * pods * _daily(int(at))


# A checkout pod's CPU (cores): a floor plus a cost per request per second.
CHECKOUT_CPU_FLOOR = 0.02
CHECKOUT_CPU_PER_RPS = 0.004


def checkout_cpu(at: float) -> float:
    """The history's mean CPU of one ``checkout`` pod (cores) at time ``at``: it follows the
    daily cycle, 0.047 at the 03:00 UTC trough to 0.113 at the 15:00 peak."""
    return CHECKOUT_CPU_FLOOR + CHECKOUT_CPU_PER_RPS * checkout_rps(at, 1)


def _sround(rng: random.Random, x: float) -> int:
    """Stochastic rounding: unbiased integer for a non-negative real."""
    if x <= 0.0:
        return 0
    return math.floor(x + rng.random())


class _Workload:
    """Accumulates the series of one pod while the generator walks through time."""

    def __init__(self, workload: str, pod: str, cpu_request: float = 0.25, cpu_limit: float = 1.0) -> None:
        self.cpu_request = cpu_request
        self.cpu_limit = cpu_limit
        self.base = {
            "namespace": NAMESPACE,
            "pod": pod,
            "container": workload,
            "job": workload,
            "service": workload,
        }
        self.requests: dict[tuple[str, str, str], array[float]] = {}
        self.hist: dict[tuple[str, str], tuple[list[array[float]], array[float], array[float]]] = {}
        self.memory = array("d")
        self.limit = array("d")
        self.request = array("d")
        self.cpu = array("d")
        self.errors: dict[str, array[float]] = {}

    @staticmethod
    def add_counter(store: dict[Any, array[float]], key: Any, inc: float) -> None:
        """Append the counter's previous value plus ``inc``."""
        values = store.setdefault(key, array("d"))
        values.append((values[-1] if values else 0.0) + inc)

    def add_cpu(self, seconds: float) -> None:
        """Append the CPU counter's previous value plus ``seconds``."""
        self.cpu.append((self.cpu[-1] if self.cpu else 0.0) + seconds)

    def observe(
        self,
        rng: random.Random,
        method: str,
        handler: str,
        count: int,
        median: float,
        sigma: float,
    ) -> None:
        """Add one minute of ``count`` log-normal latencies to the histogram."""
        if (method, handler) not in self.hist:
            self.hist[(method, handler)] = (
                [array("d") for _ in LATENCY_BUCKETS],
                array("d"),
                array("d"),
            )
        buckets, counts, sums = self.hist[(method, handler)]
        u = rng.random()
        mu = math.log(median)
        for i, le in enumerate(LATENCY_BUCKETS):
            if math.isinf(le):
                inc = float(count)
            else:
                inc = float(math.floor(count * _phi((math.log(le) - mu) / sigma) + u))
            prev = buckets[i][-1] if buckets[i] else 0.0
            buckets[i].append(prev + inc)
        prev_count = counts[-1] if counts else 0.0
        counts.append(prev_count + count)
        mean = math.exp(mu + sigma * sigma / 2.0)
        prev_sum = sums[-1] if sums else 0.0
        sums.append(round(prev_sum + count * mean * (1.0 + rng.gauss(0.0, 0.02)), 6))

    def families(self) -> dict[str, list[Metric]]:
        out: dict[str, list[Metric]] = {}
        for (method, handler, code), values in self.requests.items():
            labels = {**self.base, "method": method, "handler": handler, "code": code}
            out.setdefault("http_requests", []).append(Metric(labels, [("_total", {}, values)]))
        for (method, handler), (buckets, counts, sums) in self.hist.items():
            labels = {**self.base, "method": method, "handler": handler}
            samples: list[tuple[str, dict[str, str], array[float]]] = [
                ("_bucket", {"le": _le_text(le)}, buckets[i]) for i, le in enumerate(LATENCY_BUCKETS)
            ]
            samples += [("_count", {}, counts), ("_sum", {}, sums)]
            out.setdefault("http_request_duration_seconds", []).append(Metric(labels, samples))
        out["container_memory_working_set_bytes"] = [Metric(dict(self.base), [("", {}, self.memory)])]
        resource = {**self.base, "resource": "memory", "unit": "byte"}
        cpu = {**self.base, "resource": "cpu", "unit": "core"}
        length = len(self.limit)
        out["kube_pod_container_resource_limits"] = [
            Metric(dict(resource), [("", {}, self.limit)]),
            Metric(dict(cpu), [("", {}, array("d", [self.cpu_limit]) * length)]),
        ]
        out["kube_pod_container_resource_requests"] = [
            Metric(dict(resource), [("", {}, self.request)]),
            Metric(dict(cpu), [("", {}, array("d", [self.cpu_request]) * length)]),
        ]
        out["container_cpu_usage_seconds"] = [Metric(dict(self.base), [("_total", {}, self.cpu)])]
        for kind, values in self.errors.items():
            out.setdefault("app_errors", []).append(
                Metric({**self.base, "type": kind}, [("_total", {}, values)])
            )
        return out


_FAMILY_META: dict[str, tuple[str, str]] = {
    "http_requests": ("counter", "HTTP requests handled, by method, handler and status code."),
    "http_request_duration_seconds": ("histogram", "HTTP request latency in seconds."),
    "container_memory_working_set_bytes": ("gauge", "Current working set of the container."),
    "kube_pod_container_resource_limits": ("gauge", "Resource limit of the container."),
    "kube_pod_container_resource_requests": ("gauge", "Resource request of the container."),
    "container_cpu_usage_seconds": ("counter", "Cumulative CPU time consumed in seconds."),
    "app_errors": ("counter", "Application errors by exception type."),
}


def _checkout_minute(rng: random.Random, w: _Workload, ts: int, tl: Timeline, pod_index: int) -> None:
    load = _daily(ts) * (1.0 + rng.gauss(0.0, 0.03))
    spike = tl.spike_start <= ts < tl.spike_end
    p500, p503 = (0.11, 0.04) if spike else (0.003, 0.001)
    slow = 2.5 if spike else 1.0
    total = 0
    n500_all = 0
    n503_all = 0
    routes = (
        ("GET", "/api/cart", 12.0, "404", 0.015, 0.035, 0.5),
        ("POST", "/api/checkout", 3.0, "422", 0.01, 0.12, 0.45),
    )
    for method, handler, base_rps, client_code, p_client, median, sigma in routes:
        n = _sround(rng, base_rps * load * STEP)
        n500 = _sround(rng, n * p500)
        n503 = _sround(rng, n * p503)
        n4xx = _sround(rng, n * p_client)
        n200 = max(0, n - n500 - n503 - n4xx)
        n = n200 + n500 + n503 + n4xx
        for code, k in (("200", n200), (client_code, n4xx), ("500", n500), ("503", n503)):
            w.add_counter(w.requests, (method, handler, code), float(k))
        w.observe(rng, method, handler, n, median * slow, sigma)
        total += n
        n500_all += n500
        n503_all += n503
    w.add_counter(w.errors, "TimeoutError", float(n503_all + _sround(rng, total * 0.0005)))
    w.add_counter(w.errors, "DatabaseError", float(_sround(rng, n500_all * 0.9)))
    w.add_counter(w.errors, "ValidationError", float(_sround(rng, total * 0.004)))
    # A 30-minute garbage-collection sawtooth, phase-shifted per pod.
    phase = ((ts + pod_index * 577) % 1800) / 1800.0
    mem = 180 * MIB + 50 * MIB * phase + rng.gauss(0.0, 2 * MIB)
    w.memory.append(float(int(mem)))
    w.limit.append(float(512 * MIB))
    w.request.append(float(256 * MIB))
    cpu_rate = CHECKOUT_CPU_FLOOR + CHECKOUT_CPU_PER_RPS * total / STEP
    w.add_cpu(round(cpu_rate * STEP * (1.0 + rng.gauss(0.0, 0.05)), 4))


def _leaky_minute(rng: random.Random, w: _Workload, ts: int, tl: Timeline) -> None:
    n = _sround(rng, 2.0 * _daily(ts) * (1.0 + rng.gauss(0.0, 0.03)) * STEP)
    n500 = _sround(rng, n * 0.002)
    w.add_counter(w.requests, ("GET", "/api/report", "200"), float(n - n500))
    w.add_counter(w.requests, ("GET", "/api/report", "500"), float(n500))
    w.observe(rng, "GET", "/api/report", n, 0.08, 0.4)
    w.add_counter(w.errors, "DatabaseError", float(n500))
    growth = max(0, ts - tl.leak_start) * (10 * MIB / 3600.0)
    mem = 200 * MIB + growth + rng.gauss(0.0, 1.5 * MIB)
    w.memory.append(float(int(mem)))
    w.limit.append(float(512 * MIB))
    w.request.append(float(256 * MIB))
    w.add_cpu(round((0.01 + 0.004 * n / STEP) * STEP, 4))


def _creepy_minute(rng: random.Random, w: _Workload, ts: int, tl: Timeline) -> None:
    n = _sround(rng, 5.0 * _daily(ts) * (1.0 + rng.gauss(0.0, 0.03)) * STEP)
    n500 = _sround(rng, n * 0.002)
    w.add_counter(w.requests, ("GET", "/api/search", "200"), float(n - n500))
    w.add_counter(w.requests, ("GET", "/api/search", "500"), float(n500))
    frac = max(0.0, (ts - tl.creep_start) / (tl.end - tl.creep_start))
    median = 0.05 + (0.4 - 0.05) * frac
    w.observe(rng, "GET", "/api/search", n, median, 0.5)
    w.add_counter(w.errors, "TimeoutError", float(n500))
    mem = 300 * MIB + rng.gauss(0.0, 3 * MIB)
    w.memory.append(float(int(mem)))
    w.limit.append(float(768 * MIB))
    w.request.append(float(384 * MIB))
    w.add_cpu(round((0.03 + 0.006 * n / STEP) * STEP, 4))


def build(tl: Timeline, pods: Sequence[str] | None = None, seed: int = DEFAULT_SEED) -> list[Family]:
    """Generate every series of the history, in memory."""
    rng = random.Random(seed)
    pod_list = list(pods) if pods else default_pods(seed)
    leaky_pod, creepy_pod = helper_pods(seed)
    checkout = [_Workload("checkout", pod) for pod in pod_list]
    leaky = _Workload("leaky", leaky_pod, cpu_request=0.1, cpu_limit=0.5)
    creepy = _Workload("creepy", creepy_pod)
    for ts in tl.timestamps():
        for index, w in enumerate(checkout):
            _checkout_minute(rng, w, ts, tl, index)
        _leaky_minute(rng, leaky, ts, tl)
        _creepy_minute(rng, creepy, ts, tl)
    families: dict[str, Family] = {}
    for w in [*checkout, leaky, creepy]:
        for name, metrics in w.families().items():
            kind, text = _FAMILY_META[name]
            families.setdefault(name, Family(name, kind, text)).metrics.extend(metrics)
    return list(families.values())


def _labels_text(labels: dict[str, str]) -> str:
    return ",".join(f'{k}="{v}"' for k, v in labels.items())


def _value_text(value: float) -> str:
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def write_openmetrics(families: Iterable[Family], tl: Timeline, path: Path) -> tuple[int, int]:
    """Write the families as OpenMetrics text with timestamps; return (series, samples)."""
    stamps = [str(ts) for ts in tl.timestamps()]
    series = 0
    samples = 0
    with path.open("w", encoding="utf-8") as out:
        for family in families:
            out.write(f"# TYPE {family.name} {family.type}\n# HELP {family.name} {family.help}\n")
            for metric in family.metrics:
                heads = [
                    f"{family.name}{suffix}{{{_labels_text({**metric.labels, **extra})}}} "
                    for suffix, extra, _ in metric.samples
                ]
                columns = [values for _, _, values in metric.samples]
                series += len(columns)
                lines: list[str] = []
                for i, stamp in enumerate(stamps):
                    for head, values in zip(heads, columns, strict=True):
                        lines.append(f"{head}{_value_text(values[i])} {stamp}\n")
                samples += len(lines)
                out.writelines(lines)
        out.write("# EOF\n")
    return series, samples


def _checkpoints(families: Iterable[Family], tl: Timeline) -> dict[str, Any]:
    stamps = list(tl.timestamps())
    hourly = [(i, ts) for i, ts in enumerate(stamps) if ts % 3600 == 0]
    rows: list[dict[str, Any]] = []
    for family in families:
        for metric in family.metrics:
            for suffix, extra, values in metric.samples:
                rows.append(
                    {
                        "name": f"{family.name}{suffix}",
                        "labels": {**metric.labels, **extra},
                        "values": {str(ts): values[i] for i, ts in hourly},
                    }
                )
    return {"timeline": asdict(tl), "series": rows}


def backfill(
    datadir: Path,
    workfile: Path,
    *,
    now: float | None = None,
    pods: Sequence[str] | None = None,
    seed: int = DEFAULT_SEED,
    days: float = DAYS,
    promtool: str = "/usr/bin/promtool",
    keep_openmetrics: bool = False,
    log: Path | None = None,
) -> HistoryResult:
    """Generate the history and turn it into TSDB blocks under ``datadir``.

    ``workfile`` is the OpenMetrics file (deleted afterwards unless
    ``keep_openmetrics``); the checkpoints go next to it as ``<stem>.checkpoints.json``.
    """
    began = time.monotonic()
    tl = timeline(now, days)
    families = build(tl, pods, seed)
    workfile.parent.mkdir(parents=True, exist_ok=True)
    datadir.mkdir(parents=True, exist_ok=True)
    series, samples = write_openmetrics(families, tl, workfile)
    checkpoints = workfile.with_name(f"{workfile.stem}.checkpoints.json")
    checkpoints.write_text(json.dumps(_checkpoints(families, tl)), encoding="utf-8")
    del families
    # promtool re-reads the whole input once per block; it rounds the maximum down to
    # 2h * 3^k, so 162h blocks keep eight days to three passes (~10 s instead of ~30 s).
    cmd = [
        promtool,
        "tsdb",
        "create-blocks-from",
        "openmetrics",
        "--quiet",
        "--max-block-duration=162h",
        str(workfile),
        str(datadir),
    ]
    log_target = log.open("ab") if log is not None else None
    try:
        result = subprocess.run(
            cmd,
            stdout=log_target if log_target is not None else subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=False,
        )
    finally:
        if log_target is not None:
            log_target.close()
    if result.returncode != 0:
        detail = result.stdout.decode(errors="replace")[-2000:] if result.stdout else ""
        raise RuntimeError(f"promtool backfill failed ({result.returncode}): {detail or log}")
    if not keep_openmetrics:
        os.unlink(workfile)
    return HistoryResult(
        timeline=tl,
        datadir=datadir,
        openmetrics_file=workfile if keep_openmetrics else None,
        checkpoints_file=checkpoints,
        series=series,
        samples=samples,
        seconds=time.monotonic() - began,
    )


def _main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("datadir", type=Path)
    parser.add_argument("--file", type=Path, default=Path("history.om"))
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--days", type=float, default=DAYS)
    parser.add_argument("--pods", default="", help="comma-separated checkout pod names")
    parser.add_argument("--keep", action="store_true", help="keep the OpenMetrics file")
    args = parser.parse_args()
    pods = [p for p in args.pods.split(",") if p] or None
    result = backfill(
        args.datadir,
        args.file,
        pods=pods,
        seed=args.seed,
        days=args.days,
        keep_openmetrics=args.keep,
    )
    print(
        json.dumps(
            {
                "series": result.series,
                "samples": result.samples,
                "seconds": round(result.seconds, 2),
                "timeline": asdict(result.timeline),
                "checkpoints": str(result.checkpoints_file),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    _main()
