"""``make bench``: many reviews on one operator process, on the local test bed.

For each size N (default 100, 1,000, 2,000 and 4,000 active reviews: the worst case,
all in the immediate phase) the benchmark creates N reviews spread over a pool of
Deployments, each with the phase-1 checks of the
built-in checklist template (or, while that template is not installed, an
eight-check stand-in with the same providers) running every 60 s, starts postdeploy
as a separate process, lets it warm up, and measures over a fixed window:

- check-schedule lag: for each check's latest run written in the window, run time
  minus slot time (p50, p99), and for every run in the window, from the operator's
  ``postdeploy_run_delay_seconds`` histogram (p50 and p99 as bucket upper bounds, and
  the share of runs later than 2 s);
- the garbage collections in the window per generation (``postdeploy_gc_pause_seconds``)
  and those that stopped the operator over 0.5 s and 1 s;
- operator CPU seconds per 1,000 checks run (``/proc/<pid>/stat`` utime+stime);
- operator peak RSS (``VmHWM``);
- Prometheus queries per minute (Prometheus's own ``prometheus_http_requests_total``)
  and the number of distinct queries the checks resolve to;
- API-server writes per minute on reviews and events (``apiserver_request_total``),
  the API server's cores, and the largest status;
- the machine's speed (the JSON line's ``young_look_ms``): the CPU of a young
  comparison's look, ``bench.judge_looks``' young test, the fastest of 20 runs before
  the bed starts (the log also names the versions of the libraries the operator's hot
  path runs on);
- Prometheus's own work in the window (the JSON line's ``prometheus_own_work``): rule-
  group iterations run and missed, and the mean milliseconds of a rule group's and of
  a query's evaluation, whether the checks' queries crowd out its alert rules.

Then it creates 10,000 reviews already Completed, and measures the operator's idle
CPU with only those. Prints one table; ``--markdown FILE`` also writes it there.
The test bed's and the machine's cores are read when the window ends (the hypervisor's
steal apart). ``--warmup SECONDS`` sets the all-immediate rows' warm-up (default 1.5
intervals + 1 s per 200 reviews; the JSON line's ``warmup`` has one row per minute of it:
checks run, run delays, API writes and cores, how long the start took to settle),
``--shards N`` runs those rows on N operator
processes, each handling the reviews labelled ``postdeploy-bench-shard=sK``
(``postdeploy run --selector``), their figures summed. ``--pin`` gives the operator
processes the first CPU the bench may use (CPU 0 here) to themselves and runs the bench
and the test bed on the other CPUs, as an operator with a core of its own beside a
control plane on other machines; each row says so.

``--steady N,...`` (default 5,000 and 10,000; ``--steady ""`` for none) adds the
steady-stream mix (issue 16): N reviews of the built-in
template's three phases (its checks that need neither a person, a Job nor PostgreSQL,
which the bench bed lacks), whose ``deployedAt`` are spread evenly over the 72 hours a
review lasts, as a steady stream of releases leaves them: about 3 % in the immediate
phase (every minute), 31 % extended (every 15 or 30 minutes), the rest business,
whose checks all need PostgreSQL or a person: in the bench they only wait for their
phase to end (woken every ``POSTDEPLOY_MAX_SLEEP``). Each review is created with the
status an operator running all along would have left (earlier phases completed, the current phase's checks run
up to the current slot), so the operator does not first catch up every review's past
phases; it writes each review once on start-up and is measured after it has. Each row
shows beside the operator's cores the API server's and the writes per review and
minute, and the size of the reviews' status (p50, max); checks run are counted by the
operator's own ``postdeploy_check_runs`` metric (statuses are written lazily, so their
run counts lag), and lag is taken as in the all-immediate rows: from each check's last
written run in the window, and from the operator's histogram for every run in it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import httpx
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from postdeploy.decisions.phases import EVALUATION_STEP, run_time
from postdeploy.models.crds import API_VERSION, CLUSTER_TEMPLATES, GROUP, REVIEWS, VERSION
from testbed import bed, fleet, kube, observability, profiles

ROOT = pathlib.Path(__file__).resolve().parent.parent
NAMESPACE = "bench"
SHARD_LABEL = "postdeploy-bench-shard"  # --shards: which operator process handles a review
ERROR_RATE = (
    'sum(rate(http_requests_total{namespace="{{namespace}}",job="{{target}}",code=~"5.."}[5m]))'
    ' / sum(rate(http_requests_total{namespace="{{namespace}}",job="{{target}}"}[5m]))'
)
P95 = (
    "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket"
    '{namespace="{{namespace}}",job="{{target}}"}[5m])))'
)
STAND_IN_CHECKS = [
    {"name": "rollout-complete", "kubernetes": {"measure": "rolloutComplete"}},
    {"name": "pods-ready", "kubernetes": {"measure": "readyRatio"}},
    {"name": "pods-available", "kubernetes": {"measure": "availableRatio"}},
    {"name": "restarts", "kubernetes": {"measure": "restarts"}},
    {"name": "crash-loops", "kubernetes": {"measure": "crashLoops"}},
    {
        "name": "critical-alerts",
        "alertmanager": {"matchers": ['severity="critical"', 'namespace="{{namespace}}"']},
    },
    {"name": "error-rate", "prometheus": {"query": ERROR_RATE}, "failWhen": "value > 0.05"},
    {"name": "p95-latency", "prometheus": {"query": P95}, "failWhen": "value > 1"},
]


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _kubectl(env: Mapping[str, str], *args: str, input_text: str | None = None) -> str:
    return bed.kubectl(env, *args, input_text=input_text, timeout=600)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds a process has used (/proc/PID/stat)."""
    try:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> tuple[float, float]:
    """CPU seconds all cores spent running something since boot, and seconds the
    hypervisor gave to other machines while this one had work (steal), from /proc/stat."""
    values = [int(v) for v in pathlib.Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    # user nice system idle iowait irq softirq steal
    busy = sum(values[:3]) + sum(values[5:7])
    steal = values[7] if len(values) > 7 else 0
    return busy / os.sysconf("SC_CLK_TCK"), steal / os.sysconf("SC_CLK_TCK")


class BedCpu:
    """CPU used during a window by each test-bed process and by the whole machine."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self._start: dict[str, float] = {}

    def begin(self) -> None:
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._start["machine"], self._start["steal"] = machine_busy_seconds()

    def cores(self, elapsed: float) -> dict[str, float]:
        used = {name: (cpu_seconds(pid) - self._start[name]) / elapsed for name, pid in self.pids.items()}
        busy, steal = machine_busy_seconds()
        used["machine"] = (busy - self._start["machine"]) / elapsed
        used["steal"] = (steal - self._start["steal"]) / elapsed
        return {name: round(value, 2) for name, value in used.items() if value == value}


@dataclasses.dataclass(frozen=True)
class Reading:
    """One scrape of an operator's /metrics, the parts compared between readings:
    ``runs`` (the ``postdeploy_check_runs`` counter; NaN when it did not answer),
    ``delays`` (the ``postdeploy_run_delay_seconds`` histogram: cumulative run counts
    by upper bound, seconds after each run's run time) and ``gc`` (the
    ``postdeploy_gc_pause_seconds`` histogram per generation: cumulative counts by
    upper bound)."""

    runs: float
    delays: dict[float, float]
    gc: dict[str, dict[float, float]]

    @classmethod
    def parse(cls, text: str | None) -> Reading:
        if text is None:
            return cls(runs=float("nan"), delays={}, gc={})
        buckets = _series(text, "postdeploy_run_delay_seconds_bucket")
        delays = {float(labels["le"]): count for labels, count in buckets}
        gc: dict[str, dict[float, float]] = {}
        for labels, count in _series(text, "postdeploy_gc_pause_seconds_bucket"):
            gc.setdefault(labels["generation"], {})[float(labels["le"])] = count
        return cls(runs=_metric_sum(text, "postdeploy_check_runs_total", {}), delays=delays, gc=gc)


class Operator:
    """``python -m postdeploy run -n bench`` as a process of its own, its metrics on a free
    port; ``module`` runs another entry point with the same arguments (``bench.memprobe``)."""

    def __init__(
        self,
        env: Mapping[str, str],
        log: pathlib.Path,
        module: str = "postdeploy",
        args: Sequence[str] = (),
        cpus: set[int] | None = None,
    ) -> None:
        from testbed.ports import free_port

        self.metrics_port = free_port()
        self.handle = open(log, "ab")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                module,
                "run",
                "-n",
                NAMESPACE,
                "--metrics-port",
                str(self.metrics_port),
                "--metrics-address",
                "127.0.0.1",
                *args,
            ],
            env=dict(env),
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if cpus:
            # Before Python has started a thread; the threads it starts inherit the set.
            for task in pathlib.Path(f"/proc/{self.process.pid}/task").iterdir():
                os.sched_setaffinity(int(task.name), cpus)
        self.ticks = os.sysconf("SC_CLK_TCK")

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)

    def _scrape(self) -> str | None:
        """The operator's /metrics text; None when it does not answer."""
        try:
            return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        except httpx.HTTPError:
            return None

    def reading(self) -> Reading:
        """The operator's counters that the benchmark compares, from one scrape."""
        return Reading.parse(self._scrape())

    def check_runs(self) -> float:
        """Measurements taken so far (the operator's ``postdeploy_check_runs`` counter)."""
        return self.reading().runs

    def reviews_seen(self) -> float:
        """Reviews whose status the operator has written at least once."""
        text = self._scrape()
        return 0.0 if text is None else _metric_sum(text, "postdeploy_reviews", {})

    def rss_mb(self) -> float:
        for line in pathlib.Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def peak_rss_mb(self) -> float:
        for line in pathlib.Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.handle.close()


class Shards:
    """Several operator processes, each handling the reviews of one shard label
    (``postdeploy run --selector postdeploy-bench-shard=sK``), measured as one: CPU,
    runs, memory and histograms summed (peak RSS: the sum of each process's peak)."""

    def __init__(
        self, env: Mapping[str, str], workdir: pathlib.Path, name: str, count: int, cpus: set[int] | None
    ) -> None:
        self.operators = [
            Operator(
                env, workdir / f"{name}-shard{k}.log", args=("--selector", f"{SHARD_LABEL}=s{k}"), cpus=cpus
            )
            for k in range(count)
        ]
        self.process = self.operators[0].process  # what --profile samples: the first shard

    def cpu_seconds(self) -> float:
        return sum(o.cpu_seconds() for o in self.operators)

    def reading(self) -> Reading:
        readings = [o.reading() for o in self.operators]
        generations = sorted({generation for reading in readings for generation in reading.gc})
        return Reading(
            runs=sum(reading.runs for reading in readings),
            delays=_summed([reading.delays for reading in readings]),
            gc={g: _summed([reading.gc.get(g, {}) for reading in readings]) for g in generations},
        )

    def peak_rss_mb(self) -> float:
        return sum(o.peak_rss_mb() for o in self.operators)

    def stop(self) -> None:
        for operator in self.operators:
            operator.stop()


def _summed(histograms: Iterable[Mapping[float, float]]) -> dict[float, float]:
    """Cumulative bucket counts of several processes' histograms, bound by bound."""
    summed: dict[float, float] = {}
    for histogram in histograms:
        for bound, count in histogram.items():
            summed[bound] = summed.get(bound, 0.0) + count
    return summed


def _sharded(row: Mapping[str, Any]) -> str:
    shards = int(row.get("shards", 1))
    return f" ({shards} operator shards)" if shards > 1 else ""


def bucket_quantile(before: Mapping[float, float], after: Mapping[float, float], q: float) -> float:
    """The upper bound of the histogram bucket holding quantile ``q`` (0-100) of the
    observations made between two readings of cumulative bucket counts; NaN for none."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return float("nan")
    wanted = counts[-1] * q / 100
    return next(b for b, c in zip(bounds, counts, strict=True) if c >= wanted)


def share_above(before: Mapping[float, float], after: Mapping[float, float], bound: float) -> float:
    """The share of the observations between two readings of cumulative bucket counts
    that were above ``bound`` (one of the bucket bounds); NaN for none."""
    total = after.get(math.inf, 0.0) - before.get(math.inf, 0.0)
    return _count_above(before, after, bound) / total if total > 0 else float("nan")


def _count_above(before: Mapping[float, float], after: Mapping[float, float], bound: float) -> float:
    """Observations between two readings of cumulative bucket counts above ``bound``."""
    if bound not in after:
        return float("nan")
    total = after.get(math.inf, 0.0) - before.get(math.inf, 0.0)
    return total - (after[bound] - before.get(bound, 0.0))


def gc_pauses_between(
    before: Mapping[str, Mapping[float, float]], after: Mapping[str, Mapping[float, float]]
) -> dict[str, dict[str, float]]:
    """Between two readings of the operator's ``postdeploy_gc_pause_seconds`` histogram
    (per generation, cumulative counts by upper bound): the collections of each
    generation, and how many stopped the operator longer than 0.5 s and 1 s."""
    return {
        generation: {
            "count": counts.get(math.inf, 0.0) - before.get(generation, {}).get(math.inf, 0.0),
            "over_0.5s": _count_above(before.get(generation, {}), counts, 0.5),
            "over_1s": _count_above(before.get(generation, {}), counts, 1.0),
        }
        for generation, counts in sorted(after.items())
    }


def _series(text: str, name: str) -> Iterator[tuple[dict[str, str], float]]:
    """The labels and value of each series called ``name`` in a /metrics ``text``."""
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{(.*)\}})? ([0-9.e+-]+)$")
    for line in text.splitlines():
        found = pattern.match(line)
        if found:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', found.group(1) or ""))
            yield labels, float(found.group(2))


def _metric_sum(text: str, name: str, match: Mapping[str, Iterable[str]]) -> float:
    """The sum of the series called ``name`` whose labels have one of the allowed values."""
    return sum(
        (
            value
            for labels, value in _series(text, name)
            if all(labels.get(key, "") in set(allowed) for key, allowed in match.items())
        ),
        0.0,
    )


def prometheus_counters(text: str) -> dict[str, float]:
    """From Prometheus's metrics ``text``: the queries it served over HTTP, and its
    counters of rule evaluations and of its query engine (whether the checks' queries
    crowd out the rules it evaluates every second)."""
    inner = {"slice": {"inner_eval"}}
    handlers = {"handler": {"/api/v1/query", "/api/v1/query_range"}}
    return {
        "queries": _metric_sum(text, "prometheus_http_requests_total", handlers),
        "rule_iterations": _metric_sum(text, "prometheus_rule_group_iterations_total", {}),
        "rule_iterations_missed": _metric_sum(text, "prometheus_rule_group_iterations_missed_total", {}),
        "rule_group_seconds": _metric_sum(text, "prometheus_rule_group_duration_seconds_sum", {}),
        "rule_groups_run": _metric_sum(text, "prometheus_rule_group_duration_seconds_count", {}),
        "query_seconds": _metric_sum(text, "prometheus_engine_query_duration_seconds_sum", inner),
        "queries_run": _metric_sum(text, "prometheus_engine_query_duration_seconds_count", inner),
    }


class Counters:
    """Prometheus queries served and API-server writes on reviews and events."""

    def __init__(self, env: Mapping[str, str], prometheus_url: str) -> None:
        self.env = env
        self.prometheus_url = prometheus_url

    def prometheus(self) -> dict[str, float]:
        """``prometheus_counters`` so far, from one scrape of Prometheus's metrics."""
        return prometheus_counters(httpx.get(f"{self.prometheus_url}/metrics", timeout=10).text)

    def api_writes(self) -> float:
        """Writes on reviews and events served by the API server so far."""
        return _api_writes(_kubectl(self.env, "get", "--raw", "/metrics"))

    def api_requests(self) -> tuple[float, dict[str, float]]:
        """``api_writes`` and the GET and LIST requests served so far per resource, from
        one fetch of the API server's metrics."""
        text = _kubectl(self.env, "get", "--raw", "/metrics")
        return _api_writes(text), _api_reads(text)


def _api_writes(text: str) -> float:
    """POST, PATCH, PUT, DELETE and APPLY requests on reviews and events in the API
    server's metrics ``text``."""
    match = {"verb": {"POST", "PATCH", "PUT", "DELETE", "APPLY"}, "resource": {REVIEWS, "events"}}
    return _metric_sum(text, "apiserver_request_total", match)


def _api_reads(text: str) -> dict[str, float]:
    """GET and LIST requests per resource in the API server's metrics ``text``."""
    reads: dict[str, float] = {}
    for labels, count in _series(text, "apiserver_request_total"):
        if labels.get("verb") in {"GET", "LIST"}:
            resource = labels.get("resource", "") or "?"
            reads[resource] = reads.get(resource, 0.0) + count
    return reads


def prometheus_work_between(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """Between two readings of ``Counters.prometheus``: rule-group iterations
    run and missed, and the mean milliseconds of a rule group's evaluation and of a
    query's evaluation."""
    delta = {key: after[key] - before[key] for key in after}

    def mean_ms(seconds: str, count: str) -> float:
        return round(delta[seconds] / delta[count] * 1000, 2) if delta[count] > 0 else float("nan")

    return {
        "rule_iterations": delta["rule_iterations"],
        "rule_iterations_missed": delta["rule_iterations_missed"],
        "rule_group_ms": mean_ms("rule_group_seconds", "rule_groups_run"),
        "query_ms": mean_ms("query_seconds", "queries_run"),
    }


def warm_up(
    operator: Operator | Shards, counters: Counters, bed_cpu: BedCpu, seconds: float, step: float = 60.0
) -> list[dict[str, Any]]:
    """Wait ``seconds`` after starting the operator, and say how it went, ``step`` by
    ``step``: the checks run, their run delays (bucket bounds from the operator's
    histogram), the API server's writes and the cores used, one row per step (the
    time it takes to settle after many reviews start at once)."""
    def read() -> tuple[float, dict[float, float], float, float]:
        reading = operator.reading()
        runs = 0.0 if math.isnan(reading.runs) else reading.runs  # no metrics yet: the operator is starting
        return runs, reading.delays, counters.api_writes(), operator.cpu_seconds()

    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    before = read()  # each step's closing readings open the next one
    while (left := seconds - (time.monotonic() - started)) > 0:
        bed_cpu.begin()
        begun = time.monotonic()
        time.sleep(min(step, left))
        elapsed = time.monotonic() - begun
        cores = bed_cpu.cores(elapsed)
        runs_before, delays, writes, cpu = before
        before = runs_after, after_delays, writes_after, cpu_after = read()
        rows.append(
            {
                "at_s": round(time.monotonic() - started),
                "checks_per_min": round((runs_after - runs_before) / elapsed * 60),
                "run_delay_p50": bucket_quantile(delays, after_delays, 50),
                "run_delay_p99": bucket_quantile(delays, after_delays, 99),
                "runs_later_than_2s": round(share_above(delays, after_delays, 2.0), 3),
                "api_writes_per_min": round((writes_after - writes) / elapsed * 60),
                "operator_cores": round((cpu_after - cpu) / elapsed, 2),
                "apiserver_cores": cores.get("kube-apiserver", float("nan")),
                "prometheus_cores": cores.get("prometheus", float("nan")),
                "machine_cores": cores.get("machine", float("nan")),
            }
        )
        _log(f"warm-up: {json.dumps(rows[-1])}")
    return rows


def _template(checks: list[dict[str, Any]], parameters: dict[str, str], interval: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ClusterReviewTemplate",
        "metadata": {"name": "bench-phase1"},
        "spec": {
            "parameters": parameters,
            "phases": [
                {"name": "immediate", "start": "0s", "end": "2h", "interval": interval, "checks": checks}
            ],
        },
    }


def _phase_one_checks(api: k8s.ApiClient) -> tuple[list[dict[str, Any]], dict[str, str], str]:
    """The built-in template's phase-1 checks and parameters if installed, else the stand-in."""
    objects = k8s.CustomObjectsApi(api)
    try:
        default: Any = objects.get_cluster_custom_object(
            GROUP, VERSION, CLUSTER_TEMPLATES, "postdeploy-default"
        )
    except k8s.ApiException:
        return STAND_IN_CHECKS, {}, "stand-in (8 checks)"
    phase = default["spec"]["phases"][0]
    checks = [
        c
        for c in phase.get("checks", [])
        if c.get("enabled", True) and not {"manual", "job", "postgres", "statistics"} & set(c)
    ]
    parameters = dict(default["spec"].get("parameters") or {})
    return checks, parameters, f"postdeploy-default phase {phase['name']} ({len(checks)} checks)"


STEADY_HOURS = 72.0  # how long a review of the built-in template lasts
_NEEDS_MORE = {"manual", "job", "postgres", "statistics"}  # what the bench bed cannot serve


def _seconds(text: str) -> float:
    from postdeploy.kit import durations

    return durations.parse_duration(text).total_seconds()


def _steady_template(api: k8s.ApiClient) -> tuple[dict[str, Any], str, dict[str, tuple[float, float]]]:
    """The built-in template's three phases with the checks the bench bed can serve, as
    ClusterReviewTemplate ``bench-steady``; its description; per check, its phase's
    start and its interval (seconds), to find each run's slot."""
    default: Any = k8s.CustomObjectsApi(api).get_cluster_custom_object(
        GROUP, VERSION, "clusterreviewtemplates", "postdeploy-default"
    )
    phases, timing = [], {}
    for phase in default["spec"]["phases"]:
        checks = [c for c in phase.get("checks", []) if c.get("enabled", True) and not _NEEDS_MORE & set(c)]
        phases.append({**phase, "checks": checks})
        for check in checks:
            timing[check["name"]] = (
                _seconds(phase["start"]),
                _seconds(check.get("interval") or phase["interval"]),
            )
    template = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterReviewTemplate",
        "metadata": {"name": "bench-steady"},
        "spec": {**default["spec"], "phases": phases},
    }
    counts = ", ".join(f"{p['name']} {len(p['checks'])}" for p in phases)
    return template, f"postdeploy-default, checks per phase: {counts}", timing


_PROVIDERS = ("kubernetes", "prometheus", "alertmanager", "http")


def _steady_status(
    template: Mapping[str, Any], deployed_at: datetime.datetime, now: datetime.datetime, target: str
) -> dict[str, Any]:
    """The status a review deployed at ``deployed_at`` has by ``now`` under an operator
    that has been running all along: earlier phases Completed with their checks Passed,
    the checks of the phase in progress run up to the current slot, later phases Pending.
    Without it a freshly started operator would first catch up every review's past
    phases at once, which a steady stream never asks of it."""
    age = (now - deployed_at).total_seconds()
    phases, checks = [], []
    current = None
    for phase in template["spec"]["phases"]:
        start, end = _seconds(phase["start"]), _seconds(phase["end"])
        done, running = end <= age, start <= age < end
        state = "Completed" if done else ("Running" if running else "Pending")
        current = phase["name"] if running else current
        starts, ends = (
            deployed_at + datetime.timedelta(seconds=start),
            deployed_at + datetime.timedelta(seconds=end),
        )
        phases.append(
            {
                "name": phase["name"],
                "state": state,
                "startsAt": starts.isoformat(),
                "endsAt": ends.isoformat(),
                **({"startedAt": starts.isoformat()} if state != "Pending" else {}),
                **({"finishedAt": ends.isoformat()} if done else {}),
            }
        )
        if not (done or running):
            continue
        for check in phase["checks"]:
            interval = _seconds(check.get("interval") or phase["interval"])
            last = int(((end - start) if done else (age - start)) // interval)
            last = min(last, max(0, int((end - start - 1e-9) // interval)))
            ran = starts + datetime.timedelta(seconds=last * interval)
            checks.append(
                {
                    "name": check["name"],
                    "phase": phase["name"],
                    "provider": next((p for p in _PROVIDERS if p in check), "kubernetes"),
                    "state": "Passed" if done else "Running",
                    "runs": last + 1,
                    "lastSlot": last,
                    "lastRun": ran.isoformat(),
                    "lastResult": "Passed",
                }
            )
    return {
        "phase": current or "Completed",
        "verdict": "Passing",
        "version": "1.0.0",
        "deployedAt": deployed_at.isoformat(),
        "target": f"Deployment/{target}",
        "phases": phases,
        "checks": checks,
    }


def _create_steady(
    api: k8s.ApiClient, prefix: str, count: int, targets: list[str], template: Mapping[str, Any]
) -> None:
    """``count`` reviews of ``bench-steady`` deployed evenly over the last 72 hours, each
    with the status it would have by now (``_steady_status``)."""
    objects = k8s.CustomObjectsApi(api)
    now = datetime.datetime.now(datetime.UTC)

    def create(index: int) -> None:
        name = f"{prefix}-{index:05d}"
        target = targets[index % len(targets)]
        deployed_at = now - datetime.timedelta(hours=STEADY_HOURS * (index + 0.5) / count)
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "PostDeploymentReview",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "target": {"name": target},
                "version": "1.0.0",
                "deployedAt": deployed_at.isoformat(),
                "templateRef": {"kind": "ClusterReviewTemplate", "name": "bench-steady"},
            },
        }
        objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "postdeploymentreviews", body)
        status = _steady_status(template, deployed_at, now, target)
        objects.patch_namespaced_custom_object_status(
            GROUP, VERSION, NAMESPACE, "postdeploymentreviews", name, {"status": status}
        )

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(count)))


