"""A check and its provider blocks.

A check names exactly one provider block (the factory in ``postdeploy.providers``
picks the provider by which block is set), an optional baseline, the decision
(``failWhen``/``passWhen`` in the condition language of
``postdeploy.decisions.conditions``) and limits.
"""

from __future__ import annotations

import enum
import functools
from typing import Annotated, Any, Literal

import pydantic

from postdeploy.kit import durations
from postdeploy.models.base import Duration, SpecModel, cel
from postdeploy.models.people import CleanupCheck, ReportCheck

__all__ = [
    "PROVIDER_FIELDS",
    "AlertmanagerCheck",
    "Baseline",
    "Check",
    "Comparison",
    "HttpCheck",
    "JobCheck",
    "KubernetesCheck",
    "KubernetesMeasure",
    "ManualCheck",
    "OnFailure",
    "PostgresCheck",
    "PrometheusCheck",
    "SecretKeyRef",
    "SlowStatements",
    "StatisticsCheck",
    "Window",
]

# A check name; also how one check refers to another.
CHECK_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
WINDOWS = ("phase", "sinceDeploy")


def _check_window(value: str) -> str:
    if value not in WINDOWS:
        durations.parse_duration(value)
    return value


# A duration, or a window that moves with the review: ``phase`` (from the phase's start
# until now) or ``sinceDeploy`` (from deployedAt until now).
Window = Annotated[
    str,
    pydantic.Field(
        pattern="^(" + "|".join(WINDOWS) + "|" + durations.PATTERN.strip("^$") + ")$", max_length=32
    ),
    pydantic.AfterValidator(_check_window),
]


class SecretKeyRef(SpecModel):
    """A key of a Secret in the review's namespace; values never leave the operator."""

    name: str = pydantic.Field(min_length=1)
    key: str = pydantic.Field(min_length=1)


class OnFailure(enum.StrEnum):
    NONE = "none"
    ANNOTATE = "annotate"
    NOTIFY = "notify"
    PAUSE = "pause"
    ROLLBACK = "rollback"


class KubernetesMeasure(enum.StrEnum):
    ROLLOUT_COMPLETE = "rolloutComplete"  # 1 when the rollout finished, else 0
    READY_RATIO = "readyRatio"  # ready replicas / desired replicas
    AVAILABLE_RATIO = "availableRatio"  # available replicas / desired replicas
    RESTARTS = "restarts"  # container restarts since deployedAt
    CRASH_LOOPS = "crashLoops"  # containers waiting in CrashLoopBackOff
    IMAGE_PULL_ERRORS = "imagePullErrors"  # containers waiting in ErrImagePull/ImagePullBackOff
    UNHEALTHY_WORKLOADS = "unhealthyWorkloads"  # workloads in the namespace not fully available
    HPA_HEALTHY = "hpaHealthy"  # 1 when the target's HPA can scale and is active
    NODE_PRESSURE = "nodePressure"  # nodes hosting target pods with a pressure condition


class KubernetesCheck(SpecModel):
    measure: KubernetesMeasure


