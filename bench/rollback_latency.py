"""Breach-to-rollback latency: ``python -m bench.rollback_latency``.

Measures, on the local test bed with the operator running as a process, the time
from the moment a breach is visible in Prometheus to the moment the rollback is
applied to the Deployment, over repeated runs for each check interval.

One run: a fresh Deployment at revision 2 (image 1.1.0; revision 1 is 1.0.0), a
review whose only check is the sample app's 5xx share every INTERVAL with
``failWhen: value > THRESHOLD`` and ``onFailure: rollback``; once the check has
passed once and a random part of one interval has gone by (so the breach falls
anywhere in the check's schedule), the sample app's error rate is set to 0.6. Then:

- *visible*: the first instant at which the check's own query, evaluated by
  Prometheus, exceeds the threshold (found afterwards by a range query of that query
  at a 50 ms step, so it is exact to 50 ms and costs the operator nothing);
- *decided*: the start of the tick whose check run saw the breach (its clock is the
  ``decidedAt`` of the rollback record in status);
- *applied*: when a watch on the Deployment first sees the old image in its pod
  template (the rollback patch reached the API server).

The table gives median and p99 (linear interpolation) of applied - visible per
interval, and the median split into detection (decided - visible: waiting for the
next check run, dominated by the interval) and acting (applied - decided: the query,
status writes, reading the ReplicaSets, the patch). Usage::

    python -m bench.rollback_latency [--runs 12] [--intervals 2s,5s] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import httpx
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from postdeploy.kit import durations  # noqa: E402
from postdeploy.models import crds  # noqa: E402
from testbed import kube, observability  # noqa: E402

__all__ = ["main", "percentile"]

NAMESPACE = "pd-bench"
THRESHOLD = 0.2
OLD_IMAGE = "registry.example/shop/checkout:1.0.0"
NEW_IMAGE = "registry.example/shop/checkout:1.1.0"
ERROR_RATE = (
    'sum(rate(http_requests_total{namespace="shop",job="checkout",code=~"5.."}[5s]))'
    ' / sum(rate(http_requests_total{namespace="shop",job="checkout"}[5s]))'
)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class Bed:
    """kubectl, Prometheus and the sample app's control API of a running test bed."""

    def __init__(self, kube_env: Mapping[str, str], obs_env: Mapping[str, str]) -> None:
        self.env = {**os.environ, **kube_env}
        self.prometheus = obs_env["PROMETHEUS_URL"]
        self.alertmanager = obs_env["ALERTMANAGER_URL"]
        self.control = obs_env["SAMPLEAPP_CONTROL_URL"]

    def kubectl(self, *args: str, input_text: str | None = None) -> str:
        result = subprocess.run(
            ["kubectl", *args], env=self.env, input=input_text, capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def apply(self, manifest: Mapping[str, Any]) -> None:
        self.kubectl("-n", NAMESPACE, "apply", "-f", "-", input_text=json.dumps(manifest))

    def get(self, kind: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.kubectl("-n", NAMESPACE, "get", kind, name, "-o", "json"))
        return result

    def error_rate(self, at: float | None = None) -> float | None:
        result = observability.query(self.prometheus, ERROR_RATE, at)
        return float(result[0]["value"][1]) if result else None

    def steer(self, error_rate: float) -> None:
        httpx.post(self.control, json={"error_rate": error_rate}, timeout=5).raise_for_status()

    def first_breach(self, start: float, end: float) -> float | None:
        """The first evaluation time in [start, end] (50 ms step) at which the query breaches."""
        response = httpx.get(
            f"{self.prometheus}/api/v1/query_range",
            params={"query": ERROR_RATE, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": "0.05"},
            timeout=30,
        )
        for series in response.json()["data"]["result"]:
            for stamp, value in series["values"]:
                if float(value) > THRESHOLD:
                    return float(stamp)
        return None


def wait(what: str, probe: Any, timeout: float = 120.0, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out waiting for {what}")


def deployment(name: str, image: str) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


def review(name: str, target: str, interval: str) -> dict[str, Any]:
    return {
        "apiVersion": "postdeploy.io/v1alpha1",
        "kind": "PostDeploymentReview",
        "metadata": {"name": name},
        "spec": {
            "target": {"kind": "Deployment", "name": target},
            "useDefaultTemplate": False,
            "phases": [
                {
                    "name": "immediate",
                    "start": "0s",
                    "end": "10m",
                    "interval": interval,
                    "checks": [
                        {
                            "name": "error-rate",
                            "prometheus": {"query": ERROR_RATE},
                            "failWhen": f"value > {THRESHOLD}",
                            "onFailure": "rollback",
                        }
                    ],
                }
            ],
        },
    }


def watch_rollback(bed: Bed, name: str) -> tuple[threading.Thread, dict[str, float]]:
    """A thread that records when the Deployment's template first shows the old image."""
    seen: dict[str, float] = {}

    def run() -> None:
        command = [
            "kubectl",
            "-n",
            NAMESPACE,
            "get",
            "deployment",
            name,
            "--watch",
            "-o",
            'jsonpath={.spec.template.spec.containers[0].image}{"\\n"}',
        ]
        with subprocess.Popen(command, env=bed.env, stdout=subprocess.PIPE, text=True) as process:
            assert process.stdout is not None
            try:
                for line in process.stdout:
                    if line.strip() == OLD_IMAGE:
                        seen["applied"] = time.time()
                        break
            finally:
                process.terminate()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, seen


def one_run(bed: Bed, index: int, interval: str) -> dict[str, float]:
    name = f"app-{index}"
    bed.steer(0.0)
    wait("the error rate to settle", lambda: (bed.error_rate() or 0.0) < THRESHOLD / 4, 60)
    # The operator evaluates at its tick's time rounded down to max(1 s, interval / 4):
    # let that much pass too, or a new review's first run may still see the last spike.
    time.sleep(max(1.0, durations.parse_duration(interval).total_seconds() / 4))
    bed.apply(deployment(name, OLD_IMAGE))
    bed.kubectl("-n", NAMESPACE, "rollout", "status", f"deployment/{name}", "--timeout=90s")
    bed.kubectl("-n", NAMESPACE, "set", "image", f"deployment/{name}", f"app={NEW_IMAGE}")
    bed.kubectl("-n", NAMESPACE, "rollout", "status", f"deployment/{name}", "--timeout=90s")
    bed.apply(review(f"run-{index}", name, interval))

    last: dict[str, Any] = {}

    def passed() -> bool:
        last.update(bed.get("pdr", f"run-{index}").get("status") or {})
        return any(c.get("lastResult") == "Passed" for c in last.get("checks", []))

    try:
        wait("a passing check run", passed, 60)
    except TimeoutError:
        raise TimeoutError(f"run {index}: no passing check run; status: {json.dumps(last)[:2000]}") from None
    thread, seen = watch_rollback(bed, name)
    # Let the watch connect, then start the spike at a random point of the check's
    # schedule: a breach does not wait for the next check run to be near.
    time.sleep(0.5 + random.uniform(0, durations.parse_duration(interval).total_seconds()))
    steered = time.time()
    bed.steer(0.6)
    wait("the rollback", lambda: "applied" in seen, 60 + durations.parse_duration(interval).total_seconds())
    thread.join(5)
    record = wait(
        "the rollback record",
        lambda: next(
            (
                a
                for a in (bed.get("pdr", f"run-{index}").get("status") or {}).get("actions", [])
                if a["action"] == "rollback" and a["state"] == "Done"
            ),
            None,
        ),
        30,
    )
    applied = seen["applied"]
    visible = bed.first_breach(steered - 1, applied)
    if visible is None:
        raise RuntimeError(f"run {index}: Prometheus never showed the breach before the rollback")
    decided = _epoch(record["decidedAt"])
    bed.kubectl("-n", NAMESPACE, "delete", "pdr", f"run-{index}", "--wait=false")
    bed.kubectl("-n", NAMESPACE, "delete", "deployment", name, "--wait=false")
    return {"visible": visible, "decided": decided, "applied": applied}


def _epoch(text: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@contextlib.contextmanager
def test_bed(workdir: pathlib.Path) -> Iterator[Bed]:
    kube_state = kube.start(workdir / "kube")
    try:
        obs_state = observability.start(workdir / "observability")
        try:
            yield Bed(kube_state["env"], obs_state["env"])
        finally:
            observability.stop(obs_state)
    finally:
        kube.stop(kube_state)


@contextlib.contextmanager
def operator(bed: Bed, log: pathlib.Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **bed.env,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT)]),
        "POSTDEPLOY_PROMETHEUS_URL": bed.prometheus,
        "POSTDEPLOY_ALERTMANAGER_URL": bed.alertmanager,
        "POSTDEPLOY_MEASURE_TIMEOUT": "5",
    }
    with open(log, "ab") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "postdeploy", "run", "--namespace", NAMESPACE],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def table(results: Mapping[str, list[dict[str, float]]]) -> str:
    lines = [
        "| check interval | runs | median | p99 | min | max | median detect | median act "
        "| median / interval |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for interval, runs in results.items():
        total = [r["applied"] - r["visible"] for r in runs]
        detect = [r["decided"] - r["visible"] for r in runs]
        act = [r["applied"] - r["decided"] for r in runs]
        seconds = durations.parse_duration(interval).total_seconds()
        median = statistics.median(total)
        lines.append(
            f"| {interval} | {len(runs)} | {median:.2f} s | {percentile(total, 99):.2f} s | "
            f"{min(total):.2f} s | {max(total):.2f} s | {statistics.median(detect):.2f} s | "
            f"{statistics.median(act) * 1000:.0f} ms | {median / seconds:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rollback_latency", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--runs", type=int, default=12, help="runs per interval (at least 10 for a p99)")
    parser.add_argument("--intervals", default="2s,5s", help="check intervals, comma-separated")
    parser.add_argument("--workdir", type=pathlib.Path, default=None, help="where the test bed lives")
    parser.add_argument("--json", type=pathlib.Path, default=None, help="also write every run here")
    args = parser.parse_args(argv)
    intervals = [i.strip() for i in args.intervals.split(",") if i.strip()]
    workdir = args.workdir or pathlib.Path(tempfile.mkdtemp(prefix="pd-bench-"))
    results: dict[str, list[dict[str, float]]] = {i: [] for i in intervals}
    with test_bed(workdir) as bed:
        for document in crds.all_crds().values():
            bed.kubectl("apply", "-f", "-", input_text=yaml.safe_dump(document))
        for name in crds.all_crds():
            bed.kubectl(
                "wait", "--for=condition=Established", f"crd/{name.removesuffix('.yaml')}.postdeploy.io"
            )
        bed.kubectl("create", "namespace", NAMESPACE)
        original = httpx.get(bed.control, timeout=5).json()
        try:
            with operator(bed, workdir / "operator.log"):
                index = 0
                for interval in intervals:
                    for _ in range(args.runs):
                        index += 1
                        run = one_run(bed, index, interval)
                        results[interval].append(run)
                        print(
                            f"run {index:3d} interval {interval}: {run['applied'] - run['visible']:.2f} s "
                            f"(detect {run['decided'] - run['visible']:.2f} s)",
                            file=sys.stderr,
                            flush=True,
                        )
        finally:
            httpx.post(bed.control, json={"error_rate": original["error_rate"]}, timeout=5)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
