"""Acting on a breach, end to end: the operator as a real process on the test bed.

Covers:
- an error-rate spike rolls the Deployment back: the previous template and image
  are back, status records one rollback with from/to revision and image, the verdict
  is RolledBack with a RolledBack condition, and Events are on the review and on the
  Deployment;
- exactly one rollback when the breach continues and the operator is killed with
  SIGKILL: at a moment the test picks, right after the plan was written
  (failpoint ``rollback-applying``) and right after the patch (``rollback-patched``);
- StatefulSet and DaemonSet go back through their ControllerRevisions; an Argo
  Rollout (its CRD installed here) is aborted through its status subresource;
- a Deployment with a single revision is not rolled back, and status says why;
- pause sets spec.paused and nothing else; annotate-only (policy) and dry-run change
  exactly what they promise (annotations only / nothing at all);
- a GitOps-managed (Argo CD, Flux) target is annotated and notified, not rolled back;
- webhook receivers (JSON and Slack format) get exactly one message per state change
  (breach, rollback, completion) with the expected fields, while a receiver that
  always fails neither blocks the review nor is retried without bound;
- Prometheus unreachable during a check rolls nothing back;
- when the review completes, the breach annotations carry the final verdict.
"""

from __future__ import annotations

import base64
import collections
import http.server
import json
import threading
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
OLD_IMAGE = "registry.example/shop/checkout:1.0.0"
NEW_IMAGE = "registry.example/shop/checkout:1.1.0"
Run = Callable[..., OperatorProcess]


# --- helpers ------------------------------------------------------------------------------


def review(name: str, on_failure: str = "rollback", end: str = "40s", **spec: Any) -> dict[str, Any]:
    """A review with one error-rate check every 2s; what it does on failure is the test's."""
    return {
        "apiVersion": "postdeploy.io/v1alpha1",
        "kind": "PostDeploymentReview",
        "metadata": {"name": name},
        "spec": {
            "target": spec.pop("target", {"kind": "Deployment", "name": "checkout"}),
            "useDefaultTemplate": False,
            "phases": [
                {
                    "name": "immediate",
                    "start": "0s",
                    "end": end,
                    "interval": "2s",
                    "checks": [
                        {
                            "name": "error-rate",
                            "prometheus": {"query": ERROR_RATE},
                            "failWhen": "value > 0.2",
                            "onFailure": on_failure,
                        }
                    ],
                }
            ],
            **spec,
        },
    }


