"""``make bench-argo``: postdeploy beside Argo Rollouts' analysis controller, one run.

One test bed (kube-apiserver with kwok nodes, Prometheus with its query log,
Alertmanager, the sample app, and the ``testbed.fleet`` exporter giving 100
Deployments ``bench/svc-NNN`` live series), one tool at a time:

1. **Scale.** For each size N (default 100, 500, 2,000), for each tool: N concurrent
   analyses of the fleet, each measuring the same two PromQL queries every 60 s: the
   5xx share ``ERROR_RATE`` and the p95 latency ``P95`` of its Deployment (N spread
   over the 100 Deployments).
   - Argo: N ``AnalysisRun`` objects, two metrics with the Prometheus provider,
     ``interval: 60s``, ``count: 100000``; created at an even pace over one interval
     (an AnalysisRun starts measuring when it is created), the controller running.
   - postdeploy: N ``PostDeploymentReview`` objects with ``useDefaultTemplate: false``
     and one phase holding exactly those two checks, ``interval: 60s``; deployment
     times spread over one interval (``testbed.bench`` does the same).
   After a warm-up of 1.5 intervals, a window of ``--window`` seconds measures: CPU
   seconds of the tool's process per 1,000 measurements (one measurement = one metric
   of one AnalysisRun measured once = one check of one review run once), cores, peak
   RSS (``VmHWM``), RSS per 1,000 active analyses, Prometheus queries per measurement
   (every request in Prometheus's query log in the window), API-server writes per
   measurement (``apiserver_request_total`` with a write verb, on the tool's own
   resources and events), the API server's CPU (``/proc``), and schedule lag:
   postdeploy's own ``postdeploy_run_delay_seconds`` histogram over the window (every
   run's start minus its run time; p50/p99 are bucket upper bounds); Argo's measurement ``startedAt`` minus
   (previous ``finishedAt`` + interval), when Argo itself means to take it (whole
   seconds: Argo writes its timestamps at one-second resolution).
2. **Breach.** For each tool, ``--breach-runs`` runs with a 10 s check interval on the
   sample app's 5xx share over ``[5s]`` (``bench.rollback_latency.ERROR_RATE``,
   threshold 0.2): once a measurement has passed and a random part of one interval has
   gone by, the sample app's error rate goes to 0.6. Latency: from the first instant
   Prometheus shows the breach (50 ms-step range query afterwards) to
   - Argo: a watch on the canary ``Rollout`` first sees ``status.abort: true`` (its
     background analysis failed and the Rollout controller aborted the update);
   - postdeploy: a watch on the Deployment first sees the old image back in its pod
     template (``bench.rollback_latency.one_run``).

Prints one table with both tools and their ratio (postdeploy / Argo); ``--markdown``
writes it to a file, ``--json`` every figure. The Argo binary is built on demand by
``testbed/build-argo.sh`` into the test-bed binary cache; its CRDs come from its Go
module. Run it under ``flock /work/wt/bench.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import itertools
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import httpx
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from bench import rollback_latency  # noqa: E402
from postdeploy.models import crds  # noqa: E402
from testbed import bench, fleet, kube, observability, ports, profiles  # noqa: E402

__all__ = ["argo_lags", "argo_measurements", "main", "ratio", "table"]

NAMESPACE = bench.NAMESPACE  # the fleet's Deployments live here
ARGO_GROUP, ARGO_VERSION = "argoproj.io", "v1alpha1"
PD_GROUP, PD_VERSION = "postdeploy.io", "v1alpha1"
ARGO_RELEASE = os.environ.get("ARGO_VERSION", "v1.9.0")
ERROR_THRESHOLD, P95_THRESHOLD = 0.05, 1.0
WRITE_VERBS = {"POST", "PATCH", "PUT", "DELETE", "APPLY"}
TOOL_RESOURCES = {
    "argo": {"analysisruns", "rollouts", "events"},
    "postdeploy": {"postdeploymentreviews", "events"},
}


def _log(message: str) -> None:
    print(f"[bench-argo {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _query(template: str, namespace: str, target: str) -> str:
    return template.replace("{{namespace}}", namespace).replace("{{target}}", target)


# --- pure helpers (unit-tested) -------------------------------------------------------


def _time(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def argo_measurements(runs: Sequence[Mapping[str, Any]]) -> int:
    """Measurements the AnalysisRuns have taken so far: the sum of each metric's ``count``
    (Argo keeps only the latest ten measurements, but counts them all)."""
    return sum(
        int(result.get("count", 0))
        for run in runs
        for result in (run.get("status") or {}).get("metricResults") or []
    )


def argo_lags(runs: Sequence[Mapping[str, Any]], interval: float, since: float) -> list[float]:
    """For each measurement started at or after ``since``: its start minus the moment Argo
    meant to take it (the previous measurement's ``finishedAt`` plus the interval)."""
    lags: list[float] = []
    for run in runs:
        for result in (run.get("status") or {}).get("metricResults") or []:
            measurements = result.get("measurements") or []
            for previous, current in itertools.pairwise(measurements):
                started, finished = _time(current.get("startedAt")), _time(previous.get("finishedAt"))
                if started is None or finished is None or started < since:
                    continue
                lags.append(started - (finished + interval))
    return lags


def argo_outcomes(runs: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """The latest measurement of each metric by phase: shows Argo measured something."""
    counts: dict[str, int] = {}
    for run in runs:
        for result in (run.get("status") or {}).get("metricResults") or []:
            measurements = result.get("measurements") or []
            key = f"{result.get('name')} {measurements[-1].get('phase') if measurements else 'none'}"
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def writes_by(text: str, resources: set[str] | None) -> dict[str, float]:
    """``apiserver_request_total`` with a write verb, by verb, on ``resources`` (all if None)."""
    by_verb: dict[str, float] = {}
    for verb in sorted(WRITE_VERBS):
        match: dict[str, set[str]] = {"verb": {verb}}
        if resources is not None:
            match["resource"] = resources
        by_verb[verb] = bench._metric_sum(text, "apiserver_request_total", match)
    return by_verb


def ratio(ours: float, theirs: float) -> str:
    """postdeploy's figure over Argo's, as text ("-" where it means nothing)."""
    if ours != ours or theirs != theirs or theirs == 0:
        return "-"
    return f"{ours / theirs:.2f}"


# --- processes -----------------------------------------------------------------------


def build_argo() -> pathlib.Path:
    result = subprocess.run(
        [str(ROOT / "testbed" / "build-argo.sh")],
        env={**os.environ, "ARGO_VERSION": ARGO_RELEASE},
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return pathlib.Path(result.stdout.strip().splitlines()[-1])


def argo_crds() -> pathlib.Path:
    modcache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True)
    path = (
        pathlib.Path(modcache.stdout.strip())
        / f"github.com/argoproj/argo-rollouts@{ARGO_RELEASE}/manifests/crds"
    )
    if not path.is_dir():
        raise RuntimeError(f"no Argo Rollouts CRDs at {path}; run testbed/build-argo.sh")
    return path


def memory_mb(pid: int, field: str) -> float:
    """``VmHWM`` (peak) or ``VmRSS`` (now) of a process, MB."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Process:
    """A tool's controller as a process of its own: CPU and memory from ``/proc``."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log: pathlib.Path) -> None:
        self.handle = open(log, "ab")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            list(argv), env=dict(env), stdout=self.handle, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        return bench.cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.handle.close()


def start_argo(binary: pathlib.Path, env: Mapping[str, str], namespace: str, log: pathlib.Path) -> Process:
    argv = [
        str(binary),
        "--kubeconfig",
        env["KUBECONFIG"],
        "--namespaced",
        "--namespace",
        namespace,
        "--leader-elect=false",
        "--metricsPort",
        str(ports.free_port()),
        "--healthzPort",
        str(ports.free_port()),
        "--loglevel",
        "warn",
    ]
    return Process(argv, {**os.environ, **env, "POD_NAMESPACE": namespace}, log)


# --- objects -------------------------------------------------------------------------


def analysis_run(name: str, target: str, prometheus: str, interval: str) -> dict[str, Any]:
    def metric(name: str, query: str, condition: str) -> dict[str, Any]:
        return {
            "name": name,
            "interval": interval,
            "count": 100000,
            "successCondition": condition,
            "provider": {"prometheus": {"address": prometheus, "query": query}},
        }

    return {
        "apiVersion": f"{ARGO_GROUP}/{ARGO_VERSION}",
        "kind": "AnalysisRun",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "args": [{"name": "target", "value": target}],
            "metrics": [
                metric(
                    "error-rate",
                    _query(bench.ERROR_RATE, NAMESPACE, "{{args.target}}"),
                    f"result[0] <= {ERROR_THRESHOLD}",
                ),
                metric(
                    "p95-latency",
                    _query(bench.P95, NAMESPACE, "{{args.target}}"),
                    f"result[0] <= {P95_THRESHOLD}",
                ),
            ],
        },
    }


def review(name: str, target: str, interval: str, deployed_at: datetime.datetime) -> dict[str, Any]:
    return {
        "apiVersion": f"{PD_GROUP}/{PD_VERSION}",
        "kind": "PostDeploymentReview",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "target": {"kind": "Deployment", "name": target},
            "version": "1.0.0",
            "deployedAt": deployed_at.isoformat(),
            "useDefaultTemplate": False,
            "phases": [
                {
                    "name": "immediate",
                    "start": "0s",
                    "end": "6h",
                    "interval": interval,
                    "checks": [
                        {
                            "name": "error-rate",
                            "prometheus": {"query": _query(bench.ERROR_RATE, NAMESPACE, target)},
                            "failWhen": f"value > {ERROR_THRESHOLD}",
                        },
                        {
                            "name": "p95-latency",
                            "prometheus": {"query": _query(bench.P95, NAMESPACE, target)},
                            "failWhen": f"value > {P95_THRESHOLD}",
                        },
                    ],
                }
            ],
        },
    }


