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

A slot's run is due at its *run time*: the slot's start rounded up to the whole
second (``EVALUATION_STEP``). The Prometheus and Alertmanager providers evaluate at
the tick's time rounded down to the whole second (``aligned``, below), so reviews due
in the same second ask the same query and share one answer, and a run on time
evaluates at its own moment: what it sees is never older than its lateness. (Rounding
the evaluation time down alone would look up to one step into the past, and a breach
would be seen up to one interval plus one step after it showed.) A run time stays
inside its slot (intervals are at least 1 s); at the phase end every pending slot is
due whatever its run time.

The step is a second, not more: runs whose slots start anywhere in a step all fall
due at its end, so a coarser grid turns an even load into bursts. With a quarter of
the interval (up to 15 s) as the step, 2,000 reviews in their first hour (13 checks a
minute each, deployment times spread over a minute) fell due in four bursts a minute
of about 6,500 runs, and waited for each other: runs started 5.7 s late at the median,
11.7 s at p99; on a one-second grid about 0.1 s at the median (p99 0.10-0.15 s with
the scheduler's 256 review slots), for 47 % more Prometheus queries (fewer reviews of
one target share a second than share 15 s; docs/benchmarks.md).
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
    "EVALUATION_STEP",
    "Due",
    "Plan",
    "aligned",
    "last_slot",
    "plan",
    "run_time",
    "slot_at",
]

EVALUATION_STEP = 1.0  # seconds: run and evaluation times lie on whole seconds


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


def aligned(moment: datetime.datetime) -> datetime.datetime:
    """``moment`` rounded down to the evaluation step (the whole second)."""
    return datetime.datetime.fromtimestamp(
        math.floor(moment.timestamp() / EVALUATION_STEP) * EVALUATION_STEP, datetime.UTC
    )


def run_time(slot_start: datetime.datetime) -> datetime.datetime:
    """When a slot's run is due: its start rounded up to the evaluation step (the whole
    second; an interval is at least that, so the run time stays inside the slot)."""
    up = math.ceil(slot_start.timestamp() / EVALUATION_STEP - 1e-9) * EVALUATION_STEP
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
            return Plan(phase, (), False, run_time(start) if phase.checks else start)
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
                due_at = run_time(start + current * check.interval)
                if now < due_at and now < end:
                    wake.append(due_at)  # the slot has begun; its run time has not
                    continue
                due.append(Due(check, current))
                done = current
            if done < last_slot(phase, check):
                wake.append(run_time(start + (done + 1) * check.interval))
        finish = now >= end
        if not finish:
            wake.append(end)
        return Plan(phase, tuple(due), finish, min(wake) if wake else now)
    return Plan(None, (), False, None)
