"""``make demo``: the test bed, the operator and one review on a compressed timeline.

Starts the local test bed (or reuses one that ``make testbed-up`` left running),
installs the CRDs, rolls out version 1.1.0 of the sample workload ``shop/checkout``,
starts postdeploy as a separate process, applies a review whose three phases take
about a minute instead of three days, prints its progress as the operator writes
it, and ends with the verdict. ``--fault error-spike`` steers the sample app to
answer 40 % of requests with 5xx halfway through, so the error-rate check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import yaml

from testbed import bed

ROOT = pathlib.Path(__file__).resolve().parent.parent
NAMESPACE = "shop"
ERROR_RATE = (
    'sum(rate(http_requests_total{namespace="{{namespace}}",job="{{target}}",code=~"5.."}[10s]))'
    ' / sum(rate(http_requests_total{namespace="{{namespace}}",job="{{target}}"}[10s]))'
)
P95 = (
    "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket"
    '{namespace="{{namespace}}",job="{{target}}"}[30s])))'
)


def review_manifest(version: str) -> dict[str, Any]:
    return {
        "apiVersion": "postdeploy.io/v1alpha1",
        "kind": "PostDeploymentReview",
        "metadata": {"name": f"checkout-{version.replace('.', '-')}", "namespace": NAMESPACE},
        "spec": {
            "target": {"kind": "Deployment", "name": "checkout"},
            "version": version,
            "useDefaultTemplate": False,
            "providers": {"postgresDsnSecretRef": {"name": "postdeploy-db", "key": "dsn"}},
            "phases": [
                {
                    "name": "immediate",
                    "start": "0s",
                    "end": "30s",
                    "interval": "5s",
                    "checks": [
                        {"name": "rollout-complete", "kubernetes": {"measure": "rolloutComplete"}},
                        {"name": "pods-ready", "kubernetes": {"measure": "readyRatio"}},
                        {"name": "crash-loops", "kubernetes": {"measure": "crashLoops"}},
                        {
                            "name": "critical-alerts",
                            "alertmanager": {
                                "matchers": ['severity="critical"', 'namespace="{{namespace}}"']
                            },
                        },
                        {
                            "name": "error-rate",
                            "prometheus": {"query": ERROR_RATE},
                            "failWhen": "value > 0.05",
                        },
                        {"name": "p95-latency", "prometheus": {"query": P95}, "failWhen": "value > 1.5"},
                    ],
                },
                {
                    "name": "extended",
                    "start": "30s",
                    "end": "45s",
                    "interval": "5s",
                    "checks": [
                        {"name": "restarts", "kubernetes": {"measure": "restarts"}},
                        {
                            "name": "error-rate-extended",
                            "prometheus": {"query": ERROR_RATE},
                            "failWhen": "value > 0.05",
                        },
                    ],
                },
                {
                    "name": "business",
                    "start": "45s",
                    "end": "55s",
                    "interval": "5s",
                    "checks": [
                        {
                            "name": "daily-active-users",
                            "postgres": {
                                "query": (
                                    "SELECT count(DISTINCT user_id) AS dau FROM user_activity "
                                    "WHERE created_at > now() - interval '1 day'"
                                )
                            },
                            "failWhen": "value < 1000",
                        },
                    ],
                },
            ],
        },
    }


def _kubectl(env: dict[str, str], *args: str, input_text: str | None = None) -> str:
    try:
        return bed.kubectl(env, *args, input_text=input_text)
    except RuntimeError as error:
        raise SystemExit(str(error)) from None


def _progress_lines(status: dict[str, Any]) -> list[str]:
    lines = [f"phase={status.get('phase', '-')} verdict={status.get('verdict', '-')}"]
    for check in status.get("checks", []):
        value = check.get("value")
        shown = "-" if value is None else f"{value:.4g}"
        lines.append(
            f"  {check['phase']:<10} {check['name']:<22} {check['state']:<13} value={shown:<10} "
            f"runs={check.get('runs', 0)}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--fault", choices=["none", "error-spike"], default="none")
    parser.add_argument("--keep", action="store_true", help="leave the test bed running")
    args = parser.parse_args(argv)

    started_bed = not (bed.DIRECTORY / "state.json").exists()
    if started_bed:
        print("starting the test bed (Kubernetes, Prometheus, Alertmanager, PostgreSQL)...", flush=True)
        state = bed.up()
    else:
        state = json.loads((bed.DIRECTORY / "state.json").read_text())
        print("reusing the running test bed", flush=True)
    env = {**os.environ, **state["env"]}
    operator: subprocess.Popen[bytes] | None = None
    control = state["env"]["SAMPLEAPP_CONTROL_URL"]
    try:
        httpx.post(control, json={"error_rate": 0.002, "latency_seconds": 0.08}).raise_for_status()
        # The CRDs only: crds/ also ships the built-in template, which needs them first.
        crds = [p for p in sorted((ROOT / "crds").glob("*.yaml")) if p.name != "postdeploy-default.yaml"]
        _kubectl(env, "apply", *(a for p in crds for a in ("-f", str(p))))
        _kubectl(env, "wait", "--for=condition=Established", "crd/postdeploymentreviews.postdeploy.io")
        secret = _kubectl(
            env,
            "-n",
            NAMESPACE,
            "create",
            "secret",
            "generic",
            "postdeploy-db",
            f"--from-literal=dsn={state['env']['POSTGRES_DSN']}",
            "--dry-run=client",
            "-o",
            "yaml",
        )
        _kubectl(env, "apply", "-f", "-", input_text=secret)
        version = "1.1.0"
        print(f"rolling out shop/checkout {version}", flush=True)
        _kubectl(
            env,
            "-n",
            NAMESPACE,
            "set",
            "image",
            "deployment/checkout",
            f"checkout=registry.example/shop/checkout:{version}",
        )
        _kubectl(env, "-n", NAMESPACE, "rollout", "status", "deployment/checkout", "--timeout=60s")

        log = open(bed.DIRECTORY / "operator.log", "ab")  # noqa: SIM115 (closed below)
        operator_env = {
            **env,
            "POSTDEPLOY_PROMETHEUS_URL": state["env"]["PROMETHEUS_URL"],
            "POSTDEPLOY_ALERTMANAGER_URL": state["env"]["ALERTMANAGER_URL"],
            "PYTHONPATH": f"{ROOT / 'operator'}{os.pathsep}{ROOT}",
        }
        operator = subprocess.Popen(
            [sys.executable, "-m", "postdeploy", "run", "-n", NAMESPACE],
            env=operator_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        manifest = review_manifest(version)
        name = manifest["metadata"]["name"]
        _kubectl(env, "-n", NAMESPACE, "delete", "pdr", name, "--ignore-not-found")
        _kubectl(env, "apply", "-f", "-", input_text=yaml.safe_dump(manifest))
        print(
            f"applied PostDeploymentReview {NAMESPACE}/{name}: 3 phases in ~55 s "
            f"(operator log: {bed.DIRECTORY / 'operator.log'})\n",
            flush=True,
        )

        begin = time.monotonic()
        shown: list[str] = []
        faulted = False
        status: dict[str, Any] = {}
        while time.monotonic() - begin < 180:
            if args.fault == "error-spike" and not faulted and time.monotonic() - begin > 12:
                httpx.post(control, json={"error_rate": 0.4}).raise_for_status()
                print(">>> fault injected: 40 % of requests now answer 5xx\n", flush=True)
                faulted = True
            status = (
                json.loads(_kubectl(env, "-n", NAMESPACE, "get", "pdr", name, "-o", "json")).get("status")
                or {}
            )
            lines = _progress_lines(status)
            if lines != shown:
                print(f"[{time.monotonic() - begin:5.1f}s] " + "\n".join(lines) + "\n", flush=True)
                shown = lines
            if status.get("phase") in ("Completed", "Invalid"):
                break
            time.sleep(1)
        print(_kubectl(env, "-n", NAMESPACE, "get", "pdr", name))
        verdict = status.get("verdict", "unknown")
        print(f"VERDICT: {verdict}" + (f" — {status.get('message')}" if status.get("message") else ""))
        return 0 if verdict in ("Passed", "Failed") else 1
    finally:
        if operator is not None and operator.poll() is None:
            os.killpg(operator.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                operator.wait(20)
        with contextlib.suppress(Exception):
            httpx.post(control, json={"error_rate": 0.002})
        if started_bed and not args.keep:
            print("stopping the test bed", flush=True)
            bed.down()


if __name__ == "__main__":
    sys.exit(main())
