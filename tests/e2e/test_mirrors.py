"""The kubernetes provider's mirrors (``postdeploy.kit.mirrors``) against the test
bed's real kube-apiserver, kube-controller-manager and kwok nodes.

Covers:
- a namespace's pods and Deployments, once mirrored, equal what a list of the API
  server gives (names and resourceVersions) after a scale-up, an annotation, a
  deleted pod and its replacement, with one list each and the rest from the watch;
- the kubernetes provider measures the same with mirrors as with every read sent to
  the API server (``max_objects=0``), and sends no GET or LIST for its target's
  reads once the mirrors are live.
The loopback unit tests (tests/unit/test_mirrors.py) cover expired versions, broken
watches, refusals and idle mirrors.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from postdeploy.kit import kube, mirrors
from postdeploy.models.checks import KubernetesCheck, KubernetesMeasure
from postdeploy.models.measurements import ReviewContext, Target
from postdeploy.providers.kubernetes import KubernetesProvider
from tests.e2e.harness import Kubectl

pytestmark = pytest.mark.e2e


@pytest.fixture
async def client(kube_cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[kube.Client]:
    monkeypatch.setenv("KUBECONFIG", kube_cluster["env"]["KUBECONFIG"])
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    api = kube.Client()
    yield api
    await api.close()


async def until(what: str, probe: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := await probe()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)
    return value


def versions(objects: Any) -> dict[str, str]:
    return {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in objects}


async def test_a_mirror_equals_a_list_through_changes(
    client: kube.Client, kubectl: Kubectl, namespace: str
) -> None:
    kept = mirrors.Mirrors(client)
    pods, deployments = kube.path("v1", "pods", namespace), kube.path("apps/v1", "deployments", namespace)

    async def same(path: str, kind: str, count: int | None = None) -> bool:
        mirrored = kept.collection(path, kind)
        if mirrored is None:
            return False
        listed = (await client.get(path)).get("items") or []
        return versions(mirrored.values()) == versions(listed) and count in (None, len(listed))

    try:
        await until("the pods mirrored", lambda: same(pods, "Pod", 2))
        await until("the Deployments mirrored", lambda: same(deployments, "Deployment", 1))
        kubectl("-n", namespace, "scale", "deployment/checkout", "--replicas=3")
        kubectl("-n", namespace, "annotate", "deployment/checkout", "team=shop")
        await until("3 pods mirrored", lambda: same(pods, "Pod", 3))
        await until("the annotation mirrored", lambda: same(deployments, "Deployment"))
        checkout = (kept.collection(deployments, "Deployment") or {})["checkout"]
        annotations = checkout["metadata"]["annotations"]
        assert annotations["team"] == "shop" and checkout["kind"] == "Deployment"
        assert "kubectl.kubernetes.io/last-applied-configuration" not in annotations
        assert "managedFields" not in checkout["metadata"]
        gone = sorted(kept.collection(pods, "Pod") or {})[0]
        kubectl("-n", namespace, "delete", "pod", gone, "--wait=true")
        await until("the replacement mirrored", lambda: same(pods, "Pod", 3))
        assert gone not in (kept.collection(pods, "Pod") or {})
        mirrored = kept.mirrored()
        assert mirrored[pods].lists == 1 and mirrored[pods].events >= 4
        assert mirrored[deployments].lists == 1 and mirrored[deployments].events >= 2
    finally:
        await kept.close()


class Counting(kube.Client):
    """A client that remembers the paths it sent GETs for."""

    def __init__(self) -> None:
        super().__init__()
        self.gets: list[str] = []

    async def request(self, method: str, url_path: str, **kwargs: Any) -> dict[str, Any]:
        if method == "GET":
            self.gets.append(url_path)
        return await super().request(method, url_path, **kwargs)


def _context(namespace: str) -> ReviewContext:
    now = datetime.datetime.now(datetime.UTC)
    return ReviewContext(
        review_name="r",
        review_namespace=namespace,
        review_uid="u",
        target=Target("Deployment", "checkout", namespace),
        version="1.0.0",
        deployed_at=now - datetime.timedelta(minutes=5),
        now=now,
        phase_name="immediate",
        phase_start=now - datetime.timedelta(minutes=5),
        phase_end=now + datetime.timedelta(minutes=5),
        check_name="c",
    )


async def test_the_provider_measures_the_same_from_mirrors(
    client: kube.Client, kubectl: Kubectl, namespace: str
) -> None:
    counted = Counting()
    # The direct one shares no answer between reads (its default: for a second).
    mirrored = KubernetesProvider(counted)
    direct = KubernetesProvider(client, coalesce_seconds=0, max_objects=0)
    ctx = _context(namespace)
    measures = [
        KubernetesMeasure.ROLLOUT_COMPLETE,
        KubernetesMeasure.READY_RATIO,
        KubernetesMeasure.AVAILABLE_RATIO,
        KubernetesMeasure.RESTARTS,
        KubernetesMeasure.CRASH_LOOPS,
        KubernetesMeasure.IMAGE_PULL_ERRORS,
        KubernetesMeasure.UNHEALTHY_WORKLOADS,
        KubernetesMeasure.HPA_HEALTHY,
    ]

    async def both() -> list[tuple[Any, ...]]:
        out = []
        for measure in measures:
            spec = KubernetesCheck(measure=measure)
            a, b = await mirrored.measure(spec, ctx), await direct.measure(spec, ctx)
            out.append((measure.value, a.state, a.value, a.message, b.state, b.value, b.message))
        return out

    async def live() -> bool:
        await both()  # starts the mirrors
        return not [p for p, m in mirrored.mirrors.mirrored().items() if not m.live] and bool(
            mirrored.mirrors.mirrored()
        )

    try:
        await until("the namespace mirrored", live)
        assert len(mirrored.mirrors.mirrored()) == 5  # pods, 3 workload kinds, HPAs
        counted.gets.clear()
        for name, *pair in await both():
            assert pair[:3] == pair[3:], (name, pair)
        assert counted.gets == []  # every read from the mirrors, listed before
        kubectl("-n", namespace, "scale", "deployment/checkout", "--replicas=0")

        async def scaled() -> bool:
            ratio = await mirrored.measure(KubernetesCheck(measure=KubernetesMeasure.READY_RATIO), ctx)
            return ratio.message == "0/0 ready"

        await until("the scale-down seen", scaled)
        for name, *pair in await both():
            assert pair[:3] == pair[3:], (name, pair)
    finally:
        await mirrored.close()
        await counted.close()