def _delete_all(env: Mapping[str, str], kind: str, namespace: str) -> None:
    bench._kubectl(env, "-n", namespace, "delete", kind, "--all", "--wait=false")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if not bench._kubectl(env, "-n", namespace, "get", kind, "-o", "name").strip():
            return
        time.sleep(2)
    raise RuntimeError(f"{kind} still present 10 minutes after their deletion")


# --- scale ---------------------------------------------------------------------------


class Bed:
    def __init__(
        self,
        kube_state: dict[str, Any],
        obs_state: dict[str, Any],
        query_log: pathlib.Path,
        argo_binary: pathlib.Path | None,
    ) -> None:
        self.kube_state, self.obs_state = kube_state, obs_state
        self.env: dict[str, str] = dict(kube_state["env"])
        self.prometheus: str = obs_state["env"]["PROMETHEUS_URL"]
        self.query_log = query_log
        self.argo_binary = argo_binary
        self.api = k8s_config.new_client_from_config(config_file=self.env["KUBECONFIG"])  # type: ignore[no-untyped-call]
        self.api.configuration.connection_pool_maxsize = 16
        self.operator_env = {
            **os.environ,
            **self.env,
            "POSTDEPLOY_PROMETHEUS_URL": self.prometheus,
            "POSTDEPLOY_ALERTMANAGER_URL": obs_state["env"]["ALERTMANAGER_URL"],
            "PYTHONPATH": f"{ROOT / 'operator'}{os.pathsep}{ROOT}",
            # No admission webhooks in the scale rows (the breach runs start their own
            # operator, with them): the configuration a stopped operator leaves, failing
            # closed, refused the next size's reviews (the N = 100 row on 2026-12-01).
            # The scale bench does the same (testbed/bench.py).
            "POSTDEPLOY_WEBHOOK": "off",
        }
        self.apiserver_pid: int = kube_state["pids"]["kube-apiserver"]

    def metrics(self) -> str:
        return bench._kubectl(self.env, "get", "--raw", "/metrics")


