"""What a check's run yields, and what it may know: the values between the engine, the
providers, the acting checks and the decisions.

``postdeploy.engine`` builds a ``ReviewContext`` for each due check (who is reviewed,
since when, in which phase, with which memo and Secrets); whatever runs the check —
a provider (``postdeploy.providers``) or an acting check (cleanup in
``postdeploy.actions.cleanups``, the report in ``postdeploy.reports.publishing``) —
returns a ``Measurement``, and ``postdeploy.decisions.checks`` decides it. Plain
frozen dataclasses, no I/O: they sit with the models so that every layer above may
use them.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Mapping
from typing import Any

from postdeploy.kit import durations

__all__ = ["Measurement", "MeasurementState", "ReviewContext", "Target"]


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
