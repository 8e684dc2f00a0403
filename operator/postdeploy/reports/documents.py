"""The deployment report as data: summary, action items, remediation, post-mortem.

Called by ``postdeploy.reports.store`` (the operator, in phase 4 and at the final
review) and by the plugin (``kubectl postdeploy report`` when no stored report exists
yet). Pure: it reads the review as fetched (metadata, spec, status), the notes people
recorded (``postdeploy.reports.inputs``) and the chart series, and returns a
``Report`` that ``markdown`` and ``pages`` render.

What goes where:

- *what went well*: checks that passed (with their values), SLOs met;
- *what could be improved*: checks that failed, errored or stayed inconclusive, SLOs
  missed, a rollback;
- *action items*: from failed checks and missed SLOs (High), errors (Medium),
  inconclusive checks (Low), then improvements, tech debt and runbook notes;
- *error remediation*: per error type found by a check whose details list series
  labelled with an error type (phase 2's "new error types"), with the cause, fix and
  priority people recorded (``note --remediation TYPE``);
- *post-mortem*: a template with the timeline filled in, when a check failed or the
  target was rolled back.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from postdeploy.decisions import slos as slo_decisions
from postdeploy.kit import details as details_
from postdeploy.kit import times
from postdeploy.models.people import ActionItem, FinalReview, SloResult
from postdeploy.models.reviews import CheckState, CheckStatus, ReviewStatus
from postdeploy.reports import inputs

__all__ = ["CHECK_COLUMNS", "HISTORY_UNITS", "Chart", "Report", "build", "check_rows", "fmt"]

# The units of the built-in checklist's checks (crds/postdeploy-default.yaml), for charts
# drawn from a check's own history; other checks' charts show plain numbers.
HISTORY_UNITS = {
    "error-rate": "ratio",
    "latency-p95": "s",
    "throughput": "req/s",
    "cpu-usage": "ratio",
    "memory-usage": "ratio",
    "replicas-ready": "ratio",
    "replicas-available": "ratio",
}


@dataclasses.dataclass(frozen=True)
class Chart:
    title: str
    unit: str
    points: tuple[tuple[float, float], ...]  # (unix seconds, value)
    source: str  # the PromQL or "check NAME"
    # The time window the chart spans (unix seconds); None: the points' own extent.
    start: float | None = None
    end: float | None = None


@dataclasses.dataclass(frozen=True)
class Report:
    name: str
    namespace: str
    target: str
    version: str
    deployed_at: str
    verdict: str
    phase: str
    generated_at: str
    went_well: tuple[str, ...]
    improve: tuple[str, ...]
    action_items: tuple[ActionItem, ...]
    checks: tuple[CheckStatus, ...]
    remediation: tuple[dict[str, Any], ...]
    notes: tuple[dict[str, Any], ...]
    final: FinalReview | None
    impact: dict[str, Any] | None
    postmortem: dict[str, Any] | None
    cleanup: tuple[dict[str, Any], ...]
    charts: tuple[Chart, ...]
    deployed_epoch: float | None


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value != 0 and (abs(value) < 0.001 or abs(value) >= 1e6):
        return f"{value:.3g}"
    return f"{value:.4g}"


def threshold(check: CheckStatus) -> str:
    parts = []
    if check.fail_when:
        parts.append(f"fail when {check.fail_when}")
    if check.pass_when:
        parts.append(f"pass when {check.pass_when}")
    return "; ".join(parts) or "-"


CHECK_COLUMNS = ["Check", "Phase", "State", "Value", "Baseline", "Threshold", "Runs", "Message"]


def check_rows(report: Report) -> list[list[Any]]:
    """The checks table, one row per check under CHECK_COLUMNS (Markdown and HTML alike)."""
    return [
        [c.name, c.phase, c.state.value, fmt(c.value), fmt(c.baseline), threshold(c), c.runs, c.message[:200]]
        for c in report.checks
    ]


def _error_types(check: CheckStatus) -> list[tuple[str, float | None]]:
    details = check.details or {}
    rows: list[tuple[str, float | None]] = []
    for key in details_.ERROR_TYPE_LISTS:
        for item in details_.listed(details, key):
            kind = details_.error_type(item)
            if kind is None:
                continue
            raw = item.get("value", item.get("count"))
            try:
                count = float(raw) if raw is not None else None
            except (TypeError, ValueError):
                count = None
            rows.append((kind, count))
    return rows


def remediation(checks: Sequence[CheckStatus], notes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    planned = {str(n.get("type")): n for n in notes if n.get("kind") == "remediation" and n.get("type")}
    table: dict[str, dict[str, Any]] = {}
    for check in checks:
        for kind, count in _error_types(check):
            row = table.setdefault(kind, {"type": kind, "count": 0.0, "check": check.name})
            row["count"] = (row["count"] or 0.0) + (count or 0.0)
    for kind in planned:
        table.setdefault(kind, {"type": kind, "count": None, "check": "-"})
    for kind, row in table.items():
        note = planned.get(kind, {})
        row["cause"] = str(note.get("cause", "") or "")
        row["fix"] = str(note.get("fix", "") or "")
        row["priority"] = str(note.get("priority", "") or "")
    return sorted(table.values(), key=lambda r: -(r["count"] or 0))


def _first_failure(check: CheckStatus) -> str | None:
    return next((s.t for s in check.history if s.s == "Failed"), check.last_run)


def _postmortem(status: ReviewStatus, deployed_at: str) -> dict[str, Any] | None:
    failed = [c for c in status.checks if c.state is CheckState.FAILED]
    rollbacks = [
        a for a in getattr(status, "actions", []) if a.action == "rollback" and a.state.value == "Done"
    ]
    if not failed and not rollbacks:
        return None
    timeline = [(deployed_at, "deployment rolled out")]
    for check in failed:
        timeline.append((_first_failure(check) or "", f"check {check.name} failed: {check.message}"[:300]))
    for action in getattr(status, "actions", []):
        if action.state.value in ("Done", "DryRun", "Failed"):
            timeline.append(
                (
                    action.at or action.decided_at or "",
                    f"{action.action} {action.state.value}: {action.cause or action.reason or ''}"[:300],
                )
            )
    timeline.sort(key=lambda e: e[0])
    return {
        "title": "Post-mortem",
        "trigger": "rolled back" if rollbacks else "check(s) failed",
        "failed": [c.name for c in failed],
        "timeline": timeline,
    }


def _cleanup(checks: Sequence[CheckStatus]) -> list[dict[str, Any]]:
    rows = []
    for check in checks:
        if check.provider != "cleanup" or not check.details:
            continue
        for item in check.details.get("objects") or []:
            if isinstance(item, Mapping):
                rows.append({**item, "check": check.name})
    return rows


def build(
    body: Mapping[str, Any],
    charts: Sequence[Chart] = (),
    now: datetime.datetime | None = None,
) -> Report:
    metadata = body.get("metadata") or {}
    annotations = dict(metadata.get("annotations") or {})
    raw_status = dict(body.get("status") or {})
    status = ReviewStatus.model_validate(raw_status)
    final_raw = raw_status.get("finalReview")
    final = FinalReview.model_validate(final_raw) if final_raw else None
    notes = inputs.notes(annotations)
    slos: Sequence[SloResult] = final.slos if final else ()
    went_well: list[str] = []
    improve: list[str] = []
    for check in status.checks:
        value = f" (value {fmt(check.value)})" if check.value is not None else ""
        if check.state is CheckState.PASSED:
            went_well.append(f"{check.name}: passed{value}")
        elif check.state in (CheckState.FAILED, CheckState.ERROR, CheckState.INCONCLUSIVE):
            improve.append(f"{check.name}: {check.state.value.lower()}{value}: {check.message}"[:400])
    for slo in slos:
        line = f"SLO {slo.name}: {slo.value or 'unknown'} (target {slo.target})"
        if slo.met:
            went_well.append(line)
        elif slo.met is False:
            improve.append(line + " missed")
    for note in notes:
        if note["kind"] == "lesson":
            (improve if note.get("category", "").lower() == "problem" else went_well).append(
                f"lesson: {note['text']}"
            )
    items = final.action_items if final else slo_decisions.action_items(status.checks, slos, notes)
    deployed = status.deployed_at or ""
    epoch = None
    if deployed:
        epoch = times.parse(deployed).timestamp()
    return Report(
        name=str(metadata.get("name", "")),
        namespace=str(metadata.get("namespace", "")),
        target=status.target or "-",
        version=status.version or "-",
        deployed_at=deployed or "-",
        verdict=(final.verdict if final and final.verdict else None) or (status.verdict or "Pending"),
        phase=status.phase or "Pending",
        generated_at=(now or datetime.datetime.now(datetime.UTC)).isoformat(timespec="seconds"),
        went_well=tuple(went_well),
        improve=tuple(improve),
        action_items=tuple(items),
        checks=tuple(status.checks),
        remediation=tuple(remediation(status.checks, notes)),
        notes=tuple(notes),
        final=final,
        impact=final.impact.dump() if final and final.impact else inputs.impact(annotations),
        postmortem=_postmortem(status, deployed or "-"),
        cleanup=tuple(_cleanup(status.checks)),
        charts=tuple(charts),
        deployed_epoch=epoch,
    )


def history_charts(checks: Sequence[CheckStatus]) -> list[Chart]:
    """Charts from the checks' own history (for a report made without Prometheus)."""
    charts = []
    for check in checks:
        points = []
        for sample in check.history:
            if sample.v is None:
                continue
            at = times.parse(sample.t).timestamp()
            points.append((at, sample.v))
        if len(points) >= 2 and check.provider in ("prometheus", "kubernetes"):
            unit = HISTORY_UNITS.get(check.name, "")
            charts.append(Chart(check.name, unit, tuple(points), f"check {check.name}"))
    return charts[:8]