def _create_paced(count: int, create: Callable[[int], None], seconds: float) -> None:
    """Create ``count`` objects at an even pace over ``seconds`` (8 at a time)."""
    started = time.monotonic()

    def paced(index: int) -> None:
        delay = started + seconds * index / max(1, count) - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        create(index)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(paced, range(count)))


def create_reviews(bed: Bed, size: int, targets: list[str], interval: float) -> None:
    """``size`` reviews of the two checks (``review``) over the fleet's Deployments, their
    deployment times spread over one interval (so their runs spread over it too)."""
    objects = k8s.CustomObjectsApi(bed.api)
    deployed_at = datetime.datetime.now(datetime.UTC)

    def create(index: int) -> None:
        moment = deployed_at - datetime.timedelta(seconds=interval * index / max(1, size))
        body = review(f"r{size}-{index:05d}", targets[index % len(targets)], f"{int(interval)}s", moment)
        objects.create_namespaced_custom_object(
            PD_GROUP, PD_VERSION, NAMESPACE, "postdeploymentreviews", body
        )

    _create_paced(size, create, 0.0)


def measure_scale(
    bed: Bed,
    tool: str,
    size: int,
    targets: list[str],
    interval: float,
    window: float,
    workdir: pathlib.Path,
    profile: pathlib.Path | None = None,
) -> dict[str, Any]:
    objects = k8s.CustomObjectsApi(bed.api)
    every = f"{int(interval)}s"
    if tool == "argo":
        assert bed.argo_binary is not None
        process: Process | bench.Operator = start_argo(
            bed.argo_binary, bed.env, NAMESPACE, workdir / f"argo-{size}.log"
        )

        def create(index: int) -> None:
            body = analysis_run(f"a{size}-{index:05d}", targets[index % len(targets)], bed.prometheus, every)
            objects.create_namespaced_custom_object(ARGO_GROUP, ARGO_VERSION, NAMESPACE, "analysisruns", body)

        _log(f"argo N={size}: creating AnalysisRuns over {interval:.0f}s")
        _create_paced(size, create, interval)
    else:
        _log(f"postdeploy N={size}: creating reviews")
        create_reviews(bed, size, targets, interval)
        # the scale benchmark's operator process: its metrics port counts check runs
        process = bench.Operator(bed.operator_env, workdir / f"postdeploy-{size}.log")
    plural, group, version = (
        ("analysisruns", ARGO_GROUP, ARGO_VERSION)
        if tool == "argo"
        else ("postdeploymentreviews", PD_GROUP, PD_VERSION)
    )

    def measurements() -> tuple[float, dict[float, float], list[dict[str, Any]]]:
        """Measurements so far and postdeploy's run delays: Argo's counts in each
        AnalysisRun's status (no delays); postdeploy's own ``postdeploy_check_runs``
        metric (it writes statuses lazily, so the run counts in status lag behind) and
        its ``postdeploy_run_delay_seconds`` histogram, from one scrape."""
        items = bench.list_objects(bed.api, group, version, plural, NAMESPACE)
        if isinstance(process, bench.Operator):
            reading = process.reading()
            return reading.runs, reading.delays, items
        return float(argo_measurements(items)), {}, items

    try:
        warmup = interval * 1.5 + size / 200
        _log(f"{tool} N={size}: warming up {warmup:.0f}s")
        time.sleep(warmup)
        before_metrics = bed.metrics()
        before_count, before_delays, _ = measurements()
        before_cpu = process.cpu_seconds()
        before_api_cpu = bench.cpu_seconds(bed.apiserver_pid)
        bed_cpu = bench.BedCpu({**bed.kube_state["pids"], **bed.obs_state["pids"]})
        bed_cpu.begin()
        log_offset = bed.query_log.stat().st_size if bed.query_log.exists() else 0
        since = datetime.datetime.now(datetime.UTC)
        started_wall, started = since.timestamp(), time.monotonic()
        recording = None
        if profile is not None and tool == "postdeploy":
            profile.mkdir(parents=True, exist_ok=True)
            output = profile / f"postdeploy-{size}.txt"
            recording = profiles.Recording(process.process.pid, min(60.0, window), output)
        time.sleep(window)
        elapsed = time.monotonic() - started
        if recording is not None:
            _log(profiles.summary(recording.wait()))
        after_cpu = process.cpu_seconds()
        after_api_cpu = bench.cpu_seconds(bed.apiserver_pid)
        after_metrics = bed.metrics()
        sent = bench._queries_sent(bed.query_log, log_offset, 15.0)
        after_count, after_delays, items = measurements()
        rss_now = memory_mb(process.process.pid, "VmRSS")
        peak_rss = memory_mb(process.process.pid, "VmHWM")
        bed_cores = bed_cpu.cores(elapsed)
    finally:
        process.stop()
    done = max(1.0, after_count - before_count)
    own_writes = {
        verb: after - before
        for (verb, after), before in zip(
            writes_by(after_metrics, TOOL_RESOURCES[tool]).items(),
            writes_by(before_metrics, TOOL_RESOURCES[tool]).values(),
            strict=True,
        )
    }
    all_writes = sum(writes_by(after_metrics, None).values()) - sum(writes_by(before_metrics, None).values())
    if tool == "argo":
        lags, outcomes = argo_lags(items, interval, started_wall), argo_outcomes(items)
    else:
        lags, outcomes = bench._lags(items, interval, since), bench._outcomes(items)
    if after_delays:
        # postdeploy writes a passing review's status every 300 s, so few runs show in
        # status within the window; its run-delay histogram sees every run (the p50/p99
        # are bucket upper bounds: 0.1, 0.25, 0.5, 1, 2, 5 ... s).
        lag_p50 = bench.bucket_quantile(before_delays, after_delays, 50)
        lag_p99 = bench.bucket_quantile(before_delays, after_delays, 99)
        lag_samples = int(max(after_delays.values()) - max(before_delays.values(), default=0.0))
    else:
        lag_p50, lag_p99, lag_samples = bench._percentile(lags, 50), bench._percentile(lags, 99), len(lags)
    result = {
        "tool": tool,
        "n": size,
        "measurements": after_count - before_count,
        "measurements_per_min": (after_count - before_count) / elapsed * 60,
        "cpu_per_1000": (after_cpu - before_cpu) / done * 1000,
        "cores": (after_cpu - before_cpu) / elapsed,
        "peak_rss_mb": peak_rss,
        "rss_mb": rss_now,
        "rss_per_1000_mb": peak_rss / size * 1000,
        "queries": sent["total"],
        "queries_per_measurement": sent["total"] / done,
        "api_writes": sum(own_writes.values()),
        "api_writes_by_verb": {k: v for k, v in own_writes.items() if v},
        "api_writes_per_measurement": sum(own_writes.values()) / done,
        "api_writes_all_resources_per_min": all_writes / elapsed * 60,
        "apiserver_cores": (after_api_cpu - before_api_cpu) / elapsed,
        "lag_p50": lag_p50,
        "lag_p99": lag_p99,
        "lag_samples": lag_samples,
        "lag_source": "run-delay histogram (bucket bounds)" if after_delays else "status",
        "outcomes": outcomes,
        "bed_cores": bed_cores,
        "window": elapsed,
    }
    _log(f"{tool} N={size}: {json.dumps(result)}")
    _delete_all(bed.env, plural, NAMESPACE)
    return result


