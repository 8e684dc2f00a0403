"""The kubernetes provider: workload health as numbers.

Called by ``postdeploy.engine`` for checks with a ``kubernetes`` block. Measures
one thing per check (``measure``): rollout completion, ready/available ratios,
restarts since the deployment, crash loops, image pull errors, unhealthy workloads
in the namespace, the target's HPA health (not applicable, hence Skipped, for a
target that no HPA scales) and node pressure. The API server being
unreachable or refusing is an Error measurement; a missing target is an Error
that says so.

The target, its pods, the namespace's workloads and HPAs are read from the
namespace's mirrors (``postdeploy.kit.mirrors``: one list and a watch per collection,
shared by every review in the namespace) while those are live, else from the API
server, as a mirror's first read does; so is every read when ``max_objects`` is 0.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from postdeploy.kit import kube, mirrors, times, workloads
from postdeploy.models.checks import Baseline, KubernetesCheck, KubernetesMeasure
from postdeploy.models.measurements import Measurement, ReviewContext
from postdeploy.providers import coalescing

__all__ = ["KubernetesProvider"]

Obj = dict[str, Any]
_PULL_ERRORS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName"})
_PRESSURE = ("MemoryPressure", "DiskPressure", "PIDPressure")
_HPA = "HorizontalPodAutoscaler"


def _created(obj: Obj) -> datetime.datetime:
    stamp = obj["metadata"].get("creationTimestamp")
    if isinstance(stamp, datetime.datetime):
        return stamp
    return times.parse(str(stamp))


def _container_statuses(pod: Obj) -> list[Obj]:
    status = pod.get("status") or {}
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def _waiting_reason(container: Obj) -> str | None:
    waiting = (container.get("state") or {}).get("waiting") or {}
    reason = waiting.get("reason")
    return str(reason) if reason else None


class KubernetesProvider:
    limits_itself = True

    def __init__(
        self,
        api: kube.Client,
        coalesce_seconds: float = 1.0,
        concurrency: int | None = None,
        max_objects: int = 5000,
    ) -> None:
        self.api = api
        # ``max_objects``: the most objects one mirrored collection may hold; 0: none kept.
        self.mirrors = mirrors.Mirrors(api, max_objects=max_objects)
        # Reads sent to the API server (while a mirror is not live, the nodes always):
        # the workload checks of a review's tick, and reviews of the same target within
        # a second, share one read of the workload and one list of its pods.
        # ``concurrency`` bounds the reads the API server gets at once.
        self._reads: coalescing.Coalescer[Any] = coalescing.Coalescer(
            coalesce_seconds, concurrency=concurrency
        )
        self._measures: dict[KubernetesMeasure, Callable[[Obj, ReviewContext], Awaitable[Measurement]]] = {
            KubernetesMeasure.ROLLOUT_COMPLETE: self._rollout_complete,
            KubernetesMeasure.READY_RATIO: self._ready_ratio,
            KubernetesMeasure.AVAILABLE_RATIO: self._available_ratio,
            KubernetesMeasure.RESTARTS: self._restarts,
            KubernetesMeasure.CRASH_LOOPS: self._crash_loops,
            KubernetesMeasure.IMAGE_PULL_ERRORS: self._image_pull_errors,
            KubernetesMeasure.UNHEALTHY_WORKLOADS: self._unhealthy_workloads,
            KubernetesMeasure.HPA_HEALTHY: self._hpa_healthy,
            KubernetesMeasure.NODE_PRESSURE: self._node_pressure,
        }

    async def close(self) -> None:
        await self.mirrors.close()

    async def _pods(self, workload: Obj) -> list[Obj]:
        namespace = workload["metadata"]["namespace"]
        selector = workloads.label_selector(workload)

        def select(objects: Mapping[str, Obj]) -> list[Obj]:
            chosen = [p for p in objects.values() if workloads.matches(workload, p["metadata"].get("labels"))]
            return sorted(chosen, key=lambda p: str(p["metadata"]["name"]))  # as the API server lists

        mirrored = self.mirrors.derived(kube.path("v1", "pods", namespace), "Pod", selector, select)
        if mirrored is not None:
            return mirrored
        key = ("pods", namespace, selector)
        pods: list[Obj] = await self._reads.run(key, lambda: workloads.pods(self.api, workload))
        return pods

    async def _workload(self, kind: str, namespace: str, name: str) -> Obj | None:
        mirrored = self.mirrors.collection(workloads.collection(kind, namespace), kind)
        if mirrored is not None:
            return mirrored.get(name)
        workload: Obj | None = await self._reads.run(
            ("workload", kind, namespace, name), lambda: workloads.read(self.api, kind, namespace, name)
        )
        return workload

    async def _list(self, api_version: str, plural: str, namespace: str, kind: str) -> list[Obj]:
        """A namespace's objects of one resource (each with ``kind``), in name order."""
        path = kube.path(api_version, plural, namespace)
        mirrored = self.mirrors.collection(path, kind)
        if mirrored is not None:
            return sorted(mirrored.values(), key=lambda o: str(o["metadata"]["name"]))
        listing = await self.api.get(path)
        return [{**item, "kind": kind} for item in listing.get("items") or []]

    async def measure(
        self, spec: KubernetesCheck, ctx: ReviewContext, baseline: Baseline | None = None
    ) -> Measurement:
        """Read the target's state. ``baseline`` is ignored: the thresholds are absolute."""
        target = ctx.target
        query = f"{spec.measure.value} of {target.kind}/{target.namespace}/{target.name}"
        try:
            workload = await self._workload(target.kind, target.namespace, target.name)
            if workload is None:
                return Measurement.error(
                    f"target {target.kind} {target.namespace}/{target.name} not found", query=query
                )
            measurement = await self._measures[spec.measure](workload, ctx)
        except kube.ApiError as error:
            if error.status == 0:  # not answered
                return Measurement.error(f"Kubernetes API unreachable: {error.message}", query=query)
            return Measurement.error(f"Kubernetes API: {error.status} {error.reason}", query=query)
        except (OSError, TimeoutError) as error:
            return Measurement.error(f"Kubernetes API unreachable: {error}", query=query)
        return Measurement(
            measurement.state,
            value=measurement.value,
            baseline=measurement.baseline,
            message=measurement.message,
            query=query,
            details=measurement.details,
            memo=measurement.memo,
        )

    async def _rollout_complete(self, workload: Obj, ctx: ReviewContext) -> Measurement:
        value, message = workloads.rollout_state(workload)
        return Measurement.ok(float(value), message=message)

    async def _ready_ratio(self, workload: Obj, ctx: ReviewContext) -> Measurement:
        desired, ready, _ = workloads.replica_counts(workload)
        ratio = 1.0 if desired == 0 else ready / desired
        return Measurement.ok(
            ratio, message=f"{ready}/{desired} ready", details={"ready": ready, "desired": desired}
        )

    async def _available_ratio(self, workload: Obj, ctx: ReviewContext) -> Measurement:
        desired, _, available = workloads.replica_counts(workload)
        ratio = 1.0 if desired == 0 else available / desired
        return Measurement.ok(
            ratio,
            message=f"{available}/{desired} available",
            details={"available": available, "desired": desired},
        )

    async def _restarts(self, workload: Obj, ctx: ReviewContext) -> Measurement:
        # Pods created before the deployment belong to the previous version; restarts
        # that happened before deployedAt are not this release's.
        total, by_pod = 0, {}
        for pod in await self._pods(workload):
            if _created(pod) < ctx.deployed_at:
                continue
            count = sum(int(c.get("restartCount", 0)) for c in _container_statuses(pod))
            total += count
            if count:
                by_pod[pod["metadata"]["name"]] = count
        return Measurement.ok(
            float(total), message=f"{total} restart(s) since deployment", details={"pods": by_pod}
        )

    async def _waiting(self, workload: Obj, reasons: frozenset[str], label: str) -> Measurement:
        found: list[str] = []
        for pod in await self._pods(workload):
            for container in _container_statuses(pod):
                reason = _waiting_reason(container)
                if reason in reasons:
                    found.append(f"{pod['metadata']['name']}/{container.get('name')}: {reason}")
        message = f"{len(found)} container(s) {label}" + (f": {', '.join(found[:5])}" if found else "")
        return Measurement.ok(float(len(found)), message=message, details={"containers": found[:20]})

    async def _crash_loops(self, workload: Obj, ctx: ReviewContext) -> Measurement:
        return await self._waiting(workload, frozenset({"CrashLoopBackOff"}), "in CrashLoopBackOff")

    async def _image_pull_errors(self, workload: Obj, ctx: ReviewContext) -> Measurement:
        return await self._waiting(workload, _PULL_ERRORS, "failing to pull their image")

    async def _unhealthy_workloads(self, workload: Obj, ctx: ReviewContext) -> Measurement:
        namespace = ctx.target.namespace
        unhealthy: list[str] = []
        total = 0
        for kind, plural in workloads.PLURALS.items():
            for obj in await self._list("apps/v1", plural, namespace, kind):
                total += 1
                desired, ready, available = workloads.replica_counts(obj)
                if available < desired or ready < desired:
                    unhealthy.append(f"{kind}/{obj['metadata']['name']} {available}/{desired} available")
        message = f"{len(unhealthy)} of {total} workload(s) in {namespace} not fully available"
        if unhealthy:
            message += ": " + ", ".join(unhealthy[:5])
        return Measurement.ok(float(len(unhealthy)), message=message, details={"unhealthy": unhealthy[:20]})

    async def _hpa_healthy(self, workload: Obj, ctx: ReviewContext) -> Measurement:
        namespace = ctx.target.namespace
        hpas = await self._list("autoscaling/v2", "horizontalpodautoscalers", namespace, _HPA)
        for hpa in hpas:
            ref = hpa.get("spec", {}).get("scaleTargetRef", {})
            if ref.get("kind") != ctx.target.kind or ref.get("name") != ctx.target.name:
                continue
            status = hpa.get("status", {})
            conditions = {c["type"]: c for c in status.get("conditions") or []}
            problems = [
                f"{kind}={conditions[kind].get('status')} ({conditions[kind].get('reason')})"
                for kind in ("AbleToScale", "ScalingActive")
                if kind in conditions and conditions[kind].get("status") != "True"
            ]
            details = {
                "hpa": hpa["metadata"]["name"],
                "currentReplicas": status.get("currentReplicas"),
                "desiredReplicas": status.get("desiredReplicas"),
                "minReplicas": hpa["spec"].get("minReplicas"),
                "maxReplicas": hpa["spec"].get("maxReplicas"),
                "lastScaleTime": status.get("lastScaleTime"),
                "conditions": {k: v.get("status") for k, v in conditions.items()},
            }
            if not conditions:
                return Measurement.no_data(
                    f"HPA {details['hpa']} has not reported conditions yet", details=details
                )
            if problems:
                return Measurement.ok(0.0, message="HPA not working: " + ", ".join(problems), details=details)
            return Measurement.ok(
                1.0, message=f"HPA {details['hpa']} able to scale and active", details=details
            )
        return Measurement.not_applicable(
            f"no HorizontalPodAutoscaler targets {ctx.target.kind}/{ctx.target.name}"
        )

    async def _node_pressure(self, workload: Obj, ctx: ReviewContext) -> Measurement:
        nodes = {pod.get("spec", {}).get("nodeName") for pod in await self._pods(workload)}
        nodes.discard(None)
        under_pressure: list[str] = []
        for name in sorted(n for n in nodes if n):
            # Every review on the node asks within the same second: one read serves them.
            read = functools.partial(self.api.get, kube.path("v1", "nodes", name=name))
            node: Obj = await self._reads.run(("node", name), read)
            for condition in node.get("status", {}).get("conditions") or []:
                if condition.get("type") in _PRESSURE and condition.get("status") == "True":
                    under_pressure.append(f"{name}: {condition['type']}")
        message = f"{len(under_pressure)} pressure condition(s) on {len(nodes)} node(s)"
        return Measurement.ok(float(len(under_pressure)), message=message, details={"nodes": under_pressure})