def status_of(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = kubectl.get(namespace, "pdr", name).get("status") or {}
    return status


def wait_status(
    kubectl: Kubectl,
    namespace: str,
    name: str,
    what: str,
    test: Callable[[dict[str, Any]], Any],
    timeout: float = 90,
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        status = status_of(kubectl, namespace, name)
        return status if test(status) else None

    result: dict[str, Any] = wait_for(f"review {name}: {what}", probe, timeout)
    return result


def completed(status: dict[str, Any]) -> bool:
    return status.get("phase") == "Completed"


def actions_of(status: dict[str, Any], action: str | None = None) -> list[dict[str, Any]]:
    return [a for a in status.get("actions", []) if action is None or a["action"] == action]


def deployment(kubectl: Kubectl, namespace: str, name: str = "checkout") -> dict[str, Any]:
    return kubectl.get(namespace, "deployment", name)


def image_of(obj: dict[str, Any]) -> str:
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


def roll_out(
    kubectl: Kubectl, namespace: str, image: str, kind: str = "deployment", name: str = "checkout"
) -> None:
    kubectl("-n", namespace, "set", "image", f"{kind}/{name}", f"checkout={image}")
    kubectl("-n", namespace, "rollout", "status", f"{kind}/{name}", "--timeout=90s")


def events_about(kubectl: Kubectl, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
    items = json.loads(
        kubectl(
            "-n",
            namespace,
            "get",
            "events",
            "-o",
            "json",
            "--field-selector",
            f"involvedObject.name={name},involvedObject.kind={kind}",
        )
    )["items"]
    return list(items)


def observed_error_rate(prometheus: str) -> float | None:
    result = httpx.get(f"{prometheus}/api/v1/query", params={"query": ERROR_RATE}, timeout=5).json()
    vector = result["data"]["result"]
    return float(vector[0]["value"][1]) if vector else None


@pytest.fixture
def steer(observability: dict[str, Any]) -> Iterator[Callable[[float], None]]:
    """Set the sample app's error rate and wait until Prometheus's 5s window shows it."""
    url = observability["env"]["SAMPLEAPP_CONTROL_URL"]
    prometheus = observability["env"]["PROMETHEUS_URL"]
    original = httpx.get(url).json()

    def apply(error_rate: float) -> None:
        httpx.post(url, json={"error_rate": error_rate}).raise_for_status()

        def settled() -> bool:
            value = observed_error_rate(prometheus)
            return value is not None and abs(value - error_rate) <= max(0.05, error_rate * 0.3)

        wait_for(f"Prometheus to see error rate ~{error_rate}", settled, 30, every=0.25)

    yield apply
    httpx.post(url, json={k: original[k] for k in ("error_rate", "latency_seconds", "rps")})


@pytest.fixture
def two_revisions(kubectl: Kubectl, namespace: str) -> str:
    """The sample Deployment at revision 2 (image 1.1.0), revision 1 (1.0.0) kept."""
    roll_out(kubectl, namespace, NEW_IMAGE)
    return namespace


class Receiver:
    """A webhook receiver on 127.0.0.1 that records each JSON body it gets."""

    def __init__(self, status: int = 200) -> None:
        self.answer = status
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                with owner.lock:
                    owner.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(owner.answer)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def received(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.bodies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(status: int = 200) -> Receiver:
        made.append(Receiver(status))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def webhook_secret(kubectl: Kubectl, namespace: str, name: str, url: str) -> None:
    kubectl.apply(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "data": {"url": base64.b64encode(url.encode()).decode()},
        },
    )


# --- rollback -----------------------------------------------------------------------------


def test_error_rate_spike_rolls_the_deployment_back(
    kubectl: Kubectl, two_revisions: str, run_operator: Run, steer: Callable[[float], None]
) -> None:
    namespace = two_revisions
    before = deployment(kubectl, namespace)
    assert image_of(before) == NEW_IMAGE
    old_rs = next(
        rs
        for rs in json.loads(kubectl("-n", namespace, "get", "rs", "-o", "json"))["items"]
        if rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    )
    steer(0.0)
    run_operator()
    kubectl.apply(namespace, review("spike", end="30s"))
    wait_status(
        kubectl,
        namespace,
        "spike",
        "a passing run",
        lambda s: any(c.get("lastResult") == "Passed" for c in s.get("checks", [])),
    )
    steer(0.6)
    status = wait_status(
        kubectl,
        namespace,
        "spike",
        "verdict RolledBack",
        lambda s: s.get("verdict") == "RolledBack",
        timeout=60,
    )

    after = deployment(kubectl, namespace)
    assert image_of(after) == OLD_IMAGE
    template = json.loads(json.dumps(old_rs["spec"]["template"]))
    del template["metadata"]["labels"]["pod-template-hash"]
    assert after["spec"]["template"] == template
    kubectl("-n", namespace, "rollout", "status", "deployment/checkout", "--timeout=60s")
    assert (
        deployment(kubectl, namespace)["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    )

    rollbacks = actions_of(status, "rollback")
    assert len(rollbacks) == 1
    record = rollbacks[0]
    assert record["state"] == "Done" and record["check"] == "error-rate" and not record["dryRun"]
    assert (record["fromRevision"], record["toRevision"]) == ("2", "1")
    assert (record["fromImage"], record["toImage"]) == (NEW_IMAGE, OLD_IMAGE)
    assert record["source"] == old_rs["metadata"]["name"] and record["at"]
    assert record["value"] > 0.2 and record["threshold"] == "value > 0.2"
    assert "error-rate" in record["cause"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["RolledBack"]["status"] == "True"
    assert "from revision 2" in conditions["RolledBack"]["message"]
    assert OLD_IMAGE in conditions["RolledBack"]["message"]
    assert "RolledBack" in kubectl("-n", namespace, "get", "pdr", "spike")

    on_review = [e["reason"] for e in kubectl.events(namespace, "spike")]
    assert "RolledBack" in on_review and "VerdictRolledBack" in on_review
    on_target = [
        e for e in events_about(kubectl, namespace, "Deployment", "checkout") if e["reason"] == "RolledBack"
    ]
    assert len(on_target) == 1 and OLD_IMAGE in on_target[0]["message"]

    final = wait_status(kubectl, namespace, "spike", "completion", completed)
    assert final["verdict"] == "RolledBack"
    assert len(actions_of(final, "rollback")) == 1
    annotations = deployment(kubectl, namespace)["metadata"]["annotations"]
    assert annotations["postdeploy.io/breach"] == "RolledBack"
    assert annotations["postdeploy.io/breach-check"] == "error-rate"
    assert annotations["postdeploy.io/breach-review"] == f"{namespace}/spike"
    assert annotations["postdeploy.io/breach-threshold"] == "value > 0.2"
    assert float(annotations["postdeploy.io/breach-value"]) > 0.2


def assert_rolled_back_once(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    """The review completes RolledBack with one rollback; the Deployment went back once."""
    status = wait_status(kubectl, namespace, name, "completion", completed, timeout=120)
    assert status["verdict"] == "RolledBack", json.dumps(status.get("actions"), indent=1)
    rollbacks = actions_of(status, "rollback")
    assert [r["state"] for r in rollbacks] == ["Done"]
    obj = deployment(kubectl, namespace)
    assert image_of(obj) == OLD_IMAGE
    # One undo makes revision 3 of revision 1's template; a second would bring 1.1.0 back as 4.
    assert obj["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    rs_images = collections.Counter(
        (rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"], image_of(rs))
        for rs in json.loads(kubectl("-n", namespace, "get", "rs", "-o", "json"))["items"]
    )
    assert rs_images == {("3", OLD_IMAGE): 1, ("2", NEW_IMAGE): 1}
    targets = [
        e for e in events_about(kubectl, namespace, "Deployment", "checkout") if e["reason"] == "RolledBack"
    ]
    assert sum(e.get("count", 1) for e in targets) <= 1
    return status


def test_killed_operator_rolls_back_exactly_once(
    kubectl: Kubectl, two_revisions: str, run_operator: Run, steer: Callable[[float], None]
) -> None:
    namespace = two_revisions
    steer(0.6)  # the breach starts at once and goes on for the whole review
    first = run_operator()
    kubectl.apply(namespace, review("restart", end="25s"))
    wait_status(
        kubectl,
        namespace,
        "restart",
        "a rollback record",
        lambda s: actions_of(s, "rollback"),
        timeout=60,
    )
    first.kill()
    run_operator()
    status = assert_rolled_back_once(kubectl, namespace, "restart")
    assert status["checks"][0]["state"] == "Failed"


@pytest.mark.parametrize("failpoint", ["rollback-applying", "rollback-patched"])
def test_operator_killed_mid_rollback_resumes_without_repeating(
    kubectl: Kubectl, two_revisions: str, run_operator: Run, steer: Callable[[float], None], failpoint: str
) -> None:
    namespace = two_revisions
    steer(0.6)
    first = run_operator(POSTDEPLOY_FAILPOINTS=failpoint)
    kubectl.apply(namespace, review("midway", end="25s"))
    wait_for("the operator to kill itself at the failpoint", lambda: first.process.poll() is not None, 60)
    status = status_of(kubectl, namespace, "midway")
    assert [r["state"] for r in actions_of(status, "rollback")] == ["Applying"]
    patched = image_of(deployment(kubectl, namespace)) == OLD_IMAGE
    assert patched == (failpoint == "rollback-patched")
    first.stop()
    run_operator()
    assert_rolled_back_once(kubectl, namespace, "midway")


def test_single_revision_is_not_rolled_back_and_says_why(
    kubectl: Kubectl, namespace: str, run_operator: Run, steer: Callable[[float], None]
) -> None:
    before = deployment(kubectl, namespace)
    steer(0.6)
    run_operator()
    kubectl.apply(namespace, review("first", end="10s"))
    status = wait_status(kubectl, namespace, "first", "completion", completed)
    [record] = actions_of(status, "rollback")
    assert record["state"] == "Skipped"
    assert "no revision before 1" in record["reason"]
    assert status["verdict"] == "Failed"
    assert deployment(kubectl, namespace)["spec"] == before["spec"]
    reasons = [e["reason"] for e in kubectl.events(namespace, "first")]
    assert "RollbackSkipped" in reasons


# --- StatefulSet, DaemonSet, Argo Rollout -------------------------------------------------

STATEFUL = """
apiVersion: apps/v1
kind: {kind}
metadata:
  name: ledger
  labels: {{app.kubernetes.io/name: ledger}}
spec:
{extra}
  selector:
    matchLabels: {{app.kubernetes.io/name: ledger}}
  template:
    metadata:
      labels: {{app.kubernetes.io/name: ledger}}
    spec:
      containers:
        - name: checkout
          image: {image}
"""


@pytest.mark.parametrize("kind", ["StatefulSet", "DaemonSet"])
def test_controller_revisions_roll_back(
    kubectl: Kubectl, namespace: str, run_operator: Run, steer: Callable[[float], None], kind: str
) -> None:
    extra = "  serviceName: ledger\n  replicas: 1" if kind == "StatefulSet" else "  revisionHistoryLimit: 5"
    kubectl.apply(namespace, STATEFUL.format(kind=kind, extra=extra, image=OLD_IMAGE))
    kubectl("-n", namespace, "rollout", "status", f"{kind.lower()}/ledger", "--timeout=90s")
    roll_out(kubectl, namespace, NEW_IMAGE, kind=kind.lower(), name="ledger")
    steer(0.6)
    run_operator()
    kubectl.apply(namespace, review("ledger", end="10s", target={"kind": kind, "name": "ledger"}))
    status = wait_status(kubectl, namespace, "ledger", "completion", completed)
    assert status["verdict"] == "RolledBack", json.dumps(status.get("actions"), indent=1)
    [record] = actions_of(status, "rollback")
    assert record["state"] == "Done"
    assert (record["fromRevision"], record["toRevision"]) == ("2", "1")
    assert (record["fromImage"], record["toImage"]) == (NEW_IMAGE, OLD_IMAGE)
    obj = kubectl.get(namespace, kind.lower(), "ledger")
    assert image_of(obj) == OLD_IMAGE
    revisions = json.loads(kubectl("-n", namespace, "get", "controllerrevisions", "-o", "json"))["items"]
    assert record["source"] in [r["metadata"]["name"] for r in revisions]


ROLLOUT_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "rollouts.argoproj.io"},
    "spec": {
        "group": "argoproj.io",
        "scope": "Namespaced",
        "names": {"kind": "Rollout", "listKind": "RolloutList", "plural": "rollouts", "singular": "rollout"},
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}
STABLE, CANARY = "6b8d5c7f9", "7c9f6d8b5"


@pytest.fixture
def rollout(kubectl: Kubectl, namespace: str) -> str:
    """An Argo Rollout half-way through a canary update (no Argo controller runs here)."""
    kubectl("apply", "-f", "-", input_text=json.dumps(ROLLOUT_CRD))
    kubectl("wait", "--for=condition=Established", "crd/rollouts.argoproj.io", "--timeout=60s")
    labels = {"app.kubernetes.io/name": "shop-canary"}
    template = {
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "checkout", "image": NEW_IMAGE}]},
    }
    kubectl.apply(
        namespace,
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": "canary", "annotations": {"rollout.argoproj.io/revision": "2"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": template,
                "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}},
            },
        },
    )
    kubectl(
        "-n",
        namespace,
        "patch",
        "rollout",
        "canary",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"stableRS": STABLE, "currentPodHash": CANARY, "phase": "Paused"}}),
    )
    uid = kubectl.get(namespace, "rollout", "canary")["metadata"]["uid"]
    stable_labels = {**labels, "rollouts-pod-template-hash": STABLE}
    kubectl.apply(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"canary-{STABLE}",
                "labels": stable_labels,
                "annotations": {"rollout.argoproj.io/revision": "1"},
                "ownerReferences": [
                    {
                        "apiVersion": "argoproj.io/v1alpha1",
                        "kind": "Rollout",
                        "name": "canary",
                        "uid": uid,
                        "controller": True,
                    }
                ],
            },
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": stable_labels},
                "template": {
                    "metadata": {"labels": stable_labels},
                    "spec": {"containers": [{"name": "checkout", "image": OLD_IMAGE}]},
                },
            },
        },
    )
    return namespace


