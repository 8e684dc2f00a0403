"""Admission on the test bed: a review makes the operator do only what its author may do.

The operator runs as a process with the chart's ServiceAccount (the default values,
webhooks on; token kubeconfig from ``conftest_install``), its webhooks on loopback,
registered with failurePolicy Fail. ``alice`` is no administrator: in the test's
namespace (team-a) she may read and patch Deployments and write reviews and
ReviewTemplates (Role ``author`` below); Secrets and Jobs are not hers unless a test
grants them (a namespace ``admin`` may read every Secret of it, so the role is
narrower). Covers:

- her review naming a Secret she cannot read is refused, naming user, verb, resource,
  Secret and namespace; once she may ``get`` that Secret the same review is admitted;
  a review targeting another namespace is refused at admission in the engine's words
  (the engine's own refusal, and team-b untouched, are in ``test_confinement.py``);
- her job check is refused without ``create jobs``, admitted with it, and the operator
  creates its Job; a ReviewTemplate with a job check is refused to her likewise;
- her ordinary review of her own Deployment runs and rolls it back on an error spike,
  as before (verdict RolledBack, the old image back); without ``patch`` on it the same
  review is refused and nothing changes;
- the built-in template's review (no templateRef) on this default install is signed by
  alice, bob and carol through ``kubectl postdeploy signoff``, one signer role each
  (``docs/rbac/signers.yaml``), and completes; bob's spoofed ``signedBy`` is replaced
  by his authenticated name;
- the serving certificate (a 90-second one here) is renewed by the operator and the
  API server keeps trusting it: admission still answers;
- with the operator stopped, the webhook configuration stays and a review cannot be
  created (fail closed); annotating a review still works.
"""

from __future__ import annotations

import json
import os
import pathlib
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from cryptography import x509

from tests.e2e import test_actions
from tests.e2e.harness import ROOT, Kubectl, OperatorProcess, wait_for, webhooks_at
from tests.e2e.installs import Release
from tests.e2e.test_reviews import status_of, wait_verdict

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.e2e.conftest_install"]

SIGNERS = ROOT / "docs" / "rbac" / "signers.yaml"
steer = test_actions.steer
two_revisions = test_actions.two_revisions

AUTHOR = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "Role",
    "metadata": {"name": "author"},
    "rules": [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch", "patch"]},
        {
            "apiGroups": ["postdeploy.io"],
            "resources": ["postdeploymentreviews", "reviewtemplates"],
            "verbs": ["create", "get", "list", "watch", "patch", "update", "delete"],
        },
    ],
}


@pytest.fixture
def operator_env(operator_env: dict[str, str], service_account_kubeconfig: pathlib.Path) -> dict[str, str]:
    """The harness's environment, with the chart's ServiceAccount instead of admin."""
    return {**operator_env, "KUBECONFIG": str(service_account_kubeconfig)}


def as_user(kube_cluster: dict[str, Any], user: str) -> Kubectl:
    return Kubectl({**kube_cluster["env"], "KUBECONFIG": kube_cluster["env"][f"KUBECONFIG_{user.upper()}"]})


@pytest.fixture
def alice(kube_cluster: dict[str, Any], kubectl: Kubectl, namespace: str) -> Kubectl:
    kubectl.apply(namespace, AUTHOR)
    kubectl("-n", namespace, "create", "rolebinding", "alice-author", "--role=author", "--user=alice")
    return as_user(kube_cluster, "alice")


@pytest.fixture
def operator(
    run_operator: Callable[..., OperatorProcess], chart_release: Release
) -> Iterator[OperatorProcess]:
    process = run_operator(wait_for_webhooks=True)
    yield process
    log = process.output()
    assert "postdeploy started" in log, log
    assert "Traceback" not in log, log


def grant(kubectl: Kubectl, namespace: str, name: str, rule: dict[str, Any]) -> None:
    kubectl.apply(
        namespace,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name},
            "rules": [rule],
        },
    )
    kubectl("-n", namespace, "create", "rolebinding", name, f"--role={name}", "--user=alice")


def apply_as(who: Kubectl, namespace: str, manifest: dict[str, Any]) -> str:
    """``kubectl apply`` as a user: its output, or the API server's refusal."""
    return who("-n", namespace, "apply", "-f", "-", input_text=yaml.safe_dump(manifest), check=False)


