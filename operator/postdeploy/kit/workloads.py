"""Reading the reviewed workload: Deployment, StatefulSet, DaemonSet or Argo Rollout.

Used by the kubernetes provider (health), the engine (version and deployment time
defaults) and the actions (rollback). Objects are handled as plain dicts in their
wire form (camelCase), as ``kubectl get -o json`` shows them.
"""

from __future__ import annotations

import datetime
from typing import Any

from postdeploy.kit import kube, times

__all__ = [
    "PLURALS",
    "ROLLOUT_GROUP",
    "collection",
    "label_selector",
    "matches",
    "pods",
    "read",
    "replica_counts",
    "rollout_state",
    "rollout_time",
    "version_of",
]

ROLLOUT_GROUP = ("argoproj.io", "v1alpha1", "rollouts")
Obj = dict[str, Any]
# The apps/v1 kinds and their resources (an Argo Rollout is ROLLOUT_GROUP).
PLURALS = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}


def collection(kind: str, namespace: str, name: str | None = None) -> str:
    """The API path of a namespace's workloads of ``kind`` (of one, with ``name``)."""
    if kind in PLURALS:
        return kube.path("apps/v1", PLURALS[kind], namespace, name)
    if kind == "Rollout":
        group, version, plural = ROLLOUT_GROUP
        return kube.path(f"{group}/{version}", plural, namespace, name)
    raise ValueError(f"unsupported target kind {kind!r}")


async def read(api: kube.Client, kind: str, namespace: str, name: str) -> Obj | None:
    """The workload, or None when it does not exist."""
    obj = await api.read(collection(kind, namespace, name))
    if obj is not None:
        obj.setdefault("kind", kind)
    return obj


