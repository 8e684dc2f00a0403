"""The review, its templates and its status, as they appear on the wire.

``PostDeploymentReviewSpec`` is what a pipeline or a person applies;
``ReviewTemplateSpec`` is the reusable part (phases and checks) shared by
``ReviewTemplate`` and ``ClusterReviewTemplate``. ``ReviewStatus`` is written only
by the operator. ``postdeploy.models.crds`` generates the CRDs from these.
"""

from __future__ import annotations

import datetime
import enum
from typing import Annotated, Any, Literal

import pydantic
from pydantic import JsonValue

from postdeploy.models.base import Duration, SpecModel, StatusModel, cel
from postdeploy.models.checks import Check, OnFailure, SecretKeyRef
from postdeploy.models.people import FinalReview, SignoffPolicy, SloTargets

__all__ = [
    "COMPLETED",
    "EARLIEST",
    "INVALID",
    "LATEST",
    "ActionRecord",
    "ActionState",
    "CheckState",
    "CheckStatus",
    "Condition",
    "Delivery",
    "NotificationRecord",
    "NotificationTarget",
    "Phase",
    "PhaseState",
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


# deployedAt lies in [EARLIEST, LATEST): with durations of at most 3650d every time
# the engine derives from it is a valid datetime (kit/durations.py).
EARLIEST = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
LATEST = datetime.datetime(2200, 1, 1, tzinfo=datetime.UTC)


class Target(SpecModel):
    kind: Literal["Deployment", "StatefulSet", "DaemonSet", "Rollout"] = "Deployment"
    name: str = pydantic.Field(min_length=1, max_length=253)
    namespace: str | None = pydantic.Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=63,
        description="Defaults to the review's namespace. Another namespace only where the "
        "operator allows the pair (--allow-cross-namespace FROM=TO).",
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
    """How far a breach may act on the target; each check's onFailure asks, this caps."""

    policy: OnFailure = pydantic.Field(
        default=OnFailure.ROLLBACK,
        description="The strongest action any check's onFailure may take, on the ladder "
        "none < annotate < notify < pause < rollback (each includes the ones before it). "
        "rollback: as the checks ask; notify: tell people, change nothing but annotations; "
        "annotate: only annotate the target; none: do nothing.",
    )
    dry_run: bool = pydantic.Field(
        default=False,
        description="Record in status what would have been done; annotate, pause and roll "
        "back nothing (notifications still go out, marked dryRun).",
    )
    allow_git_ops: bool = pydantic.Field(
        default=False,
        description="Roll back a target managed by Argo CD or Flux too; by default such a "
        "target is annotated and notified instead, as a GitOps sync would undo the rollback.",
    )


class NotificationTarget(SpecModel):
    """A webhook receiving one message per state change (breach, pause, rollback, completion)."""

    name: str = pydantic.Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    url_secret_ref: SecretKeyRef = pydantic.Field(
        description="The webhook URL, from a Secret in the review's namespace."
    )
    format: Literal["json", "slack"] = pydantic.Field(
        default="json", description="json: the message as a JSON object; slack: an incoming-webhook body."
    )


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
            (
                "!has(self.deployedAt) || (self.deployedAt >= timestamp('1970-01-01T00:00:00Z') "
                "&& self.deployedAt < timestamp('2200-01-01T00:00:00Z'))",
                "deployedAt must lie between 1970-01-01 and 2200-01-01",
            ),
        )
    )

    target: Target
    version: str | None = pydantic.Field(
        default=None,
        max_length=128,
        description="Defaults to the target's image tag or app.kubernetes.io/version.",
    )
    deployed_at: datetime.datetime | None = pydantic.Field(
        default=None,
        description="Defaults to the target's rollout time, else the review's creation. "
        "Between 1970-01-01 and 2200-01-01.",
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
    notifications: list[NotificationTarget] = pydantic.Field(
        default_factory=list, max_length=10, description="Webhooks told about breaches and outcomes."
    )
    signoffs: SignoffPolicy | None = pydantic.Field(
        default=None,
        description="Roles that sign off in the final review (default: engineering-lead, "
        "operations-lead, product-owner; awaited by default only on the built-in checklist).",
    )
    slo: SloTargets | None = pydantic.Field(default=None, description="The final review's SLO targets.")

    @pydantic.field_validator("deployed_at")
    @classmethod
    def _deployed_at_in_range(cls, value: datetime.datetime | None) -> datetime.datetime | None:
        if value is None:
            return None
        aware = value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
        if not EARLIEST <= aware < LATEST:
            raise ValueError("deployedAt must lie between 1970-01-01 and 2200-01-01")
        return value

    @pydantic.field_validator("notifications")
    @classmethod
    def _unique_receivers(cls, value: list[NotificationTarget]) -> list[NotificationTarget]:
        names = [n.name for n in value]
        if len(set(names)) != len(names):
            raise ValueError("notification names must be unique")
        return value


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


# A phase's state in ``status.phases[]``.
PhaseState = Literal["Pending", "Running", "Completed"]
# ``status.phase`` is the running phase's name, ``Pending`` before the first one, and
# one of these once no phase will run: every phase completed, or the spec is invalid.
COMPLETED = "Completed"
INVALID = "Invalid"


class Condition(StatusModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class PhaseStatus(StatusModel):
    name: str
    state: PhaseState = "Pending"
    starts_at: str | None = None
    ends_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None


_FREE: dict[str, JsonValue] = {"x-kubernetes-preserve-unknown-fields": True, "type": "object"}


class Sample(StatusModel):
    """One run of a check: when (t), the value (v) and the result (s, left out when Passed)."""

    t: str
    v: float | None = None
    s: str = pydantic.Field(
        default="Passed",
        description="The run's result: Passed (when absent), Failed, Error, Inconclusive, Skipped.",
        exclude_if=lambda value: value == "Passed",
    )


def _zero(value: int) -> bool:
    return value == 0


# Counts left out of a check's status while they are 0, as Kubernetes leaves out a zero
# readyReplicas: most checks never error, and consecutive counts are 0 between streaks.
# ``runs`` and ``failures`` are always written (the spec's status fields a reader expects).
# Field by field (``exclude_if``) rather than a model serializer that deletes keys from
# the dumped dict: pydantic skips them in Rust, and a tick dumps every check and sample
# (a model serializer per Sample took 2.9x the time of the list's dump without it).
_ZeroOmitted = Annotated[int, pydantic.Field(exclude_if=_zero)]


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
    errors: _ZeroOmitted = 0
    inconclusives: _ZeroOmitted = 0
    consecutive_failures: _ZeroOmitted = 0
    consecutive_errors: _ZeroOmitted = 0
    last_run: str | None = None
    last_result: str | None = None
    # Left out while -1: nothing ran yet, or a settled check.
    last_slot: int = pydantic.Field(default=-1, exclude_if=lambda value: value == -1)
    details: dict[str, Any] | None = pydantic.Field(default=None, json_schema_extra=_FREE)
    memo: dict[str, Any] | None = pydantic.Field(default=None, json_schema_extra=_FREE)
    history: list[Sample] = pydantic.Field(default_factory=list)
    rerun: str | None = None  # the last `kubectl postdeploy rerun` token acted on


class ActionState(enum.StrEnum):
    PENDING = "Pending"  # decided, nothing done yet
    APPLYING = "Applying"  # planned (from/to recorded); the target may or may not be patched yet
    DONE = "Done"
    DRY_RUN = "DryRun"  # what would have been done is recorded; nothing was changed
    SKIPPED = "Skipped"  # deliberately not done; `reason` says why
    FAILED = "Failed"  # could not be done; `reason` says why

    @property
    def final(self) -> bool:
        return self not in (ActionState.PENDING, ActionState.APPLYING)


class ActionRecord(StatusModel):
    """One action on a breach, written before it is carried out (see postdeploy.engine.executions)."""

    id: str
    action: Literal["none", "annotate", "notify", "pause", "rollback"]
    state: ActionState = ActionState.PENDING
    check: str | None = None
    requested: str | None = None  # the check's onFailure
    cause: str = ""
    value: float | None = None
    threshold: str | None = None
    dry_run: bool = False
    reason: str | None = None  # why downgraded, skipped or failed
    decided_at: str | None = None
    at: str | None = None  # when it reached its final state
    attempts: int = 0
    from_revision: str | None = None
    to_revision: str | None = None
    from_image: str | None = None
    to_image: str | None = None
    source: str | None = None  # the ReplicaSet / ControllerRevision / stable hash rolled back to
    from_template: str | None = None  # fingerprint of the target's template when the rollback was planned


class Delivery(StatusModel):
    receiver: str
    state: Literal["Pending", "Delivered", "Failed"] = "Pending"
    attempts: int = 0
    at: str | None = None
    error: str | None = None


class NotificationRecord(StatusModel):
    """One message (a state change), and its delivery to each receiver."""

    id: str  # breach-CHECK, pause, rollback, completion
    event: str
    created_at: str
    payload: dict[str, Any] = pydantic.Field(default_factory=dict, json_schema_extra=_FREE)
    deliveries: list[Delivery] = pydantic.Field(default_factory=list)


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
    actions: list[ActionRecord] = pydantic.Field(default_factory=list)
    notifications: list[NotificationRecord] = pydantic.Field(default_factory=list)
    final_review: FinalReview | None = None
