"""A review acts in its own namespace, end to end, with a non-admin author.

``alice`` (the test bed's unprivileged user) is admin of namespace team-a only (the
``admin`` ClusterRole plus PostDeploymentReviews there, through RoleBindings); team-b
runs its own ``checkout`` Deployment at image 1.1.0 (revision 2). The operator runs as
a real process watching team-a, with the admin's rights, as the issue's report had it.

Covers:
- alice's review in team-a that targets team-b/checkout with a check that fails at
  once and asks for a rollback is refused: condition Refused naming the rule and the
  flag that would allow it, verdict Invalid, a Warning Event; and nothing in team-b
  changes (image, revision, annotations, no Event), while her control review of her
  own Deployment, with the same check and started at the same moment, rolls that one
  back (so the refused review had all the time it needed to act);
- the same review with the operator started with
  ``--allow-cross-namespace TEAM_A=TEAM_B`` runs and rolls team-b/checkout back;
- alice herself may not patch team-b's Deployment (``kubectl auth can-i``).
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.harness import SAMPLE_DEPLOYMENT, Kubectl, OperatorProcess, wait_for

OLD_IMAGE = "registry.example/shop/checkout:1.0.0"
NEW_IMAGE = "registry.example/shop/checkout:1.1.0"
Run = Callable[..., OperatorProcess]


def failing_review(name: str, target: dict[str, str]) -> dict[str, Any]:
    """A review whose one check fails at its first run and asks for a rollback."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    return {
        "apiVersion": "postdeploy.io/v1alpha1",
        "kind": "PostDeploymentReview",
        "metadata": {"name": name},
        "spec": {
            "target": {"kind": "Deployment", **target},
            "version": "1.1.0",
            "deployedAt": now.isoformat().replace("+00:00", "Z"),
            "useDefaultTemplate": False,
            "phases": [
                {
                    "name": "immediate",
                    "start": "0s",
                    "end": "30s",
                    "interval": "2s",
                    "checks": [
                        {
                            "name": "always-failing",
                            "prometheus": {"query": "vector(1)"},
                            "failWhen": "value > 0",
                            "onFailure": "rollback",
                        }
                    ],
                }
            ],
        },
    }


def status_of(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = kubectl.get(namespace, "pdr", name).get("status") or {}
    return status


def wait_status(
    kubectl: Kubectl, namespace: str, name: str, what: str, test: Callable[[dict[str, Any]], Any]
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        status = status_of(kubectl, namespace, name)
        return status if test(status) else None

    result: dict[str, Any] = wait_for(f"review {namespace}/{name}: {what}", probe, 90)
    return result


def condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), None)


def roll_out(kubectl: Kubectl, namespace: str, image: str) -> None:
    kubectl("-n", namespace, "set", "image", "deployment/checkout", f"checkout={image}")
    kubectl("-n", namespace, "rollout", "status", "deployment/checkout", "--timeout=90s")


def snapshot(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    """What a review acting on team-b/checkout would change."""
    obj = kubectl.get(namespace, "deployment", "checkout")
    events = json.loads(kubectl("-n", namespace, "get", "events", "-o", "json"))["items"]
    return {
        "image": obj["spec"]["template"]["spec"]["containers"][0]["image"],
        "revision": obj["metadata"]["annotations"].get("deployment.kubernetes.io/revision"),
        "annotations": obj["metadata"]["annotations"],
        "generation": obj["metadata"]["generation"],
        "paused": obj["spec"].get("paused", False),
        "postdeploy events": [e for e in events if (e.get("source") or {}).get("component") == "postdeploy"],
    }


@pytest.fixture
def teams(kubectl: Kubectl, kube_cluster: dict[str, Any], namespace: str) -> Iterator[dict[str, Any]]:
    """team-a (the test's namespace) and team-b, each with checkout at 1.1.0; alice admin of team-a."""
    team_a, team_b = namespace, f"pd-e2e-team-b-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", team_b)
    try:
        kubectl.apply(team_b, SAMPLE_DEPLOYMENT)
        for team in (team_a, team_b):
            kubectl("-n", team, "rollout", "status", "deployment/checkout", "--timeout=90s")
            roll_out(kubectl, team, NEW_IMAGE)
        kubectl("-n", team_a, "create", "rolebinding", "alice-admin", "--clusterrole=admin", "--user=alice")
        kubectl(
            "-n", team_a, "create", "role", "reviews",
            "--verb=get,list,watch,create,update,patch,delete",
            "--resource=postdeploymentreviews.postdeploy.io",
        )  # fmt: skip
        kubectl("-n", team_a, "create", "rolebinding", "alice-reviews", "--role=reviews", "--user=alice")
        alice = Kubectl({**kube_cluster["env"], "KUBECONFIG": kube_cluster["env"]["KUBECONFIG_ALICE"]})
        assert (
            alice("auth", "can-i", "create", "postdeploymentreviews.postdeploy.io", "-n", team_a).strip()
            == "yes"
        )
        refused = alice("auth", "can-i", "patch", "deployments", "-n", team_b, check=False)
        assert refused.splitlines()[0].strip() == "no"
        yield {"a": team_a, "b": team_b, "alice": alice}
    finally:
        kubectl("delete", "namespace", team_b, "--wait=false", check=False)


