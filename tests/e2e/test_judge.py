"""The built-in judge on the real stack: a quiet service at 1 request per second.

The operator runs as a process on the test bed; the reviews use the shipped default
template (``crds/postdeploy-default.yaml``) on a compressed timeline, with the
sample app steered to 1 request/s and a 5% share of 5xx responses (a quiet service:
a few errors a minute), spread evenly (the sample app's ``error_spread: even``): the
judge sees exactly 5% and later exactly 25%. With failures drawn at random, x5 at
1 request/s is detected within the 220 s this test can wait in ~96.5% of runs (20,000
runs simulated with the judge's own code), so the test would fail by chance about once
in 30 runs; detection and false-failure rates under chance are measured by
``make bench-judge`` (docs/judge.md), not here. The error-rate and latency-p95
comparisons run in 10-second batches, each against the 10 seconds mirrored before
deployedAt (``multiplier: 1``, so the 160-second warm-up at the same settings fills
every before-window); throughput takes the override docs/checklist.md offers quiet
services (requests counted per 60 s window, a Poisson noise floor); everything else
is the template's own (latency stays random).

Covers:
- a healthy release passes the whole checklist, with no failed check: error-rate and
  latency-p95 Passed on their comparisons (counts, ratio bounds, p-value in status),
  throughput Passed on its override (a count of ~60 requests a window);
- the same release with errors x5 (25% 5xx): error-rate Failed within its 240-second
  immediate phase (minRequests holds the first ~110 s Inconclusive at 1 request/s) -
  its lower ratio bound above 1 + minEffect, p-value below alpha - and nothing it does
  not cover;
- the same with ``onFailure: rollback`` on error-rate: the Deployment rolled back
  exactly once (one rollback action, revision 2 -> 1, one RolledBack Event).
The two faulty reviews run at the same time, on two Deployments, against the same
sample-app series.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from testbed import observability as bed
from tests.e2e.harness import SAMPLE_DEPLOYMENT, Kubectl, OperatorProcess, wait_for
from tests.e2e.shops import ShopCopy
from tests.e2e.test_actions import actions_of, deployment, events_about, image_of, roll_out
from tests.e2e.test_default_template import MANUAL, _finished, _use_features, compressed, sample, shop
from tests.e2e.test_reviews import checks_by_name, status_of

pytestmark = pytest.mark.e2e

__all__ = ["sample", "shop"]  # fixtures, used by name

RPS, SHARE = 1.0, 0.05
WARM_UP = 160  # seconds at RPS and SHARE before the first review's deployedAt
OLD_IMAGE = "registry.example/shop/checkout:1.0.0"
NEW_IMAGE = "registry.example/shop/checkout:1.1.0"
FAULTY_PHASE = 240  # seconds of the faulty reviews' immediate phase (the healthy one: 150)
COMPARISON = {"prometheus": {"step": "10s", "compare": {"multiplier": 1}}}
# The override docs/checklist.md offers quiet services: requests counted per window,
# and a difference of more than four Poisson standard deviations asked as well.
QUIET_THROUGHPUT = {
    "name": "throughput",
    "baseline": {"preDeploy": True},
    "prometheus": {"query": "sum(increase(http_requests_total{ {{selector}} }[{{rateWindow}}]))"},
    "failWhen": (
        "abs(value - baseline) > baseline * tolerance"
        " and (value - baseline) * (value - baseline) > 16 * (value + baseline)"
    ),
}


def quiet_review(
    name: str, target: str, deployed_at: datetime.datetime, rollback: bool = False, first: int = 150
) -> dict[str, Any]:
    """The default checklist in ``first`` + 40 seconds (``first``: the immediate phase),
    its comparisons in 10 s batches, throughput with the quiet services' override."""
    error_rate: dict[str, Any] = {"name": "error-rate", **COMPARISON}
    if rollback:
        error_rate["onFailure"] = "rollback"
    review = compressed(name)
    spec = review["spec"]
    spec["target"] = {"name": target}
    spec["deployedAt"] = deployed_at.isoformat()
    # Trends over 30 s windows: at 1 request/s a 4 s window holds 4 requests. Rates
    # (throughput, cpu-usage) over 60 s: the sample app sends each pod's requests in the
    # same tick, so at 1 request/s they come in bursts of one per pod every few seconds,
    # and a late tick moves a burst across a 10 s window's edge: 0.667 or 1.333 times the
    # rate, past throughput's 30 % tolerance (24 of 271 s in a failed CI run's data; a
    # 60 s window over the same data stayed within 0.966-1.017).
    spec["parameters"] = {**spec["parameters"], "trendWindow": "30s", "rateWindow": "60s"}
    immediate, extended, business = spec["phases"]
    immediate.update(end=f"{first}s", interval="10s")
    immediate["checks"] = [
        c for c in immediate["checks"] if c["name"] not in ("error-rate", "latency-p95", "throughput")
    ] + [error_rate, {"name": "latency-p95", **COMPARISON}, QUIET_THROUGHPUT]
    extended.update(start=f"{first}s", end=f"{first + 20}s", interval="10s")
    extended["checks"] = [
        c for c in extended["checks"] if c["name"] not in ("error-rate-extended", "latency-p95-extended")
    ] + [{"name": n, **COMPARISON} for n in ("error-rate-extended", "latency-p95-extended")]
    business.update(start=f"{first + 20}s", end=f"{first + 40}s", interval="10s")
    return review


