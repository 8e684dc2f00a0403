"""The review engine end to end: the operator as a real process on the test bed.

Covers:
- a healthy release reaches verdict Passed, with every phase Completed, the status
  carrying values (the queries in the CheckPassed Events once settled), and `kubectl
  get pdr` showing target/version/verdict;
- a release whose error rate rises fails the error-rate check with the measured value
  in status and a Warning Event naming it;
- Prometheus unreachable: the checks that need it end Error/Inconclusive and the
  review is not Failed;
- an operator killed mid-phase (SIGKILL) and restarted finishes with the same verdict,
  runs no slot twice and posts no duplicated Events;
- an operator killed between runs it had not written (only re-measurements changed,
  docs/engine.md "When the status is written") re-measures them after the restart,
  then decides, acts and announces the later failure exactly once;
- an invalid review is reported in an InvalidSpec condition naming the field, and a
  healthy review in the same namespace still completes.
"""

from __future__ import annotations

import collections
import datetime
import json
import math
import pathlib
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.harness import Kubectl, OperatorProcess, wait_for

ERROR_RATE = (
    'sum(rate(http_requests_total{namespace="shop",job="checkout",code=~"5.."}[5s]))'
    ' / sum(rate(http_requests_total{namespace="shop",job="checkout"}[5s]))'
)


def review(name: str, phases: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "postdeploy.io/v1alpha1",
        "kind": "PostDeploymentReview",
        "metadata": {"name": name},
        "spec": {
            "target": {"kind": "Deployment", "name": "checkout"},
            "useDefaultTemplate": False,
            "phases": phases,
            **spec,
        },
    }


def healthy_phases(end: str = "12s") -> list[dict[str, Any]]:
    return [
        {
            "name": "immediate",
            "start": "0s",
            "end": end,
            "interval": "3s",
            "checks": [
                {"name": "rollout", "kubernetes": {"measure": "rolloutComplete"}},
                {"name": "ready", "kubernetes": {"measure": "readyRatio"}},
                {"name": "error-rate", "prometheus": {"query": ERROR_RATE}, "failWhen": "value > 0.2"},
                {
                    "name": "critical-alerts",
                    "alertmanager": {"matchers": ['severity="critical"', 'namespace="{{namespace}}"']},
                },
            ],
        },
        {
            "name": "extended",
            "start": end,
            "end": "18s",
            "interval": "3s",
            "checks": [{"name": "restarts", "kubernetes": {"measure": "restarts"}}],
        },
    ]


HEALTHY_INTERVAL = 3.0  # seconds: healthy_phases' interval


def slots_of(status: dict[str, Any], check: dict[str, Any], interval: float = HEALTHY_INTERVAL) -> int:
    """How many slots the check's phase has (a settled check no longer says its lastSlot)."""
    phase = next(p for p in status["phases"] if p["name"] == check["phase"])
    starts, ends = (datetime.datetime.fromisoformat(phase[key]) for key in ("startsAt", "endsAt"))
    return math.ceil((ends - starts).total_seconds() / interval)


