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
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from postdeploy.models.people import CleanupCheck

__all__ = ["Candidate", "apply", "plan", "replica_sets_to_prune"]

REVISION = "deployment.kubernetes.io/revision"
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
CREDENTIAL_KINDS = frozenset({"Secret", "ServiceAccount"})


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


Lister = Callable[..., Awaitable[Any]]


def _apis(api: client.ApiClient) -> dict[str, tuple[Any, str]]:
    """Kind -> (API object, method suffix) for list/read/delete_namespaced_<suffix>."""
    core, batch, rbac = client.CoreV1Api(api), client.BatchV1Api(api), client.RbacAuthorizationV1Api(api)
    return {
        "ConfigMap": (core, "config_map"),
        "Secret": (core, "secret"),
        "ServiceAccount": (core, "service_account"),
        "Service": (core, "service"),
        "Pod": (core, "pod"),
        "Job": (batch, "job"),
        "Role": (rbac, "role"),
        "RoleBinding": (rbac, "role_binding"),
        "ReplicaSet": (client.AppsV1Api(api), "replica_set"),
    }


def replica_sets_to_prune(
    replica_sets: Sequence[Any], current_revision: str | None, keep: int
) -> list[tuple[Any, str]]:
    """(ReplicaSet, why) for each one that may go; pure, for the objects a list returned."""

    def revision(rs: Any) -> int:
        try:
            return int((rs.metadata.annotations or {}).get(REVISION, "0"))
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
        if (rs.spec.replicas or 0) > 0 or (rs.status.replicas or 0) > 0:
            continue
        prune.append((rs, f"old ReplicaSet (revision {revision(rs)}), beyond the newest {keep}"))
    return prune


async def _replica_sets(api: client.ApiClient, namespace: str, deployment: str, keep: int) -> list[Candidate]:
    apps = client.AppsV1Api(api)
    target = await apps.read_namespaced_deployment(deployment, namespace)
    labels = (target.spec.selector.match_labels or {}) if target.spec.selector else {}
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    listed = await apps.list_namespaced_replica_set(namespace, label_selector=selector)
    owned = [
        rs
        for rs in listed.items
        if any(o.uid == target.metadata.uid for o in (rs.metadata.owner_references or []))
    ]
    current = (target.metadata.annotations or {}).get(REVISION)
    return [
        Candidate("ReplicaSet", rs.metadata.name, namespace, rs.metadata.uid, why)
        for rs, why in replica_sets_to_prune(owned, current, keep)
    ]


async def plan(
    api: client.ApiClient,
    spec: CleanupCheck,
    namespaces: Sequence[str],
    review: str,
    version: str,
    target: tuple[str, str, str] | None = None,  # (kind, namespace, name)
) -> tuple[list[Candidate], list[str]]:
    """The objects to delete, and the problems met while looking (one line each)."""
    apis = _apis(api)
    values = [v for v in dict.fromkeys((review, version)) if v and len(v) <= 63 and _LABEL_VALUE.match(v)]
    selector = f"{spec.label} in ({','.join(values)})"
    found: dict[tuple[str, str, str], Candidate] = {}
    problems: list[str] = []
    for namespace in dict.fromkeys(namespaces):
        for kind in dict.fromkeys(spec.kinds):
            owner, suffix = apis[kind]
            try:
                listed = await getattr(owner, f"list_namespaced_{suffix}")(namespace, label_selector=selector)
            except ApiException as error:
                problems.append(f"cannot list {kind} in {namespace}: {error.status} {error.reason}")
                continue
            for obj in listed.items:
                label = (obj.metadata.labels or {}).get(spec.label)
                why = f"label {spec.label}={label}"
                found[(kind, namespace, obj.metadata.name)] = Candidate(
                    kind, obj.metadata.name, namespace, obj.metadata.uid, why
                )
        for named in spec.names:
            key = (named.kind, namespace, named.name)
            if key in found:
                continue
            owner, suffix = apis[named.kind]
            try:
                obj = await getattr(owner, f"read_namespaced_{suffix}")(named.name, namespace)
            except ApiException as error:
                if error.status != 404:
                    problems.append(
                        f"cannot read {named.kind} {namespace}/{named.name}: {error.status} {error.reason}"
                    )
                continue
            found[key] = Candidate(named.kind, named.name, namespace, obj.metadata.uid, "listed by name")
    if spec.keep_replica_sets and target is not None:
        target_kind, namespace, target_name = target
        if target_kind != "Deployment":
            problems.append(f"keepReplicaSets applies to Deployments; the target is a {target_kind}")
        else:
            try:
                for candidate in await _replica_sets(api, namespace, target_name, spec.keep_replica_sets):
                    found[(candidate.kind, namespace, candidate.name)] = candidate
            except ApiException as error:
                problems.append(
                    f"cannot list the ReplicaSets of {target_name}: {error.status} {error.reason}"
                )
    return list(found.values()), problems


async def apply(api: client.ApiClient, candidates: Sequence[Candidate], dry_run: bool) -> None:
    """Delete each candidate (uid precondition), recording the outcome in ``result``."""
    apis = _apis(api)
    for candidate in candidates:
        if dry_run:
            candidate.result = "would delete"
            continue
        owner, suffix = apis[candidate.kind]
        options = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(uid=candidate.uid), propagation_policy="Background"
        )
        try:
            await getattr(owner, f"delete_namespaced_{suffix}")(
                candidate.name, candidate.namespace, body=options
            )
            candidate.result = "deleted"
        except ApiException as error:
            if error.status == 404:
                candidate.result = "already gone"
            elif error.status == 409:
                candidate.result = "replaced since listed; left alone"
            else:
                candidate.result = f"failed: {error.status} {error.reason}"