def _steady_lags(
    items: list[dict[str, Any]], timing: Mapping[str, tuple[float, float]], since: datetime.datetime
) -> list[float]:
    """Start of each check's last written run since ``since`` minus its run time (the
    slot's start on the evaluation grid, ``decisions.phases.run_time``)."""
    lags = []
    for review in items:
        status = review.get("status") or {}
        if not status.get("deployedAt"):
            continue
        start = datetime.datetime.fromisoformat(status["deployedAt"])
        for check in status.get("checks", []):
            ran = check.get("lastRun")
            if ran is None or check["name"] not in timing or check.get("lastSlot", -1) < 0:
                continue
            at = datetime.datetime.fromisoformat(ran)
            if at < since:
                continue
            offset, interval = timing[check["name"]]
            slot = start + datetime.timedelta(seconds=offset + check["lastSlot"] * interval)
            due = run_time(slot)  # the slot's run time
            lags.append((at - due).total_seconds())
    return lags


def _status_sizes(items: list[dict[str, Any]]) -> list[int]:
    return sorted(len(json.dumps(r.get("status") or {}, separators=(",", ":"))) for r in items)


def _phases(items: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for review in items:
        phase = str((review.get("status") or {}).get("phase"))
        counts[phase] = counts.get(phase, 0) + 1
    return dict(sorted(counts.items()))


def _deployments(api: k8s.ApiClient, count: int) -> list[str]:
    apps = k8s.AppsV1Api(api)
    names = [f"svc-{i:03d}" for i in range(count)]
    for name in names:
        body: Any = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": f"registry.example/{name}:1.0.0"}]},
                },
            },
        }
        with contextlib.suppress(k8s.ApiException):
            apps.create_namespaced_deployment(NAMESPACE, body)
    return names