def test_argo_rollout_is_aborted(
    kubectl: Kubectl, rollout: str, run_operator: Run, steer: Callable[[float], None]
) -> None:
    namespace = rollout
    steer(0.6)
    run_operator()
    kubectl.apply(namespace, review("canary", end="10s", target={"kind": "Rollout", "name": "canary"}))
    status = wait_status(kubectl, namespace, "canary", "completion", completed)
    assert status["verdict"] == "RolledBack", json.dumps(status.get("actions"), indent=1)
    [record] = actions_of(status, "rollback")
    assert record["state"] == "Done"
    assert (record["fromRevision"], record["toRevision"]) == ("2", STABLE)
    assert (record["fromImage"], record["toImage"]) == (NEW_IMAGE, OLD_IMAGE)
    obj = kubectl.get(namespace, "rollout", "canary")
    assert obj["status"]["abort"] is True
    assert image_of(obj) == NEW_IMAGE  # abort leaves the spec; the controller scales stable up
    reasons = [e["reason"] for e in events_about(kubectl, namespace, "Rollout", "canary")]
    assert "RolledBack" in reasons


def test_argo_rollout_is_paused(
    kubectl: Kubectl, rollout: str, run_operator: Run, steer: Callable[[float], None]
) -> None:
    namespace = rollout
    steer(0.6)
    run_operator()
    kubectl.apply(namespace, review("hold", "pause", end="8s", target={"kind": "Rollout", "name": "canary"}))
    status = wait_status(kubectl, namespace, "hold", "completion", completed)
    assert [a["state"] for a in actions_of(status, "pause")] == ["Done"]
    obj = kubectl.get(namespace, "rollout", "canary")
    assert obj["spec"]["paused"] is True and "abort" not in obj["status"]


