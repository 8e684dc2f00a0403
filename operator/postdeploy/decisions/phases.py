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

A slot's run is due at its *run time*: the slot's start rounded up to the check's
evaluation step (a quarter of its interval, 1 s to 15 s; ``evaluation_step``). The
Prometheus and Alertmanager providers evaluate at the tick's time rounded down to the
same step (``aligned``, below), so reviews due within the same step
ask the same query and share one answer, and a run on time evaluates at its own
moment: what it sees is never older than its lateness. (Rounding the evaluation
time down alone would look up to one step into the past, and a breach would be seen
up to one interval plus one step after it showed.) A run time stays inside its
slot; at the phase end every pending slot is due whatever its run time.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Mapping

from postdeploy.decisions import checks as check_decisions
from postdeploy.decisions.templates import ResolvedCheck, ResolvedPhase, ResolvedReview
from postdeploy.models.reviews import CheckStatus

__all__ = [
    "MAX_STEP_SECONDS",
    "Due",
    "Plan",
    "aligned",
    "evaluation_step",
    "last_slot",
    "plan",
    "run_time",
    "slot_at",
]

MAX_STEP_SECONDS = 15.0  # evaluation steps are at most this long


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


def evaluation_step(interval: datetime.timedelta) -> float:
    """Seconds of the grid a check's evaluation times lie on: a quarter of its
    interval, at least 1 s and at most ``MAX_STEP_SECONDS``."""
    return min(MAX_STEP_SECONDS, max(1.0, interval.total_seconds() / 4))


def aligned(moment: datetime.datetime, interval: datetime.timedelta) -> datetime.datetime:
    """``moment`` rounded down to the check's evaluation step."""
    step = evaluation_step(interval)
    return datetime.datetime.fromtimestamp(math.floor(moment.timestamp() / step) * step, datetime.UTC)


def run_time(slot_start: datetime.datetime, interval: datetime.timedelta) -> datetime.datetime:
    """When a slot's run is due: its start rounded up to the evaluation step, or the
    start itself when the step is not shorter than the interval (the rounding would
    leave the slot)."""
    step = evaluation_step(interval)
    if step >= interval.total_seconds():
        return slot_start
    up = math.ceil(slot_start.timestamp() / step - 1e-9) * step
    return max(slot_start, datetime.datetime.fromtimestamp(up, datetime.UTC))


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
            first = [run_time(start, check.interval) for check in phase.checks]
            return Plan(phase, (), False, min(first, default=start))
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
                due_at = run_time(start + current * check.interval, check.interval)
                if now < due_at and now < end:
                    wake.append(due_at)  # the slot has begun; its run time has not
                    continue
                due.append(Due(check, current))
                done = current
            if done < last_slot(phase, check):
                wake.append(run_time(start + (done + 1) * check.interval, check.interval))
        finish = now >= end
        if not finish:
            wake.append(end)
        return Plan(phase, tuple(due), finish, min(wake) if wake else now)
    return Plan(None, (), False, None)