# --- breach --------------------------------------------------------------------------


BREACH_NAMESPACE = rollback_latency.NAMESPACE


def breach_template(prometheus: str, interval: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{ARGO_GROUP}/{ARGO_VERSION}",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "error-rate", "namespace": BREACH_NAMESPACE},
        "spec": {
            "metrics": [
                {
                    "name": "error-rate",
                    "interval": interval,
                    "count": 100000,
                    "failureLimit": 0,
                    "successCondition": f"result[0] <= {rollback_latency.THRESHOLD}",
                    "provider": {"prometheus": {"address": prometheus, "query": rollback_latency.ERROR_RATE}},
                }
            ]
        },
    }


def rollout(name: str, image: str) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": name}
    return {
        "apiVersion": f"{ARGO_GROUP}/{ARGO_VERSION}",
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": BREACH_NAMESPACE},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
            "strategy": {
                "canary": {
                    "analysis": {"templates": [{"templateName": "error-rate"}]},
                    "steps": [{"setWeight": 50}, {"pause": {}}],
                }
            },
        },
    }


@contextlib.contextmanager
def _watch(
    bed: rollback_latency.Bed, kind: str, name: str, path: str, wanted: str
) -> Iterator[dict[str, float]]:
    """Records (epoch) when a watch on the object first prints ``wanted`` at ``path``."""
    seen: dict[str, float] = {}
    command = [
        "kubectl",
        "-n",
        BREACH_NAMESPACE,
        "get",
        kind,
        name,
        "--watch",
        "-o",
        f'jsonpath={{{path}}}{{"\\n"}}',
    ]
    process = subprocess.Popen(command, env=bed.env, stdout=subprocess.PIPE, text=True)

    def run() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip() == wanted:
                seen["at"] = time.time()
                break

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        process.terminate()
        process.wait(10)
        thread.join(5)