# --- pause, annotate-only, dry run --------------------------------------------------------


def breach_keys(obj: dict[str, Any]) -> dict[str, str]:
    annotations = obj["metadata"].get("annotations") or {}
    return {k: v for k, v in annotations.items() if k.startswith("postdeploy.io/breach")}


def test_pause_freezes_the_rollout_and_changes_nothing_else(
    kubectl: Kubectl, two_revisions: str, run_operator: Run, steer: Callable[[float], None]
) -> None:
    namespace = two_revisions
    before = deployment(kubectl, namespace)
    steer(0.6)
    run_operator()
    kubectl.apply(namespace, review("freeze", "pause", end="8s"))
    status = wait_status(kubectl, namespace, "freeze", "completion", completed)
    assert status["verdict"] == "Failed"
    assert [(a["action"], a["state"]) for a in actions_of(status) if a.get("check")] == [
        ("annotate", "Done"),
        ("notify", "Skipped"),
        ("pause", "Done"),
    ]
    after = deployment(kubectl, namespace)
    assert after["spec"] == {**before["spec"], "paused": True}
    assert breach_keys(after)["postdeploy.io/breach"] == "Failed"
    paused = [
        e for e in events_about(kubectl, namespace, "Deployment", "checkout") if e["reason"] == "Paused"
    ]
    assert len(paused) == 1