def status_of(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = kubectl.get(namespace, "pdr", name).get("status") or {}
    return status


def wait_verdict(kubectl: Kubectl, namespace: str, name: str, timeout: float = 90) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        status = status_of(kubectl, namespace, name)
        return status if status.get("phase") in ("Completed", "Invalid") else None

    result: dict[str, Any] = wait_for(f"review {name} to finish", finished, timeout)
    return result


def checks_by_name(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in status.get("checks", [])}


@pytest.fixture
def steer(observability: dict[str, Any]) -> Iterator[Callable[..., None]]:
    """Change the sample app's behaviour and wait until Prometheus sees the new error rate."""
    url = observability["env"]["SAMPLEAPP_CONTROL_URL"]
    prometheus = observability["env"]["PROMETHEUS_URL"]
    original = httpx.get(url).json()

    def observed_error_rate() -> float | None:
        result = httpx.get(f"{prometheus}/api/v1/query", params={"query": ERROR_RATE}).json()
        vector = result["data"]["result"]
        return float(vector[0]["value"][1]) if vector else None

    def apply(**settings: Any) -> None:
        httpx.post(url, json=settings).raise_for_status()
        if "error_rate" in settings:
            target = float(settings["error_rate"])

            def settled() -> bool:
                value = observed_error_rate()
                return value is not None and abs(value - target) <= max(0.1, target * 0.5)

            wait_for(f"Prometheus to see error rate ~{target}", settled, 30)

    yield apply
    httpx.post(url, json={k: original[k] for k in ("error_rate", "latency_seconds", "rps")})


def test_healthy_release_passes(
    kubectl: Kubectl, namespace: str, run_operator: Callable[..., OperatorProcess], steer: Callable[..., None]
) -> None:
    steer(error_rate=0.0)
    run_operator()
    kubectl.apply(namespace, review("healthy", healthy_phases()))
    status = wait_verdict(kubectl, namespace, "healthy")
    assert status["verdict"] == "Passed", json.dumps(status, indent=1)
    assert [p["state"] for p in status["phases"]] == ["Completed", "Completed"]
    checks = checks_by_name(status)
    assert checks["rollout"]["state"] == "Passed" and checks["rollout"]["value"] == 1
    assert checks["ready"]["value"] == 1
    assert checks["error-rate"]["state"] == "Passed"
    assert checks["error-rate"]["value"] < 0.2
    # Settled once its phase completed: the resolved query is in the CheckPassed Event.
    assert "query" not in checks["error-rate"]
    passed = [e["message"] for e in kubectl.events(namespace, "healthy") if e["reason"] == "CheckPassed"]
    assert any(m.startswith("error-rate ") and 'namespace="shop"' in m for m in passed), passed
    assert checks["critical-alerts"]["value"] == 0
    assert status["version"] == "1.0.0"
    assert status["target"] == "Deployment/checkout"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Complete"]["status"] == "True"
    assert conditions["Healthy"]["status"] == "True"
    assert conditions["SLOBreached"]["status"] == "False"
    table = kubectl("-n", namespace, "get", "pdr", "healthy")
    assert "Deployment/checkout" in table and "1.0.0" in table and "Passed" in table
    reasons = [e["reason"] for e in kubectl.events(namespace, "healthy")]
    assert "VerdictPassed" in reasons and "PhaseCompleted" in reasons


def test_error_rate_rise_fails_the_right_check(
    kubectl: Kubectl, namespace: str, run_operator: Callable[..., OperatorProcess], steer: Callable[..., None]
) -> None:
    steer(error_rate=0.6)
    run_operator()
    kubectl.apply(namespace, review("spike", healthy_phases()))
    status = wait_verdict(kubectl, namespace, "spike")
    assert status["verdict"] == "Failed", json.dumps(status, indent=1)
    checks = checks_by_name(status)
    failed = [name for name, c in checks.items() if c["state"] == "Failed"]
    assert failed == ["error-rate"]
    assert checks["error-rate"]["value"] > 0.2
    assert "failWhen 'value > 0.2'" in checks["error-rate"]["message"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["SLOBreached"]["status"] == "True"
    assert "error-rate" in conditions["SLOBreached"]["message"]
    warnings = [e for e in kubectl.events(namespace, "spike") if e["reason"] == "CheckFailed"]
    assert len(warnings) == 1 and "error-rate" in warnings[0]["message"]
    described = kubectl("-n", namespace, "describe", "pdr", "spike")
    assert "error-rate" in described and "value > 0.2" in described


def test_prometheus_down_is_error_not_failure(
    kubectl: Kubectl,
    namespace: str,
    run_operator: Callable[..., OperatorProcess],
    steer: Callable[..., None],
    free_port: int,
) -> None:
    steer(error_rate=0.6)  # would fail, if the operator could see it
    run_operator(POSTDEPLOY_PROMETHEUS_URL=f"http://127.0.0.1:{free_port}")
    kubectl.apply(namespace, review("blind", healthy_phases()))
    status = wait_verdict(kubectl, namespace, "blind")
    checks = checks_by_name(status)
    assert checks["error-rate"]["state"] in ("Error", "Inconclusive"), checks["error-rate"]
    assert checks["error-rate"]["failures"] == 0
    assert status["verdict"] == "Inconclusive"
    assert not any(c["state"] == "Failed" for c in checks.values())


def test_killed_operator_resumes_without_repeating(
    kubectl: Kubectl, namespace: str, run_operator: Callable[..., OperatorProcess], steer: Callable[..., None]
) -> None:
    steer(error_rate=0.0)
    first = run_operator()
    kubectl.apply(namespace, review("restart", healthy_phases(end="15s")))
    # The first runs are written (the phase started); the passing runs after them are
    # not written at once (docs/engine.md), so the kill falls among unwritten runs.
    wait_for(
        "the first runs",
        lambda: any(c.get("runs") for c in status_of(kubectl, namespace, "restart").get("checks", [])),
        60,
    )
    time.sleep(4)
    first.kill()
    before = status_of(kubectl, namespace, "restart")
    run_operator()
    status = wait_verdict(kubectl, namespace, "restart")
    assert status["verdict"] == "Passed", json.dumps(status, indent=1)
    for check in status["checks"]:
        old = next(c for c in before["checks"] if c["name"] == check["name"])
        assert check["runs"] >= old["runs"]  # nothing lost
        # Each slot at most once: runs never exceed the slots the phase has.
        assert check["runs"] <= slots_of(status, check), check
    counts = collections.Counter((e["reason"], e["message"]) for e in kubectl.events(namespace, "restart"))
    duplicated = {k: n for k, n in counts.items() if n > 1}
    assert not duplicated
    assert all(e.get("count", 1) == 1 for e in kubectl.events(namespace, "restart"))


def test_killed_between_unwritten_runs_repeats_no_decision_action_or_event(
    kubectl: Kubectl, namespace: str, run_operator: Callable[..., OperatorProcess], steer: Callable[..., None]
) -> None:
    steer(error_rate=0.0)
    # Nothing that only re-measures is written for an hour: every passing run after
    # the first is one the kill loses.
    lazy = {"POSTDEPLOY_STATUS_REFRESH": "3600"}
    first = run_operator(**lazy)
    phases = [
        {
            "name": "immediate",
            "start": "0s",
            "end": "30s",
            "interval": "3s",
            "checks": [
                {"name": "ready", "kubernetes": {"measure": "readyRatio"}},
                {
                    "name": "error-rate",
                    "prometheus": {"query": ERROR_RATE},
                    "failWhen": "value > 0.2",
                    "onFailure": "annotate",
                },
            ],
        }
    ]
    kubectl.apply(namespace, review("unwritten", phases))
    wait_for("the phase to start", lambda: status_of(kubectl, namespace, "unwritten").get("phase"), 60)
    written = status_of(kubectl, namespace, "unwritten")
    started = next(p for p in written["phases"] if p["name"] == "immediate")["startedAt"]
    time.sleep(8)  # about three slots, passing
    before = status_of(kubectl, namespace, "unwritten")
    # The passing runs since the first were kept, not written (unless a result changed,
    # which a loaded machine can make happen: then the kill falls after that write).
    assert before["verdict"] == "Passing", before
    first.kill()

    run_operator(**lazy)
    steer(error_rate=0.6)
    status = wait_verdict(kubectl, namespace, "unwritten")
    assert status["verdict"] == "Failed", json.dumps(status, indent=1)
    error_rate = checks_by_name(status)["error-rate"]
    assert error_rate["state"] == "Failed"
    assert error_rate["runs"] <= error_rate["lastSlot"] + 1  # no slot twice
    assert next(p for p in status["phases"] if p["name"] == "immediate")["startedAt"] == started

    def settled() -> list[dict[str, Any]] | None:
        # The review completes first; its final annotation is carried out just after
        # (Pending, then Done, in the next writes).
        actions: list[dict[str, Any]] = status_of(kubectl, namespace, "unwritten").get("actions") or []
        final = any(a.get("id") == "annotate-final" for a in actions)
        unsettled = any(a.get("state") in ("Pending", "Applying") for a in actions)
        return actions if final and not unsettled else None

    records = wait_for("the final annotation", settled, 30)
    # One annotation for the failed check, one for the final verdict; each once.
    done = [(a.get("id"), a.get("state")) for a in records]
    assert done == [("annotate-error-rate", "Done"), ("annotate-final", "Done")], json.dumps(
        records, indent=1
    )
    events = kubectl.events(namespace, "unwritten")
    counts = collections.Counter((e["reason"], e["message"]) for e in events)
    assert not {k: n for k, n in counts.items() if n > 1}
    assert all(e.get("count", 1) == 1 for e in events)
    reasons = collections.Counter(e["reason"] for e in events)
    assert reasons["PhaseStarted"] == 1
    assert reasons["CheckFailed"] == 1
    assert reasons["VerdictFailed"] == 1


def test_invalid_review_is_reported_and_others_go_on(
    kubectl: Kubectl, namespace: str, run_operator: Callable[..., OperatorProcess], steer: Callable[..., None]
) -> None:
    steer(error_rate=0.0)
    run_operator()
    bad = review(
        "bad",
        [
            {
                "name": "p",
                "start": "0s",
                "end": "10s",
                "checks": [{"name": "c", "prometheus": {"query": "up"}, "failWhen": "value >> 1"}],
            }
        ],
    )
    kubectl.apply(namespace, bad)
    kubectl.apply(namespace, review("good", healthy_phases(end="6s")))
    status = wait_verdict(kubectl, namespace, "bad", timeout=30)
    assert status["verdict"] == "Invalid"
    condition = next(c for c in status["conditions"] if c["type"] == "InvalidSpec")
    assert condition["status"] == "True"
    assert condition["message"].startswith("spec.phases[p].checks[c].failWhen:")
    assert wait_verdict(kubectl, namespace, "good")["verdict"] == "Passed"


def test_prometheus_stopped_halfway_is_error_not_failure(
    kubectl: Kubectl,
    namespace: str,
    run_operator: Callable[..., OperatorProcess],
    steer: Callable[..., None],
    observability: dict[str, Any],
    tmp_path: pathlib.Path,
    free_port: int,
) -> None:
    """A Prometheus of the operator's own, scraping the sample app, stopped mid-review."""
    steer(error_rate=0.0)
    metrics = httpx.URL(observability["env"]["SAMPLEAPP_METRICS_URL"])
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: sample\n    honor_labels: true\n"
        f"    static_configs: [{{targets: ['{metrics.host}:{metrics.port}']}}]\n"
    )
    url = f"http://127.0.0.1:{free_port}"
    prometheus = subprocess.Popen(
        [
            "/usr/bin/prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{free_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def sees_traffic() -> bool:
            try:
                answer = httpx.get(f"{url}/api/v1/query", params={"query": ERROR_RATE}, timeout=2).json()
            except (httpx.HTTPError, ValueError):  # ValueError: not JSON yet ("Service Unavailable")
                return False
            return bool(answer.get("data", {}).get("result"))

        wait_for("the throwaway Prometheus to see the sample app", sees_traffic, 60)
        # Every run written: the test waits for two passing runs in the status.
        run_operator(POSTDEPLOY_PROMETHEUS_URL=url, POSTDEPLOY_STATUS_REFRESH="0")
        phases = [
            {
                "name": "immediate",
                "start": "0s",
                "end": "30s",
                "interval": "2s",
                "checks": [
                    {
                        "name": "error-rate",
                        "prometheus": {"query": ERROR_RATE},
                        "failWhen": "value > 0.2",
                        "consecutiveErrorLimit": 100,
                        "onFailure": "rollback",
                    }
                ],
            }
        ]
        kubectl.apply(namespace, review("halfway", phases))
        wait_for(
            "two passing runs",
            lambda: any(
                c.get("runs", 0) >= 2 and c.get("lastResult") == "Passed"
                for c in status_of(kubectl, namespace, "halfway").get("checks", [])
            ),
            60,
        )
        prometheus.terminate()
        prometheus.wait(30)
        steer(error_rate=0.6)  # a breach the operator can no longer see
        status = wait_verdict(kubectl, namespace, "halfway")
    finally:
        if prometheus.poll() is None:
            prometheus.kill()
            prometheus.wait(10)
    check = checks_by_name(status)["error-rate"]
    assert check["failures"] == 0, check
    assert check["errors"] >= 1 and check["state"] == "Error", check
    assert "unreachable" in check["message"] or "did not answer" in check["message"], check["message"]
    assert status["verdict"] == "Inconclusive"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["SLOBreached"]["status"] == "False"
    assert [a for a in status.get("actions", []) if a.get("check")] == []  # nothing acted on
    image = kubectl.get(namespace, "deployment", "checkout")["spec"]["template"]["spec"]["containers"][0]
    assert image["image"].endswith(":1.0.0")
