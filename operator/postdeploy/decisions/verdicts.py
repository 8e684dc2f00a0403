"""The review's verdict and its standard conditions, from its checks' states.

Called by ``postdeploy.engine`` after each tick. Pure.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from postdeploy.models.reviews import CheckState, CheckStatus, Condition, Verdict

__all__ = ["brief", "conditions_for", "set_condition", "summary", "verdict"]


def verdict(checks: Sequence[CheckStatus], *, complete: bool, rolled_back: bool) -> Verdict:
    if rolled_back:
        return Verdict.ROLLED_BACK
    states = {c.state for c in checks}
    if CheckState.FAILED in states:
        return Verdict.FAILED if complete else Verdict.FAILING
    if complete:
        if states & {CheckState.ERROR, CheckState.INCONCLUSIVE}:
            return Verdict.INCONCLUSIVE
        return Verdict.PASSED
    if not any(c.runs for c in checks):
        return Verdict.PENDING
    return Verdict.PASSING


def _worst(checks: Sequence[CheckStatus], state: CheckState) -> list[CheckStatus]:
    return [c for c in checks if c.state is state]


def summary(check: CheckStatus) -> str:
    """One line a reader of the Events can act on: state, value, baseline, condition, query."""
    parts = [f"{check.name} {check.state.value}"]
    if check.value is not None:
        parts.append(f"value={check.value:.6g}")
    if check.baseline is not None:
        parts.append(f"baseline={check.baseline:.6g}")
    if check.fail_when:
        parts.append(f"failWhen={check.fail_when!r}")
    if check.query:
        parts.append(f"query={check.query!r}")
    text = " ".join(parts)
    if check.message:
        text += f": {check.message}"
    return text


def brief(check: CheckStatus) -> str:
    """The check's state and its message, for the conditions and the review's message.

    The message already says the value, the baseline and the condition that decided
    (``decisions.checks``), and the check's status holds its query; ``summary``, with
    all of them spelled out, is for Events, which stand alone."""
    text = f"{check.name} {check.state.value}"
    return f"{text}: {check.message}" if check.message else text


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: str,
    reason: str,
    message: str,
    now: datetime.datetime,
    generation: int | None,
) -> list[Condition]:
    """Replace or add one condition; lastTransitionTime moves only when status changes."""
    previous = next((c for c in conditions if c.type == type_), None)
    moved = previous is None or previous.status != status
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message[:1024],
        last_transition_time=now.isoformat() if moved or previous is None else previous.last_transition_time,
        observed_generation=generation,
    )
    if previous is None:
        return [*conditions, updated]
    return [updated if c.type == type_ else c for c in conditions]


def conditions_for(
    existing: list[Condition],
    checks: Sequence[CheckStatus],
    *,
    complete: bool,
    current_phase: str | None,
    now: datetime.datetime,
    generation: int | None,
) -> list[Condition]:
    """Healthy, SLOBreached, Progressing and Complete from the checks' states."""
    failed = _worst(checks, CheckState.FAILED)
    errored = _worst(checks, CheckState.ERROR)
    result = list(existing)
    if failed:
        message = "; ".join(brief(c) for c in failed)
        result = set_condition(result, "Healthy", "False", "CheckFailed", message, now, generation)
        result = set_condition(result, "SLOBreached", "True", "CheckFailed", message, now, generation)
    else:
        if errored:
            message = "; ".join(brief(c) for c in errored)
            result = set_condition(result, "Healthy", "Unknown", "DataSourceError", message, now, generation)
        else:
            result = set_condition(
                result, "Healthy", "True", "ChecksPassing", "no check has failed", now, generation
            )
        result = set_condition(
            result, "SLOBreached", "False", "NoBreach", "no check has failed", now, generation
        )
    if complete:
        result = set_condition(
            result, "Progressing", "False", "AllPhasesCompleted", "all phases completed", now, generation
        )
        result = set_condition(
            result, "Complete", "True", "AllPhasesCompleted", "all phases completed", now, generation
        )
    else:
        result = set_condition(
            result, "Progressing", "True", "PhaseRunning", f"phase {current_phase} running", now, generation
        )
        result = set_condition(
            result, "Complete", "False", "PhaseRunning", f"phase {current_phase} running", now, generation
        )
    return result
