"""What people add to a review, and what the last phases produce, on the wire.

- ``SignoffPolicy`` (``spec.signoffs``) and ``SloTargets`` (``spec.slo``) of a review;
- ``ReviewSignoffSpec``: the ``ReviewSignoff`` resource, one per role and review, whose
  signer the admission webhook stamps from the API server's ``userInfo``
  (``postdeploy.admission``);
- ``CleanupCheck`` and ``ReportCheck``: the provider blocks of phase 5 and phase 4;
- ``FinalReview``: ``status.finalReview``, written once every phase has completed.

Imported by ``models.checks`` and ``models.reviews``; imports nothing of theirs.
"""

from __future__ import annotations

from typing import Annotated, Literal

import pydantic

from postdeploy.models.base import Duration, SpecModel, StatusModel, cel

__all__ = [
    "DEFAULT_ROLES",
    "ActionItem",
    "ChartSpec",
    "CleanupCheck",
    "FinalReview",
    "Impact",
    "NamedObject",
    "ReportCheck",
    "ReviewSignoffSpec",
    "SignedBy",
    "SignoffPolicy",
    "SignoffRecord",
    "SloResult",
    "SloTargets",
]

DEFAULT_ROLES = ("engineering-lead", "operations-lead", "product-owner")
_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Kinds the cleanup may delete; anything else is refused when the review is resolved.
CLEANUP_KINDS = Literal[
    "ConfigMap", "Secret", "ServiceAccount", "Service", "Pod", "Job", "Role", "RoleBinding"
]
DEFAULT_CLEANUP_KINDS: tuple[CLEANUP_KINDS, ...] = (
    "ConfigMap",
    "Secret",
    "ServiceAccount",
    "Service",
    "Pod",
    "Job",
)


Role = Annotated[str, pydantic.Field(pattern=_NAME, max_length=63)]


class SignoffPolicy(SpecModel):
    roles: list[Role] = pydantic.Field(
        default_factory=lambda: list(DEFAULT_ROLES),
        max_length=10,
        description="Roles that must sign off before the review is Complete.",
    )
    required: bool = pydantic.Field(
        default=True, description="false: sign-offs are recorded and reported, but not awaited."
    )


class SloTargets(SpecModel):
    """The final review's targets (the checklist's 'Deployment SLOs met')."""

    deployment_time: Duration = pydantic.Field(
        default="2h", description="Rollout start to rollout complete must take less."
    )
    downtime: Duration = pydantic.Field(
        default="0s", description="Time with zero available replicas must not exceed this."
    )
    error_spike: float = pydantic.Field(
        default=0.01,
        ge=0,
        le=1,
        description="Peak error ratio minus its pre-deploy baseline must stay below.",
    )
    rollback_allowed: bool = pydantic.Field(
        default=False, description="Whether a rollback still meets the SLOs ('Rollback required: No')."
    )
    error_rate_query: str | None = pydantic.Field(
        default=None,
        description="PromQL for the error ratio (0..1); defaults to http_requests_total by code.",
    )


class SignedBy(SpecModel):
    username: str
    uid: str | None = None
    groups: list[str] = pydantic.Field(default_factory=list)


class ReviewSignoffSpec(SpecModel):
    """One role's approval of one review. Immutable once created; delete it to withdraw."""

    model_config = pydantic.ConfigDict(
        json_schema_extra=cel(("self == oldSelf", "a sign-off cannot be changed; delete it and sign again"))
    )

    review: str = pydantic.Field(min_length=1, max_length=253, description="The review's name.")
    role: str = pydantic.Field(pattern=_NAME, max_length=63)
    notes: str = pydantic.Field(default="", max_length=2000)
    signed_by: SignedBy | None = pydantic.Field(
        default=None, description="Set by the admission webhook from the API server's userInfo."
    )
    signed_at: str | None = pydantic.Field(default=None, description="Set by the admission webhook.")


class NamedObject(SpecModel):
    kind: CLEANUP_KINDS
    name: str = pydantic.Field(min_length=1, max_length=253)


class CleanupCheck(SpecModel):
    """Phase 5: deletes what this deployment labelled temporary, and what is listed here.

    An object is temporary for the review when its label ``label`` has the review's
    name or its version as value. Nothing else is ever touched.
    """

    label: str = pydantic.Field(default="postdeploy.io/temporary", min_length=1, max_length=316)
    kinds: list[CLEANUP_KINDS] = pydantic.Field(
        default_factory=lambda: list(DEFAULT_CLEANUP_KINDS),
        description="Kinds searched for the label (Secrets and ServiceAccounts count as credentials).",
    )
    names: list[NamedObject] = pydantic.Field(
        default_factory=list, max_length=50, description="Objects deleted by name, if they exist."
    )
    keep_replica_sets: int = pydantic.Field(
        default=0,
        ge=0,
        le=50,
        description="Prune the target's old ReplicaSets down to this many (0: keep all). The "
        "current one and the one a rollback would go to are always kept.",
    )
    dry_run: bool = pydantic.Field(default=False, description="List what would be deleted; delete nothing.")


class ChartSpec(SpecModel):
    name: str = pydantic.Field(min_length=1, max_length=80, description="The chart's heading.")
    query: str = pydantic.Field(min_length=1, description="PromQL; {{target}}, {{namespace}}... allowed.")
    unit: str = pydantic.Field(default="", max_length=16)


class ReportCheck(SpecModel):
    """Phase 4: writes the deployment report into the ConfigMap ``<review>-report``."""

    charts: list[ChartSpec] | None = pydantic.Field(
        default=None, max_length=8, description="Before/after charts; the four standard ones by default."
    )
    window: Duration | None = pydantic.Field(
        default=None,
        description="How far before deployedAt charts start, and how far after it they end; "
        "default: the time since the deployment, so the deployment is in the middle.",
    )
    step: Duration | None = pydantic.Field(
        default=None, description="Chart resolution; ~120 points by default."
    )


class SloResult(StatusModel):
    name: str  # deploymentTime | downtime | errorSpike | rollbackRequired
    value: str | None = None  # human-readable: "14m", "0s", "0.4%", "No"
    number: float | None = None  # seconds, ratio, 0/1
    target: str
    met: bool | None = None  # None: could not be measured
    detail: str = ""


class Impact(StatusModel):
    tickets: int | None = None
    complaints: int | None = None
    positive: int | None = None
    by: str | None = None
    at: str | None = None


class SignoffRecord(StatusModel):
    role: str
    signed: bool = False
    by: str | None = None
    at: str | None = None
    notes: str = ""


class ActionItem(StatusModel):
    priority: Literal["High", "Medium", "Low"]
    action: str
    source: str  # the check, SLO or note it comes from
    owner: str = ""


class FinalReview(StatusModel):
    verdict: str | None = None
    slos: list[SloResult] = pydantic.Field(default_factory=list)
    impact: Impact | None = None
    signoffs: list[SignoffRecord] = pydantic.Field(default_factory=list)
    awaiting: list[str] = pydantic.Field(default_factory=list)  # roles still to sign
    action_items: list[ActionItem] = pydantic.Field(default_factory=list)
    report: str | None = None  # the ConfigMap holding the report
    computed_at: str | None = None
    completed_at: str | None = None