def test_annotate_only_policy_annotates_and_changes_no_spec(
    kubectl: Kubectl, two_revisions: str, run_operator: Run, steer: Callable[[float], None]
) -> None:
    namespace = two_revisions
    before = deployment(kubectl, namespace)
    steer(0.6)
    run_operator()
    kubectl.apply(namespace, review("label-only", "rollback", end="8s", rollback={"policy": "annotate"}))
    status = wait_status(kubectl, namespace, "label-only", "completion", completed)
    records = [a for a in actions_of(status) if a.get("check")]
    assert [(a["action"], a["state"]) for a in records] == [("annotate", "Done")]
    assert "caps actions at annotate" in records[0]["reason"]
    assert records[0]["requested"] == "rollback"
    after = deployment(kubectl, namespace)
    assert after["spec"] == before["spec"]
    keys = breach_keys(after)
    assert keys["postdeploy.io/breach"] == "Failed" and keys["postdeploy.io/breach-check"] == "error-rate"
    assert keys["postdeploy.io/breach-review"] == f"{namespace}/label-only"


def test_dry_run_records_the_rollback_and_changes_nothing(
    kubectl: Kubectl, two_revisions: str, run_operator: Run, steer: Callable[[float], None]
) -> None:
    namespace = two_revisions
    before = deployment(kubectl, namespace)
    steer(0.6)
    run_operator()
    kubectl.apply(namespace, review("rehearsal", "rollback", end="8s", rollback={"dryRun": True}))
    status = wait_status(kubectl, namespace, "rehearsal", "completion", completed)
    assert status["verdict"] == "Failed"
    by_action = {a["action"]: a for a in actions_of(status) if a.get("check")}
    assert by_action["annotate"]["state"] == "DryRun"
    rollback = by_action["rollback"]
    assert rollback["state"] == "DryRun" and rollback["dryRun"] is True
    assert (rollback["fromRevision"], rollback["toRevision"]) == ("2", "1")
    assert (rollback["fromImage"], rollback["toImage"]) == (NEW_IMAGE, OLD_IMAGE)
    assert "would roll back" in rollback["reason"]
    after = deployment(kubectl, namespace)
    assert after["spec"] == before["spec"]
    assert after["metadata"].get("annotations") == before["metadata"].get("annotations")
    assert "RollbackDryRun" in [e["reason"] for e in kubectl.events(namespace, "rehearsal")]


