"""When the status is written (docs/engine.md): at once when it matters, else at most
every ``status_refresh_seconds``; a restart from the last written status re-measures
but repeats no decision, action or Event.

Covers ``ticks.matters`` field by field, the engine's ``urgent`` flag on real ticks
(on the fakes of test_engine_ticks), the ``Ledger`` keeping and flushing unwritten
statuses, and a restart from what was written.
"""

from __future__ import annotations

import copy
import datetime
from typing import Any

import pytest

from postdeploy.engine import ledgers, ticks
from postdeploy.models.measurements import Measurement

from .test_engine_ticks import World, check, review


def _status() -> dict[str, Any]:
    return {
        "phase": "immediate",
        "verdict": "Passing",
        "conditions": [
            {"type": "Healthy", "status": "True", "reason": "ChecksPassing", "lastTransitionTime": "t"}
        ],
        "checks": [
            {
                "name": "error-rate",
                "phase": "immediate",
                "provider": "prometheus",
                "state": "Running",
                "value": 0.01,
                "message": "value 0.01",
                "runs": 3,
                "errors": 0,
                "consecutiveErrors": 0,
                "lastRun": "2026-01-01T00:02:00+00:00",
                "lastResult": "Passed",
                "lastSlot": 2,
                "history": [{"t": "2026-01-01T00:02:00+00:00", "v": 0.01, "s": "Passed"}],
            }
        ],
    }


def _changed(**fields: Any) -> dict[str, Any]:
    status = _status()
    status["checks"][0].update(fields)
    return status


def test_a_new_measurement_alone_does_not_matter() -> None:
    new = _changed(
        value=0.02,
        message="value 0.02",
        runs=4,
        lastRun="2026-01-01T00:03:00+00:00",
        lastSlot=3,
        history=[{"t": "2026-01-01T00:03:00+00:00", "v": 0.02, "s": "Passed"}],
        details={"series": 1},
        inconclusives=1,
    )
    assert not ticks.matters(_status(), new)


@pytest.mark.parametrize(
    "fields",
    [
        {"state": "Failed"},
        {"lastResult": "Error"},
        {"lastResult": "Failed"},
        {"errors": 1, "consecutiveErrors": 1},
        {"failures": 1},
        {"memo": {"job": "check-1"}},
    ],
)
def test_a_checks_state_decision_or_memo_matters(fields: dict[str, Any]) -> None:
    assert ticks.matters(_status(), _changed(**fields))


def test_a_run_inconclusive_after_a_passing_one_or_back_does_not_matter() -> None:
    inconclusive = _changed(lastResult="Inconclusive", inconclusives=1, message="not enough traffic yet")
    assert not ticks.matters(_status(), inconclusive)
    assert not ticks.matters(inconclusive, _status())
    assert not ticks.matters(_status(), _changed(lastResult="Skipped"))


def test_the_first_run_after_a_failed_or_errored_one_matters() -> None:
    for alarming in ("Failed", "Error"):
        assert ticks.matters(_changed(lastResult=alarming), _changed(lastResult="Inconclusive"))
        assert ticks.matters(_changed(lastResult=alarming), _status())


@pytest.mark.parametrize(
    "field, value",
    [
        ("phase", "extended"),
        ("verdict", "Failing"),
        ("actions", [{"id": "a1", "action": "annotate"}]),
        ("conditions", []),
        ("observedGeneration", 2),
    ],
)
def test_phase_verdict_actions_conditions_matter(field: str, value: Any) -> None:
    new = _status()
    new[field] = value
    assert ticks.matters(_status(), new)


def test_a_check_added_or_removed_matters() -> None:
    new = _status()
    new["checks"].append(dict(new["checks"][0], name="latency"))
    assert ticks.matters(_status(), new)


async def test_passing_runs_are_not_urgent_failed_and_errored_runs_are() -> None:
    world = World().at(5)
    first = await world.tick(review())
    assert first.urgent  # the phase started
    steady = await world.at(65).tick(review())
    assert steady.status is not None and not steady.urgent
    world.providers.answers["restarts"] = Measurement.error("connection refused")
    errored = await world.at(125).tick(review())
    assert errored.urgent
    world.providers.answers["error-rate"] = Measurement.ok(0.5)
    failed = await world.at(185).tick(review())  # the phase ended: finished in the same tick
    assert failed.urgent


async def test_a_run_without_enough_data_after_passing_ones_is_not_urgent() -> None:
    world = World().at(5)
    await world.tick(review())
    world.providers.answers["error-rate"] = Measurement.no_data("not enough traffic yet")
    quiet = await world.at(65).tick(review())
    assert quiet.status is not None and check(quiet.status, "error-rate")["lastResult"] == "Inconclusive"
    assert not quiet.urgent and not quiet.events
    del world.providers.answers["error-rate"]
    passing = await world.at(125).tick(review())
    assert passing.status is not None and check(passing.status, "error-rate")["lastResult"] == "Passed"
    assert not passing.urgent


