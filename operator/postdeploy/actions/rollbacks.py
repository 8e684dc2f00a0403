"""Rolling the target back to its previous revision, as ``kubectl rollout undo`` does.

Called by ``postdeploy.engine.executions`` in two steps, so that the step in between
can be written to the review's status: ``plan`` reads the target and its history and
says what a rollback would change (from/to revision and image, the revision it goes
back to, a fingerprint of the template it replaces); ``apply`` makes the change.

- Deployment: the previous revision is the owned ReplicaSet with the highest
  ``deployment.kubernetes.io/revision`` below the Deployment's own whose pod template
  is another release: one that differs from the current template in more than the
  ``kubectl.kubernetes.io/restartedAt`` annotation (``kubectl rollout restart`` makes a
  revision of the same release, and ``kubectl rollout undo`` would go back to it and
  change nothing that the release brought). Its pod template,
  without the ``pod-template-hash`` label, replaces the Deployment's template (a JSON
  patch that first tests ``metadata.resourceVersion``, so a concurrent change makes
  it fail rather than mix); the ReplicaSet's annotations that kubectl copies back
  (e.g. ``kubernetes.io/change-cause``) are copied back too. The Deployment
  controller then scales the old ReplicaSet up again and gives it the next revision
  number. A paused Deployment is not rolled back (kubectl refuses too), unless this
  review paused it, in which case the rollback also resumes it.
- StatefulSet and DaemonSet: the previous ``ControllerRevision`` (highest revision
  below the current one, the current one being the revision whose template the
  object carries) holds a strategic merge patch that replaces the pod template; it is
  applied with the object's ``resourceVersion`` as a precondition.
- Argo Rollout: aborted, as ``kubectl argo rollouts abort`` does (``status.abort:
  true`` through the status subresource; the main resource when the CRD has none).
  The Rollout controller then scales the stable ReplicaSet back up. A Rollout whose
  update is complete (stable = current) has nothing to abort.

``plan`` raises ``NotRolledBack`` when there is nothing to go back to; its message is
recorded as the reason. Called again with the ``source`` recorded in status (after
a restart), ``plan`` says whether the target already carries that revision, which
makes a repeated rollback a no-op rather than a second step back.

API use (for RBAC): list replicasets and controllerrevisions; patch deployments,
statefulsets, daemonsets, rollouts and rollouts/status.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from typing import Any

from postdeploy.actions import targets
from postdeploy.kit import exceptions, kube, workloads

__all__ = [
    "DEPLOYMENT_REVISION", "RESTARTED_AT", "ROLLOUT_REVISION", "Plan", "apply", "plan", "previous_release",
    "template_hash",
]

DEPLOYMENT_REVISION = "deployment.kubernetes.io/revision"
ROLLOUT_REVISION = "rollout.argoproj.io/revision"
POD_TEMPLATE_HASH = "pod-template-hash"
ROLLOUT_POD_HASH = "rollouts-pod-template-hash"
# Annotations of a ReplicaSet that kubectl does not copy back onto the Deployment.
_NOT_COPIED = frozenset(
    {
        DEPLOYMENT_REVISION,
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "kubectl.kubernetes.io/last-applied-configuration",
    }
)


@dataclasses.dataclass(frozen=True)
class Plan:
    kind: str
    from_revision: str | None
    to_revision: str | None
    from_image: str | None
    to_image: str | None
    source: str  # the ReplicaSet / ControllerRevision gone back to, or the Rollout's stable hash
    current: str  # template_hash of the target's pod template when planned
    applied: bool  # the target already carries the revision gone back to
    patch: Any = dataclasses.field(repr=False, default=None)
    content_type: targets.ContentType = targets.JSON_PATCH


def _owned(items: list[targets.Obj], uid: str) -> list[targets.Obj]:
    def controlled(item: targets.Obj) -> bool:
        owners = item["metadata"].get("ownerReferences") or []
        return any(o.get("uid") == uid and o.get("controller") for o in owners)

    return [item for item in items if controlled(item)]


def _normal(value: Any) -> Any:
    """For comparing templates: None values and empty containers do not count."""
    if isinstance(value, dict):
        out = {k: _normal(v) for k, v in value.items() if k != "$patch"}
        return {k: v for k, v in out.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


def _same(a: Any, b: Any) -> bool:
    return bool(_normal(a) == _normal(b))


RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def _release(template: Any) -> Any:
    """A pod template as a release: without the ``pod-template-hash`` label and the
    ``restartedAt`` annotation that ``kubectl rollout restart`` sets."""
    release = copy.deepcopy(template or {})
    metadata = release.get("metadata") or {}
    (metadata.get("labels") or {}).pop(POD_TEMPLATE_HASH, None)
    (metadata.get("annotations") or {}).pop(RESTARTED_AT, None)
    return _normal(release)


def previous_release(owned: list[targets.Obj], current: int, template: Any) -> targets.Obj | None:
    """The ReplicaSet to roll back to: the highest revision below ``current`` whose pod
    template is another release than ``template`` (not only a restart of it)."""
    release = _release(template)
    older = [
        rs
        for rs in owned
        if 0 < _revision(rs, DEPLOYMENT_REVISION) < current and _release(rs["spec"]["template"]) != release
    ]
    return max(older, key=lambda rs: _revision(rs, DEPLOYMENT_REVISION), default=None)


def template_hash(template: Any) -> str:
    """A short fingerprint of a pod template, for noticing that it changed."""
    text = json.dumps(_normal(template or {}), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _revision(obj: targets.Obj, key: str) -> int:
    try:
        return int((obj["metadata"].get("annotations") or {}).get(key, "0"))
    except ValueError:
        return 0


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


async def _replica_sets(api: kube.Client, obj: targets.Obj, selector: str) -> list[targets.Obj]:
    namespace = obj["metadata"]["namespace"]
    listed = await api.get(kube.path("apps/v1", "replicasets", namespace), labelSelector=selector)
    items: list[targets.Obj] = listed.get("items") or []
    return _owned(items, obj["metadata"]["uid"])


async def _plan_deployment(
    api: kube.Client, obj: targets.Obj, source: str | None, unpause: bool
) -> Plan:
    metadata, spec = obj["metadata"], obj["spec"]
    owned = await _replica_sets(api, obj, workloads.label_selector(obj))
    revisions = [_revision(rs, DEPLOYMENT_REVISION) for rs in owned]
    current = _revision(obj, DEPLOYMENT_REVISION) or max(revisions, default=0)
    if source is not None:
        chosen = [rs for rs in owned if rs["metadata"]["name"] == source]
        if not chosen:
            raise exceptions.NotRolledBack(
                f"ReplicaSet {source}, the revision to roll back to, no longer exists"
            )
        target_rs = chosen[0]
    else:
        found = previous_release(owned, current, spec.get("template"))
        if found is None:
            raise exceptions.NotRolledBack(
                f"Deployment {metadata['name']} has no revision before {current} of another release "
                f"to roll back to ({len(owned)} ReplicaSet(s) kept; revisionHistoryLimit "
                f"{spec.get('revisionHistoryLimit', 10)}; a restart is the same release)"
            )
        target_rs = found
    template = copy.deepcopy(target_rs["spec"]["template"])
    labels = (template.get("metadata") or {}).get("labels") or {}
    labels.pop(POD_TEMPLATE_HASH, None)
    applied = _same(template, spec.get("template"))
    if spec.get("paused") and not unpause and not applied:
        raise exceptions.NotRolledBack(
            f"Deployment {metadata['name']} is paused, and not by this review; a paused Deployment is "
            "not rolled back (kubectl rollout undo refuses too)"
        )
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": metadata["resourceVersion"]},
        {"op": "replace", "path": "/spec/template", "value": template},
    ]
    if not metadata.get("annotations"):
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {}})
    for key, value in sorted((target_rs["metadata"].get("annotations") or {}).items()):
        if key not in _NOT_COPIED and not key.startswith("postdeploy.io/"):
            ops.append({"op": "add", "path": f"/metadata/annotations/{_pointer(key)}", "value": value})
    if unpause and spec.get("paused"):
        ops.append({"op": "replace", "path": "/spec/paused", "value": False})
    return Plan(
        kind="Deployment",
        from_revision=str(current),
        to_revision=str(_revision(target_rs, DEPLOYMENT_REVISION)),
        from_image=targets.images(spec.get("template")),
        to_image=targets.images(template),
        source=target_rs["metadata"]["name"],
        current=template_hash(spec.get("template")),
        applied=applied,
        patch=ops,
        content_type=targets.JSON_PATCH,
    )


def _revision_template(revision: targets.Obj) -> targets.Obj:
    data = revision.get("data") or {}
    template: targets.Obj = copy.deepcopy((data.get("spec") or {}).get("template") or {})
    template.pop("$patch", None)
    return template


async def _plan_controller_revision(api: kube.Client, obj: targets.Obj, source: str | None) -> Plan:
    metadata, spec = obj["metadata"], obj["spec"]
    kind = obj["kind"]
    listed = await api.get(
        kube.path("apps/v1", "controllerrevisions", metadata["namespace"]),
        labelSelector=workloads.label_selector(obj),
    )
    items: list[targets.Obj] = listed.get("items") or []
    owned = sorted(_owned(items, metadata["uid"]), key=lambda r: int(r.get("revision", 0)))
    carried = [r for r in owned if _same(_revision_template(r), spec.get("template"))]
    current = carried[-1] if carried else (owned[-1] if owned else None)
    if source is not None:
        chosen = [r for r in owned if r["metadata"]["name"] == source]
        if not chosen:
            raise exceptions.NotRolledBack(
                f"ControllerRevision {source}, the revision to roll back to, no longer exists"
            )
        previous = chosen[0]
    else:
        older = [r for r in owned if current is not None and int(r["revision"]) < int(current["revision"])]
        if current is None or not older:
            raise exceptions.NotRolledBack(
                f"{kind} {metadata['name']} has no revision before "
                f"{current['revision'] if current else 'its first'} to roll back to "
                f"({len(owned)} ControllerRevision(s) kept)"
            )
        previous = older[-1]
    template = _revision_template(previous)
    body = copy.deepcopy(previous.get("data") or {})
    body.setdefault("metadata", {})["resourceVersion"] = metadata["resourceVersion"]
    return Plan(
        kind=kind,
        from_revision=str(current["revision"]) if current else None,
        to_revision=str(previous["revision"]),
        from_image=targets.images(spec.get("template")),
        to_image=targets.images(template),
        source=previous["metadata"]["name"],
        current=template_hash(spec.get("template")),
        applied=_same(template, spec.get("template")),
        patch=body,
        content_type=targets.STRATEGIC_MERGE_PATCH,
    )


async def _plan_rollout(api: kube.Client, obj: targets.Obj) -> Plan:
    metadata, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    stable, current = status.get("stableRS"), status.get("currentPodHash")
    aborted = bool(status.get("abort"))
    if not aborted and (not stable or stable == current):
        raise exceptions.NotRolledBack(
            f"Rollout {metadata['name']} has no update in progress (stable ReplicaSet hash "
            f"{stable or 'unknown'} is the current one): an abort would change nothing"
        )
    to_image = None
    if stable:
        for rs in await _replica_sets(api, obj, f"{ROLLOUT_POD_HASH}={stable}"):
            to_image = targets.images(rs["spec"].get("template"))
    return Plan(
        kind="Rollout",
        from_revision=str(_revision(obj, ROLLOUT_REVISION) or current),
        to_revision=str(stable),
        from_image=targets.images(spec.get("template")),
        to_image=to_image,
        source=str(stable),
        current=template_hash(spec.get("template")),
        applied=aborted,
        patch={"status": {"abort": True}},
        content_type=targets.MERGE_PATCH,
    )


async def plan(
    api: kube.Client, obj: targets.Obj, *, source: str | None = None, unpause: bool = False
) -> Plan:
    """What rolling ``obj`` back changes. ``source``: the revision chosen earlier.

    ``unpause``: this review paused the target, so the rollback may resume it.
    Raises NotRolledBack.
    """
    kind = obj.get("kind")
    if kind == "Deployment":
        return await _plan_deployment(api, obj, source, unpause)
    if kind in ("StatefulSet", "DaemonSet"):
        return await _plan_controller_revision(api, obj, source)
    if kind == "Rollout":
        return await _plan_rollout(api, obj)
    raise exceptions.NotRolledBack(f"cannot roll back a {kind}")


async def apply(api: kube.Client, obj: targets.Obj, planned: Plan) -> None:
    """Make the planned change. A concurrent change of the target raises kube.ApiError
    (409, or 422 for a failed JSON-patch test): plan again from a fresh read."""
    if planned.applied:
        return
    metadata = obj["metadata"]
    namespace, name = metadata["namespace"], metadata["name"]
    if planned.kind != "Rollout":
        await targets.patch(api, planned.kind, namespace, name, planned.patch, planned.content_type)
        return
    try:
        await targets.patch(
            api, "Rollout", namespace, name, planned.patch, targets.MERGE_PATCH, subresource="status"
        )
    except kube.ApiError as error:
        if error.status != 404:
            raise
        # A Rollout CRD without the status subresource (older Argo Rollouts): the plugin
        # falls back to patching the object itself, and so do we.
        await targets.patch(api, "Rollout", namespace, name, planned.patch, targets.MERGE_PATCH)