def argo_breach_run(bed: rollback_latency.Bed, index: int, interval: float) -> dict[str, float]:
    name = f"ro-{index}"
    bed.steer(0.0)
    rollback_latency.wait(
        "the error rate to settle", lambda: (bed.error_rate() or 0.0) < rollback_latency.THRESHOLD / 4, 60
    )
    bed.apply(rollout(name, rollback_latency.OLD_IMAGE))
    rollback_latency.wait(
        "the Rollout healthy",
        lambda: (bed.get("rollout", name).get("status") or {}).get("phase") == "Healthy",
        120,
    )
    bed.kubectl(
        "-n",
        BREACH_NAMESPACE,
        "patch",
        "rollout",
        name,
        "--type=json",
        "-p",
        json.dumps(
            [
                {
                    "op": "replace",
                    "path": "/spec/template/spec/containers/0/image",
                    "value": rollback_latency.NEW_IMAGE,
                }
            ]
        ),
    )

    def passed() -> bool:
        runs = json.loads(bed.kubectl("-n", BREACH_NAMESPACE, "get", "analysisrun", "-o", "json"))["items"]
        return any(
            m.get("phase") == "Successful"
            for run in runs
            if run["metadata"]["name"].startswith(name)
            for result in (run.get("status") or {}).get("metricResults") or []
            for m in result.get("measurements") or []
        )

    rollback_latency.wait("a passing measurement", passed, 90)
    with _watch(bed, "rollout", name, ".status.abort", "true") as seen:
        time.sleep(0.5 + random.uniform(0, interval))
        steered = time.time()
        bed.steer(0.6)
        rollback_latency.wait("the abort", lambda: "at" in seen, 60 + interval)
    aborted = seen["at"]
    visible = bed.first_breach(steered - 1, aborted)
    if visible is None:
        raise RuntimeError(f"run {index}: Prometheus never showed the breach before the abort")
    bed.kubectl("-n", BREACH_NAMESPACE, "delete", "rollout", name, "--wait=false")
    return {"visible": visible, "applied": aborted}


