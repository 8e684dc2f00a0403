"""The built-in checklist through the operator process: a review with no template of its own.

The review names its target and version, points the queries at the sample app's
series (``parameters``) and compresses 72 hours into about a minute and a half by
overriding the three phases' timing; everything else comes from the shipped
``crds/postdeploy-default.yaml``. PostgreSQL is a copy of ``shop`` per test.

Covers:
- a healthy release passes the whole checklist: every enabled check Passed (the three
  manual ones once confirmed through annotations), hpa Skipped (no HPA scales the
  sample Deployment), the CheckPassed Events carrying the queries as the template filled
  them in (a settled check's status keeps neither query nor details);
- a release with faults fails exactly the checks that cover them: a 30% error rate
  (error-rate, compared with before the deployment in 5-second batches, and its
  continuation error-rate-extended), a critical alert in its namespace
  (critical-alerts), an error type never seen before (new-error-types, with its
  count), a statement slower than a second after the deployment
  (slow-queries-immediate, and slow-queries through the first one's snapshot) and a
  working set growing towards the limit (memory-leak);
  latency, throughput, CPU, memory use and the trends stay green.
"""

from __future__ import annotations

import datetime
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from testbed import observability as bed
from testbed import sampleapp
from tests.e2e.harness import Kubectl, OperatorProcess, wait_for
from tests.e2e.shops import ShopCopy, copy_of_shop
from tests.e2e.test_reviews import checks_by_name, status_of, wait_verdict

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
# The sample app exports the series of shop/checkout, whatever namespace the test uses.
PARAMETERS = {
    "selector": 'namespace="shop", job="checkout"',
    "podSelector": 'namespace="shop", pod=~"checkout-.*"',
    "rateWindow": "10s",
    "trendWindow": "4s",
    "smoothWindow": "4s",
}
MANUAL = ("support-tickets", "social-media", "feedback-channels")