# --- GitOps -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "tool"),
    [("argocd.argoproj.io/instance=shop", "Argo CD"), ("kustomize.toolkit.fluxcd.io/name=apps", "Flux")],
)
def test_gitops_target_is_annotated_and_notified_not_rolled_back(
    kubectl: Kubectl,
    two_revisions: str,
    run_operator: Run,
    steer: Callable[[float], None],
    receivers: Callable[..., Receiver],
    label: str,
    tool: str,
) -> None:
    namespace = two_revisions
    kubectl("-n", namespace, "label", "deployment/checkout", label)
    before = deployment(kubectl, namespace)
    hook = receivers()
    webhook_secret(kubectl, namespace, "hook", hook.url)
    steer(0.6)
    run_operator()
    kubectl.apply(
        namespace,
        review(
            "synced",
            "rollback",
            end="8s",
            notifications=[{"name": "team", "urlSecretRef": {"name": "hook", "key": "url"}}],
        ),
    )
    status = wait_status(kubectl, namespace, "synced", "completion", completed)
    records = [a for a in actions_of(status) if a.get("check")]
    assert [(a["action"], a["state"]) for a in records] == [("annotate", "Done"), ("notify", "Done")]
    assert f"managed by {tool}" in records[-1]["reason"] and "allowGitOps" in records[-1]["reason"]
    after = deployment(kubectl, namespace)
    assert after["spec"] == before["spec"] and image_of(after) == NEW_IMAGE
    assert breach_keys(after)["postdeploy.io/breach-check"] == "error-rate"
    wait_for("the breach message", lambda: [b for b in hook.received() if b["event"] == "breach"], 30)


# --- notifications ------------------------------------------------------------------------