def _create_reviews(
    api: k8s.ApiClient,
    prefix: str,
    count: int,
    targets: list[str],
    deployed_at: datetime.datetime,
    *,
    completed: bool = False,
    spread: float = 0.0,
    template: str = "bench-phase1",
    shards: int = 1,
) -> None:
    """Create ``count`` reviews; their deployment times spread evenly over ``spread``
    seconds before ``deployed_at``, as releases of a real organisation are; with
    ``shards`` > 1 each labelled ``SHARD_LABEL=sK`` round robin."""
    objects = k8s.CustomObjectsApi(api)

    def create(index: int) -> None:
        name = f"{prefix}-{index:05d}"
        body = {
            "apiVersion": API_VERSION,
            "kind": "PostDeploymentReview",
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                **({"labels": {SHARD_LABEL: f"s{index % shards}"}} if shards > 1 else {}),
            },
            "spec": {
                "target": {"name": targets[index % len(targets)]},
                "version": "1.0.0",
                "deployedAt": (
                    deployed_at - datetime.timedelta(seconds=spread * index / max(1, count))
                ).isoformat(),
                "templateRef": {"kind": "ClusterReviewTemplate", "name": template},
            },
        }
        objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, REVIEWS, body)
        if completed:
            # What the operator leaves on a review it completed: its final duties done.
            final = {"id": "annotate-final", "action": "annotate", "state": "Done", "cause": "completed"}
            status = {
                "status": {
                    "phase": "Completed",
                    "verdict": "Passed",
                    "version": "1.0.0",
                    "message": "completed before the benchmark",
                    "actions": [final],
                }
            }
            objects.patch_namespaced_custom_object_status(
                GROUP, VERSION, NAMESPACE, REVIEWS, name, status
            )

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(count)))