class RecordingLedger(ledgers.Ledger):
    def __init__(self, status: dict[str, Any], clock: list[float]) -> None:
        super().__init__(None, "shop", "r", status, refresh_seconds=300.0, clock=lambda: clock[0])  # type: ignore[arg-type]
        self.patched: list[dict[str, Any]] = []

    async def _patch(self, status: dict[str, Any]) -> None:
        self.writes += 1
        self.patched.append(copy.deepcopy(status))


async def test_the_ledger_keeps_what_does_not_matter_and_writes_it_when_due() -> None:
    now = [1000.0]
    ledger = RecordingLedger({}, now)
    await ledger.write(_status())  # urgent by default
    assert len(ledger.patched) == 1 and not ledger.unwritten
    remeasured = _changed(value=0.02, runs=4, lastSlot=3)
    now[0] += 60
    await ledger.write(remeasured, urgent=False)
    assert len(ledger.patched) == 1
    assert ledger.unwritten and ledger.view == remeasured  # the next tick continues from it
    due = ledger.flush_at()
    assert due is not None and 1150.0 <= due < 1450.0  # the ledger's refresh time
    assert not await ledger.flush()  # not yet due
    now[0] = due
    assert await ledger.flush()
    assert ledger.patched[-1] == remeasured and not ledger.unwritten
    # Written at a refresh time, the next one is a whole step later.
    await ledger.write(_changed(value=0.025, runs=5, lastSlot=4), urgent=False)
    assert ledger.flush_at() == pytest.approx(due + 300.0)
    # A non-urgent change after the refresh time is written at once.
    now[0] += 500
    await ledger.write(_changed(value=0.03, runs=6, lastSlot=5), urgent=False)
    assert len(ledger.patched) == 3
    # An urgent one always, carrying what was kept before it.
    now[0] += 10
    await ledger.write(_changed(value=0.04, runs=7, lastSlot=6), urgent=False)
    await ledger.write(_changed(value=0.04, runs=7, lastSlot=6), urgent=True)
    assert len(ledger.patched) == 4 and ledger.patched[-1]["checks"][0]["value"] == 0.04


async def test_the_same_status_is_not_written_twice_and_settled_deliveries_stay() -> None:
    def delivered(state: str, phase: str = "immediate") -> dict[str, Any]:
        deliveries = [{"receiver": "r", "state": state}]
        return {"phase": phase, "notifications": [{"id": "m", "deliveries": deliveries}]}

    ledger = RecordingLedger({}, [1000.0])
    await ledger.write(_status())
    await ledger.write(_status())
    assert len(ledger.patched) == 1
    await ledger.write(delivered("Delivered"))
    # A tick computed from a snapshot taken before the delivery settled.
    await ledger.write(delivered("Pending", phase="extended"))
    assert len(ledger.patched) == 3
    assert ledger.patched[-1] == delivered("Delivered", phase="extended") == ledger.view
    await ledger.write(delivered("Pending", phase="extended"))  # the same again: nothing new
    assert len(ledger.patched) == 3


async def test_reviews_written_together_refresh_spread_over_the_step() -> None:
    """Thousands of reviews written in the same moment (created at once, or an operator
    restarting) do not refresh all together ever after: each ledger's refresh times lie
    on its own grid, offset by its name, so their first refreshes spread over a step,
    each 0.5 to 1.5 steps after the write."""
    now = [5000.0]
    dues = []
    for index in range(2000):
        ledger = ledgers.Ledger(None, "shop", f"r{index}", {}, refresh_seconds=300.0, clock=lambda: now[0])  # type: ignore[arg-type]
        ledger._unwritten = True
        due = ledger.flush_at()
        assert due is not None and 5150.0 <= due < 5450.0
        dues.append(due)
    per_tenth = [sum(1 for d in dues if 5150.0 + 30 * i <= d < 5150.0 + 30 * (i + 1)) for i in range(10)]
    assert min(per_tenth) >= 150 and max(per_tenth) <= 250, per_tenth
    # The same review refreshes at the same point of the step in every process.
    again = ledgers.Ledger(None, "shop", "r7", {}, refresh_seconds=300.0, clock=lambda: now[0])  # type: ignore[arg-type]
    again._unwritten = True
    assert again.flush_at() == dues[7]


