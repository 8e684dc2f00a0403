"""Phase scheduling on the clock: which checks are due now, which phase ends, when next.

Called by ``postdeploy.engine`` each tick. Pure: it reads the resolved review, the
deployment time, the clock and the recorded status, and returns a ``Plan``.

Each check runs in *slots*: slot ``k`` of a check starts at
``phase start + k * interval`` and lies inside ``[phase start, phase end)``. A check
is due when the current slot is later than the last slot it ran (``lastSlot`` in its
status), so a restarted operator never runs a slot twice and, after an outage, runs
a missed check once rather than once per missed slot. Phases run in order: the
current phase is the first one not yet Completed; it completes once its end has
passed and each of its checks ran its last slot (or reached a final state). A
completed phase is never re-run.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Mapping

from postdeploy.decisions import checks as check_decisions
from postdeploy.decisions.templates import ResolvedCheck, ResolvedPhase, ResolvedReview
from postdeploy.models.reviews import CheckStatus

__all__ = ["Due", "Plan", "last_slot", "plan", "slot_at"]


@dataclasses.dataclass(frozen=True)
class Due:
    check: ResolvedCheck
    slot: int


@dataclasses.dataclass(frozen=True)
class Plan:
    phase: ResolvedPhase | None  # the current phase; None when all are completed
    due: tuple[Due, ...]
    finish_phase: bool  # the current phase is over once ``due`` has run
    wake_at: datetime.datetime | None  # when the next thing happens; None when done


def last_slot(phase: ResolvedPhase, check: ResolvedCheck) -> int:
    """Index of the last slot that starts before the phase ends."""
    length = (phase.end - phase.start) / check.interval
    return max(0, math.ceil(length) - 1)


def slot_at(phase: ResolvedPhase, check: ResolvedCheck, offset: datetime.timedelta) -> int:
    """The slot in progress at ``offset`` from deployedAt (-1 before the phase)."""
    if offset < phase.start:
        return -1
    return min(math.floor((offset - phase.start) / check.interval), last_slot(phase, check))


def plan(
    review: ResolvedReview,
    deployed_at: datetime.datetime,
    now: datetime.datetime,
    completed_phases: frozenset[str],
    statuses: Mapping[str, CheckStatus],
) -> Plan:
    for phase in review.phases:
        if phase.name in completed_phases:
            continue
        start, end = deployed_at + phase.start, deployed_at + phase.end
        if now < start:
            return Plan(phase, (), False, start)
        offset = now - deployed_at
        due: list[Due] = []
        wake: list[datetime.datetime] = []
        for check in phase.checks:
            status = statuses.get(check.name)
            if status is not None and status.state in check_decisions.TERMINAL:
                continue
            done = status.last_slot if status is not None else -1
            current = slot_at(phase, check, offset)
            if current > done:
                due.append(Due(check, current))
                done = current
            if done < last_slot(phase, check):
                wake.append(start + (done + 1) * check.interval)
        finish = now >= end
        if not finish:
            wake.append(end)
        return Plan(phase, tuple(due), finish, min(wake) if wake else now)
    return Plan(None, (), False, None)