class Comparison(SpecModel):
    """Compare counts since the deployment with counts before it, anytime-valid
    (``postdeploy.decisions.sequential``; docs/judge.md).

    ``query`` then counts events per batch with ``{{window}}`` as its range, e.g.
    ``sum(increase(http_requests_total{..., code=~"5.."}[{{window}}]))``, and ``total``
    all requests the same way; with ``buckets`` the query returns a histogram's
    buckets by ``le`` instead and the share of requests slower than a boundary near
    the before-window's ``quantile`` is compared. Batches of ``step`` are anchored at
    deployedAt; batch i's before-window is ``multiplier`` times as long, mirrored
    before deployedAt, or, with ``offset``, the same batch that long earlier. The value
    is the ratio of shares (after/before); details carry ratioLower, ratioUpper,
    pValue (for no rise beyond minEffect), alpha, minEffect and the counts."""

    # No CEL rule for "total or buckets": a review overrides single fields of the
    # template's compare block ({minEffect: 0.5}); the merged check is validated.

    total: str | None = pydantic.Field(
        default=None, min_length=1, description="All requests per batch (with {{window}}); not with buckets."
    )
    buckets: bool = pydantic.Field(default=False, description="query returns histogram buckets by le.")
    quantile: float = pydantic.Field(default=0.95, gt=0, lt=1)
    boundary: float | None = pydantic.Field(
        default=None,
        gt=0,
        description="The le bound to compare above; by default the one nearest the quantile.",
    )
    alpha: float = pydantic.Field(
        default=0.005, gt=0, lt=1, description="False-failure probability over all runs of the comparison."
    )
    min_effect: float = pydantic.Field(
        default=0.2, ge=0, le=1000, description="Relative rise of the share worth acting on (0.2: +20%)."
    )
    multiplier: int = pydantic.Field(
        default=6, ge=1, le=100, description="Before-window length / batch length."
    )
    offset: Duration | None = pydantic.Field(
        default=None, description="Compare with the same batch this long earlier (e.g. 1w) instead."
    )
    min_requests: int = pydantic.Field(
        default=100, ge=1, le=1_000_000_000, description="Requests needed on each side before a run can pass."
    )

    @pydantic.model_validator(mode="after")
    def _total_or_buckets(self) -> Comparison:
        if (self.total is None) == (not self.buckets):
            raise ValueError("compare takes total (counts) or buckets: true (a histogram), exactly one")
        return self


class PrometheusCheck(SpecModel):
    """A PromQL query. Instant by default; with ``range`` a range query whose samples
    are reduced (``reduce``) to one value, or tested for a trend (``trend``); with
    ``compare`` counts after vs before the deployment (``Comparison``)."""

    model_config = pydantic.ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.trend) || !has(self.aggregate) || self.aggregate != 'count'",
                "aggregate count takes no trend",
            ),
            (
                "!has(self.compare) || (!has(self.range) && !has(self.trend))",
                "compare takes no range or trend",
            ),
        )
    )

    query: str = pydantic.Field(min_length=1)
    address: str | None = pydantic.Field(
        default=None, description="Overrides the review's / operator's Prometheus URL."
    )
    # How several series become one value: the worst (max) by default; count: how
    # many series there are (no series is the value 0, not missing data).
    aggregate: Literal["max", "min", "sum", "mean", "count"] = "max"
    range: Window | None = pydantic.Field(
        default=None,
        description="Evaluate over [now-range, now]: a duration, 'phase' (since the phase "
        "started) or 'sinceDeploy' (since deployedAt).",
    )
    step: Duration = "60s"
    reduce: Literal["last", "mean", "max", "min"] = "last"
    trend: Literal["slope", "mannKendall", "timeToLimit", "relativeChange"] | None = pydantic.Field(
        default=None,
        description="slope: per-hour slope of a linear fit; mannKendall: Kendall tau (details "
        "carry the p-value); timeToLimit: hours until the fit reaches limitQuery; "
        "relativeChange: change of the Theil-Sen line over the window relative to its start "
        "(details: absoluteChange, Mann-Kendall pValue).",
    )
    limit_query: str | None = None
    compare: Comparison | None = None

    @pydantic.model_validator(mode="after")
    def _count_takes_no_trend(self) -> PrometheusCheck:
        if self.aggregate == "count" and self.trend is not None:
            raise ValueError("aggregate count takes no trend")
        if self.compare is not None and (self.range is not None or self.trend is not None):
            raise ValueError("compare takes no range or trend")
        return self


class AlertmanagerCheck(SpecModel):
    """Counts active alerts (silenced and inhibited ones excluded) matching all matchers."""

    matchers: list[str] = pydantic.Field(
        default_factory=list,
        description='Alertmanager matchers such as severity="critical" or service=~"{{target}}.*".',
    )
    address: str | None = None