async def test_a_restart_between_unwritten_runs_remeasures_and_repeats_nothing() -> None:
    """Runs whose status was kept unwritten are lost by a restart: it measures the slot
    in progress again, and decides, acts and posts nothing twice."""
    world = World()
    first = await world.at(5).tick(review(on_failure="annotate"))
    assert first.urgent
    written = copy.deepcopy(world.status)  # what the API server holds
    kept = await world.at(65).tick(review(on_failure="annotate"))
    assert kept.status is not None and not kept.urgent  # slot 1 ran; not written

    # The restart: a fresh engine on what was written, inside slot 1.
    restarted = World()
    restarted.status = written
    again = await restarted.at(70).tick(review(on_failure="annotate"))
    assert [name for name, _, _ in restarted.providers.asked] == ["error-rate", "restarts"]  # re-measured
    assert again.events == ()
    assert restarted.status["verdict"] == world.status["verdict"] == "Passing"
    assert check(restarted.status, "error-rate")["lastSlot"] == 1

    # Then a failure: decided, acted on and announced once, in both histories alike.
    for w in (world, restarted):
        w.providers.answers["error-rate"] = Measurement.ok(0.2)
        failed = await w.at(125).tick(review(on_failure="annotate"))
        assert failed.urgent
        assert [e.reason for e in failed.events].count("CheckFailed") == 1
        later = await w.at(185).tick(review(on_failure="annotate"))
        assert "CheckFailed" not in [e.reason for e in later.events]
        assert len(w.status["actions"]) == 1
        # The executor carries the annotation out; only then does the review complete.
        assert not later.done
        w.status["actions"][0]["state"] = "Done"
        assert (await w.at(190).tick(review(on_failure="annotate"))).done
    assert restarted.status["verdict"] == world.status["verdict"] == "Failed"
    assert world.now.tzinfo is datetime.UTC


def test_an_idle_review_is_held_as_bytes_without_managed_fields() -> None:
    """Memory per review in the scheduler: the status as compact JSON, no parsed copy,
    and the metadata without managedFields."""
    from types import SimpleNamespace

    from postdeploy.engine import schedulers
    from postdeploy.engine.settings import Settings

    engine = SimpleNamespace(api=None, settings=Settings(), clock=None)
    scheduler = schedulers.Scheduler(engine, executor=None, post=lambda *a: None)  # type: ignore[arg-type]
    body = {
        "metadata": {
            "name": "r",
            "namespace": "shop",
            "generation": 1,
            "managedFields": [{"manager": "x" * 500}],
        },
        "spec": {"target": {"name": "app"}},
        "status": _status(),
    }
    scheduler.observe(body)
    entry = scheduler._entries[("shop", "r")]
    assert "managedFields" not in entry.metadata
    held = [value for value in vars(entry.ledger).values() if isinstance(value, (dict, list))]
    assert held == []  # nothing parsed: the status lives as bytes
    assert isinstance(entry.ledger._blob, bytes) and len(entry.ledger._blob) < len(str(_status()))
    assert entry.ledger.view == _status()


def test_a_finished_review_is_held_as_its_uid_only() -> None:
    """A completed review with nothing left to do costs its key and uid, not its status;
    a review created again under its name is a new one."""
    from types import SimpleNamespace

    from postdeploy.engine import executions, schedulers
    from postdeploy.engine.settings import Settings

    engine = SimpleNamespace(api=None, settings=Settings(), clock=None)
    scheduler = schedulers.Scheduler(engine, executor=None, post=lambda *a: None)  # type: ignore[arg-type]

    def body(uid: str, phase: str) -> dict[str, Any]:
        metadata = {"name": "r", "namespace": "shop", "uid": uid, "generation": 1}
        status = {**_status(), "phase": phase}
        if phase == "Completed":  # and the final annotations done: nothing left to do
            status["actions"] = [{"id": executions.FINAL_ANNOTATIONS, "action": "annotate", "state": "Done"}]
        return {"metadata": metadata, "spec": {"target": {"name": "app"}}, "status": status}

    scheduler.observe(body("u1", "Completed"))
    assert ("shop", "r") not in scheduler._entries and scheduler._finished == {("shop", "r"): "u1"}
    assert scheduler.active == 0 and not scheduler._heap
    scheduler.observe(body("u1", "Completed"))  # seen again (a resync): still nothing
    assert ("shop", "r") not in scheduler._entries
    scheduler.observe(body("u2", "immediate"))  # deleted and created again, unseen deletion
    assert ("shop", "r") in scheduler._entries and scheduler._finished == {}
    assert scheduler.active == 1
    scheduler.forget("shop", "r")
    scheduler.observe(body("u3", "Completed"))
    scheduler.forget("shop", "r")
    assert scheduler._entries == {} and scheduler._finished == {}