def _delete_reviews(env: Mapping[str, str], api: k8s.ApiClient | None = None) -> None:
    # kubectl's --wait watches the objects one by one: minutes for thousands. Ask for the
    # deletion, then poll the list until it is empty.
    _kubectl(env, "-n", NAMESPACE, "delete", "pdr", "--all", "--wait=false")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if not _kubectl(env, "-n", NAMESPACE, "get", "pdr", "-o", "name").strip():
            return
        time.sleep(2)
    raise RuntimeError("reviews still present 10 minutes after their deletion")


def list_objects(
    api: k8s.ApiClient, group: str, version: str, plural: str, namespace: str
) -> list[dict[str, Any]]:
    """Every custom object of ``plural`` in ``namespace``, 500 to a page. A page the
    loaded API server answers 504 (its watch cache behind the continue token's
    resourceVersion: "Too large resource version") is asked again, up to 10 times."""
    objects = k8s.CustomObjectsApi(api)
    items: list[dict[str, Any]] = []
    token = None
    while True:
        for attempt in range(10):
            try:
                page: Any = objects.list_namespaced_custom_object(
                    group, version, namespace, plural, limit=500, _continue=token
                )
                break
            except k8s.exceptions.ApiException as error:
                if error.status != 504 or attempt == 9:
                    raise
                time.sleep(1)
        items += page["items"]
        token = page["metadata"].get("continue")
        if not token:
            return items