def measure_breach(
    kube_state: dict[str, Any],
    obs_state: dict[str, Any],
    argo_binary: pathlib.Path,
    tool: str,
    runs: int,
    interval: float,
    workdir: pathlib.Path,
    latencies: list[float] | None = None,
    on_run: Callable[[], None] = lambda: None,
) -> list[float]:
    bed = rollback_latency.Bed(kube_state["env"], obs_state["env"])
    latencies = [] if latencies is None else latencies  # filled as the runs come
    first = len(latencies) + 1  # names stay unique over rounds
    original = httpx.get(bed.control, timeout=5).json()
    if tool == "argo":
        bed.apply(breach_template(bed.prometheus, f"{int(interval)}s"))
        process = start_argo(argo_binary, kube_state["env"], BREACH_NAMESPACE, workdir / "argo-breach.log")
        try:
            for index in range(first, first + runs):
                run = argo_breach_run(bed, index, interval)
                latencies.append(run["applied"] - run["visible"])
                _log(f"argo breach run {index}: {latencies[-1]:.2f} s")
                on_run()
        finally:
            process.stop()
            httpx.post(bed.control, json={"error_rate": original["error_rate"]}, timeout=5)
    else:
        with rollback_latency.operator(bed, workdir / "postdeploy-breach.log"):
            try:
                for index in range(first, first + runs):
                    run = rollback_latency.one_run(bed, 1000 + index, f"{int(interval)}s")
                    latencies.append(run["applied"] - run["visible"])
                    _log(f"postdeploy breach run {index}: {latencies[-1]:.2f} s")
                    on_run()
            finally:
                httpx.post(bed.control, json={"error_rate": original["error_rate"]}, timeout=5)
    return latencies


# --- the run -------------------------------------------------------------------------


@contextlib.contextmanager
def scale_bed(
    workdir: pathlib.Path, deployments: int, interval: float, argo_binary: pathlib.Path | None = None
) -> Iterator[tuple[Bed, list[str]]]:
    """The scale rows' test bed, stopped on exit: kube-apiserver with kwok nodes,
    Prometheus with its query log, Alertmanager, ``deployments`` Deployments in
    ``NAMESPACE`` with the fleet's live series (one interval of them scraped), the
    postdeploy CRDs, and Argo's CRDs and the breach namespace when ``argo_binary`` is
    given. Yields the bed and the Deployments' names."""
    kube_state = kube.start(workdir / "kube")
    obs_state: dict[str, Any] | None = None
    services = fleet.Fleet(NAMESPACE, [f"svc-{i:03d}" for i in range(deployments)])
    try:
        query_log = workdir / "prometheus-queries.jsonl"
        obs_state = observability.start(
            workdir / "observability", history_days=0.5, extra_targets=[services.target], query_log=query_log
        )
        env = dict(kube_state["env"])
        for document in crds.all_crds().values():
            bench._kubectl(env, "apply", "-f", "-", input_text=yaml.safe_dump(document))
        if argo_binary is not None:
            for path in sorted(argo_crds().glob("*-crd.yaml")):
                bench._kubectl(env, "apply", "--server-side", "-f", str(path))
        bench._kubectl(env, "wait", "--for=condition=Established", "crd", "--all")
        bench._kubectl(env, "create", "namespace", NAMESPACE)
        if argo_binary is not None:
            bench._kubectl(env, "create", "namespace", BREACH_NAMESPACE)
        bed = Bed(kube_state, obs_state, query_log, argo_binary)
        targets = bench._deployments(bed.api, deployments)
        bench._kubectl(
            env, "-n", NAMESPACE, "wait", "--for=condition=Available", "deployment", "--all", "--timeout=300s"
        )
        time.sleep(max(0.0, services.started + interval + 30 - time.time()))
        yield bed, targets
    finally:
        if obs_state is not None:
            observability.stop(obs_state)
        services.stop()
        kube.stop(kube_state)