class SlowStatements(SpecModel):
    """Statements from ``pg_stat_statements`` that are slow since the deployment.

    The first run keeps a snapshot (calls and total time per statement) in the check's
    memo; later runs take the difference, so the mean covers only executions since the
    snapshot. A statement is flagged when that mean exceeds ``threshold`` over at least
    ``minCalls`` executions and it is new since the snapshot or slower than before it by
    more than ``slowerBy``. The value is the number of flagged statements.
    """

    threshold: Duration = pydantic.Field(default="1s", description="Mean execution time that is slow.")
    min_calls: int = pydantic.Field(default=1, ge=1, le=1_000_000_000)
    slower_by: float = pydantic.Field(
        default=0.2, ge=0, le=1000, description="Relative increase of the mean that counts as slower."
    )
    snapshot_from: str | None = pydantic.Field(
        default=None,
        pattern=CHECK_NAME,
        max_length=63,
        description="Use the snapshot kept by this check (a slowStatements check of an earlier "
        "phase that ran at the deployment) instead of taking one at this check's first run.",
    )
    snapshot_limit: int = pydantic.Field(
        default=500, ge=1, le=5000, description="Statements kept in the snapshot, by total time."
    )


class PostgresCheck(SpecModel):
    """Read-only SQL with named parameters (%(deployed_at)s, %(version)s, %(target)s...),
    or ``slowStatements`` from ``pg_stat_statements``."""

    model_config = pydantic.ConfigDict(
        json_schema_extra=cel(
            ("has(self.query) != has(self.slowStatements)", "postgres takes query or slowStatements"),
        )
    )

    query: str | None = pydantic.Field(default=None, min_length=1)
    slow_statements: SlowStatements | None = None
    dsn_secret_ref: SecretKeyRef | None = None
    column: str | None = pydantic.Field(
        default=None, description="Column of the first row holding the value; the first column by default."
    )
    timeout: Duration = "10s"
    row_limit: int = pydantic.Field(default=100, ge=1, le=10000)
    optional: bool = pydantic.Field(
        default=False,
        description="Skipped, not Error, when no PostgreSQL DSN is configured anywhere "
        "(check, review, operator): for checks that only make sense where a database is.",
    )

    @pydantic.model_validator(mode="after")
    def _query_or_slow_statements(self) -> PostgresCheck:
        if (self.query is None) == (self.slow_statements is None):
            raise ValueError("postgres takes query or slowStatements (exactly one)")
        return self


class HttpCheck(SpecModel):
    url: str = pydantic.Field(pattern=r"^https?://")
    method: Literal["GET", "POST"] = "GET"
    json_path: str = pydantic.Field(default="$", description="JSONPath picking the value.")
    headers: dict[str, str] = pydantic.Field(default_factory=dict)
    auth_secret_ref: SecretKeyRef | None = pydantic.Field(
        default=None, description="A bearer token sent as Authorization."
    )
    timeout: Duration = "10s"
    expect_status: int = pydantic.Field(default=200, ge=100, le=599)


class JobCheck(SpecModel):
    """Runs a Job from a pod template; the value is 1 when it succeeded, 0 when it failed."""

    template: dict[str, Any] = pydantic.Field(
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True, "type": "object"},
        description="A PodTemplateSpec.",
    )
    backoff_limit: int = pydantic.Field(default=0, ge=0, le=10)
    active_deadline: Duration = "30m"
    log_lines: int = pydantic.Field(default=20, ge=0, le=500)


class ManualCheck(SpecModel):
    """Pending until a person confirms it (``kubectl postdeploy confirm``)."""

    description: str = ""
    remind_after: Duration | None = None


class StatisticsCheck(SpecModel):
    """A test over counts from SQL rows: ``group``, ``trials`` and ``successes`` columns.

    twoProportion: variants against a control (A/B tests, with a sample-ratio check);
    sampleRatio: the groups' sizes against ``expectedRatios``; proportionChange: the
    second row's rate against the first's (a period against the one before it), with
    the baseline's tolerance."""

    test: Literal["twoProportion", "sampleRatio", "proportionChange"]
    query: str = pydantic.Field(min_length=1)
    dsn_secret_ref: SecretKeyRef | None = None
    control: str | None = None
    alpha: float = pydantic.Field(default=0.05, gt=0, lt=1)
    expected_ratios: list[Annotated[float, pydantic.Field(gt=0)]] | None = pydantic.Field(
        default=None, max_length=20
    )
    optional: bool = pydantic.Field(
        default=False,
        description="Skipped, not Error, when no PostgreSQL DSN is configured anywhere "
        "(check, review, operator): for checks that only make sense where a database is.",
    )