def test_webhooks_get_one_message_per_state_change(
    kubectl: Kubectl,
    two_revisions: str,
    run_operator: Run,
    steer: Callable[[float], None],
    receivers: Callable[..., Receiver],
) -> None:
    namespace = two_revisions
    plain, slack, broken = receivers(), receivers(), receivers(status=500)
    for name, receiver in (("plain", plain), ("slack", slack), ("broken", broken)):
        webhook_secret(kubectl, namespace, name, receiver.url)
    steer(0.6)
    first = run_operator(POSTDEPLOY_NOTIFY_ATTEMPTS="3", POSTDEPLOY_NOTIFY_BACKOFF="0.2")
    started = time.monotonic()
    kubectl.apply(
        namespace,
        review(
            "told",
            "rollback",
            end="10s",
            notifications=[
                {"name": "plain", "urlSecretRef": {"name": "plain", "key": "url"}},
                {"name": "chat", "urlSecretRef": {"name": "slack", "key": "url"}, "format": "slack"},
                {"name": "broken", "urlSecretRef": {"name": "broken", "key": "url"}},
            ],
        ),
    )
    status = wait_status(kubectl, namespace, "told", "completion", completed)
    assert time.monotonic() - started < 60  # the broken receiver held nothing up

    def settled(s: dict[str, Any]) -> bool:
        messages = s.get("notifications", [])
        told = any(n["id"] == "completion" for n in messages)
        return told and all(d["state"] != "Pending" for n in messages for d in n["deliveries"])

    status = wait_status(kubectl, namespace, "told", "every delivery settled", settled, timeout=60)
    assert [n["id"] for n in status["notifications"]] == ["breach-error-rate", "rollback", "completion"]
    outcome = {(n["id"], d["receiver"]): d for n in status["notifications"] for d in n["deliveries"]}
    assert {k: d["state"] for k, d in outcome.items() if k[1] != "broken"} == {
        (i, r): "Delivered"
        for i in ("breach-error-rate", "rollback", "completion")
        for r in ("plain", "chat")
    }
    for message_id in ("breach-error-rate", "rollback", "completion"):
        failed = outcome[(message_id, "broken")]
        assert failed["state"] == "Failed" and failed["attempts"] == 3 and failed["error"] == "HTTP 500"

    bodies = plain.received()
    assert [b["event"] for b in bodies] == ["breach", "rollback", "completion"]
    assert len({b["id"] for b in bodies}) == 3
    breach, rollback, completion = bodies
    for body in bodies:
        assert body["review"]["name"] == "told" and body["review"]["namespace"] == namespace
        assert body["target"] == "Deployment/checkout"
        assert body["report"] == f"kubectl postdeploy report told -n {namespace}"
    assert breach["check"] == "error-rate" and breach["value"] > 0.2 and breach["threshold"] == "value > 0.2"
    assert rollback["action"]["state"] == "Done"
    assert (rollback["action"]["fromImage"], rollback["action"]["toImage"]) == (NEW_IMAGE, OLD_IMAGE)
    assert completion["verdict"] == "RolledBack"
    chat = slack.received()
    assert len(chat) == 3 and all(set(b) == {"text", "blocks"} for b in chat)
    assert "rolled back" in chat[1]["text"] and "error-rate" in json.dumps(chat[0]["blocks"])
    assert len(broken.received()) == 9  # 3 messages x 3 attempts, then it gives up

    # A restarted operator resends nothing: once a later review has finished, counts are the same.
    first.stop()
    run_operator()
    kubectl.apply(namespace, review("later", "none", end="4s"))
    wait_status(kubectl, namespace, "later", "completion", completed)
    assert len(plain.received()) == 3 and len(slack.received()) == 3 and len(broken.received()) == 9


# --- missing data -------------------------------------------------------------------------


def test_prometheus_unreachable_rolls_nothing_back(
    kubectl: Kubectl, two_revisions: str, run_operator: Run, steer: Callable[[float], None], free_port: int
) -> None:
    namespace = two_revisions
    before = deployment(kubectl, namespace)
    steer(0.6)  # would breach, if the operator could see it
    run_operator(POSTDEPLOY_PROMETHEUS_URL=f"http://127.0.0.1:{free_port}")
    kubectl.apply(namespace, review("blind", "rollback", end="10s"))
    status = wait_status(kubectl, namespace, "blind", "completion", completed)
    check = status["checks"][0]
    assert check["state"] in ("Error", "Inconclusive") and check["failures"] == 0
    assert status["verdict"] == "Inconclusive"
    assert [a for a in actions_of(status) if a.get("check")] == []
    after = deployment(kubectl, namespace)
    assert after["spec"] == before["spec"] and not breach_keys(after)
