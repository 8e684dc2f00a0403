"""Phase 5 cleanup: delete what this deployment marked temporary, and nothing else.

Called by the cleanup check (``postdeploy.actions.cleanup_checks``) with the check's
``cleanup`` block. ``plan`` lists the candidates, ``apply`` deletes them (or, on a
dry run, only reports them). Three sources, and only these:

1. objects of the listed kinds whose label ``postdeploy.io/temporary`` (``label``) has
   the review's name or the deployed version as its value; Secrets and
   ServiceAccounts among them are temporary credentials, revoked by deletion (a
   ServiceAccount's tokens stop working with it);
2. objects named in ``names`` (``kubectl delete --ignore-not-found``: absent is fine);
3. with ``keepReplicaSets: N``, the target Deployment's old ReplicaSets beyond the N
   newest, never the current one, never the one a rollback would go back to, never
   one that still has replicas.

Every delete carries the object's uid as a precondition, so an object that was
replaced since it was listed is left alone. A kind the operator may not list is
reported and the others go on.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

from postdeploy.kit import kube
from postdeploy.models.people import CleanupCheck

__all__ = ["Candidate", "apply", "plan", "replica_sets_to_prune"]

REVISION = "deployment.kubernetes.io/revision"
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
CREDENTIAL_KINDS = frozenset({"Secret", "ServiceAccount"})
Obj = dict[str, Any]


@dataclasses.dataclass
class Candidate:
    kind: str
    name: str
    namespace: str
    uid: str
    why: str
    result: str = "pending"

    def row(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace,
            "why": self.why,
            "credential": self.kind in CREDENTIAL_KINDS,
            "result": self.result,
        }


# Kind -> (apiVersion, resource), for ``kube.path``: the kinds a cleanup may list, read and delete.
_APIS = {
    "ConfigMap": ("v1", "configmaps"),
    "Secret": ("v1", "secrets"),
    "ServiceAccount": ("v1", "serviceaccounts"),
    "Service": ("v1", "services"),
    "Pod": ("v1", "pods"),
    "Job": ("batch/v1", "jobs"),
    "Role": ("rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", "rolebindings"),
    "ReplicaSet": ("apps/v1", "replicasets"),
}


def _path(kind: str, namespace: str, name: str | None = None) -> str:
    api_version, plural = _APIS[kind]
    return kube.path(api_version, plural, namespace, name)


def replica_sets_to_prune(
    replica_sets: Sequence[Obj], current_revision: str | None, keep: int
) -> list[tuple[Obj, str]]:
    """(ReplicaSet, why) for each one that may go; pure, for the objects a list returned."""

    def revision(rs: Obj) -> int:
        try:
            return int((rs["metadata"].get("annotations") or {}).get(REVISION, "0"))
        except ValueError:
            return 0

    ordered = sorted(replica_sets, key=revision, reverse=True)
    current = int(current_revision) if current_revision and current_revision.isdigit() else None
    if current is None and ordered:
        current = revision(ordered[0])
    older = [rs for rs in ordered if current is not None and revision(rs) < current]
    rollback_target = older[0] if older else None
    prune = []
    for index, rs in enumerate(ordered):
        if index < keep or revision(rs) == current or rs is rollback_target:
            continue
        wanted, running = (rs.get("spec") or {}).get("replicas"), (rs.get("status") or {}).get("replicas")
        if (wanted or 0) > 0 or (running or 0) > 0:
            continue
        prune.append((rs, f"old ReplicaSet (revision {revision(rs)}), beyond the newest {keep}"))
    return prune


async def _replica_sets(api: kube.Client, namespace: str, deployment: str, keep: int) -> list[Candidate]:
    target = await api.get(kube.path("apps/v1", "deployments", namespace, deployment))
    labels = ((target.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    listed = await api.get(_path("ReplicaSet", namespace), labelSelector=selector)
    uid = target["metadata"].get("uid")
    owned = [
        rs
        for rs in listed.get("items") or []
        if any(o.get("uid") == uid for o in (rs["metadata"].get("ownerReferences") or []))
    ]
    current = (target["metadata"].get("annotations") or {}).get(REVISION)
    return [
        Candidate("ReplicaSet", rs["metadata"]["name"], namespace, rs["metadata"]["uid"], why)
        for rs, why in replica_sets_to_prune(owned, current, keep)
    ]


def _unreachable(error: kube.ApiError) -> None:
    """Raise the error again when the API server did not answer (status 0): that fails
    the check's run, and the next run tries again; an answer is a problem or a result."""
    if error.status == 0:
        raise error


async def plan(
    api: kube.Client,
    spec: CleanupCheck,
    namespaces: Sequence[str],
    review: str,
    version: str,
    target: tuple[str, str, str] | None = None,  # (kind, namespace, name)
) -> tuple[list[Candidate], list[str]]:
    """The objects to delete, and the problems met while looking (one line each)."""
    values = [v for v in dict.fromkeys((review, version)) if v and len(v) <= 63 and _LABEL_VALUE.match(v)]
    selector = f"{spec.label} in ({','.join(values)})"
    found: dict[tuple[str, str, str], Candidate] = {}
    problems: list[str] = []
    for namespace in dict.fromkeys(namespaces):
        for kind in dict.fromkeys(spec.kinds):
            try:
                listed = await api.get(_path(kind, namespace), labelSelector=selector)
            except kube.ApiError as error:
                _unreachable(error)
                problems.append(f"cannot list {kind} in {namespace}: {error.status} {error.reason}")
                continue
            for obj in listed.get("items") or []:
                metadata = obj["metadata"]
                label = (metadata.get("labels") or {}).get(spec.label)
                why = f"label {spec.label}={label}"
                found[(kind, namespace, metadata["name"])] = Candidate(
                    kind, metadata["name"], namespace, metadata["uid"], why
                )
        for named in spec.names:
            key = (named.kind, namespace, named.name)
            if key in found:
                continue
            try:
                obj = await api.get(_path(named.kind, namespace, named.name))
            except kube.ApiError as error:
                _unreachable(error)
                if error.status != 404:
                    problems.append(
                        f"cannot read {named.kind} {namespace}/{named.name}: {error.status} {error.reason}"
                    )
                continue
            uid = obj["metadata"]["uid"]
            found[key] = Candidate(named.kind, named.name, namespace, uid, "listed by name")
    if spec.keep_replica_sets and target is not None:
        target_kind, namespace, target_name = target
        if target_kind != "Deployment":
            problems.append(f"keepReplicaSets applies to Deployments; the target is a {target_kind}")
        else:
            try:
                for candidate in await _replica_sets(api, namespace, target_name, spec.keep_replica_sets):
                    found[(candidate.kind, namespace, candidate.name)] = candidate
            except kube.ApiError as error:
                _unreachable(error)
                problems.append(
                    f"cannot list the ReplicaSets of {target_name}: {error.status} {error.reason}"
                )
    return list(found.values()), problems


async def apply(api: kube.Client, candidates: Sequence[Candidate], dry_run: bool) -> None:
    """Delete each candidate (uid precondition), recording the outcome in ``result``."""
    for candidate in candidates:
        if dry_run:
            candidate.result = "would delete"
            continue
        options = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"uid": candidate.uid},
            "propagationPolicy": "Background",
        }
        try:
            await api.delete(_path(candidate.kind, candidate.namespace, candidate.name), body=options)
            candidate.result = "deleted"
        except kube.ApiError as error:
            _unreachable(error)
            if error.status == 404:
                candidate.result = "already gone"
            elif error.status == 409:
                candidate.result = "replaced since listed; left alone"
            else:
                candidate.result = f"failed: {error.status} {error.reason}"
