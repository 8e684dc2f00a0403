"""What a review (or a template) makes the operator do, as the rights its author needs.

Called by ``postdeploy.admission.reviews`` with a review's spec already merged with
its template (``postdeploy.decisions.templates.merge``). Pure: the spec in, a list of
``Access`` out, one per Kubernetes permission the author must hold so that the
operator does nothing for them they could not do themselves:

- ``patch`` on the target (its kind's resource and API group, by name, in its
  namespace) when any enabled check may annotate, pause or roll it back: its
  ``onFailure`` capped by ``spec.rollback.policy`` (``postdeploy.actions.decide``)
  reaches ``annotate`` or more (``notify`` includes ``annotate``), and the review is
  not a dry run;
- ``create jobs.batch`` in the review's namespace for ``job`` checks, and
  ``impersonate serviceaccounts NAME`` when a Job's pod template names a
  ServiceAccount other than ``default`` (Kubernetes has no ``use`` verb for
  ServiceAccounts; impersonating one is the right that says "may act as it", and the
  ``edit`` and ``admin`` roles grant it within their namespace);
- ``get secrets NAME`` for every Secret the review names (``dsnSecretRef``,
  ``authSecretRef``, ``providers.postgresDsnSecretRef``, notification
  ``urlSecretRef``);
- ``delete`` on each kind a ``cleanup`` check deletes, in the namespaces it cleans
  (the review's and the target's), and ``delete replicasets.apps`` for
  ``keepReplicaSets``;
- ``patch configmaps REVIEW-report`` for a ``report`` check (the operator overwrites
  that ConfigMap's data if it exists).

A template has no target: for it (``target=None``) an acting check needs ``patch`` on
every workload kind of ``apps`` in the namespace.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from postdeploy.decisions import templates
from postdeploy.models.checks import Check, OnFailure
from postdeploy.models.people import DEFAULT_CLEANUP_KINDS
from postdeploy.models.reviews import ReviewTemplateSpec

__all__ = ["KINDS", "Access", "for_review", "for_spec", "for_template"]

# Kind -> (API group, resource), for targets and cleanup.
KINDS: dict[str, tuple[str, str]] = {
    "Deployment": ("apps", "deployments"),
    "StatefulSet": ("apps", "statefulsets"),
    "DaemonSet": ("apps", "daemonsets"),
    "Rollout": ("argoproj.io", "rollouts"),
    "ReplicaSet": ("apps", "replicasets"),
    "ConfigMap": ("", "configmaps"),
    "Secret": ("", "secrets"),
    "ServiceAccount": ("", "serviceaccounts"),
    "Service": ("", "services"),
    "Pod": ("", "pods"),
    "Job": ("batch", "jobs"),
    "Role": ("rbac.authorization.k8s.io", "roles"),
    "RoleBinding": ("rbac.authorization.k8s.io", "rolebindings"),
}
_LADDER = (OnFailure.NONE, OnFailure.ANNOTATE, OnFailure.NOTIFY, OnFailure.PAUSE, OnFailure.ROLLBACK)
_RANK = {level: rank for rank, level in enumerate(_LADDER)}
_DOES = {
    OnFailure.ANNOTATE: "annotate",
    OnFailure.NOTIFY: "annotate",
    OnFailure.PAUSE: "pause",
    OnFailure.ROLLBACK: "roll back",
}


@dataclasses.dataclass(frozen=True)
class Access:
    """One permission: ``verb`` on ``resource.group`` (``name`` or all) in ``namespace``."""

    verb: str
    group: str
    resource: str
    namespace: str
    name: str | None
    why: str

    def describe(self) -> str:
        """``patch deployments.apps "prod" in namespace team-a``."""
        resource = f"{self.resource}.{self.group}" if self.group else self.resource
        name = f' "{self.name}"' if self.name else ""
        return f"{self.verb} {resource}{name} in namespace {self.namespace}"

    def key(self) -> tuple[str, str, str, str, str | None]:
        return (self.verb, self.group, self.resource, self.namespace, self.name)


def _level(check: Check, cap: OnFailure) -> OnFailure:
    return check.on_failure if _RANK[check.on_failure] <= _RANK[cap] else cap


def _secret_refs(check: Check) -> Iterable[tuple[str, str]]:
    """(field, Secret name) for each Secret a check names."""
    if check.postgres is not None and check.postgres.dsn_secret_ref is not None:
        yield "postgres.dsnSecretRef", check.postgres.dsn_secret_ref.name
    if check.statistics is not None and check.statistics.dsn_secret_ref is not None:
        yield "statistics.dsnSecretRef", check.statistics.dsn_secret_ref.name
    if check.http is not None and check.http.auth_secret_ref is not None:
        yield "http.authSecretRef", check.http.auth_secret_ref.name


def _service_account(template: Mapping[str, Any]) -> str | None:
    spec = template.get("spec") if isinstance(template, Mapping) else None
    if not isinstance(spec, Mapping):
        return None
    name = spec.get("serviceAccountName") or spec.get("serviceAccount")
    return str(name) if name and name != "default" else None


def for_spec(
    checks: Iterable[Check],
    namespace: str,
    *,
    target: tuple[str, str, str] | None,
    cap: OnFailure = OnFailure.ROLLBACK,
    dry_run: bool = False,
    review_name: str | None = None,
    other_secrets: Iterable[tuple[str, str]] = (),
) -> list[Access]:
    """The accesses for ``checks`` run in ``namespace`` (disabled ones need none).

    ``target`` is (kind, namespace, name), or None for a template."""
    needed: dict[tuple[str, str, str, str, str | None], Access] = {}

    def need(access: Access) -> None:
        needed.setdefault(access.key(), access)

    for check in checks:
        if not check.enabled:
            continue
        level = _level(check, cap)
        if level is not OnFailure.NONE and not dry_run:
            why = f"check {check.name} may {_DOES[level]} the target"
            if target is not None:
                kind, target_namespace, target_name = target
                group, resource = KINDS[kind]
                need(Access("patch", group, resource, target_namespace, target_name, why))
            else:
                for kind in ("Deployment", "StatefulSet", "DaemonSet"):
                    group, resource = KINDS[kind]
                    need(Access("patch", group, resource, namespace, None, why))
        if check.job is not None:
            need(Access("create", "batch", "jobs", namespace, None, f"check {check.name} runs a Job"))
            account = _service_account(check.job.template)
            if account:
                need(
                    Access(
                        "impersonate",
                        "",
                        "serviceaccounts",
                        namespace,
                        account,
                        f"check {check.name}'s Job runs as ServiceAccount {account}",
                    )
                )
        for field, secret in _secret_refs(check):
            need(Access("get", "", "secrets", namespace, secret, f"check {check.name} reads it ({field})"))
        if check.cleanup is not None:
            spaces = [namespace] + ([target[1]] if target is not None else [])
            kinds: list[str] = list(check.cleanup.kinds or DEFAULT_CLEANUP_KINDS)
            kinds += [named.kind for named in check.cleanup.names]
            if check.cleanup.keep_replica_sets:
                kinds.append("ReplicaSet")
            for space in dict.fromkeys(spaces):
                for kind in dict.fromkeys(kinds):
                    group, resource = KINDS[kind]
                    why = f"check {check.name} cleans up {kind}s"
                    need(Access("delete", group, resource, space, None, why))
        if check.report is not None and review_name:
            need(
                Access(
                    "patch",
                    "",
                    "configmaps",
                    namespace,
                    f"{review_name}-report",
                    f"check {check.name} writes the report",
                )
            )
    for field, secret in other_secrets:
        need(Access("get", "", "secrets", namespace, secret, f"the review reads it ({field})"))
    return list(needed.values())


def for_review(review: templates.ResolvedReview, namespace: str, review_name: str) -> list[Access]:
    """The accesses a resolved (merged and validated) review needs of its author."""
    spec = review.spec
    target = (spec.target.kind, spec.target.namespace or namespace, spec.target.name)
    rollback = spec.rollback
    secrets: list[tuple[str, str]] = []
    if spec.providers is not None and spec.providers.postgres_dsn_secret_ref is not None:
        secrets.append(("spec.providers.postgresDsnSecretRef", spec.providers.postgres_dsn_secret_ref.name))
    for receiver in spec.notifications:
        secrets.append((f"spec.notifications[{receiver.name}].urlSecretRef", receiver.url_secret_ref.name))
    return for_spec(
        [check.spec for phase in review.phases for check in phase.checks],
        namespace,
        target=target,
        cap=rollback.policy if rollback else OnFailure.ROLLBACK,
        dry_run=bool(rollback and rollback.dry_run),
        review_name=review_name,
        other_secrets=secrets,
    )


def for_template(spec: Mapping[str, Any], namespace: str) -> list[Access]:
    """The accesses a ReviewTemplate's editor needs: its checks could run for any review
    of its namespace, with any target there. Raises pydantic.ValidationError."""
    template = ReviewTemplateSpec.model_validate(spec)
    checks = [check for phase in template.phases for check in phase.checks]
    accesses = for_spec(checks, namespace, target=None)
    if any(check.report is not None and check.enabled for check in checks):
        accesses.append(
            Access("patch", "", "configmaps", namespace, None, "a check writes a review's report")
        )
    return accesses
