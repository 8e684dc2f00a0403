"""Phase scheduling: slots, order of phases, catch-up after an outage, restarts.

Covers: nothing runs before a phase starts; slot k is due at start + k*interval and
never twice; a restarted operator (same status) runs nothing again; a long outage
runs a missed check once, not once per slot; a phase completes only after its end
and its checks' last slots; finished phases are skipped; terminal checks stop; a
slot's run is due at its start rounded up to the whole second, the grid evaluation
times are rounded down to, so a run on time evaluates at its own moment; at the phase
end a pending slot runs whatever its run time.
"""

from __future__ import annotations

import datetime

from postdeploy.decisions import phases, templates
from postdeploy.models.reviews import CheckState, CheckStatus

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def _review(*phase_specs: tuple[str, str, str, str]) -> templates.ResolvedReview:
    spec = {
        "target": {"name": "app"},
        "phases": [
            {
                "name": name,
                "start": start,
                "end": end,
                "interval": interval,
                "checks": [{"name": f"{name}-check", "manual": {}}],
            }
            for name, start, end, interval in phase_specs
        ],
    }
    return templates.resolve(spec)


def _status(name: str, phase: str, slot: int, state: CheckState = CheckState.RUNNING) -> CheckStatus:
    return CheckStatus(name=name, phase=phase, provider="manual", last_slot=slot, state=state)


def _at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def test_before_the_first_phase_nothing_is_due() -> None:
    review = _review(("a", "10s", "40s", "10s"))
    plan = phases.plan(review, T0, _at(5), frozenset(), {})
    assert plan.due == ()
    assert plan.wake_at == _at(10)
    assert not plan.finish_phase


def test_slots_are_due_once_each() -> None:
    review = _review(("a", "0s", "30s", "10s"))
    plan = phases.plan(review, T0, _at(0), frozenset(), {})
    assert [(d.check.name, d.slot) for d in plan.due] == [("a-check", 0)]
    assert plan.wake_at == _at(10)
    ran = {"a-check": _status("a-check", "a", 0)}
    again = phases.plan(review, T0, _at(5), frozenset(), ran)
    assert again.due == ()  # a restart inside the slot runs nothing twice
    later = phases.plan(review, T0, _at(12), frozenset(), ran)
    assert [d.slot for d in later.due] == [1]


def test_outage_runs_a_missed_check_once_and_then_finishes_the_phase() -> None:
    review = _review(("a", "0s", "30s", "10s"), ("b", "30s", "60s", "10s"))
    ran = {"a-check": _status("a-check", "a", 0)}
    plan = phases.plan(review, T0, _at(45), frozenset(), ran)
    assert plan.phase is not None and plan.phase.name == "a"
    assert [d.slot for d in plan.due] == [2]  # the last slot, once
    assert plan.finish_phase


def test_phase_finishes_only_after_its_end() -> None:
    review = _review(("a", "0s", "30s", "10s"))
    ran = {"a-check": _status("a-check", "a", 2)}
    plan = phases.plan(review, T0, _at(29), frozenset(), ran)
    assert not plan.finish_phase and plan.due == ()
    assert plan.wake_at == _at(30)
    assert phases.plan(review, T0, _at(30), frozenset(), ran).finish_phase


def test_completed_phases_are_never_rerun() -> None:
    review = _review(("a", "0s", "30s", "10s"), ("b", "30s", "60s", "10s"))
    plan = phases.plan(review, T0, _at(35), frozenset({"a"}), {})
    assert plan.phase is not None and plan.phase.name == "b"
    assert [(d.check.name, d.slot) for d in plan.due] == [("b-check", 0)]
    done = phases.plan(review, T0, _at(100), frozenset({"a", "b"}), {})
    assert done.phase is None and done.wake_at is None


def test_terminal_checks_are_not_run_again() -> None:
    review = _review(("a", "0s", "30s", "10s"))
    failed = {"a-check": _status("a-check", "a", 0, CheckState.FAILED)}
    plan = phases.plan(review, T0, _at(15), frozenset(), failed)
    assert plan.due == ()
    assert plan.wake_at == _at(30)


def test_last_slot_counts_partial_intervals() -> None:
    review = _review(("a", "0s", "25s", "10s"))
    phase = review.phases[0]
    assert phases.last_slot(phase, phase.checks[0]) == 2  # slots at 0, 10, 20
    assert phases.slot_at(phase, phase.checks[0], datetime.timedelta(seconds=24)) == 2
    assert phases.slot_at(phase, phase.checks[0], datetime.timedelta(seconds=99)) == 2


def test_evaluation_times_align_down_to_the_whole_second() -> None:
    moment = datetime.datetime(2026, 1, 1, 12, 0, 37, 600000, tzinfo=datetime.UTC)
    assert phases.aligned(moment) == moment.replace(microsecond=0)
    assert phases.aligned(moment.replace(microsecond=0)) == moment.replace(microsecond=0)


def test_a_run_is_due_at_its_slot_start_rounded_up_to_the_second() -> None:
    assert phases.run_time(_at(0)) == _at(0)  # on the grid already
    assert phases.run_time(_at(0.3)) == _at(1)
    assert phases.run_time(_at(7.9)) == _at(8)
    for start in (_at(0.3), _at(7.9), _at(12.51), _at(13)):
        run = phases.run_time(start)
        assert start <= run < start + datetime.timedelta(seconds=1)  # inside any slot (intervals >= 1 s)
        assert phases.aligned(run) == run  # evaluated at its own moment


def test_a_slot_waits_for_its_run_time_and_the_phase_end_does_not() -> None:
    deployed = _at(0.3)  # slots at 0.3, 10.3, 20.3 s; run times at 1, 11, 21 s
    review = _review(("a", "0s", "25s", "10s"))
    before = phases.plan(review, deployed, _at(0), frozenset(), {})
    assert before.due == () and before.wake_at == _at(1)
    early = phases.plan(review, deployed, _at(0.5), frozenset(), {})
    assert early.due == () and early.wake_at == _at(1)  # slot 0 has begun, its run time not
    on_time = phases.plan(review, deployed, _at(1), frozenset(), {})
    assert [d.slot for d in on_time.due] == [0] and on_time.wake_at == _at(11)
    ran = {"a-check": _status("a-check", "a", 1)}
    last = phases.plan(review, deployed, _at(20.5), frozenset(), ran)
    assert last.due == () and last.wake_at == _at(21)
    # An outage past the end: the pending last slot runs and the phase finishes.
    end = phases.plan(review, deployed, _at(25.3), frozenset(), ran)
    assert [d.slot for d in end.due] == [2] and end.finish_phase