def test_a_review_targeting_another_namespace_is_refused_and_touches_nothing(
    kubectl: Kubectl, teams: dict[str, Any], run_operator: Run
) -> None:
    team_a, team_b, alice = teams["a"], teams["b"], teams["alice"]
    before = snapshot(kubectl, team_b)
    # Admission (on by default) would refuse this review at `kubectl apply`, in the same
    # words (tests/e2e/test_admission.py); here the engine's own enforcement is under test.
    operator = run_operator(namespaces=[team_a], POSTDEPLOY_WEBHOOK="off")
    alice.apply(team_a, failing_review("cross", {"name": "checkout", "namespace": team_b}))
    alice.apply(team_a, failing_review("own", {"name": "checkout"}))

    status = wait_status(kubectl, team_a, "cross", "Refused", lambda s: condition(s, "Refused"))
    refused = condition(status, "Refused")
    assert refused is not None and refused["status"] == "True"
    assert refused["message"].startswith(f"spec.target.namespace: '{team_b}' is not the review's namespace")
    assert f"--allow-cross-namespace {team_a}={team_b}" in refused["message"]
    assert status["verdict"] == "Invalid" and not status.get("checks") and not status.get("actions")
    warnings = [e for e in kubectl.events(team_a, "cross") if e["reason"] == "Refused"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"

    # The control review, in the same operator and at the same moment, acts on its own
    # namespace: by then the refused review had every chance to act on team-b.
    own = wait_status(
        kubectl, team_a, "own", "verdict RolledBack", lambda s: s.get("verdict") == "RolledBack"
    )
    assert (
        kubectl.get(team_a, "deployment", "checkout")["spec"]["template"]["spec"]["containers"][0]["image"]
        == OLD_IMAGE
    ), own
    assert snapshot(kubectl, team_b) == before
    assert status_of(kubectl, team_a, "cross")["verdict"] == "Invalid"
    assert "Traceback" not in operator.output()


def test_an_allowed_pair_lets_the_review_act_on_the_other_namespace(
    kubectl: Kubectl, teams: dict[str, Any], run_operator: Run
) -> None:
    team_a, team_b, alice = teams["a"], teams["b"], teams["alice"]
    # Without admission: with it, alice would also need patch on team-b's Deployment.
    operator = run_operator(
        namespaces=[team_a], args=["--allow-cross-namespace", f"{team_a}={team_b}"], POSTDEPLOY_WEBHOOK="off"
    )
    alice.apply(team_a, failing_review("cross", {"name": "checkout", "namespace": team_b}))

    status = wait_status(
        kubectl, team_a, "cross", "verdict RolledBack", lambda s: s.get("verdict") == "RolledBack"
    )
    assert condition(status, "Refused") is None
    rollback = next(a for a in status["actions"] if a["action"] == "rollback")
    assert (rollback["state"], rollback["fromImage"], rollback["toImage"]) == ("Done", NEW_IMAGE, OLD_IMAGE)
    after = snapshot(kubectl, team_b)
    assert after["image"] == OLD_IMAGE and after["annotations"]["postdeploy.io/breach"] in (
        "active",
        "RolledBack",
    )
    assert f"cross-namespace={team_a}={team_b}" in operator.output()
    assert "Traceback" not in operator.output()