class Baseline(SpecModel):
    """What the value is compared with: the same measurement at an earlier time."""

    offset: Duration | None = pydantic.Field(
        default=None, description="The same query this long ago, e.g. 1w for the same hour last week."
    )
    pre_deploy: bool = pydantic.Field(
        default=False, description="The same query evaluated at deployedAt (just before the deployment)."
    )
    tolerance: float = pydantic.Field(
        default=0.1, ge=0, le=1000, description="Relative tolerance, available as `tolerance` in conditions."
    )


PROVIDER_FIELDS = (
    "kubernetes",
    "prometheus",
    "alertmanager",
    "postgres",
    "http",
    "job",
    "manual",
    "statistics",
    "cleanup",
    "report",
)
# In a review a check may name no provider: it then overrides fields of the template's
# check of the same name. After merging, exactly one is required (``resolved()``).
_AT_MOST_ONE_PROVIDER = (
    "[" + ", ".join(f"has(self.{f})" for f in PROVIDER_FIELDS) + "].filter(x, x).size() <= 1"
)


class Check(SpecModel):
    model_config = pydantic.ConfigDict(
        json_schema_extra=cel(
            (_AT_MOST_ONE_PROVIDER, "a check takes at most one provider: " + ", ".join(PROVIDER_FIELDS)),
            (
                "!has(self.baseline) || !has(self.baseline.offset) || !has(self.baseline.preDeploy) "
                "|| !self.baseline.preDeploy",
                "baseline: choose offset or preDeploy, not both",
            ),
        )
    )

    name: str = pydantic.Field(pattern=CHECK_NAME, max_length=63)
    description: str | None = None
    interval: Duration | None = pydantic.Field(default=None, description="Overrides the phase's interval.")
    fail_when: str | None = pydantic.Field(default=None, max_length=1024)
    pass_when: str | None = pydantic.Field(default=None, max_length=1024)
    baseline: Baseline | None = None
    failure_limit: int = pydantic.Field(default=0, ge=0, le=1_000_000, description="Failed runs tolerated.")
    consecutive_error_limit: int = pydantic.Field(default=4, ge=0, le=1_000_000)
    inconclusive_limit: int = pydantic.Field(default=0, ge=0, le=1_000_000)
    treat_missing_as_failure: bool = False
    on_failure: OnFailure = OnFailure.NONE
    enabled: bool = True

    kubernetes: KubernetesCheck | None = None
    prometheus: PrometheusCheck | None = None
    alertmanager: AlertmanagerCheck | None = None
    postgres: PostgresCheck | None = None
    http: HttpCheck | None = None
    job: JobCheck | None = None
    manual: ManualCheck | None = None
    statistics: StatisticsCheck | None = None
    cleanup: CleanupCheck | None = None
    report: ReportCheck | None = None

    @pydantic.model_validator(mode="after")
    def _at_most_one_provider(self) -> Check:
        chosen = [f for f in PROVIDER_FIELDS if getattr(self, f) is not None]
        if len(chosen) > 1:
            raise ValueError(
                f"check {self.name!r} takes one provider, got {len(chosen)}: {', '.join(chosen)}"
            )
        if self.baseline and self.baseline.offset and self.baseline.pre_deploy:
            raise ValueError(f"check {self.name!r}: baseline takes offset or preDeploy, not both")
        return self

    def resolved(self) -> Check:
        """This check, asserted complete: exactly one provider. Raises ValueError."""
        if not any(getattr(self, f) is not None for f in PROVIDER_FIELDS):
            raise ValueError(
                f"check {self.name!r} names no provider ({', '.join(PROVIDER_FIELDS)}) and no "
                "template check of that name supplies one"
            )
        return self

    @functools.cached_property
    def provider_name(self) -> str:
        # Asked several times per check per tick; checks are frozen, so once is enough.
        return next(f for f in PROVIDER_FIELDS if getattr(self, f) is not None)

    @property
    def provider_spec(self) -> SpecModel:
        block = getattr(self, self.provider_name)
        assert isinstance(block, SpecModel)
        return block