def _reviews(api: k8s.ApiClient) -> list[dict[str, Any]]:
    return list_objects(api, GROUP, VERSION, REVIEWS, NAMESPACE)


def _lags(
    items: list[dict[str, Any]], interval: float, since: datetime.datetime | None = None
) -> list[float]:
    """Start of each check's last written run (since ``since``) minus its run time (the
    slot's start on the evaluation grid, ``decisions.phases.run_time``)."""
    lags = []
    for review in items:
        status = review.get("status") or {}
        deployed = status.get("deployedAt")
        if not deployed:
            continue
        start = datetime.datetime.fromisoformat(deployed)
        for check in status.get("checks", []):
            if check.get("lastRun") is None or check.get("lastSlot", -1) < 1:
                continue  # the first slot of a review lags by its creation; measure steady state
            slot = start + datetime.timedelta(seconds=check["lastSlot"] * interval)
            due = run_time(slot)  # the slot's run time
            ran = datetime.datetime.fromisoformat(check["lastRun"])
            if since is None or ran >= since:
                lags.append((ran - due).total_seconds())
    return lags


def _queries_sent(log: pathlib.Path, offset: int, align: float) -> dict[str, int]:
    """Queries in Prometheus's query log after ``offset``: in all; how many repeat an
    identical one (same expression, same evaluation time or window) served within the
    same ``align`` seconds — the requests coalescing is there to save; and how many
    repeat one from an earlier window (a pre-deployment baseline asked again until it
    has settled). Rule evaluations are left out."""
    seen: dict[tuple[Any, ...], int] = {}
    total = repeated = again = 0
    if not log.exists():
        return {"total": 0, "repeated": 0, "again": 0}
    with log.open("rb") as handle:
        handle.seek(offset)
        for line in handle:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line still being written
            if "httpRequest" not in entry:
                continue  # a rule evaluation, not a request
            params = entry.get("params") or {}
            key = (params.get("query"), params.get("start"), params.get("end"), params.get("step"))
            served = datetime.datetime.fromisoformat(str(entry.get("ts")).replace("Z", "+00:00"))
            window = int(served.timestamp() // align)
            total += 1
            if key in seen:
                if seen[key] == window:
                    repeated += 1
                else:
                    again += 1
            seen[key] = window
    return {"total": total, "repeated": repeated, "again": again}


def _outcomes(items: list[dict[str, Any]]) -> dict[str, int]:
    """How the checks' latest runs came out, by provider and result: shows the checks
    measured something (a benchmark of "no data" answers would flatter the figures)."""
    counts: dict[str, int] = {}
    for review in items:
        for check in (review.get("status") or {}).get("checks", []):
            key = f"{check.get('provider')} {check.get('lastResult')}"
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def _distinct_queries(items: list[dict[str, Any]]) -> int:
    return len(
        {
            c.get("query")
            for r in items
            for c in (r.get("status") or {}).get("checks", [])
            if c.get("provider") == "prometheus" and c.get("query")
        }
    )


# The libraries the operator's hot path runs on: which versions a row was measured
# with (a fresh install resolves the newest the pyproject allows).
HOT_PACKAGES = (
    "kopf", "aiohttp", "uvloop", "pydantic", "pydantic-core", "orjson", "numpy", "prometheus-client"
)


def packages() -> str:
    """``name version`` of each of ``HOT_PACKAGES``, and the Python version."""
    versions = [f"python {sys.version.split()[0]}"]
    for name in HOT_PACKAGES:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} -")
    return ", ".join(versions)


def machine_speed(tries: int = 20) -> float:
    """Milliseconds of CPU a young comparison's look takes here (``bench.judge_looks``'
    young test, before the test bed starts), the fastest of ``tries`` runs: how fast
    this machine runs the operator's own code, so that rows measured on different
    machines can be set side by side. The fastest, not the median: the median wanders
    with whatever else the machine does (docs/benchmarks.md, "The runs of 2026-12-02,
    12:09-13:57 UTC"). It runs the operator's code of the day, so a cheaper look makes
    it smaller too: from 68baebe (bounds searched along the lattice) it reads about 0.69
    times what the code before read on the same machine (docs/benchmarks.md, "The runs
    of 2026-12-02, 14:58-17:06 UTC")."""
    from bench import judge_looks

    return round(min(judge_looks.young_looks(repeat=1) for _ in range(tries)) * 1000, 3)


