"""docs/gitops.md on the real API server: a sync loop leaves one review per release, untouched.

Covers:
- the review manifest of ``docs/gitops.md`` (read from the page itself, its timeline
  compressed by a namespaced template), applied again and again while the review runs
  and after it completed, as Argo CD and Flux would (client-side apply, server-side
  apply by two field managers), then the next version's manifest alone: exactly one
  review per version; none re-created (same uid), none reset (generation and spec
  unchanged, check runs never fewer, phase start times kept, a completed review's
  status unchanged by later syncs);
- ``kubectl wait --for=condition=Complete pdr/NAME``, started while the review runs,
  returns once it completes, and the verdict it then reads is final;
- zero-touch with the annotation kept in Git: the Deployment's manifest applied again
  and again, then the next version's, gives one review per version.
"""

from __future__ import annotations

import copy
import json
import pathlib
import re
import subprocess
import time
from collections.abc import Callable
from typing import Any

import yaml

from tests.e2e.harness import SAMPLE_DEPLOYMENT, Kubectl, OperatorProcess, wait_for
from tests.e2e.test_reviews import status_of, wait_verdict

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "gitops.md"

# The page's timeline compressed: one phase of 16 s with a run every 2 s.
TEMPLATE = {
    "apiVersion": "postdeploy.io/v1alpha1",
    "kind": "ReviewTemplate",
    "metadata": {"name": "release-quick"},
    "spec": {
        "phases": [
            {
                "name": "immediate",
                "start": "0s",
                "end": "16s",
                "interval": "2s",
                "checks": [
                    {"name": "rollout", "kubernetes": {"measure": "rolloutComplete"}},
                    {"name": "ready", "kubernetes": {"measure": "readyRatio"}},
                ],
            }
        ]
    },
}
SERVER_SIDE = ["apply", "--server-side", "--force-conflicts", "-f", "-"]
SYNCS = [  # client-side apply, then server-side apply as Argo CD's and Flux's managers
    ["apply", "-f", "-"],
    [*SERVER_SIDE, "--field-manager=argocd-controller"],
    [*SERVER_SIDE, "--field-manager=kustomize-controller"],
]


def page_manifests() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", PAGE.read_text(), flags=re.S)
    return [doc for block in blocks for doc in yaml.safe_load_all(block) if isinstance(doc, dict)]


def review_manifest(namespace: str, version: str) -> dict[str, Any]:
    """The page's review manifest for ``version``, in ``namespace``, on the compressed template."""
    (page,) = [m for m in page_manifests() if m.get("kind") == "PostDeploymentReview"]
    assert page["metadata"]["name"] == "checkout-1-1-0" and page["spec"]["version"] == "1.1.0"
    manifest = copy.deepcopy(page)
    manifest["metadata"]["name"] = "checkout-" + version.replace(".", "-")
    manifest["metadata"]["namespace"] = namespace
    manifest["spec"]["version"] = version
    manifest["spec"]["templateRef"] = {"kind": "ReviewTemplate", "name": TEMPLATE["metadata"]["name"]}
    return manifest


def deployment_manifest(namespace: str, version: str, annotations: dict[str, str] | None = None) -> str:
    deployment = yaml.safe_load(SAMPLE_DEPLOYMENT)
    deployment["metadata"]["namespace"] = namespace
    deployment["metadata"]["annotations"] = annotations or {}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["image"] = f"registry.example/shop/checkout:{version}"
    return yaml.safe_dump(deployment)


def sync(kubectl: Kubectl, manifest: str | dict[str, Any], rounds: int = 1) -> None:
    """What a GitOps controller does every interval: apply the same manifest again."""
    text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
    for _ in range(rounds):
        for args in SYNCS:
            kubectl(*args, input_text=text)