def run(args: argparse.Namespace, workdir: pathlib.Path) -> dict[str, Any]:
    tools = [t for t in args.tools.split(",") if t]
    sizes = [int(s) for s in args.sizes.split(",") if s]
    argo_binary = build_argo()
    version = subprocess.run([str(argo_binary), "--version"], capture_output=True, text=True).stdout.strip()
    out: dict[str, Any] = {
        # the binary says v99.99.99+unknown: the release's version is set by ldflags in its
        # own builds; this one is built from the module at ARGO_RELEASE
        "argo": {"release": ARGO_RELEASE, "version": f"{ARGO_RELEASE} (binary: {version or 'no version'})"},
        "scale": [],
        "breach": {},
        "uptime": [],
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))

    def breach_rounds() -> None:
        """The breach runs, in ``--breach-rounds`` rounds alternating the tools (so a run
        cut short still has runs of both)."""
        if not args.breach_runs or out["breach"]:
            return
        per_round = [args.breach_runs // args.breach_rounds] * args.breach_rounds
        per_round[-1] += args.breach_runs - sum(per_round)
        for runs in per_round:
            for tool in tools:
                load(f"{tool} breach")
                measure_breach(
                    kube_state,
                    obs_state,
                    argo_binary,
                    tool,
                    runs,
                    args.breach_interval,
                    workdir,
                    out["breach"].setdefault(tool, []),
                    save,
                )

    def load(label: str) -> None:
        text = pathlib.Path("/proc/loadavg").read_text().split()[:3]
        out["uptime"].append({"at": label, "load": " ".join(text)})
        _log(f"load average {' '.join(text)} ({label})")

    load("start")
    with scale_bed(workdir, args.deployments, args.interval, argo_binary) as (bed, targets):
        kube_state, obs_state = bed.kube_state, bed.obs_state
        # Sizes in the order given (largest first by default), the breach runs after the
        # first of them: if a shared machine's session is cut short, the figures the
        # targets name (N = 2,000 and the breach) exist first.
        for position, size in enumerate(sizes):
            for tool in tools:
                load(f"{tool} N={size}")
                out["scale"].append(
                    measure_scale(bed, tool, size, targets, args.interval, args.window, workdir, args.profile)
                )
                load(f"{tool} N={size} end")
                if args.json:
                    args.json.write_text(json.dumps(out, indent=1))
            if position == 0 or size == sizes[-1]:
                breach_rounds()
        if not sizes:
            breach_rounds()
        load("end")
    return out


def table(out: Mapping[str, Any]) -> str:
    """One table: each figure for Argo, postdeploy and their ratio (postdeploy / Argo)."""
    rows: list[tuple[str, float, float, str]] = []
    by = {(r["tool"], r["n"]): r for r in out["scale"]}
    sizes = sorted({r["n"] for r in out["scale"]})
    figures = (
        ("measurements/min", "measurements_per_min", ".0f"),
        ("CPU s / 1,000 measurements", "cpu_per_1000", ".2f"),
        ("cores", "cores", ".3f"),
        ("peak RSS (MB)", "peak_rss_mb", ".0f"),
        ("RSS per 1,000 active analyses (MB)", "rss_per_1000_mb", ".0f"),
        ("Prometheus queries / measurement", "queries_per_measurement", ".2f"),
        ("API writes / measurement", "api_writes_per_measurement", ".2f"),
        ("API server cores", "apiserver_cores", ".3f"),
        ("schedule lag p50 (s)", "lag_p50", ".2f"),
        ("schedule lag p99 (s)", "lag_p99", ".2f"),
    )
    lines = ["| figure | N | Argo Rollouts | postdeploy | postdeploy / Argo |", "|---|---|---|---|---|"]
    for size in sizes:
        argo, ours = by.get(("argo", size)), by.get(("postdeploy", size))
        for label, key, fmt in figures:
            a = float(argo[key]) if argo else float("nan")
            o = float(ours[key]) if ours else float("nan")
            rows.append((label, a, o, ratio(o, a)))
            lines.append(f"| {label} | {size:,} | {a:{fmt}} | {o:{fmt}} | {ratio(o, a)} |")
    if len(sizes) > 1:
        # Memory each further 1,000 analyses take (peak RSS between the smallest and the
        # largest size), without the process's fixed base.
        low, high = sizes[0], sizes[-1]
        growth = []
        for tool in ("argo", "postdeploy"):
            small, large = by.get((tool, low)), by.get((tool, high))
            growth.append(
                (large["peak_rss_mb"] - small["peak_rss_mb"]) / (high - low) * 1000
                if small and large
                else float("nan")
            )
        lines.append(
            f"| RSS growth per 1,000 analyses (MB) | {low:,} to {high:,} | {growth[0]:.0f} | {growth[1]:.0f} "
            f"| {ratio(growth[1], growth[0])} |"
        )
    breach = out.get("breach") or {}
    if breach:
        for label, q in (("breach to action p50 (s)", 50), ("breach to action p99 (s)", 99)):
            a = rollback_latency.percentile(breach["argo"], q) if breach.get("argo") else float("nan")
            o = (
                rollback_latency.percentile(breach["postdeploy"], q)
                if breach.get("postdeploy")
                else float("nan")
            )
            runs = f"{len(breach.get('argo', []))} / {len(breach.get('postdeploy', []))} runs"
            lines.append(f"| {label} | {runs} | {a:.2f} | {o:.2f} | {ratio(o, a)} |")
    notes = [""]
    for r in out["scale"]:
        verbs = ", ".join(f"{verb} {count:.0f}" for verb, count in r["api_writes_by_verb"].items())
        outcomes = ", ".join(f"{k} {v}" for k, v in r["outcomes"].items())
        bed_cores = dict(r["bed_cores"])
        machine = bed_cores.pop("machine", float("nan"))
        notes.append(
            f"- {r['tool']} N={r['n']:,}: {r['measurements']:.0f} measurements in {r['window']:.0f} s; "
            f"{r['queries']} Prometheus queries; writes on its resources {verbs or 'none'}; "
            f"writes on all resources {r['api_writes_all_resources_per_min']:.0f}/min; "
            f"lag samples {r['lag_samples']}; RSS at the end {r['rss_mb']:.0f} MB; "
            f"machine {machine:.2f} cores busy; latest results: {outcomes}"
        )
    notes.append("- load average: " + "; ".join(f"{u['at']}: {u['load']}" for u in out["uptime"]))
    notes.append(f"- Argo Rollouts {out['argo']['version']}")
    return "\n".join(lines + notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make bench-argo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default="2000,500,100", help="concurrent analyses, comma-separated, in order"
    )
    parser.add_argument("--tools", default="argo,postdeploy")
    parser.add_argument("--window", type=float, default=120.0, help="seconds measured per size and tool")
    parser.add_argument("--interval", type=float, default=60.0, help="measurement interval, seconds")
    parser.add_argument("--deployments", type=int, default=100)
    parser.add_argument("--breach-runs", type=int, default=20)
    parser.add_argument("--breach-interval", type=float, default=10.0)
    parser.add_argument("--breach-rounds", type=int, default=1, help="alternate the tools' breach runs")
    parser.add_argument("--markdown", type=pathlib.Path, default=None)
    parser.add_argument("--json", type=pathlib.Path, default=None, help="every figure, written as they come")
    parser.add_argument(
        "--profile",
        type=pathlib.Path,
        default=None,
        help="directory: py-spy samples postdeploy for up to 60 s of each window (perturbs the figures)",
    )
    parser.add_argument("--workdir", type=pathlib.Path, default=None, help="keep the test bed and logs here")
    parser.add_argument(
        "--table-from", type=pathlib.Path, default=None, help="print the table of a --json file"
    )
    args = parser.parse_args(argv)
    if args.table_from is not None:
        print(table(json.loads(args.table_from.read_text())))
        return 0
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        out = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="postdeploy-bench-argo-") as tmp:
            out = run(args, pathlib.Path(tmp))
    text = table(out)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