def run(
    sizes: list[int],
    completed: int,
    window: float,
    interval: float,
    deployments: int,
    workdir: pathlib.Path,
    profile: pathlib.Path | None = None,
    steady: list[int] | None = None,
    settle: float = 60.0,
    warmup: float | None = None,
    shards: int = 1,
    pinned: set[int] | None = None,
) -> list[dict[str, Any]]:
    """The rows; ``pinned``: the CPUs the operator processes run on (the bench, the test
    bed and everything they start run on the others; set before the bed starts)."""
    steady = steady or []
    if pinned:
        os.sched_setaffinity(0, set(os.sched_getaffinity(0)) - pinned)
        _log(f"operator on CPUs {sorted(pinned)}, bench and test bed on {sorted(os.sched_getaffinity(0))}")
    results: list[dict[str, Any]] = []
    speed = machine_speed()
    _log(f"machine speed: a young comparison's look takes {speed} ms of CPU (bench.judge_looks)")
    _log(f"the operator's packages: {packages()}")
    kube_state = kube.start(workdir / "kube", profiling=profile is not None)
    obs_state: dict[str, Any] | None = None
    # Live series for every Deployment, so the PromQL checks get real answers.
    services = fleet.Fleet(NAMESPACE, [f"svc-{i:03d}" for i in range(deployments)])
    try:
        query_log = workdir / "prometheus-queries.jsonl"
        obs_state = observability.start(
            workdir / "observability",
            history_days=0.5,
            extra_targets=[services.target],
            query_log=query_log,
        )
        env = {**kube_state["env"]}
        operator_env = {
            **os.environ,
            **env,
            "POSTDEPLOY_PROMETHEUS_URL": obs_state["env"]["PROMETHEUS_URL"],
            "POSTDEPLOY_ALERTMANAGER_URL": obs_state["env"]["ALERTMANAGER_URL"],
            "PYTHONPATH": f"{ROOT / 'operator'}{os.pathsep}{ROOT}",
            # No admission webhooks: the benchmark measures the scheduler, and the
            # configuration a stopped operator leaves (failing closed) would refuse the
            # next size's reviews.
            "POSTDEPLOY_WEBHOOK": "off",
        }
        for path in sorted((ROOT / "crds").glob("*.yaml")):
            if path.name != "postdeploy-default.yaml":
                _kubectl(env, "apply", "-f", str(path))
        _kubectl(env, "wait", "--for=condition=Established", "crd", "--all")
        _kubectl(env, "apply", "-f", str(ROOT / "crds" / "postdeploy-default.yaml"))
        _kubectl(env, "create", "namespace", NAMESPACE)
        api = k8s_config.new_client_from_config(config_file=env["KUBECONFIG"])  # type: ignore[no-untyped-call]
        api.configuration.connection_pool_maxsize = 16
        checks, parameters, template_name = _phase_one_checks(api)
        template = _template(checks, parameters, f"{int(interval)}s")
        _kubectl(env, "apply", "-f", "-", input_text=yaml.safe_dump(template))
        targets = _deployments(api, deployments)
        _kubectl(
            env, "-n", NAMESPACE, "wait", "--for=condition=Available", "deployment", "--all", "--timeout=300s"
        )
        # Deployment times reach up to one interval before the reviews' creation; the
        # pre-deployment baselines need the fleet's series from before then.
        time.sleep(max(0.0, services.started + interval + 30 - time.time()))
        counters = Counters(env, obs_state["env"]["PROMETHEUS_URL"])
        bed_cpu = BedCpu({**kube_state["pids"], **obs_state["pids"]})
        _log(f"template: {template_name}; {len(targets)} Deployments")

        for size in sizes:
            _log(f"N={size}: creating reviews")
            deployed_at = datetime.datetime.now(datetime.UTC)
            _create_reviews(api, f"r{size}", size, targets, deployed_at, spread=interval, shards=shards)
            operator: Operator | Shards = (
                Shards(operator_env, workdir, f"operator-{size}", shards, pinned)
                if shards > 1
                else Operator(operator_env, workdir / f"operator-{size}.log", cpus=pinned)
            )
            try:
                waited = interval * 1.5 + size / 200 if warmup is None else warmup
                _log(f"N={size}: warming up {waited:.0f}s")
                timeline = warm_up(operator, counters, bed_cpu, waited)
                before_cpu, before_prometheus = operator.cpu_seconds(), counters.prometheus()
                before_w, before_reads = counters.api_requests()
                # Statuses are written lazily (docs/engine.md): runs are counted by the
                # operator's own metric, lags from the runs written in the window and,
                # for every run, from the operator's run-delay histogram.
                before = operator.reading()
                since = datetime.datetime.now(datetime.UTC)
                bed_cpu.begin()
                log_offset = query_log.stat().st_size if query_log.exists() else 0
                started = time.monotonic()
                recording = None
                api_recording = None
                if profile is not None:
                    profile.mkdir(parents=True, exist_ok=True)
                    output = profile / f"operator-{size}.txt"
                    recording = profiles.Recording(operator.process.pid, min(60.0, window), output)
                    api_recording = profiles.ApiServerRecording(
                        kube_state, min(60.0, window), profile / f"apiserver-{size}.pprof"
                    )
                time.sleep(window)
                elapsed = time.monotonic() - started
                # At once: listing the reviews for their lags below costs the API server
                # (and the machine) seconds of CPU that are not the window's.
                bed = bed_cpu.cores(elapsed)
                if recording is not None:
                    _log(profiles.summary(recording.wait()))
                if api_recording is not None:
                    pprof = api_recording.wait()
                    missing = f"no kube-apiserver profile: {api_recording.error}"
                    _log(profiles.go_top(pprof) if pprof else missing)
                after_cpu, after_prometheus = operator.cpu_seconds(), counters.prometheus()
                after_w, after_reads = counters.api_requests()
                after = operator.reading()
                sent = _queries_sent(query_log, log_offset, EVALUATION_STEP)
                items = _reviews(api)
                lags = _lags(items, interval, since)
                sizes = _status_sizes(items)
                checks_run = max(1.0, after.runs - before.runs)
                queries_served = after_prometheus["queries"] - before_prometheus["queries"]
                results.append(
                    {
                        "kind": "active",
                        "n": size,
                        "warmup_s": waited,
                        "warmup": timeline,
                        "shards": shards,
                        "checks_per_review": len(checks),
                        "lag_p50": _percentile(lags, 50),
                        "lag_p99": _percentile(lags, 99),
                        # Every run in the window, from the operator's histogram (bucket
                        # upper bounds), and the garbage collections that paused it.
                        "run_delay_p50": bucket_quantile(before.delays, after.delays, 50),
                        "run_delay_p99": bucket_quantile(before.delays, after.delays, 99),
                        "runs_later_than_2s": share_above(before.delays, after.delays, 2.0),
                        "gc_pauses": gc_pauses_between(before.gc, after.gc),
                        "cpu_per_1000_checks": (after_cpu - before_cpu) / checks_run * 1000,
                        "cores": (after_cpu - before_cpu) / elapsed,
                        "peak_rss_mb": operator.peak_rss_mb(),
                        "prometheus_queries_per_min": queries_served / elapsed * 60,
                        "distinct_queries": _distinct_queries(items),
                        "api_writes_per_min": (after_w - before_w) / elapsed * 60,
                        # GET and LIST requests per minute per resource (the
                        # kubernetes checks' reads, the operator's own, kubectl's).
                        "api_reads_per_min": {
                            resource: round((count - before_reads.get(resource, 0.0)) / elapsed * 60)
                            for resource, count in sorted(after_reads.items())
                            if count > before_reads.get(resource, 0.0)
                        },
                        "checks_per_min": checks_run / elapsed * 60,
                        "young_look_ms": speed,
                        "prometheus_own_work": prometheus_work_between(before_prometheus, after_prometheus),
                        "apiserver_cores": bed.get("kube-apiserver", float("nan")),
                        "status_kb_max": sizes[-1] / 1024 if sizes else float("nan"),
                        "load": pathlib.Path("/proc/loadavg").read_text().split()[:3],
                        # Cores used by the test bed's processes meanwhile, and by the
                        # whole machine (of os.cpu_count()): whether the operator had
                        # the CPU it needed.
                        "bed_cores": bed,
                        "outcomes": _outcomes(items),
                        # Every query Prometheus served in the window, and how many of
                        # them repeated one already asked for the same evaluation time.
                        "queries_logged": sent["total"],
                        "repeated_queries": sent["repeated"],
                        "asked_again": sent["again"],
                        "machine_cores": os.cpu_count(),
                    }
                )
                _log(f"N={size}: {json.dumps(results[-1])}")
            finally:
                operator.stop()
            _delete_reviews(env)

        if steady:
            steady_template, steady_name, timing = _steady_template(api)
            _kubectl(env, "apply", "-f", "-", input_text=yaml.safe_dump(steady_template))
            _log(f"steady stream: {steady_name}")
        for size in steady:
            _log(f"steady N={size}: creating reviews spread over {STEADY_HOURS:g}h")
            _create_steady(api, f"s{size}", size, targets, steady_template)
            operator = Operator(operator_env, workdir / f"operator-steady-{size}.log", cpus=pinned)
            try:
                results.append(
                    _measure_steady(
                        operator, api, counters, bed_cpu, size, window, timing, steady_name, profile, settle
                    )
                )
                results[-1]["young_look_ms"] = speed
                _log(f"steady N={size}: {json.dumps(results[-1])}")
            finally:
                operator.stop()
            _delete_reviews(env)

        if completed:
            _log(f"creating {completed} completed reviews")
            _create_reviews(
                api, "done", completed, targets, datetime.datetime.now(datetime.UTC), completed=True
            )
            operator = Operator(operator_env, workdir / "operator-idle.log", cpus=pinned)
            try:
                # kopf lists them all and the scheduler files each as finished; measure after
                # the operator has settled (no write for 15 s, or 10 minutes at most).
                settle_start = time.monotonic()
                time.sleep(20)
                writes = counters.api_writes()
                while time.monotonic() - settle_start < 600:
                    time.sleep(15)
                    now_writes = counters.api_writes()
                    if now_writes == writes:
                        break
                    writes = now_writes
                _log(f"settled after {time.monotonic() - settle_start:.0f}s")
                before_cpu = operator.cpu_seconds()
                before_w = counters.api_writes()
                started = time.monotonic()
                time.sleep(window)
                elapsed = time.monotonic() - started
                results.append(
                    {
                        "kind": "completed",
                        "n": completed,
                        "cores": (operator.cpu_seconds() - before_cpu) / elapsed,
                        "peak_rss_mb": operator.peak_rss_mb(),
                        "api_writes_per_min": (counters.api_writes() - before_w) / elapsed * 60,
                    }
                )
                _log(f"completed: {json.dumps(results[-1])}")
            finally:
                operator.stop()
    finally:
        if obs_state is not None:
            observability.stop(obs_state)
        services.stop()
        kube.stop(kube_state)
    for row in results:
        row["operator_cpus"] = sorted(pinned) if pinned else None
    return results