def _confirm_manual_checks(kubectl: Kubectl, namespace: str, name: str) -> None:
    for check in MANUAL:
        note = json.dumps({"result": "confirmed", "note": "nothing reported", "by": "e2e"})
        kubectl("-n", namespace, "annotate", "pdr", name, f"confirm.postdeploy.io/{check}={note}")


def _second_deployment(kubectl: Kubectl, namespace: str, name: str) -> None:
    manifest = yaml.safe_load(SAMPLE_DEPLOYMENT)
    manifest["metadata"] = {"name": name, "labels": {"app.kubernetes.io/name": name}}
    manifest["spec"]["selector"]["matchLabels"] = {"app.kubernetes.io/name": name}
    manifest["spec"]["template"]["metadata"]["labels"] = {"app.kubernetes.io/name": name}
    kubectl.apply(namespace, manifest)
    kubectl("-n", namespace, "rollout", "status", f"deployment/{name}", "--timeout=60s")


def _explain(checks: dict[str, dict[str, Any]]) -> str:
    return json.dumps({n: (c["state"], c.get("message", "")[:300]) for n, c in checks.items()}, indent=1)


@pytest.mark.timeout(1500)  # a warm-up and reviews of 190 s and 280 s at 1 request/s
def test_a_quiet_service_passes_healthy_and_fails_and_rolls_back_errors_x5(
    sample: Callable[..., None],
    kubectl: Kubectl,
    namespace: str,
    default_template: dict[str, Any],
    run_operator: Callable[..., OperatorProcess],
    shop: ShopCopy,
    observability: dict[str, Any],
) -> None:
    roll_out(kubectl, namespace, NEW_IMAGE)  # revision 2 of checkout; revision 1 to go back to
    _second_deployment(kubectl, namespace, "checkout-b")
    sample(rps=RPS, error_rate=SHARE, error_spread="even")
    run_operator(POSTDEPLOY_POSTGRES_DSN=shop.read_only)
    # Every before-window must hold the quiet service only: wait until the last
    # WARM_UP seconds in Prometheus are all at 1 request/s.
    steady = f'max_over_time(sum(rate(http_requests_total{{job="checkout"}}[10s]))[{WARM_UP}s:5s]) < 1.5'
    prometheus = observability["env"]["PROMETHEUS_URL"]
    wait_for("the warm-up at 1 request/s", lambda: bed.query(prometheus, steady), WARM_UP + 60, every=5)

    # --- healthy -----------------------------------------------------------------------
    kubectl.apply(namespace, quiet_review("healthy", "checkout", datetime.datetime.now(datetime.UTC)))
    _confirm_manual_checks(kubectl, namespace, "healthy")
    wait_for(
        "the business phase",
        lambda: status_of(kubectl, namespace, "healthy").get("phase") == "business",
        240,
    )
    _use_features(shop)
    status = _finished(kubectl, namespace, "healthy", timeout=120)
    checks = checks_by_name(status)
    assert not [n for n, c in checks.items() if c["state"] == "Failed"], _explain(checks)
    for name in ("error-rate", "latency-p95", "error-rate-extended", "latency-p95-extended"):
        assert checks[name]["state"] == "Passed", _explain(checks)
    # Settled (docs/engine.md, "Status"): a passed comparison's statistics are in its message.
    message = checks["error-rate"]["message"]
    counted = re.search(r"events: (\d+)/(\d+) .*ratio in \[([-\d.e+]+), .* p=([-\d.e+]+)", message)
    assert counted, message
    assert int(counted[2]) >= 100  # ~140 requests, ~7 errors
    assert float(counted[3]) <= 1.2 and float(counted[4]) >= 0.005  # minEffect 0.2, alpha 0.005
    assert re.search(r"; p95 [\d.e+-]+s before", checks["latency-p95"]["message"]), checks["latency-p95"]
    # The override is accepted and measured: ~60 requests per 60 s window, not ~1 a second.
    assert checks["throughput"]["state"] == "Passed", _explain(checks)
    assert 40 < float(checks["throughput"]["value"]) < 80, checks["throughput"]
    assert status["verdict"] == "Passed", _explain(checks)

    # --- errors x5, with and without rollback ----------------------------------------------
    sample(error_rate=5 * SHARE)
    deployed = datetime.datetime.now(datetime.UTC)
    # At 1 request/s minRequests (100) holds every run Inconclusive for the first ~110 s
    # (batches are counted once complete); exactly 25% against 5% then crosses alpha at
    # the 11th to 13th 10 s batch (p = 0.0048 and ratioLower 1.20 at the 11th, 0.0017
    # and 1.34 at the 13th, 2e-5 and 1.74 at the 22nd). 240 s leave room for that.
    kubectl.apply(namespace, quiet_review("faulty", "checkout-b", deployed, first=FAULTY_PHASE))
    rollback = quiet_review("rollback", "checkout", deployed, rollback=True, first=FAULTY_PHASE)
    kubectl.apply(namespace, rollback)
    seen: dict[str, Any] = {}

    def faulty_failed() -> bool:
        seen.clear()  # the newest status only: a settled check drops keys an older one had
        seen.update(checks_by_name(status_of(kubectl, namespace, "faulty")).get("error-rate") or {})
        return seen.get("state") == "Failed"

    try:
        wait_for("error-rate to fail the faulty review", faulty_failed, FAULTY_PHASE)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; error-rate was: {json.dumps(seen, indent=1)}") from None
    rolled = wait_for(
        "the rollback review rolled back",
        lambda: status_of(kubectl, namespace, "rollback").get("verdict") == "RolledBack" or None,
        60,
    )
    assert rolled

    checks = checks_by_name(status_of(kubectl, namespace, "faulty"))
    errors = checks["error-rate"]["details"]
    assert errors["ratioLower"] > 1 + errors["minEffect"] and errors["pValue"] < errors["alpha"]
    assert errors["shareAfter"] > 2 * errors["shareBefore"]
    failed = sorted(n for n, c in checks.items() if c["state"] == "Failed")
    assert failed == ["error-rate"], _explain(checks)

    rollback_status = status_of(kubectl, namespace, "rollback")
    rollbacks = actions_of(rollback_status, "rollback")
    assert len(rollbacks) == 1, rollbacks
    assert rollbacks[0]["state"] == "Done" and rollbacks[0]["check"] == "error-rate"
    assert (rollbacks[0]["fromRevision"], rollbacks[0]["toRevision"]) == ("2", "1")
    kubectl("-n", namespace, "rollout", "status", "deployment/checkout", "--timeout=60s")
    assert image_of(deployment(kubectl, namespace)) == OLD_IMAGE
    # Still once when the review has gone on failing for a while.
    final = _finished(kubectl, namespace, "rollback", timeout=FAULTY_PHASE)
    assert len(actions_of(final, "rollback")) == 1
    on_target = [
        e for e in events_about(kubectl, namespace, "Deployment", "checkout") if e["reason"] == "RolledBack"
    ]
    assert len(on_target) == 1