def reviews(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    return list(json.loads(kubectl("-n", namespace, "get", "pdr", "-o", "json"))["items"])


class Watched:
    """Snapshots of one review across syncs, asserting nothing was reset between them."""

    def __init__(self, kubectl: Kubectl, namespace: str, name: str) -> None:
        self.kubectl, self.namespace, self.name = kubectl, namespace, name
        self.first = kubectl.get(namespace, "pdr", name)
        self.runs: dict[str, int] = {}
        self.started: dict[str, str] = {}

    def check(self) -> dict[str, Any]:
        now = self.kubectl.get(self.namespace, "pdr", self.name)
        assert now["metadata"]["uid"] == self.first["metadata"]["uid"], "the review was re-created"
        assert now["metadata"]["generation"] == self.first["metadata"]["generation"] == 1
        assert now["spec"] == self.first["spec"]
        status = now.get("status") or {}
        for check in status.get("checks", []):
            assert check.get("runs", 0) >= self.runs.get(check["name"], 0), ("runs went back", check)
            self.runs[check["name"]] = check.get("runs", 0)
        for phase in status.get("phases", []):
            if phase.get("startedAt"):
                assert self.started.setdefault(phase["name"], phase["startedAt"]) == phase["startedAt"]
        return now


def test_a_sync_loop_leaves_one_review_per_version_never_reset(
    kubectl: Kubectl, namespace: str, run_operator: Callable[..., OperatorProcess]
) -> None:
    kubectl.apply(namespace, TEMPLATE)
    run_operator()
    sync(kubectl, deployment_manifest(namespace, "1.1.0"))
    kubectl("-n", namespace, "rollout", "status", "deployment/checkout", "--timeout=60s")

    first = review_manifest(namespace, "1.1.0")
    name = first["metadata"]["name"]
    sync(kubectl, first)
    waiter = subprocess.Popen(
        ["kubectl", "-n", namespace, "wait", "--for=condition=Complete", f"pdr/{name}", "--timeout=120s"],
        env=kubectl.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watched = Watched(kubectl, namespace, name)

    def ran() -> bool:
        return any(c.get("runs") for c in (watched.check().get("status") or {}).get("checks", []))

    wait_for("the first runs", ran)
    assert waiter.poll() is None, "kubectl wait returned before the review completed"
    deadline = time.monotonic() + 120
    while waiter.poll() is None:  # the review runs; Argo CD and Flux sync meanwhile
        assert time.monotonic() < deadline, "the review did not complete"
        sync(kubectl, first)
        watched.check()
    out, err = waiter.communicate()
    assert waiter.returncode == 0, err
    assert "condition met" in out
    done = status_of(kubectl, namespace, name)
    assert done["phase"] == "Completed" and done["verdict"] == "Passed", json.dumps(done, indent=1)
    assert all(c["runs"] >= 2 for c in done["checks"]), done["checks"]

    # Syncs after the end change nothing, not even the status.
    sync(kubectl, first, rounds=2)
    settled = time.monotonic() + 4
    while time.monotonic() < settled:
        assert watched.check()["status"] == done
        time.sleep(0.5)

    # The next release: its manifest replaces the first one in Git.
    sync(kubectl, deployment_manifest(namespace, "1.2.0"))
    kubectl("-n", namespace, "rollout", "status", "deployment/checkout", "--timeout=60s")
    second = review_manifest(namespace, "1.2.0")
    sync(kubectl, second, rounds=2)
    complete = ["wait", "--for=condition=Complete", "--timeout=120s"]
    kubectl("-n", namespace, *complete, f"pdr/{second['metadata']['name']}")
    sync(kubectl, second)
    by_version: dict[str, list[str]] = {}
    for review in reviews(kubectl, namespace):
        by_version.setdefault(review["spec"]["version"], []).append(review["metadata"]["name"])
    assert by_version == {"1.1.0": [name], "1.2.0": [second["metadata"]["name"]]}
    assert watched.check()["status"] == done
    assert status_of(kubectl, namespace, second["metadata"]["name"])["verdict"] == "Passed"


def test_zero_touch_kept_in_git_gives_one_review_per_version(
    kubectl: Kubectl, namespace: str, run_operator: Callable[..., OperatorProcess]
) -> None:
    kubectl.apply(namespace, TEMPLATE)
    run_operator()
    (page,) = [m for m in page_manifests() if m.get("kind") == "Deployment"]
    # The page's annotation, naming the compressed template instead of the built-in one.
    assert page["metadata"]["annotations"]["postdeploy.io/template"] == "postdeploy-default"
    annotations = {"postdeploy.io/template": "ReviewTemplate/release-quick"}
    names: dict[str, str] = {}
    for version in ("1.1.0", "1.2.0"):
        manifest = deployment_manifest(namespace, version, annotations)
        sync(kubectl, manifest)
        kubectl("-n", namespace, "rollout", "status", "deployment/checkout", "--timeout=60s")
        found = wait_for(
            f"the review of {version}",
            lambda v=version: [r for r in reviews(kubectl, namespace) if r["spec"]["version"] == v],
        )
        names[version] = found[0]["metadata"]["name"]
        watched = Watched(kubectl, namespace, names[version])
        sync(kubectl, manifest, rounds=2)
        watched.check()
        assert wait_verdict(kubectl, namespace, names[version])["verdict"] == "Passed"
        sync(kubectl, manifest)
        watched.check()
    versions = sorted((r["spec"]["version"], r["metadata"]["name"]) for r in reviews(kubectl, namespace))
    assert versions == sorted((v, n) for v, n in names.items())