def _measure_steady(
    operator: Operator,
    api: k8s.ApiClient,
    counters: Counters,
    bed_cpu: BedCpu,
    size: int,
    window: float,
    timing: Mapping[str, tuple[float, float]],
    template_name: str,
    profile: pathlib.Path | None = None,
    settle: float = 60.0,
) -> dict[str, Any]:
    """Wait until the operator has caught up with every review and ``settle`` more
    seconds, then measure ``window`` (with ``profile``, py-spy samples the operator for
    up to 60 s of it). A settle shorter than the extended phase's interval (15 min)
    measures the extended comparisons' first runs since the start, which count every
    batch (nothing is kept across a restart); a longer one, their runs after that."""
    started = time.monotonic()
    seen = 0.0
    while time.monotonic() - started < 1800:
        time.sleep(15)
        seen = operator.reviews_seen()
        if seen >= size:
            break
    catch_up = time.monotonic() - started
    _log(f"steady N={size}: {seen:.0f} reviews ticked after {catch_up:.0f}s; settling {settle:.0f}s")
    time.sleep(settle)
    since = datetime.datetime.now(datetime.UTC)
    before_cpu, before_w, before = operator.cpu_seconds(), counters.api_writes(), operator.reading()
    bed_cpu.begin()
    begun = time.monotonic()
    recording = None
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        output = profile / f"operator-steady-{size}.txt"
        recording = profiles.Recording(operator.process.pid, min(60.0, window), output)
    time.sleep(window)
    elapsed = time.monotonic() - begun
    bed = bed_cpu.cores(elapsed)  # before anything else costs the bed CPU
    if recording is not None:
        _log(profiles.summary(recording.wait()))
    after_cpu, after_w, after = operator.cpu_seconds(), counters.api_writes(), operator.reading()
    rss = operator.rss_mb()
    items = _reviews(api)
    lags = _steady_lags(items, timing, since)
    sizes = _status_sizes(items)
    writes = (after_w - before_w) / elapsed * 60
    return {
        "kind": "steady",
        "n": size,
        "template": template_name,
        "catch_up_s": round(catch_up),
        "settle_s": round(settle),
        "checks_per_min": (after.runs - before.runs) / elapsed * 60,
        "lag_p50": _percentile(lags, 50),
        "lag_p99": _percentile(lags, 99),
        "lags": len(lags),
        # Every run in the window, from the operator's histogram (bucket upper bounds).
        "run_delay_p50": bucket_quantile(before.delays, after.delays, 50),
        "run_delay_p99": bucket_quantile(before.delays, after.delays, 99),
        "runs_later_than_2s": share_above(before.delays, after.delays, 2.0),
        # Garbage collections in the window per generation: count, and how many
        # stopped the operator longer than 0.5 s and 1 s (bucket bounds).
        "gc_pauses": gc_pauses_between(before.gc, after.gc),
        "cores": (after_cpu - before_cpu) / elapsed,
        "apiserver_cores": bed.get("kube-apiserver", float("nan")),
        "rss_mb": rss,
        "peak_rss_mb": operator.peak_rss_mb(),
        "api_writes_per_min": writes,
        "writes_per_review_min": writes / size,
        "status_kb_p50": sizes[len(sizes) // 2] / 1024 if sizes else float("nan"),
        "status_kb_max": sizes[-1] / 1024 if sizes else float("nan"),
        "phases": _phases(items),
        "bed_cores": bed,
        "outcomes": _outcomes(items),
        "machine_cores": os.cpu_count(),
        "load": pathlib.Path("/proc/loadavg").read_text().split()[:3],
    }


def table(results: list[dict[str, Any]], window: float) -> str:
    lines = [
        "| reviews | checks/min | lag p50 (s) | lag p99 (s) | CPU s / 1,000 checks | cores "
        "| API server cores | peak RSS (MB) | Prometheus queries/min (distinct queries) | API writes/min "
        "| status KB max |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r["kind"] == "active":
            lines.append(
                f"| {r['n']:,} active{_sharded(r)} | {r['checks_per_min']:.0f} "
                f"| {r['lag_p50']:.2f} | {r['lag_p99']:.2f} "
                f"| {r['cpu_per_1000_checks']:.2f} | {r['cores']:.2f} | {r['apiserver_cores']:.2f} "
                f"| {r['peak_rss_mb']:.0f} | {r['prometheus_queries_per_min']:.0f} ({r['distinct_queries']}) "
                f"| {r['api_writes_per_min']:.0f} | {r['status_kb_max']:.1f} |"
            )
        elif r["kind"] == "completed":
            lines.append(
                f"| {r['n']:,} completed only | - | - | - | - | {r['cores']:.3f} | - "
                f"| {r['peak_rss_mb']:.0f} | - "
                f"| {r['api_writes_per_min']:.0f} | - |"
            )
    steady = [r for r in results if r["kind"] == "steady"]
    if steady:
        lines += [
            "",
            "Steady stream (deployedAt spread over 72 h):",
            "",
            "| reviews | phases | checks/min | lag p50 / p99 (s), written runs | every run: p50 / p99 "
            "(bucket bounds), share > 2 s | operator cores | API server cores "
            "| RSS (MB, peak) | API writes/min | writes/review/min | status KB p50 / max |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in steady:
            phases = ", ".join(f"{k} {v}" for k, v in r["phases"].items())
            lines.append(
                f"| {r['n']:,} | {phases} | {r['checks_per_min']:.0f} "
                f"| {r['lag_p50']:.2f} / {r['lag_p99']:.2f} "
                f"| {r['run_delay_p50']:g} / {r['run_delay_p99']:g}, {100 * r['runs_later_than_2s']:.2f} % "
                f"| {r['cores']:.2f} | {r['apiserver_cores']:.2f} "
                f"| {r['rss_mb']:.0f} ({r['peak_rss_mb']:.0f}) "
                f"| {r['api_writes_per_min']:.0f} | {r['writes_per_review_min']:.3f} "
                f"| {r['status_kb_p50']:.1f} / {r['status_kb_max']:.1f} |"
            )
    waits = sorted({f"{r['warmup_s']:.0f} s" for r in results if "warmup_s" in r})
    lines.append(
        f"\nMeasurement window {window:.0f} s per row, after a warm-up of {', '.join(waits) or '-'} "
        "(all-immediate rows; default 1.5 check intervals + 1 s per 200 reviews)."
    )
    for r in results:
        if r.get("bed_cores"):
            used = dict(r["bed_cores"])
            machine = used.pop("machine", float("nan"))
            steal = used.pop("steal", float("nan"))
            ranked = sorted(used.items(), key=lambda item: -item[1])
            others = ", ".join(f"{name} {cores:.2f}" for name, cores in ranked)
            cpus = r.get("operator_cpus")
            alone = f" on CPU {', '.join(map(str, cpus))} alone" if cpus else ""
            lines.append(
                f"- {r['n']:,} {r['kind']}: machine {machine:.2f} of {r['machine_cores']} cores busy "
                f"(and {steal:.2f} stolen by the hypervisor); operator {r['cores']:.2f}{alone}; "
                f"test bed: {others}"
            )
        if r["kind"] == "active" and "run_delay_p99" in r:
            lines.append(
                f"- {r['n']:,} active, every run in the window (the operator's run-delay histogram, "
                f"bucket bounds): p50 {r['run_delay_p50']:g} s, p99 {r['run_delay_p99']:g} s, "
                f"{100 * r['runs_later_than_2s']:.2f} % later than 2 s"
            )
        if r.get("gc_pauses"):
            collections = _collections(r["gc_pauses"])
            lines.append(f"- {r['n']:,} {r['kind']}: collections in the window: {collections}")
        if "queries_logged" in r:
            lines.append(
                f"- {r['n']:,} active: Prometheus's query log holds {r['queries_logged']} queries "
                f"in the window; {r['repeated_queries']} repeat an identical one (same expression "
                f"and evaluation time) of the same alignment window, {r.get('asked_again', 0)} one "
                "of an earlier window"
            )
        if r.get("outcomes"):
            results_ = ", ".join(f"{key} {count}" for key, count in r["outcomes"].items())
            lines.append(f"- {r['n']:,} {r['kind']}, latest run of each check: {results_}")
        if r.get("load"):
            lines.append(f"- {r['n']:,} {r['kind']}: load average {' '.join(r['load'])} after the window")
    return "\n".join(lines)


GENERATIONS = {"0": "young", "1": "middle", "2": "full"}


def _collections(pauses: Mapping[str, Mapping[str, float]]) -> str:
    """``gc_pauses_between``'s counts in words: "young 41 (0 over 0.5 s, 0 over 1 s), ..."."""
    return ", ".join(
        f"{GENERATIONS.get(generation, generation)} {counts['count']:.0f} "
        f"({counts['over_0.5s']:.0f} over 0.5 s, {counts['over_1s']:.0f} over 1 s)"
        for generation, counts in sorted(pauses.items())
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,1000,2000,4000", help="all-immediate (worst case) sizes")
    parser.add_argument("--completed", type=int, default=10000)
    parser.add_argument(
        "--steady",
        default="5000,10000",
        help="sizes of the steady-stream mix (built-in template, deployedAt over 72 h), e.g. 5000,10000",
    )
    parser.add_argument("--window", type=float, default=120.0, help="seconds measured per size")
    parser.add_argument(
        "--settle",
        type=float,
        default=60.0,
        help="steady rows: seconds between the operator catching up and the window "
        "(over 900: the extended phase's comparisons run again from their kept tests)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="all-immediate rows: seconds from creating the reviews to the window "
        "(default 1.5 intervals + 1 s per 200 reviews: the window holds the first ticks' tail)",
    )
    parser.add_argument(
        "--shards",
        type=int,
        default=1,
        help="all-immediate rows: operator processes, each handling the reviews of one "
        f"{SHARD_LABEL} label (postdeploy run --selector); figures summed",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the operator alone on the first CPU the bench may use (CPU 0 here), the bench and the "
        "test bed on the other CPUs (as an operator with a core of its own, e.g. a Guaranteed pod under the "
        "static CPU manager, beside a control plane on other machines)",
    )
    parser.add_argument("--interval", type=float, default=60.0, help="check interval, seconds")
    parser.add_argument("--deployments", type=int, default=100)
    parser.add_argument("--markdown", type=pathlib.Path, default=None)
    parser.add_argument(
        "--profile",
        type=pathlib.Path,
        default=None,
        help="directory: py-spy samples the operator for up to 60 s of each active and steady window",
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    steady = [int(s) for s in args.steady.split(",") if s]
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        parser.error("--pin needs two CPUs or more")
    with tempfile.TemporaryDirectory(prefix="postdeploy-bench-") as tmp:
        results = run(
            sizes,
            args.completed,
            args.window,
            args.interval,
            args.deployments,
            pathlib.Path(tmp),
            args.profile,
            steady,
            args.settle,
            args.warmup,
            max(1, args.shards),
            {min(os.sched_getaffinity(0))} if args.pin else None,
        )
    text = table(results, args.window)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
