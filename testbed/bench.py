"""``make bench``: many reviews on one operator process, on the local test bed.

For each size N (default 100, 1,000 and 2,000 active reviews) the benchmark creates N
reviews spread over a pool of Deployments, each with the phase-1 checks of the
built-in checklist template (or, while that template is not installed, an
eight-check stand-in with the same providers) running every 60 s, starts postdeploy
as a separate process, lets it warm up, and measures over a fixed window:

- check-schedule lag: for each check's latest run, run time minus slot time (p50, p99);
- operator CPU seconds per 1,000 checks run (``/proc/<pid>/stat`` utime+stime);
- operator peak RSS (``VmHWM``);
- Prometheus queries per minute (Prometheus's own ``prometheus_http_requests_total``)
  and the number of distinct queries the checks resolve to;
- API-server writes per minute on reviews and events (``apiserver_request_total``).

Then it creates 10,000 reviews already Completed, and measures the operator's idle
CPU with only those. Prints one table; ``--markdown FILE`` also writes it there.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from testbed import bed, fleet, kube, observability, profiles

ROOT = pathlib.Path(__file__).resolve().parent.parent
NAMESPACE = "bench"
GROUP, VERSION = "postdeploy.io", "v1alpha1"
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


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat)."""
    values = [int(v) for v in pathlib.Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class BedCpu:
    """CPU used during a window by each test-bed process and by the whole machine."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self._start: dict[str, float] = {}

    def begin(self) -> None:
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._start["machine"] = machine_busy_seconds()

    def cores(self, elapsed: float) -> dict[str, float]:
        used = {name: (cpu_seconds(pid) - self._start[name]) / elapsed for name, pid in self.pids.items()}
        used["machine"] = (machine_busy_seconds() - self._start["machine"]) / elapsed
        return {name: round(value, 2) for name, value in used.items() if value == value}


class Operator:
    def __init__(self, env: Mapping[str, str], log: pathlib.Path) -> None:
        self.handle = open(log, "ab")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "postdeploy", "run", "-n", NAMESPACE],
            env=dict(env),
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.ticks = os.sysconf("SC_CLK_TCK")

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)

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


def _metric_sum(text: str, name: str, match: Mapping[str, Iterable[str]]) -> float:
    total = 0.0
    pattern = re.compile(rf"^{re.escape(name)}\{{(.*)\}} ([0-9.e+-]+)$")
    for line in text.splitlines():
        found = pattern.match(line)
        if not found:
            continue
        labels: dict[str, str] = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', found.group(1)))
        if all(labels.get(key, "") in set(allowed) for key, allowed in match.items()):
            total += float(found.group(2))
    return total


class Counters:
    """Prometheus queries served and API-server writes on reviews and events."""

    def __init__(self, env: Mapping[str, str], prometheus_url: str) -> None:
        self.env = env
        self.prometheus_url = prometheus_url

    def prometheus_queries(self) -> float:
        text = httpx.get(f"{self.prometheus_url}/metrics", timeout=10).text
        handlers = {"/api/v1/query", "/api/v1/query_range"}
        return _metric_sum(text, "prometheus_http_requests_total", {"handler": handlers})

    def api_writes(self) -> float:
        text = _kubectl(self.env, "get", "--raw", "/metrics")
        return _metric_sum(
            text,
            "apiserver_request_total",
            {
                "verb": {"POST", "PATCH", "PUT", "DELETE", "APPLY"},
                "resource": {"postdeploymentreviews", "events"},
            },
        )


def _template(checks: list[dict[str, Any]], parameters: dict[str, str], interval: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
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
            GROUP, VERSION, "clusterreviewtemplates", "postdeploy-default"
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
) -> None:
    """Create ``count`` reviews; their deployment times spread evenly over ``spread``
    seconds before ``deployed_at``, as releases of a real organisation are."""
    objects = k8s.CustomObjectsApi(api)

    def create(index: int) -> None:
        name = f"{prefix}-{index:05d}"
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "PostDeploymentReview",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "target": {"name": targets[index % len(targets)]},
                "version": "1.0.0",
                "deployedAt": (
                    deployed_at - datetime.timedelta(seconds=spread * index / max(1, count))
                ).isoformat(),
                "templateRef": {"kind": "ClusterReviewTemplate", "name": "bench-phase1"},
            },
        }
        objects.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "postdeploymentreviews", body)
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
                GROUP, VERSION, NAMESPACE, "postdeploymentreviews", name, status
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


def _reviews(api: k8s.ApiClient) -> list[dict[str, Any]]:
    objects = k8s.CustomObjectsApi(api)
    items: list[dict[str, Any]] = []
    token = None
    while True:
        page: Any = objects.list_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, "postdeploymentreviews", limit=500, _continue=token
        )
        items += page["items"]
        token = page["metadata"].get("continue")
        if not token:
            return items


def _runs(items: list[dict[str, Any]]) -> int:
    return sum(
        c.get("runs", 0) + (1 if c.get("state") == "Running" and not c.get("runs") else 0)
        for r in items
        for c in (r.get("status") or {}).get("checks", [])
    )


def _lags(items: list[dict[str, Any]], interval: float) -> list[float]:
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
            lags.append((datetime.datetime.fromisoformat(check["lastRun"]) - slot).total_seconds())
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


def run(
    sizes: list[int],
    completed: int,
    window: float,
    interval: float,
    deployments: int,
    workdir: pathlib.Path,
    profile: pathlib.Path | None = None,
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    kube_state = kube.start(workdir / "kube")
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
            _create_reviews(api, f"r{size}", size, targets, deployed_at, spread=interval)
            operator = Operator(operator_env, workdir / f"operator-{size}.log")
            try:
                warmup = interval * 1.5 + size / 200
                _log(f"N={size}: warming up {warmup:.0f}s")
                time.sleep(warmup)
                before_cpu, before_q, before_w = (
                    operator.cpu_seconds(),
                    counters.prometheus_queries(),
                    counters.api_writes(),
                )
                before_runs = _runs(_reviews(api))
                bed_cpu.begin()
                log_offset = query_log.stat().st_size if query_log.exists() else 0
                started = time.monotonic()
                recording = None
                if profile is not None:
                    profile.mkdir(parents=True, exist_ok=True)
                    output = profile / f"operator-{size}.txt"
                    recording = profiles.Recording(operator.process.pid, min(60.0, window), output)
                time.sleep(window)
                elapsed = time.monotonic() - started
                if recording is not None:
                    _log(profiles.summary(recording.wait()))
                after_cpu, after_q, after_w = (
                    operator.cpu_seconds(),
                    counters.prometheus_queries(),
                    counters.api_writes(),
                )
                sent = _queries_sent(query_log, log_offset, min(15.0, max(1.0, interval / 4)))
                items = _reviews(api)
                after_runs = _runs(items)
                lags = _lags(items, interval)
                checks_run = max(1, after_runs - before_runs)
                results.append(
                    {
                        "kind": "active",
                        "n": size,
                        "checks_per_review": len(checks),
                        "lag_p50": _percentile(lags, 50),
                        "lag_p99": _percentile(lags, 99),
                        "cpu_per_1000_checks": (after_cpu - before_cpu) / checks_run * 1000,
                        "cores": (after_cpu - before_cpu) / elapsed,
                        "peak_rss_mb": operator.peak_rss_mb(),
                        "prometheus_queries_per_min": (after_q - before_q) / elapsed * 60,
                        "distinct_queries": _distinct_queries(items),
                        "api_writes_per_min": (after_w - before_w) / elapsed * 60,
                        "checks_per_min": checks_run / elapsed * 60,
                        # Cores used by the test bed's processes meanwhile, and by the
                        # whole machine (of os.cpu_count()): whether the operator had
                        # the CPU it needed.
                        "bed_cores": bed_cpu.cores(elapsed),
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

        if completed:
            _log(f"creating {completed} completed reviews")
            _create_reviews(
                api, "done", completed, targets, datetime.datetime.now(datetime.UTC), completed=True
            )
            operator = Operator(operator_env, workdir / "operator-idle.log")
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
    return results


def table(results: list[dict[str, Any]], window: float) -> str:
    lines = [
        "| reviews | checks/min | lag p50 (s) | lag p99 (s) | CPU s / 1,000 checks | cores | peak RSS (MB) "
        "| Prometheus queries/min (distinct queries) | API writes/min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r["kind"] == "active":
            lines.append(
                f"| {r['n']:,} active | {r['checks_per_min']:.0f} | {r['lag_p50']:.2f} | {r['lag_p99']:.2f} "
                f"| {r['cpu_per_1000_checks']:.2f} | {r['cores']:.2f} | {r['peak_rss_mb']:.0f} "
                f"| {r['prometheus_queries_per_min']:.0f} ({r['distinct_queries']}) "
                f"| {r['api_writes_per_min']:.0f} |"
            )
        else:
            lines.append(
                f"| {r['n']:,} completed only | - | - | - | - | {r['cores']:.3f} "
                f"| {r['peak_rss_mb']:.0f} | - "
                f"| {r['api_writes_per_min']:.0f} |"
            )
    lines.append(f"\nMeasurement window {window:.0f} s per row, after a warm-up of 1.5 check intervals.")
    for r in results:
        if r.get("bed_cores"):
            used = dict(r["bed_cores"])
            machine = used.pop("machine", float("nan"))
            ranked = sorted(used.items(), key=lambda item: -item[1])
            others = ", ".join(f"{name} {cores:.2f}" for name, cores in ranked)
            lines.append(
                f"- {r['n']:,} active: machine {machine:.2f} of {r['machine_cores']} cores busy; "
                f"operator {r['cores']:.2f}; test bed: {others}"
            )
        if "queries_logged" in r:
            lines.append(
                f"- {r['n']:,} active: Prometheus's query log holds {r['queries_logged']} queries "
                f"in the window; {r['repeated_queries']} repeat an identical one (same expression "
                f"and evaluation time) of the same alignment window, {r.get('asked_again', 0)} one "
                "of an earlier window"
            )
        if r.get("outcomes"):
            results_ = ", ".join(f"{key} {count}" for key, count in r["outcomes"].items())
            lines.append(f"- {r['n']:,} active, latest run of each check: {results_}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,1000,2000")
    parser.add_argument("--completed", type=int, default=10000)
    parser.add_argument("--window", type=float, default=120.0, help="seconds measured per size")
    parser.add_argument("--interval", type=float, default=60.0, help="check interval, seconds")
    parser.add_argument("--deployments", type=int, default=100)
    parser.add_argument("--markdown", type=pathlib.Path, default=None)
    parser.add_argument(
        "--profile",
        type=pathlib.Path,
        default=None,
        help="directory: py-spy samples the operator for up to 60 s of each active window",
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="postdeploy-bench-") as tmp:
        results = run(
            sizes,
            args.completed,
            args.window,
            args.interval,
            args.deployments,
            pathlib.Path(tmp),
            args.profile,
        )
    text = table(results, args.window)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
