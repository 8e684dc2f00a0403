"""The review, its templates and its status, as they appear on the wire.

``PostDeploymentReviewSpec`` is what a pipeline or a person applies;
``ReviewTemplateSpec`` is the reusable part (phases and checks) shared by
``ReviewTemplate`` and ``ClusterReviewTemplate``. ``ReviewStatus`` is written only
by the operator. ``postdeploy.models.crds`` generates the CRDs from these.
"""

from __future__ import annotations

import datetime
import enum
from typing import Any, Literal

import pydantic
from pydantic import JsonValue

from postdeploy.models.base import Duration, SpecModel, StatusModel, cel
from postdeploy.models.checks import Check, OnFailure, SecretKeyRef

__all__ = [
    "CheckState",
    "CheckStatus",
    "Condition",
    "Phase",
    "PhaseStatus",
    "PostDeploymentReviewSpec",
    "ProviderDefaults",
    "ReviewStatus",
    "ReviewTemplateSpec",
    "RollbackSpec",
    "Target",
    "TemplateRef",
    "Verdict",
]


class Target(SpecModel):
    kind: Literal["Deployment", "StatefulSet", "DaemonSet", "Rollout"] = "Deployment"
    name: str = pydantic.Field(min_length=1, max_length=253)
    namespace: str | None = pydantic.Field(
        default=None, description="Defaults to the review's namespace."
    )


class TemplateRef(SpecModel):
    kind: Literal["ReviewTemplate", "ClusterReviewTemplate"] = "ClusterReviewTemplate"
    name: str = pydantic.Field(min_length=1)


class Phase(SpecModel):
    model_config = pydantic.ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.start) || !has(self.end) || self.start != self.end",
                "a phase's start and end must differ",
            ),
        )
    )

    name: str = pydantic.Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    start: Duration | None = pydantic.Field(default=None, description="Offset from deployedAt.")
    end: Duration | None = pydantic.Field(default=None, description="Offset from deployedAt.")
    interval: Duration | None = pydantic.Field(default=None, description="How often checks run.")
    checks: list[Check] = pydantic.Field(default_factory=list, max_length=100)


class ProviderDefaults(SpecModel):
    prometheus_url: str | None = pydantic.Field(default=None, pattern=r"^https?://")
    alertmanager_url: str | None = pydantic.Field(default=None, pattern=r"^https?://")
    postgres_dsn_secret_ref: SecretKeyRef | None = None


class RollbackSpec(SpecModel):
    policy: OnFailure = pydantic.Field(
        default=OnFailure.NONE,
        description="What a breach of a check with onFailure=rollback may do at most.",
    )
    dry_run: bool = False


class ReviewTemplateSpec(SpecModel):
    description: str | None = None
    interval: Duration | None = None
    parameters: dict[str, str] = pydantic.Field(
        default_factory=dict,
        description="Default named values for queries; a review's parameters override them by name.",
    )
    phases: list[Phase] = pydantic.Field(default_factory=list, max_length=20)


class PostDeploymentReviewSpec(SpecModel):
    model_config = pydantic.ConfigDict(
        json_schema_extra=cel(
            (
                "has(self.templateRef) || (has(self.phases) && size(self.phases) > 0) || "
                "!has(self.useDefaultTemplate) || self.useDefaultTemplate",
                "a review with useDefaultTemplate: false needs templateRef or phases",
            ),
        )
    )

    target: Target
    version: str | None = pydantic.Field(
        default=None, description="Defaults to the target's image tag or app.kubernetes.io/version."
    )
    deployed_at: datetime.datetime | None = pydantic.Field(
        default=None, description="Defaults to the target's rollout time, else the review's creation."
    )
    template_ref: TemplateRef | None = None
    use_default_template: bool = pydantic.Field(
        default=True, description="Without templateRef, start from the built-in checklist template."
    )
    interval: Duration | None = pydantic.Field(default=None, description="Default check interval.")
    providers: ProviderDefaults | None = None
    parameters: dict[str, str] = pydantic.Field(
        default_factory=dict, description="Extra named values for queries."
    )
    phases: list[Phase] = pydantic.Field(
        default_factory=list,
        max_length=20,
        description="Phases and checks; override the template's by name.",
    )
    rollback: RollbackSpec | None = None


class Verdict(enum.StrEnum):
    PENDING = "Pending"
    PASSING = "Passing"
    FAILING = "Failing"
    PASSED = "Passed"
    FAILED = "Failed"
    ROLLED_BACK = "RolledBack"
    INCONCLUSIVE = "Inconclusive"
    INVALID = "Invalid"


class CheckState(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    PASSED = "Passed"
    FAILED = "Failed"
    ERROR = "Error"
    INCONCLUSIVE = "Inconclusive"
    SKIPPED = "Skipped"
    AWAITING_CONFIRMATION = "AwaitingConfirmation"


class Condition(StatusModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class PhaseStatus(StatusModel):
    name: str
    state: Literal["Pending", "Running", "Completed"] = "Pending"
    starts_at: str | None = None
    ends_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None


_FREE: dict[str, JsonValue] = {"x-kubernetes-preserve-unknown-fields": True, "type": "object"}


class Sample(StatusModel):
    t: str
    v: float | None = None
    s: str  # the run's result: Passed, Failed, Error, Inconclusive, Pending


class CheckStatus(StatusModel):
    name: str
    phase: str
    provider: str
    state: CheckState = CheckState.PENDING
    value: float | None = None
    baseline: float | None = None
    fail_when: str | None = None
    pass_when: str | None = None
    query: str | None = None
    message: str = ""
    runs: int = 0
    failures: int = 0
    errors: int = 0
    inconclusives: int = 0
    consecutive_failures: int = 0
    consecutive_errors: int = 0
    last_run: str | None = None
    last_result: str | None = None
    last_slot: int = -1
    details: dict[str, Any] | None = pydantic.Field(default=None, json_schema_extra=_FREE)
    memo: dict[str, Any] | None = pydantic.Field(default=None, json_schema_extra=_FREE)
    history: list[Sample] = pydantic.Field(default_factory=list)


class ReviewStatus(StatusModel):
    phase: str | None = None
    verdict: Verdict | None = None
    version: str | None = None
    deployed_at: str | None = None
    target: str | None = None
    message: str | None = None
    observed_generation: int | None = None
    conditions: list[Condition] = pydantic.Field(default_factory=list)
    phases: list[PhaseStatus] = pydantic.Field(default_factory=list)
    checks: list[CheckStatus] = pydantic.Field(default_factory=list)
    actions: list[dict[str, Any]] = pydantic.Field(
        default_factory=list, json_schema_extra={"items": _FREE}
    )