def pdr(name: str, checks: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "postdeploy.io/v1alpha1",
        "kind": "PostDeploymentReview",
        "metadata": {"name": name},
        "spec": {
            "target": {"name": "checkout"},
            "useDefaultTemplate": False,
            "phases": [
                {"name": "immediate", "start": "0s", "end": "20s", "interval": "2s", "checks": checks}
            ],
            **spec,
        },
    }


def exists(kubectl: Kubectl, namespace: str, kind: str, name: str) -> bool:
    return kubectl("-n", namespace, "get", kind, name, "--ignore-not-found", "-o", "name").strip() != ""


def test_a_secret_she_cannot_read_is_refused(
    kubectl: Kubectl, namespace: str, alice: Kubectl, operator: OperatorProcess
) -> None:
    kubectl(
        "-n",
        namespace,
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal=dsn=postgresql://x@127.0.0.1:1/x",
    )
    manifest = pdr(
        "reads-db",
        [{"name": "orders", "postgres": {"query": "select 1", "dsnSecretRef": {"name": "db", "key": "dsn"}}}],
    )
    refused = apply_as(alice, namespace, manifest)
    assert (
        f'alice may not get secrets "db" in namespace {namespace} '
        "(check orders reads it (postgres.dsnSecretRef))" in refused
    ), refused
    assert not exists(kubectl, namespace, "pdr", "reads-db")

    grant(
        kubectl,
        namespace,
        "read-db",
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["db"]},
    )
    admitted = wait_for(
        "the review to be admitted once alice may read db",
        lambda: "created" in apply_as(alice, namespace, manifest),
        20,
    )
    assert admitted
    # What the engine would refuse is refused at admission, in the engine's words.
    elsewhere = pdr("elsewhere", [{"name": "rollout", "kubernetes": {"measure": "rolloutComplete"}}])
    elsewhere["spec"]["target"]["namespace"] = "team-b"
    refused = apply_as(alice, namespace, elsewhere)
    assert f"spec.target.namespace: 'team-b' is not the review's namespace '{namespace}'" in refused, refused
    # A notification URL from a Secret is reading it too.
    hooked = pdr(
        "hooked",
        [{"name": "rollout", "kubernetes": {"measure": "rolloutComplete"}}],
        notifications=[{"name": "ops", "urlSecretRef": {"name": "hook", "key": "url"}}],
    )
    assert f'alice may not get secrets "hook" in namespace {namespace}' in apply_as(alice, namespace, hooked)


