"""The final review's SLO table and action items, from what the review measured.

Called by ``postdeploy.engine.finals`` once every phase has completed, and by the
report. Pure: the engine gathers the inputs (rollout times, availability samples,
error-ratio series, whether a rollback happened) and this module judges them
against ``spec.slo`` (``SloTargets``):

- deployment time: rollout start (``deployedAt``) to rollout complete, target < 2h;
- downtime: time with zero available replicas, from availability samples: a sample
  at 0 counts until the next sample, target 0;
- error spike: peak error ratio since the deployment minus its pre-deploy baseline,
  target < 1% (0.01);
- rollback required: whether the review rolled its target back, target No.

A value that cannot be measured is reported with ``met`` None, never as met.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from postdeploy.kit import durations
from postdeploy.models.people import ActionItem, SloResult, SloTargets
from postdeploy.models.reviews import CheckState, CheckStatus

__all__ = ["Inputs", "action_items", "downtime", "evaluate", "met", "percent"]

Point = tuple[datetime.datetime, float]


@dataclasses.dataclass(frozen=True)
class Inputs:
    deployed_at: datetime.datetime
    now: datetime.datetime
    rollout_completed_at: datetime.datetime | None = None
    availability: Sequence[Point] = ()  # available replicas (or ratio) over time
    error_ratio: Sequence[Point] = ()  # error ratio (0..1) since the deployment
    error_baseline: float | None = None  # error ratio just before the deployment
    rolled_back: bool = False
    rollback_detail: str = ""


def percent(ratio: float) -> str:
    return f"{ratio * 100:.2f}%"


def downtime(samples: Sequence[Point], until: datetime.datetime) -> datetime.timedelta:
    """Total time during which the last sample seen was zero."""
    ordered = sorted(samples)
    total = datetime.timedelta(0)
    for index, (at, value) in enumerate(ordered):
        if value > 0:
            continue
        end = ordered[index + 1][0] if index + 1 < len(ordered) else until
        total += max(datetime.timedelta(0), end - at)
    return total


def _deployment_time(inputs: Inputs, limit: datetime.timedelta) -> SloResult:
    target = f"< {durations.format_duration(limit)}"
    if inputs.rollout_completed_at is None:
        return SloResult(name="deploymentTime", target=target, detail="the rollout was not seen completing")
    took = max(datetime.timedelta(0), inputs.rollout_completed_at - inputs.deployed_at)
    return SloResult(
        name="deploymentTime",
        value=durations.format_duration(took),
        number=took.total_seconds(),
        target=target,
        met=took < limit,
        detail=f"{inputs.deployed_at.isoformat()} to {inputs.rollout_completed_at.isoformat()}",
    )


def _downtime(inputs: Inputs, limit: datetime.timedelta) -> SloResult:
    target = "0" if not limit else f"<= {durations.format_duration(limit)}"
    if not inputs.availability:
        return SloResult(name="downtime", target=target, detail="no availability samples")
    down = downtime(inputs.availability, inputs.now)
    return SloResult(
        name="downtime",
        value=durations.format_duration(down) if down else "0s",
        number=down.total_seconds(),
        target=target,
        met=down <= limit,
        detail=f"{len(inputs.availability)} availability samples since the deployment",
    )


def _error_spike(inputs: Inputs, limit: float) -> SloResult:
    target = f"< {percent(limit)}"
    values = [v for _, v in inputs.error_ratio]
    if not values:
        return SloResult(name="errorSpike", target=target, detail="no error-ratio data")
    peak = max(values)
    baseline = inputs.error_baseline or 0.0
    spike = max(0.0, peak - baseline)
    return SloResult(
        name="errorSpike",
        value=percent(spike),
        number=spike,
        target=target,
        met=spike < limit,
        detail=f"peak {percent(peak)} vs baseline {percent(baseline)}",
    )


def _rollback(inputs: Inputs, allowed: bool) -> SloResult:
    return SloResult(
        name="rollbackRequired",
        value="Yes" if inputs.rolled_back else "No",
        number=1.0 if inputs.rolled_back else 0.0,
        target="No" if not allowed else "Yes or No",
        met=allowed or not inputs.rolled_back,
        detail=inputs.rollback_detail,
    )


def evaluate(targets: SloTargets, inputs: Inputs) -> list[SloResult]:
    return [
        _deployment_time(inputs, durations.parse_duration(targets.deployment_time)),
        _downtime(inputs, durations.parse_duration(targets.downtime)),
        _error_spike(inputs, targets.error_spike),
        _rollback(inputs, targets.rollback_allowed),
    ]


def met(results: Iterable[SloResult]) -> bool | None:
    """False when any SLO is breached; None when none is breached but some are unknown."""
    states = [r.met for r in results]
    if False in states:
        return False
    return None if None in states else True


_PRIORITY = {"high": "High", "medium": "Medium", "low": "Low"}


def action_items(
    checks: Sequence[CheckStatus], slos: Sequence[SloResult], notes: Sequence[Mapping[str, Any]]
) -> list[ActionItem]:
    """Failed checks and breached SLOs are High; errors Medium; inconclusive Low; then notes."""
    items: list[ActionItem] = []
    for slo in slos:
        if slo.met is False:
            items.append(
                ActionItem(
                    priority="High",
                    action=f"SLO {slo.name} missed: {slo.value} (target {slo.target}); find out why",
                    source=f"slo/{slo.name}",
                )
            )
    ranked = (
        (CheckState.FAILED, "High", "investigate and fix: {message}"),
        (CheckState.ERROR, "Medium", "restore the check's data source: {message}"),
        (CheckState.INCONCLUSIVE, "Low", "make the check decisive: {message}"),
    )
    for state, priority, text in ranked:
        for check in checks:
            if check.state is state:
                items.append(
                    ActionItem(
                        priority=priority,
                        action=text.format(message=(check.message or check.state.value)[:300]),
                        source=f"check/{check.name}",
                    )
                )
    for note in notes:
        if note.get("kind") not in ("improvement", "tech-debt", "runbook", "remediation"):
            continue
        text = note.get("action") or note.get("fix") or note.get("text") or ""
        if not text:
            continue
        items.append(
            ActionItem(
                priority=_PRIORITY.get(str(note.get("priority", "medium")).lower(), "Medium"),
                action=f"{note['kind']}: {text}"[:400],
                source=f"note/{note.get('key', '')}",
                owner=str(note.get("owner") or note.get("by") or ""),
            )
        )
    order = {"High": 0, "Medium": 1, "Low": 2}
    return sorted(items, key=lambda i: order[i.priority])
