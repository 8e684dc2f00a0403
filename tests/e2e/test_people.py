"""People in the loop, end to end: the operator as a process, the plugin as a person.

Covers, on the test bed (real API server with RBAC, the non-admin user ``alice``):
- a manual check stays AwaitingConfirmation run after run until someone confirms it
  with ``kubectl postdeploy confirm``; alice, without the right to annotate reviews,
  is refused (exit 4); ``rerun`` records its token on the check;
- a sign-off records the user the API server authenticated, even when the request
  claims another name; alice may sign for the role RBAC grants her and is refused
  (exit 4) for another; a second sign-off for a role is a conflict (exit 5); a
  sign-off cannot be edited; the review waits in AwaitingSignoff until the last
  role signs, then completes with the signers in ``status.finalReview``;
- cleanup deletes exactly the objects labelled temporary for this review or version
  and the listed ``maintenance-mode`` ConfigMap, and prunes old ReplicaSets keeping
  the current one and the rollback target; look-alikes survive; a dry run deletes
  nothing and lists what would go;
- the report (ConfigMap owned by the review) contains the measured values, the SLO
  table, the notes and customer impact entered with the plugin; its HTML page opens
  in headless Chromium with visible charts and no console errors (screenshot kept in
  ``artifacts/``).
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.e2e import browsers
from tests.e2e.harness import ROOT, Kubectl, OperatorProcess, wait_for
from tests.e2e.test_reviews import ERROR_RATE, checks_by_name, review, status_of, steer, wait_verdict

__all__ = ["steer"]  # the fixture, imported for this module's tests

ARTIFACTS = ROOT / "artifacts"
SIGNERS = ROOT / "docs" / "rbac" / "signers.yaml"


@pytest.fixture
def plugin(kube_cluster: dict[str, Any]) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str, user: str = "admin") -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **kube_cluster["env"]}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "operator"), str(ROOT)])
        if user == "alice":
            env["KUBECONFIG"] = kube_cluster["env"]["KUBECONFIG_ALICE"]
        return subprocess.run(
            [sys.executable, "-m", "postdeploy.plugin", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


@pytest.fixture
def webhook_operator(
    kubectl: Kubectl, run_operator: Callable[..., OperatorProcess], free_port: int
) -> OperatorProcess:
    """The operator with its sign-off webhook on loopback, registered with the API server."""
    kubectl("wait", "--for=condition=Established", "crd/reviewsignoffs.postdeploy.io", "--timeout=60s")
    process = run_operator(POSTDEPLOY_WEBHOOK="local", POSTDEPLOY_WEBHOOK_PORT=str(free_port))

    def registered() -> bool:
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            raw = kubectl("get", kind, "postdeploy.io", "-o", "json", check=False)
            if not raw.startswith("{"):
                return False
            hooks = json.loads(raw).get("webhooks") or []
            if not any(f":{free_port}/" in (h.get("clientConfig") or {}).get("url", "") for h in hooks):
                return False
        return True

    wait_for("the sign-off webhooks to be registered", registered, 60)
    return process


def test_manual_check_waits_for_a_person(
    kubectl: Kubectl,
    namespace: str,
    run_operator: Callable[..., OperatorProcess],
    plugin: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    # Every run written: the test watches lastSlot move, which alone waits for the
    # next write that matters (docs/engine.md, "When the status is written").
    run_operator(POSTDEPLOY_STATUS_REFRESH="0")
    phases = [
        {
            "name": "immediate",
            "start": "0s",
            "end": "60s",
            "interval": "2s",
            "checks": [
                {"name": "support-tickets", "manual": {"description": "Support tickets checked"}},
                {"name": "rollout", "kubernetes": {"measure": "rolloutComplete"}},
            ],
        }
    ]
    # The phase counts from now, not from the Deployment's rollout a while ago.
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    kubectl.apply(namespace, review("ux", phases, deployedAt=now))

    def manual() -> dict[str, Any]:
        return checks_by_name(status_of(kubectl, namespace, "ux")).get("support-tickets", {})

    first = wait_for(
        "the manual check to await confirmation",
        lambda: manual() if manual().get("state") == "AwaitingConfirmation" else None,
        30,
    )
    later = wait_for(
        "a later slot", lambda: manual() if manual().get("lastSlot", 0) >= first["lastSlot"] + 2 else None, 30
    )
    assert later["state"] == "AwaitingConfirmation" and later["runs"] == 0, later
    shown = plugin("-n", namespace, "status", "ux")
    assert shown.returncode == 0 and "AwaitingConfirmation" in shown.stdout, shown

    refused = plugin("-n", namespace, "confirm", "ux", "support-tickets", user="alice")
    assert refused.returncode == 4, refused
    assert refused.stderr.startswith("error: ") and refused.stderr.count("\n") == 1, refused.stderr
    assert plugin("-n", namespace, "confirm", "ux", "nope").returncode == 3
    assert plugin("-n", namespace, "confirm", "ux", "rollout").returncode == 5  # not a manual check

    done = plugin("-n", namespace, "confirm", "ux", "support-tickets", "--note", "no tickets so far")
    assert done.returncode == 0 and "confirmed by admin" in done.stdout, done
    confirmed = wait_for(
        "the confirmation to be seen", lambda: manual() if manual().get("value") == 1 else None, 90
    )
    assert "confirmed by admin: no tickets so far" in confirmed["message"]
    assert confirmed["state"] == "Running" and confirmed["lastResult"] == "Passed"

    rerun = plugin("-n", namespace, "rerun", "ux", "rollout")
    assert rerun.returncode == 0, rerun
    token = rerun.stdout.split("(")[1].split(")")[0]
    wait_for(
        "the rerun to be taken up",
        lambda: checks_by_name(status_of(kubectl, namespace, "ux"))["rollout"].get("rerun") == token,
        90,
    )
    status = wait_verdict(kubectl, namespace, "ux", timeout=120)
    assert checks_by_name(status)["support-tickets"]["state"] == "Passed", status


def test_signoffs_record_the_authenticated_user_and_rbac_decides_the_role(
    kubectl: Kubectl,
    namespace: str,
    webhook_operator: OperatorProcess,
    plugin: Callable[..., subprocess.CompletedProcess[str]],
    kube_cluster: dict[str, Any],
) -> None:
    kubectl("apply", "-f", str(SIGNERS))
    kubectl(
        "-n",
        namespace,
        "create",
        "rolebinding",
        "alice-engineering-lead",
        "--clusterrole=postdeploy-signer-engineering-lead",
        "--user=alice",
    )
    phases = [
        {
            "name": "immediate",
            "start": "0s",
            "end": "6s",
            "interval": "2s",
            "checks": [{"name": "rollout", "kubernetes": {"measure": "rolloutComplete"}}],
        }
    ]
    kubectl.apply(
        namespace, review("signed", phases, signoffs={"roles": ["engineering-lead", "product-owner"]})
    )
    awaiting = wait_for(
        "the review to await sign-offs",
        lambda: (s := status_of(kubectl, namespace, "signed")).get("phase") == "AwaitingSignoff" and s,
        60,
    )
    conditions = {c["type"]: c for c in awaiting["conditions"]}
    assert conditions["AwaitingSignoff"]["status"] == "True"
    assert conditions["Complete"]["status"] == "False"
    assert awaiting["finalReview"]["awaiting"] == ["engineering-lead", "product-owner"]

    # Alice claims to be someone else: the webhook records who she is.
    forged = {
        "apiVersion": "postdeploy.io/v1alpha1",
        "kind": "ReviewSignoff",
        "metadata": {"name": "signed-engineering-lead"},
        "spec": {
            "review": "signed",
            "role": "engineering-lead",
            "notes": "LGTM",
            "signedBy": {"username": "the-cto", "groups": ["system:masters"]},
        },
    }
    env = {**os.environ, **kube_cluster["env"], "KUBECONFIG": kube_cluster["env"]["KUBECONFIG_ALICE"]}
    created = subprocess.run(
        ["kubectl", "-n", namespace, "create", "-f", "-"],
        input=yaml.safe_dump(forged),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    assert "ignored" in created.stderr and "alice" in created.stderr  # the webhook's warning
    stored = kubectl.get(namespace, "reviewsignoffs", "signed-engineering-lead")["spec"]
    assert stored["signedBy"]["username"] == "alice"
    assert "system:masters" not in stored["signedBy"]["groups"]
    assert stored["signedAt"]

    refused = plugin("-n", namespace, "signoff", "signed", "--role", "product-owner", user="alice")
    assert refused.returncode == 4, refused
    assert "alice may not sign off as product-owner" in refused.stderr
    again = plugin("-n", namespace, "signoff", "signed", "--role", "engineering-lead", user="alice")
    assert again.returncode == 5 and "already signed" in again.stderr, again
    unknown = plugin("-n", namespace, "signoff", "signed", "--role", "operations-lead")
    assert unknown.returncode == 6 and "does not ask for role" in unknown.stderr, unknown
    edited = kubectl(
        "-n",
        namespace,
        "patch",
        "reviewsignoffs",
        "signed-engineering-lead",
        "--type=merge",
        "-p",
        '{"spec":{"signedBy":{"username":"mallory"}}}',
        check=False,
    )
    assert "cannot be changed" in edited, edited

    wait_for(
        "alice's sign-off in the review",
        lambda: (
            status_of(kubectl, namespace, "signed").get("finalReview", {}).get("awaiting")
            == ["product-owner"]
        ),
        30,
    )
    assert status_of(kubectl, namespace, "signed")["phase"] == "AwaitingSignoff"

    signed = plugin("-n", namespace, "signoff", "signed", "--role", "product-owner", "--notes", "ship it")
    assert signed.returncode == 0 and "by admin" in signed.stdout, signed
    status = wait_verdict(kubectl, namespace, "signed", timeout=60)
    records = {r["role"]: r for r in status["finalReview"]["signoffs"]}
    assert records["engineering-lead"]["by"] == "alice" and records["engineering-lead"]["notes"] == "LGTM"
    assert records["product-owner"]["by"] == "admin" and records["product-owner"]["notes"] == "ship it"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Complete"]["status"] == "True"
    assert conditions["AwaitingSignoff"]["status"] == "False"
    reasons = [e["reason"] for e in kubectl.events(namespace, "signed")]
    assert reasons.count("SignedOff") == 2 and reasons.count("ReviewCompleted") == 1, reasons


def _plant(
    kubectl: Kubectl, namespace: str, kind: str, name: str, labels: dict[str, str] | None = None
) -> None:
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {"name": name, "labels": labels or {}},
    }
    if kind == "ConfigMap":
        manifest["data"] = {"k": "v"}
    if kind == "Secret":
        manifest["stringData"] = {"token": "s3cret"}
    kubectl.apply(namespace, manifest)


def _names(kubectl: Kubectl, namespace: str, kind: str) -> set[str]:
    items = json.loads(kubectl("-n", namespace, "get", kind, "-o", "json"))["items"]
    # Each finished review writes its report ConfigMap: not a planted object.
    return {i["metadata"]["name"] for i in items if not i["metadata"]["name"].endswith("-report")}


def _revisions(kubectl: Kubectl, namespace: str) -> set[str]:
    items = json.loads(kubectl("-n", namespace, "get", "replicasets", "-o", "json"))["items"]
    return {i["metadata"]["annotations"]["deployment.kubernetes.io/revision"] for i in items}


def test_cleanup_deletes_exactly_what_is_labelled_or_listed(
    kubectl: Kubectl, namespace: str, run_operator: Callable[..., OperatorProcess]
) -> None:
    for version in ("1.0.1", "1.0.2", "1.0.3"):
        kubectl.roll_out(namespace, version)
    assert _revisions(kubectl, namespace) == {"1", "2", "3", "4"}
    label = "postdeploy.io/temporary"
    _plant(kubectl, namespace, "ConfigMap", "tmp-flags", {label: "tidy"})
    _plant(kubectl, namespace, "Secret", "deploy-token", {label: "1.0.3"})
    _plant(kubectl, namespace, "ServiceAccount", "deployer", {label: "tidy"})
    _plant(kubectl, namespace, "ConfigMap", "maintenance-mode")
    # Look-alikes that must survive: another review's, another version's, another label
    # key, unlabelled, and a name that is not the listed one.
    _plant(kubectl, namespace, "ConfigMap", "other-review-tmp", {label: "other-review"})
    _plant(kubectl, namespace, "Secret", "old-token", {label: "1.0.0"})
    _plant(kubectl, namespace, "Secret", "lookalike-token", {"postdeploy.io/temporary-ish": "tidy"})
    _plant(kubectl, namespace, "ConfigMap", "tmp-unlabelled")
    _plant(kubectl, namespace, "ConfigMap", "maintenance-mode-backup")
    cleanup = {
        "names": [
            {"kind": "ConfigMap", "name": "maintenance-mode"},
            {"kind": "ConfigMap", "name": "never-existed"},
        ],
        "keepReplicaSets": 1,
        "kinds": ["ConfigMap", "Secret", "ServiceAccount"],
    }
    before = {kind: _names(kubectl, namespace, kind) for kind in ("configmaps", "secrets", "serviceaccounts")}
    run_operator()

    def phases(dry_run: bool) -> list[dict[str, Any]]:
        return [
            {
                "name": "cleanup",
                "start": "0s",
                "end": "4s",
                "interval": "2s",
                "checks": [{"name": "housekeeping", "cleanup": {**cleanup, "dryRun": dry_run}}],
            }
        ]

    kubectl.apply(namespace, review("tidy-dry", phases(True)))
    dry = checks_by_name(wait_verdict(kubectl, namespace, "tidy-dry"))["housekeeping"]
    listed = {(o["kind"], o["name"]) for o in dry["details"]["objects"]}
    assert {o["result"] for o in dry["details"]["objects"]} == {"would delete"}
    assert {(k, n) for k, n in listed if k != "ReplicaSet"} == {
        ("Secret", "deploy-token"),
        ("ConfigMap", "maintenance-mode"),
    }  # "tidy" is not this review's name
    assert len([k for k, _ in listed if k == "ReplicaSet"]) == 2
    assert {kind: _names(kubectl, namespace, kind) for kind in before} == before
    assert _revisions(kubectl, namespace) == {"1", "2", "3", "4"}

    kubectl.apply(namespace, review("tidy", phases(False)))
    status = wait_verdict(kubectl, namespace, "tidy")
    check = checks_by_name(status)["housekeeping"]
    assert check["state"] == "Passed", check
    gone = {
        ("ConfigMap", "tmp-flags"),
        ("Secret", "deploy-token"),
        ("ServiceAccount", "deployer"),
        ("ConfigMap", "maintenance-mode"),
    }
    deleted = {(o["kind"], o["name"]) for o in check["details"]["objects"] if o["kind"] != "ReplicaSet"}
    assert deleted == gone
    assert check["details"]["credentials"] == 2 and check["details"]["failed"] == 0
    for kind, plural in (
        ("ConfigMap", "configmaps"),
        ("Secret", "secrets"),
        ("ServiceAccount", "serviceaccounts"),
    ):
        expected = before[plural] - {n for k, n in gone if k == kind}
        remaining = _names(kubectl, namespace, plural)
        assert remaining == expected, (kind, remaining ^ expected)
    # Revision 4 runs, revision 3 is where a rollback would go: both stay.
    wait_for("old ReplicaSets to go", lambda: _revisions(kubectl, namespace) == {"3", "4"}, 30)


def test_report_has_the_measured_values_and_renders_offline(
    kubectl: Kubectl,
    namespace: str,
    run_operator: Callable[..., OperatorProcess],
    plugin: Callable[..., subprocess.CompletedProcess[str]],
    steer: Callable[..., None],
) -> None:
    steer(error_rate=0.05)
    phases = [
        {
            "name": "immediate",
            "start": "0s",
            "end": "14s",
            "interval": "2s",
            "checks": [
                {"name": "rollout", "kubernetes": {"measure": "rolloutComplete"}},
                {"name": "available", "kubernetes": {"measure": "availableRatio"}},
                {"name": "error-rate", "prometheus": {"query": ERROR_RATE}, "failWhen": "value > 0.2"},
            ],
        },
        {
            "name": "documentation",
            "start": "14s",
            "end": "18s",
            "interval": "2s",
            "checks": [
                {"name": "deployment-report", "report": {"window": "10m"}},
            ],
        },
    ]
    # The notes and the impact are entered before the operator starts, so they precede
    # the final review however slow each `kubectl postdeploy` is on a loaded machine;
    # deployedAt is then set to the moment the operator starts.
    kubectl.apply(namespace, review("reported", phases, parameters={"namespace": "shop"}))
    lesson = plugin(
        "-n",
        namespace,
        "note",
        "reported",
        "--lesson",
        "Cache warming cut p95 latency",
        "--category",
        "Technical",
        "--action",
        "Automate cache warming",
    )
    assert lesson.returncode == 0, lesson
    assert (
        plugin(
            "-n",
            namespace,
            "note",
            "reported",
            "--tech-debt",
            "Retry storm on timeouts",
            "--priority",
            "high",
        ).returncode
        == 0
    )
    assert plugin("-n", namespace, "note", "reported").returncode == 2  # which kind of note?
    impact = plugin(
        "-n", namespace, "impact", "reported", "--tickets", "3", "--complaints", "1", "--positive", "7"
    )
    assert impact.returncode == 0, impact

    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    deployed = json.dumps({"spec": {"deployedAt": now}})
    kubectl("-n", namespace, "patch", "pdr", "reported", "--type=merge", "-p", deployed)
    run_operator()
    status = wait_verdict(kubectl, namespace, "reported", timeout=120)
    assert status["verdict"] == "Passed", json.dumps(status, indent=1)
    error_rate = checks_by_name(status)["error-rate"]["value"]
    slos = {s["name"]: s for s in status["finalReview"]["slos"]}
    assert slos["rollbackRequired"]["value"] == "No" and slos["rollbackRequired"]["met"] is True
    assert slos["downtime"]["value"] == "0s" and slos["downtime"]["met"] is True
    assert slos["errorSpike"]["number"] is not None
    assert status["finalReview"]["impact"]["tickets"] == 3

    configmap = kubectl.get(namespace, "configmap", "reported-report")
    owner = configmap["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "PostDeploymentReview" and owner["name"] == "reported"

    shown = plugin("-n", namespace, "status", "reported")
    assert shown.returncode == 0 and "fail when value > 0.2" in shown.stdout, shown
    report = plugin("-n", namespace, "report", "reported")
    assert report.returncode == 0, report
    text = report.stdout
    assert "# Deployment Summary - 1.0.0" in text
    assert f"{error_rate:.4g}" in text  # the measured error rate, as measured
    for expected in (
        "## What Went Well",
        "## Action Items",
        "### Deployment SLOs",
        "deploymentTime",
        "Cache warming cut p95 latency",
        "Retry storm on timeouts",
        "Support tickets related to deployment: 3",
        "Positive feedback: 7",
    ):
        assert expected in text, expected
    assert "## Post-mortem" not in text  # nothing failed

    ARTIFACTS.mkdir(exist_ok=True)
    page = ARTIFACTS / "people-report.html"
    written = plugin("-n", namespace, "report", "reported", "--format", "html", "-f", str(page))
    assert written.returncode == 0, written
    html = page.read_text()
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html
    assert f"{error_rate:.4g}" in html
    if browsers.chromium() is None:
        pytest.fail("chromium is not installed: apt-get install -y chromium")
    shot = browsers.open_page(page, ARTIFACTS / "people-report.png")
    assert shot.console == [], shot.console
    assert shot.dom.count("<svg") >= 4 and 'class="series"' in shot.dom
    assert "Deployment Summary - 1.0.0" in shot.dom
    _, _, pixels = browsers.png_pixels(shot.screenshot)
    blue = sum(1 for r, g, b in pixels if abs(r - 0x09) < 40 and abs(g - 0x69) < 40 and abs(b - 0xDA) < 40)
    red = sum(1 for r, g, b in pixels if abs(r - 0xCF) < 40 and abs(g - 0x22) < 50 and abs(b - 0x2E) < 50)
    assert blue > 300, f"chart lines hardly visible: {blue} blue pixels"
    assert red > 50, f"deployment markers hardly visible: {red} red pixels"

    # Entered after the final review was written: recorded, and the person is told so.
    late = plugin("-n", namespace, "impact", "reported", "--tickets", "4")
    assert late.returncode == 0 and "reported is Complete" in late.stdout, late
    assert status_of(kubectl, namespace, "reported")["finalReview"]["impact"]["tickets"] == 3