def test_a_job_check_needs_create_jobs(
    kubectl: Kubectl, namespace: str, alice: Kubectl, operator: OperatorProcess
) -> None:
    job = {
        "template": {
            "spec": {"containers": [{"name": "journeys", "image": "busybox:1.36", "command": ["true"]}]}
        }
    }
    manifest = pdr("journeys", [{"name": "journeys", "job": job}])
    refused = apply_as(alice, namespace, manifest)
    assert (
        f"alice may not create jobs.batch in namespace {namespace} (check journeys runs a Job)" in refused
    ), refused
    template = {
        "apiVersion": "postdeploy.io/v1alpha1",
        "kind": "ReviewTemplate",
        "metadata": {"name": "with-job"},
        "spec": {
            "phases": [
                {
                    "name": "immediate",
                    "start": "0s",
                    "end": "1m",
                    "checks": [{"name": "journeys", "job": job}],
                }
            ]
        },
    }
    assert f"alice may not create jobs.batch in namespace {namespace}" in apply_as(alice, namespace, template)

    grant(
        kubectl, namespace, "run-jobs", {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}
    )
    wait_for(
        "the review to be admitted once alice may create Jobs",
        lambda: "created" in apply_as(alice, namespace, manifest),
        20,
    )
    # As the Job's ServiceAccount she may name only one she may impersonate.
    runs_as = json.loads(json.dumps(job))
    runs_as["template"]["spec"]["serviceAccountName"] = "deployer"
    assert f'alice may not impersonate serviceaccounts "deployer" in namespace {namespace}' in apply_as(
        alice, namespace, pdr("as-deployer", [{"name": "journeys", "job": runs_as}])
    )

    def created_job() -> list[dict[str, Any]]:
        raw = kubectl("-n", namespace, "get", "jobs", "-l", "postdeploy.io/review=journeys", "-o", "json")
        return list(json.loads(raw)["items"])

    (made,) = wait_for("the operator to create the check's Job", created_job, 60)
    assert made["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox:1.36"


def test_her_own_deployment_is_rolled_back_as_before(
    kubectl: Kubectl,
    two_revisions: str,
    alice: Kubectl,
    operator: OperatorProcess,
    steer: Callable[[float], None],
) -> None:
    namespace = two_revisions
    manifest = test_actions.review("spike", end="30s")
    kubectl("-n", namespace, "delete", "rolebinding", "alice-author")
    kubectl.apply(
        namespace,
        {**AUTHOR, "rules": [dict(AUTHOR["rules"][0], verbs=["get", "list", "watch"]), AUTHOR["rules"][1]]},
    )
    kubectl("-n", namespace, "create", "rolebinding", "alice-author", "--role=author", "--user=alice")
    refused = wait_for(
        "the review to be refused without patch",
        lambda: next((out for out in [apply_as(alice, namespace, manifest)] if "may not" in out), None),
        20,
    )
    assert (
        f'alice may not patch deployments.apps "checkout" in namespace {namespace} '
        "(check error-rate may roll back the target)" in refused
    ), refused

    kubectl.apply(namespace, AUTHOR)
    steer(0.0)
    wait_for(
        "the review to be admitted with patch", lambda: "created" in apply_as(alice, namespace, manifest), 20
    )
    test_actions.wait_status(
        kubectl,
        namespace,
        "spike",
        "a passing run",
        lambda s: any(c.get("lastResult") == "Passed" for c in s.get("checks", [])),
    )
    steer(0.6)
    status = test_actions.wait_status(
        kubectl,
        namespace,
        "spike",
        "verdict RolledBack",
        lambda s: s.get("verdict") == "RolledBack",
        timeout=60,
    )
    assert test_actions.image_of(test_actions.deployment(kubectl, namespace)) == test_actions.OLD_IMAGE
    (rollback,) = test_actions.actions_of(status, "rollback")
    assert rollback["state"] == "Done" and rollback["toImage"] == test_actions.OLD_IMAGE


def plugin(kube_cluster: dict[str, Any], user: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        **kube_cluster["env"],
        "KUBECONFIG": kube_cluster["env"][f"KUBECONFIG_{user.upper()}"],
    }
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "operator"), str(ROOT)])
    return subprocess.run(
        [sys.executable, "-m", "postdeploy.plugin", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_built_in_templates_review_is_signed_by_three_people_and_completes(
    kube_cluster: dict[str, Any],
    kubectl: Kubectl,
    namespace: str,
    default_template: dict[str, Any],
    operator: OperatorProcess,
) -> None:
    kubectl("apply", "-f", str(SIGNERS))
    signers = {"alice": "engineering-lead", "bob": "operations-lead", "carol": "product-owner"}
    for user, role in signers.items():
        kubectl(
            "-n",
            namespace,
            "create",
            "rolebinding",
            f"{user}-{role}",
            f"--clusterrole=postdeploy-signer-{role}",
            f"--user={user}",
        )
    # The built-in checklist, its three phases compressed into seconds; nothing else set.
    phases = [
        {"name": "immediate", "start": "0s", "end": "6s", "interval": "3s"},
        {"name": "extended", "start": "6s", "end": "8s", "interval": "2s"},
        {"name": "business", "start": "8s", "end": "10s", "interval": "2s"},
    ]
    kubectl.apply(
        namespace,
        {
            "apiVersion": "postdeploy.io/v1alpha1",
            "kind": "PostDeploymentReview",
            "metadata": {"name": "release"},
            "spec": {"target": {"name": "checkout"}, "version": "1.0.0", "phases": phases},
        },
    )
    awaiting = wait_for(
        "the review to await its three sign-offs",
        lambda: (s := status_of(kubectl, namespace, "release")).get("phase") == "AwaitingSignoff" and s,
        120,
    )
    assert awaiting["finalReview"]["awaiting"] == ["engineering-lead", "operations-lead", "product-owner"]

    signed = plugin(
        kube_cluster, "alice", "-n", namespace, "signoff", "release", "--role", "engineering-lead"
    )
    assert signed.returncode == 0 and "by alice" in signed.stdout, signed
    # bob claims to be the CTO: the webhook writes who he is.
    forged = {
        "apiVersion": "postdeploy.io/v1alpha1",
        "kind": "ReviewSignoff",
        "metadata": {"name": "release-operations-lead"},
        "spec": {"review": "release", "role": "operations-lead", "signedBy": {"username": "the-cto"}},
    }
    created = as_user(kube_cluster, "bob")(
        "-n", namespace, "create", "-f", "-", input_text=yaml.safe_dump(forged), check=False
    )
    assert "signedBy 'the-cto' ignored: signed by the authenticated user 'bob'" in created, created
    stored = kubectl.get(namespace, "reviewsignoffs", "release-operations-lead")["spec"]["signedBy"]
    assert stored["username"] == "bob"
    refused = plugin(
        kube_cluster, "carol", "-n", namespace, "signoff", "release", "--role", "engineering-lead"
    )
    assert refused.returncode in (4, 5), refused  # not hers (or already signed)
    signed = plugin(kube_cluster, "carol", "-n", namespace, "signoff", "release", "--role", "product-owner")
    assert signed.returncode == 0 and "by carol" in signed.stdout, signed

    status = wait_verdict(kubectl, namespace, "release", timeout=60)
    records = {r["role"]: r["by"] for r in status["finalReview"]["signoffs"]}
    assert records == {role: user for user, role in signers.items()}
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Complete"] == "True" and conditions["AwaitingSignoff"] == "False"


def test_the_serving_certificate_is_renewed_and_stays_trusted(
    kubectl: Kubectl, namespace: str, alice: Kubectl, run_operator: Callable[..., OperatorProcess]
) -> None:
    from testbed.ports import free_port

    port = free_port()
    # A 90-second leaf, checked every 2 s: renewed about a minute in.
    process = run_operator(
        wait_for_webhooks=True,
        POSTDEPLOY_WEBHOOK_PORT=str(port),
        POSTDEPLOY_WEBHOOK_CERT_DAYS=str(90 / 86400),
        POSTDEPLOY_WEBHOOK_CERT_CHECK="2",
    )
    first = ssl.get_server_certificate(("127.0.0.1", port))
    renewed = wait_for(
        "a renewed serving certificate",
        lambda: (pem := ssl.get_server_certificate(("127.0.0.1", port))) != first and pem,
        120,
        every=2,
    )
    assert x509.load_pem_x509_certificate(renewed.encode()).serial_number != (
        x509.load_pem_x509_certificate(first.encode()).serial_number
    )
    # The API server still trusts it (same CA in caBundle): admission answers.
    wait_for("the webhooks at the renewed server", lambda: webhooks_at(kubectl, "postdeploy.io", port), 30)
    refused = apply_as(
        alice,
        namespace,
        pdr(
            "reads-db",
            [{"name": "q", "postgres": {"query": "select 1", "dsnSecretRef": {"name": "db", "key": "dsn"}}}],
        ),
    )
    assert f'alice may not get secrets "db" in namespace {namespace}' in refused, refused
    assert "webhook certificate renewed" in process.output()


def test_with_the_operator_down_reviews_cannot_be_created(
    kubectl: Kubectl, namespace: str, alice: Kubectl, operator: OperatorProcess
) -> None:
    manifest = pdr("plain", [{"name": "rollout", "kubernetes": {"measure": "rolloutComplete"}}])
    assert "created" in apply_as(alice, namespace, manifest)
    operator.stop()
    refused = apply_as(alice, namespace, {**manifest, "metadata": {"name": "while-down"}})
    assert "failed calling webhook" in refused and "authorize-review" in refused, refused
    assert not exists(kubectl, namespace, "pdr", "while-down")
    # Edits that leave the spec alone (what kubectl postdeploy and the operator write) still work.
    kubectl("-n", namespace, "annotate", "pdr", "plain", "example.com/note=down")