def compressed(name: str, *, extra: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """A review of ``checkout`` with the default template, 72 hours in 90 seconds."""
    extra = extra or {}
    trends = [
        {"name": n, "prometheus": {"step": "3s"}}
        for n in ("memory-leak", "latency-trend", "error-rate-trend")
    ]
    # The comparisons in 5-second batches (the same in both phases: one test).
    batches = {"prometheus": {"step": "5s"}}
    compared = [{"name": n, **batches} for n in ("error-rate", "latency-p95")]
    continued = [{"name": n, **batches} for n in ("error-rate-extended", "latency-p95-extended")]
    return {
        "apiVersion": "postdeploy.io/v1alpha1",
        "kind": "PostDeploymentReview",
        "metadata": {"name": name},
        "spec": {
            "target": {"name": "checkout"},
            "version": "1.0.0",
            "parameters": PARAMETERS,
            # Sign-offs are the final review's (tests/e2e/test_people.py), not awaited here.
            "signoffs": {"required": False},
            "phases": [
                {
                    "name": "immediate",
                    "start": "0s",
                    "end": "40s",
                    "interval": "5s",
                    # The sample app's load has no weekly pattern: compare with before.
                    "checks": [
                        {"name": "throughput", "baseline": {"preDeploy": True}},
                        *compared,
                        *extra.get("immediate", []),
                    ],
                },
                {
                    "name": "extended",
                    "start": "40s",
                    "end": "70s",
                    "interval": "6s",
                    "checks": [*trends, *continued],
                },
                {"name": "business", "start": "70s", "end": "85s", "interval": "10s"},
            ],
        },
    }


@pytest.fixture
def shop(postgres_db: dict[str, Any]) -> Iterator[ShopCopy]:
    with copy_of_shop(postgres_db) as copy:
        yield copy


@pytest.fixture
def sample(observability: dict[str, Any]) -> Iterator[Callable[..., None]]:
    """Steers the sample app; healthy, with some steady history, before the test deploys."""
    url = observability["env"]["SAMPLEAPP_CONTROL_URL"]
    original = sampleapp.settings(url)

    def steer(**changes: Any) -> None:
        sampleapp.steer(url, changes)

    steer(error_rate=0.0, error_spread="random", rps=20.0, latency_seconds=0.05, error_types={})
    steady = time.monotonic() + 12  # the pre-deploy baselines' 10 s windows hold only this
    scraped = 'count_over_time(up{job="checkout"}[20s]) >= 15'  # a fresh bed scrapes from 0
    prometheus = observability["env"]["PROMETHEUS_URL"]
    wait_for("steady live metrics", lambda: time.monotonic() > steady and bed.query(prometheus, scraped), 60)
    yield steer
    keys = (
        "error_rate",
        "error_spread",
        "rps",
        "latency_seconds",
        "error_types",
        "memory_bytes",
        "memory_growth_bytes_per_s",
    )
    sampleapp.steer(url, {k: original[k] for k in keys})


def _use_features(shop: ShopCopy, count: int = 25) -> None:
    """People use features after the deployment: rows with created_at = now()."""
    with psycopg.connect(shop.admin) as conn:
        conn.execute(
            "INSERT INTO feature_usage (feature_name, user_id, created_at) "
            "SELECT (ARRAY['search', 'playlists', 'smart_shuffle'])[1 + g %% 3], g, now() "
            "FROM generate_series(1, %(count)s) AS g",
            {"count": count},
        )


def _finished(kubectl: Kubectl, namespace: str, name: str, timeout: float) -> dict[str, Any]:
    """The review's status once Completed; on timeout, fail showing where each check is."""
    try:
        return wait_verdict(kubectl, namespace, name, timeout=timeout)
    except AssertionError:
        status = status_of(kubectl, namespace, name)
        summary = {c["name"]: (c["state"], c.get("message", "")[:200]) for c in status.get("checks", [])}
        pytest.fail(f"{name} did not finish: phase {status.get('phase')}, {json.dumps(summary, indent=1)}")


def _ran(kubectl: Kubectl, namespace: str, review: str, check: str) -> bool:
    return any(
        c["name"] == check and c.get("runs", 0) >= 1
        for c in status_of(kubectl, namespace, review).get("checks", [])
    )


def _batches(message: str) -> int:
    """How many batches a comparison's message says it compared."""
    found = re.search(r"\((\d+) batches\)", message)
    assert found, message
    return int(found[1])


def test_a_healthy_release_passes_the_whole_checklist(
    sample: Callable[..., None],  # first: the Deployment rolls out once the metrics are steady
    kubectl: Kubectl,
    namespace: str,
    default_template: dict[str, Any],
    run_operator: Callable[..., OperatorProcess],
    shop: ShopCopy,
) -> None:
    run_operator(POSTDEPLOY_POSTGRES_DSN=shop.read_only)
    kubectl.apply(namespace, compressed("healthy"))
    for check in MANUAL:
        note = json.dumps({"result": "confirmed", "note": "nothing reported", "by": "e2e"})
        kubectl("-n", namespace, "annotate", "pdr", "healthy", f"confirm.postdeploy.io/{check}={note}")
    wait_for(
        "the business phase", lambda: status_of(kubectl, namespace, "healthy").get("phase") == "business", 120
    )
    _use_features(shop)
    status = _finished(kubectl, namespace, "healthy", timeout=120)

    checks = checks_by_name(status)
    template_checks = [c for p in default_template["spec"]["phases"] for c in p["checks"]]
    enabled = [c["name"] for c in template_checks if c.get("enabled", True)]
    assert list(checks) == enabled
    states = {name: c["state"] for name, c in checks.items()}
    assert states == {**dict.fromkeys(enabled, "Passed"), "hpa": "Skipped"}, json.dumps(
        {n: (c["state"], c.get("message")) for n, c in checks.items() if c["state"] != "Passed"}, indent=1
    )
    assert status["verdict"] == "Passed"
    assert [p["state"] for p in status["phases"]] == ["Completed"] * 3
    assert checks["hpa"]["message"].startswith("not applicable: no HorizontalPodAutoscaler targets")
    # A check that passed keeps neither query nor details once its phase has completed
    # (docs/engine.md, "Status"): its CheckPassed Event has the query as the template
    # filled it in, its message what was compared.
    assert not {"query", "details"} & checks["error-rate"].keys()
    passed = {
        e["message"].split(" ", 1)[0]: e["message"]
        for e in kubectl.events(namespace, "healthy")
        if e["reason"] == "CheckPassed"
    }
    assert 'job="checkout", code=~"5.."' in passed["error-rate"], passed["error-rate"]
    assert _batches(passed["error-rate"]) >= 4  # 40 s in settled 5-second batches
    assert _batches(passed["error-rate-extended"]) >= 9  # since the deployment
    assert checks["memory-leak"]["value"] == 1e9  # a flat working set never reaches its limit
    assert checks["feature-adoption"]["value"] == 0
    assert "snapshot of" in checks["slow-queries-immediate"]["message"]
    assert "against slow-queries-immediate's snapshot of" in checks["slow-queries"]["message"]
    assert 0.8 < checks["engagement"]["value"] < 1.25


def test_faults_fail_exactly_the_checks_that_cover_them(
    sample: Callable[..., None],  # first: the Deployment rolls out once the metrics are steady
    kubectl: Kubectl,
    namespace: str,
    default_template: dict[str, Any],
    run_operator: Callable[..., OperatorProcess],
    shop: ShopCopy,
    observability: dict[str, Any],
) -> None:
    new_type = f"Ledger{uuid.uuid4().hex[:6]}Error"
    run_operator(POSTDEPLOY_POSTGRES_DSN=shop.read_only)
    review = compressed(
        "faulty",
        # Look at pg_stat_statements every run, not every 10 minutes.
        extra={"immediate": [{"name": "slow-queries-immediate", "interval": "5s"}]},
    )
    kubectl.apply(namespace, review)
    wait_for("the snapshot", lambda: _ran(kubectl, namespace, "faulty", "slow-queries-immediate"), 60)
    sample(error_rate=0.3, error_types={new_type: 0.2}, memory_growth_bytes_per_s=2 * MIB)
    bed.post_alert(
        observability["env"]["ALERTMANAGER_URL"],
        {"alertname": "CheckoutDown", "severity": "critical", "namespace": namespace},
        ends_at=datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5),
    )
    with psycopg.connect(shop.admin, autocommit=True) as conn:
        conn.execute(f"SELECT /* e2e-{new_type} */ pg_sleep(1.2)")
    status = _finished(kubectl, namespace, "faulty", timeout=150)

    checks = checks_by_name(status)
    failed = sorted(name for name, c in checks.items() if c["state"] == "Failed")
    assert failed == [
        "critical-alerts",
        "error-rate",
        "error-rate-extended",
        "memory-leak",
        "new-error-types",
        "slow-queries",
        "slow-queries-immediate",
    ], json.dumps({n: (c["state"], c.get("message")) for n, c in checks.items()}, indent=1)
    assert status["verdict"] == "Failed"
    # As of the run that failed it: 5xx only after the deployment, significantly more.
    errors = checks["error-rate"]["details"]
    assert errors["eventsAfter"] > 0 and errors["ratioLower"] > 1.2 and errors["pValue"] < errors["alpha"]
    assert checks["critical-alerts"]["details"]["alertNames"] == ["CheckoutDown"]
    kinds = [s["labels"]["type"] for s in checks["new-error-types"]["details"]["series"]]
    assert kinds == [new_type] and checks["new-error-types"]["details"]["series"][0]["value"] >= 1
    slow = checks["slow-queries-immediate"]["details"]["statements"]
    assert [s["why"] for s in slow] == ["new since the deployment"] and f"e2e-{new_type}" in slow[0]["query"]
    assert checks["memory-leak"]["value"] < 1  # hours until 90% of the limit
    for steady in (
        "latency-p95",
        "latency-p95-extended",
        "throughput",
        "cpu-usage",
        "memory-usage",
        "latency-trend",
        "error-rate-trend",
    ):
        assert checks[steady]["state"] == "Passed", checks[steady]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["SLOBreached"]["status"] == "True"
    warnings = [e["message"] for e in kubectl.events(namespace, "faulty") if e["reason"] == "CheckFailed"]
    assert len(warnings) == len(failed)
