"""The one small interface every check provider implements.

Called by ``postdeploy.engine`` once per due check. The engine builds a
``ReviewContext`` (who is being reviewed, since when, with which clients) and the
check's own spec block; the provider returns a ``Measurement``.

Rules every provider keeps:

- never raise for a data-source failure (down, timeout, HTTP 5xx, bad query): return
  ``Measurement.error(...)``; return ``Measurement.no_data(...)`` when the source
  answered but had nothing to say (an empty PromQL vector, zero rows), and
  ``Measurement.not_applicable(...)`` when what the check looks at does not exist for
  this target (no HorizontalPodAutoscaler to check): the check ends Skipped;
- put the *resolved* query (templated, as sent) into ``Measurement.query`` so that
  status and ``kubectl describe`` show exactly what was asked;
- never put secret values (passwords, tokens, DSNs) into any field;
- keep cross-run state (a Job's name, a ``pg_stat_statements`` snapshot) in
  ``Measurement.memo``: the engine stores it in the check's status and hands it back
  as ``ReviewContext.memo`` on the next run, so a restarted operator resumes.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Mapping
from typing import Any, Protocol

from postdeploy.kit import durations

__all__ = [
    "Measurement",
    "MeasurementState",
    "Provider",
    "ReviewContext",
    "Target",
]


class MeasurementState(enum.StrEnum):
    OK = "OK"  # a value was measured
    NO_DATA = "NoData"  # the source answered, but with nothing (-> Inconclusive)
    ERROR = "Error"  # the source is down, timed out or refused the query
    PENDING = "Pending"  # waiting on something outside (a running Job, a person)
    NOT_APPLICABLE = "NotApplicable"  # nothing to measure for this target (-> Skipped)


@dataclasses.dataclass(frozen=True)
class Target:
    kind: str  # Deployment, StatefulSet, DaemonSet, Rollout
    name: str
    namespace: str


@dataclasses.dataclass(frozen=True)
class ReviewContext:
    """What a provider may know about the review it measures for."""

    review_name: str
    review_namespace: str
    review_uid: str
    target: Target
    version: str
    deployed_at: datetime.datetime  # timezone-aware UTC
    now: datetime.datetime  # timezone-aware UTC; the engine's clock for this run
    phase_name: str
    phase_start: datetime.datetime  # absolute window of the check's phase
    phase_end: datetime.datetime
    check_name: str
    memo: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # Values resolved from Secrets for this check (e.g. ``dsn``, ``token``). Never logged.
    secrets: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)
    # Extra template parameters from the review (``spec.parameters``).
    parameters: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # How often this check runs: providers may align evaluation times to a fraction of
    # it, so that identical queries of different reviews coincide and are sent once.
    interval: datetime.timedelta = datetime.timedelta(minutes=1)
    # The review's annotations (manual confirmations live there).
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # The memos of the review's checks by name, read-only: a check may build on what
    # another one kept (a deploy-time snapshot taken by a check of an earlier phase).
    memos: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

    def template_values(self) -> dict[str, str]:
        """Named values a query may refer to as ``{{name}}`` (PromQL, URLs) or
        ``%(name)s`` (SQL parameters).

        Time windows are PromQL durations in whole seconds (at least ``1s``), for
        ranges and offsets: ``sinceDeploy`` (now - deployedAt), ``phaseElapsed``
        (now - the phase's start) and ``phaseLength`` (the phase's end - its start);
        ``rate(x[{{sinceDeploy}}] offset {{sinceDeploy}})`` is the equal period just
        before the deployment.
        """
        values = {
            "target": self.target.name,
            "namespace": self.target.namespace,
            "kind": self.target.kind,
            "version": self.version,
            "deployedAt": self.deployed_at.isoformat(),
            "deployed_at": self.deployed_at.isoformat(),
            "review": self.review_name,
            "phaseStart": self.phase_start.isoformat(),
            "phaseEnd": self.phase_end.isoformat(),
            "sinceDeploy": durations.promql_duration(self.now - self.deployed_at),
            "phaseElapsed": durations.promql_duration(self.now - self.phase_start),
            "phaseLength": durations.promql_duration(self.phase_end - self.phase_start),
        }
        values.update(self.parameters)
        return values


@dataclasses.dataclass(frozen=True)
class Measurement:
    state: MeasurementState
    value: float | None = None
    baseline: float | None = None
    message: str = ""
    query: str | None = None
    # Anything a decision or a report may want: per-series values, rows, statistics.
    # Must be JSON-serialisable and small (the engine truncates what it stores).
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # Cross-run state for this check; replaces the previous memo when not None.
    memo: Mapping[str, Any] | None = None

    @classmethod
    def ok(cls, value: float, **kwargs: Any) -> Measurement:
        return cls(MeasurementState.OK, value=value, **kwargs)

    @classmethod
    def error(cls, message: str, **kwargs: Any) -> Measurement:
        return cls(MeasurementState.ERROR, message=message, **kwargs)

    @classmethod
    def no_data(cls, message: str, **kwargs: Any) -> Measurement:
        return cls(MeasurementState.NO_DATA, message=message, **kwargs)

    @classmethod
    def pending(cls, message: str, **kwargs: Any) -> Measurement:
        return cls(MeasurementState.PENDING, message=message, **kwargs)

    @classmethod
    def not_applicable(cls, message: str, **kwargs: Any) -> Measurement:
        return cls(MeasurementState.NOT_APPLICABLE, message=message, **kwargs)


class Provider(Protocol):
    """One data source. ``spec`` is the check's provider block (a pydantic model
    from ``postdeploy.models``); implementations accept their own block type."""

    async def measure(self, spec: Any, ctx: ReviewContext) -> Measurement: ...