def _requirements(workload: Obj) -> list[tuple[str, str, list[str]]]:
    """The workload's pod selector as (key, operator, values) requirements, matchLabels
    first (operator "="), in the order ``label_selector`` writes them."""
    selector = workload.get("spec", {}).get("selector") or {}
    requirements = [(k, "=", [v]) for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        requirements.append((expression["key"], expression["operator"], expression.get("values") or []))
    if not requirements:
        raise ValueError("the workload has an empty pod selector")
    return requirements


def label_selector(workload: Obj) -> str:
    """The workload's pod selector as a label-selector string."""
    written = {
        "=": "{key}={values}",
        "In": "{key} in ({values})",
        "NotIn": "{key} notin ({values})",
        "Exists": "{key}",
        "DoesNotExist": "!{key}",
    }
    selector = ",".join(
        written[operator].format(key=key, values=",".join(values))
        for key, operator, values in _requirements(workload)
        if operator in written
    )
    if not selector:
        raise ValueError("the workload's pod selector has no operator this operator knows")
    return selector


def matches(workload: Obj, labels: dict[str, str] | None) -> bool:
    """Whether a pod with ``labels`` is selected by the workload's pod selector (the
    selector ``label_selector`` writes for the API server, applied here)."""
    labels = labels or {}
    for key, operator, values in _requirements(workload):
        if operator in ("=", "In") and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


async def pods(api: kube.Client, workload: Obj) -> list[Obj]:
    namespace = workload["metadata"]["namespace"]
    result = await api.get(kube.path("v1", "pods", namespace), labelSelector=label_selector(workload))
    items: list[Obj] = result.get("items") or []
    return items


def rollout_state(workload: Obj) -> tuple[int, str]:
    """(1 complete | 0 in progress | -1 failed, explanation), as ``kubectl rollout status``."""
    kind = workload.get("kind", "Deployment")
    spec, status = workload.get("spec", {}), workload.get("status", {})
    generation = workload["metadata"].get("generation", 0)
    if status.get("observedGeneration", 0) < generation:
        return 0, "waiting for the controller to observe the new generation"
    if kind == "Deployment":
        for condition in status.get("conditions") or []:
            deadline = condition.get("reason") == "ProgressDeadlineExceeded"
            if condition.get("type") == "Progressing" and deadline:
                return -1, f"progress deadline exceeded: {condition.get('message', '')}"
        desired = spec.get("replicas", 1)
        updated = status.get("updatedReplicas", 0)
        total = status.get("replicas", 0)
        available = status.get("availableReplicas", 0)
        if updated < desired:
            return 0, f"{updated} of {desired} updated replicas"
        if total > updated:
            return 0, f"{total - updated} old replicas pending termination"
        if available < updated:
            return 0, f"{available} of {updated} updated replicas available"
        return 1, f"rolled out: {available}/{desired} available"
    if kind == "StatefulSet":
        desired = spec.get("replicas", 1)
        ready = status.get("readyReplicas", 0)
        if (
            status.get("updateRevision") != status.get("currentRevision")
            and status.get("updatedReplicas", 0) < desired
        ):
            return 0, f"{status.get('updatedReplicas', 0)} of {desired} pods updated"
        if ready < desired:
            return 0, f"{ready} of {desired} pods ready"
        return 1, f"rolled out: {ready}/{desired} ready"
    if kind == "DaemonSet":
        desired = status.get("desiredNumberScheduled", 0)
        updated = status.get("updatedNumberScheduled", 0)
        available = status.get("numberAvailable", 0)
        if updated < desired:
            return 0, f"{updated} of {desired} pods updated"
        if available < desired:
            return 0, f"{available} of {desired} pods available"
        return 1, f"rolled out: {available}/{desired} available"
    phase = status.get("phase")
    if phase == "Healthy":
        return 1, "rollout healthy"
    if phase == "Degraded":
        return -1, f"rollout degraded: {status.get('message', '')}"
    return 0, f"rollout {phase or 'progressing'}"


def replica_counts(workload: Obj) -> tuple[int, int, int]:
    """(desired, ready, available)."""
    spec, status = workload.get("spec", {}), workload.get("status", {})
    if workload.get("kind") == "DaemonSet":
        return (
            status.get("desiredNumberScheduled", 0),
            status.get("numberReady", 0),
            status.get("numberAvailable", 0),
        )
    desired = spec.get("replicas", 1)
    return desired, status.get("readyReplicas", 0), status.get("availableReplicas", 0)


def version_of(workload: Obj) -> str | None:
    """app.kubernetes.io/version of the pod template, else the first container's image tag."""
    template = workload.get("spec", {}).get("template", {})
    labels = template.get("metadata", {}).get("labels") or {}
    if labels.get("app.kubernetes.io/version"):
        return str(labels["app.kubernetes.io/version"])
    containers = template.get("spec", {}).get("containers") or []
    if not containers:
        return None
    image = str(containers[0].get("image", ""))
    name = image.rsplit("/", 1)[-1]
    if "@" in name:
        return name.split("@", 1)[1][:19]
    return name.split(":", 1)[1] if ":" in name else "latest"


async def rollout_time(api: kube.Client, workload: Obj) -> datetime.datetime | None:
    """When the current revision was rolled out: its ReplicaSet's (or revision's) creation."""
    kind = workload.get("kind")
    metadata = workload["metadata"]
    namespace = metadata["namespace"]
    if kind == "Deployment":
        revision = (metadata.get("annotations") or {}).get("deployment.kubernetes.io/revision")
        replica_sets = await api.get(
            kube.path("apps/v1", "replicasets", namespace), labelSelector=label_selector(workload)
        )
        for replica_set in replica_sets.get("items") or []:
            owners = replica_set["metadata"].get("ownerReferences") or []
            if not any(o.get("uid") == metadata.get("uid") for o in owners):
                continue
            annotations = replica_set["metadata"].get("annotations") or {}
            if revision and annotations.get("deployment.kubernetes.io/revision") == revision:
                return times.parse_or_none(replica_set["metadata"].get("creationTimestamp"))
    elif kind in ("StatefulSet", "DaemonSet"):
        revision_name = workload.get("status", {}).get("updateRevision")
        listed = await api.get(
            kube.path("apps/v1", "controllerrevisions", namespace), labelSelector=label_selector(workload)
        )
        revisions: list[Obj] = listed.get("items") or []
        for item in revisions:
            if revision_name and item["metadata"].get("name") == revision_name:
                return times.parse_or_none(item["metadata"].get("creationTimestamp"))
        if kind == "DaemonSet" and revisions:
            newest = max(revisions, key=lambda r: r["revision"])
            return times.parse_or_none(newest["metadata"].get("creationTimestamp"))
    return times.parse_or_none(metadata.get("creationTimestamp"))
