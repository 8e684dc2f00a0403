"""What a review's status keeps, so that it stays small (docs/engine.md, "Status").

Covers: counts are left out while 0 and read back as 0; a history sample leaves out
its result when the run passed and reads back as Passed; a passing run's message does
not repeat the value and baseline shown beside it, one that did not pass does; the
conditions and the review's message name a failed check's state and message without
its query, while its Event keeps the query; once its phase has completed, a check that
passed or was skipped drops its query and details except the error types the report
reads, and a failed one or a cleanup check keeps all; settling is idempotent, so a
restarted operator writes nothing new; memos are dropped when the review completes;
the final review finds the rollout and availability checks by their spec, not by
their (dropped) query.
"""

from __future__ import annotations

import datetime
from typing import Any

from postdeploy.decisions import checks, slos, templates, verdicts
from postdeploy.engine import finals
from postdeploy.kit import details as details_
from postdeploy.models.measurements import Measurement
from postdeploy.models.reviews import CheckState, CheckStatus, ReviewStatus, Sample
from postdeploy.reports import documents
from tests.unit.test_engine_ticks import T0, World, check, review

NOW = T0


def _resolved(**fields: Any) -> templates.ResolvedCheck:
    spec = {
        "target": {"name": "a"},
        "phases": [
            {
                "name": "p",
                "start": "0s",
                "end": "1h",
                "checks": [{"name": "c", "prometheus": {"query": "up"}, **fields}],
            }
        ],
    }
    resolved = templates.resolve(spec).check("c")
    assert resolved is not None
    return resolved


def test_zero_counts_are_left_out_and_read_back_as_zero() -> None:
    status = CheckStatus(name="c", phase="p", provider="prometheus", runs=3, errors=1)
    wire = status.dump()
    assert wire["runs"] == 3 and wire["failures"] == 0 and wire["errors"] == 1
    assert not {"inconclusives", "consecutiveFailures", "consecutiveErrors"} & wire.keys()
    assert CheckStatus.model_validate(wire) == status


def test_a_passed_sample_leaves_out_its_result() -> None:
    passed, failed = (
        Sample(t="2026-01-01T00:00:00Z", v=1.0),
        Sample(t="2026-01-01T00:01:00Z", v=2.0, s="Failed"),
    )
    assert (passed.dump(), failed.dump()) == (
        {"t": "2026-01-01T00:00:00Z", "v": 1.0},
        {"t": "2026-01-01T00:01:00Z", "v": 2.0, "s": "Failed"},
    )
    assert [Sample.model_validate(s.dump()).s for s in (passed, failed)] == ["Passed", "Failed"]


def test_only_a_run_that_did_not_pass_repeats_value_and_baseline_in_its_message() -> None:
    check_ = _resolved(failWhen="value > 0.05")
    status, _ = checks.record(
        check_, checks.initial(check_), Measurement.ok(0.01, message="3/3 ready"), NOW, 0
    )
    assert status.message == "within limits; 3/3 ready" and status.value == 0.01
    status, _ = checks.record(check_, status, Measurement.ok(0.2), NOW, 1)
    assert status.message.startswith("value 0.2: failWhen 'value > 0.05' is true")
    assert status.last_run == "2026-01-01T00:00:00Z"
    later = NOW + datetime.timedelta(seconds=61.25)
    status, _ = checks.record(check_, status, Measurement.ok(0.01), later, 2)
    assert status.last_run == "2026-01-01T00:01:01.250000Z"  # the lag is measured from it


def test_conditions_name_a_failed_check_without_its_query() -> None:
    failed = CheckStatus(
        name="c",
        phase="p",
        provider="prometheus",
        state=CheckState.FAILED,
        value=0.2,
        fail_when="value > 0.05",
        query="sum(rate(x[5m]))" * 20,
        message="value 0.2: failWhen 'value > 0.05' is true (1 failed run(s), failureLimit 0)",
    )
    conditions = verdicts.conditions_for(
        [], [failed], complete=False, current_phase="p", now=NOW, generation=1
    )
    healthy = next(c for c in conditions if c.type == "Healthy")
    assert healthy.message == f"c Failed: {failed.message}"
    assert "sum(rate" in verdicts.summary(failed)  # the Event's text keeps it


def test_a_passed_check_settles_to_what_its_readers_use() -> None:
    error_types = [{"labels": {"type": "LedgerError"}, "value": 3.0}]
    passed = CheckStatus(
        name="c",
        phase="p",
        provider="prometheus",
        state=CheckState.PASSED,
        value=1.0,
        query="q",
        message="within limits",
        runs=5,
        last_run="2026-01-01T00:04:00.250000Z",
        last_result="Passed",
        last_slot=4,
        history=[Sample(t="2026-01-01T00:00:00Z", v=1.0)],
        details={
            "pValue": 0.5,
            "series": [*error_types, {"labels": {"pod": "a-1"}, "value": 1.0}],
            "totalQuery": "t",
        },
    )
    settled = checks.settle(passed)
    assert settled.query is None and settled.details == {"series": error_types}
    # Its state says its last result; its phase is no longer planned; whole seconds.
    assert (settled.last_result, settled.last_slot, settled.last_run) == (None, -1, "2026-01-01T00:04:00Z")
    assert not {"lastResult", "lastSlot"} & settled.dump().keys()
    held = [Sample(t=f"2026-01-01T00:0{m}:00Z", v=v) for m, v in enumerate((1.0, 0.0, 0.0))]
    trimmed = checks.settle(passed.model_copy(update={"history": held})).history
    assert trimmed == held[:2]  # the closing sample of the held 0.0 goes
    until = datetime.datetime(2026, 1, 1, 1, tzinfo=datetime.UTC)
    points = [(datetime.datetime.fromisoformat(s.t), s.v or 0.0) for s in held]
    shorter = [(datetime.datetime.fromisoformat(s.t), s.v or 0.0) for s in trimmed]
    assert slos.downtime(points, until) == slos.downtime(shorter, until) == datetime.timedelta(minutes=59)
    assert (settled.value, settled.message, settled.runs, settled.history) == (
        1.0,
        "within limits",
        5,
        passed.history,
    )
    assert checks.settle(settled) is settled  # idempotent: a restart settles the same way
    assert documents.remediation([settled], [])[0]["type"] == "LedgerError"
    assert details_.for_report({"rows": [[1]], "pValue": 0.5}) is None
    assert details_.for_report({"series": 1, "errors": "none"}) is None  # counts, not lists
    counted = passed.model_copy(update={"details": {"series": 1}})
    assert documents.remediation([counted], []) == [] and checks.settle(counted).details is None
    cleanup = passed.model_copy(update={"provider": "cleanup", "details": {"objects": [], "credentials": 2}})
    assert checks.settle(cleanup) is cleanup  # its details record what it deleted
    for kept in (CheckState.FAILED, CheckState.ERROR, CheckState.INCONCLUSIVE):
        unsettled = passed.model_copy(update={"state": kept})
        assert checks.settle(unsettled) is unsettled


async def test_a_completed_phase_settles_passed_checks_after_their_events() -> None:
    world = World()
    world.providers.answers["error-rate"] = Measurement.ok(
        0.01,
        query="rate(errors[1m])",
        details={"pValue": 0.4, "series": [{"labels": {"pod": "a"}, "value": 1}]},
        memo={"snapshot": {"ids": ["1"]}},
    )
    for second in (5, 65, 125):
        await world.at(second).tick(review())
    assert check(world.status, "error-rate")["query"] == "rate(errors[1m])"
    assert check(world.status, "error-rate")["memo"]
    result = await world.at(185).tick(review())
    assert world.status["phase"] == "Completed" and result.urgent
    settled = check(world.status, "error-rate")
    assert "query" not in settled and "details" not in settled and "memo" not in settled
    assert settled["state"] == "Passed" and settled["runs"] == 3 and settled["history"]
    passed_event = next(
        e for e in result.events if e.reason == "CheckPassed" and e.message.startswith("error-rate")
    )
    assert "rate(errors[1m])" in passed_event.message


async def test_a_failed_check_keeps_its_query_and_details_after_its_phase() -> None:
    world = World()
    world.providers.answers["error-rate"] = Measurement.ok(
        0.2, query="rate(errors[1m])", details={"pValue": 0.001}
    )
    for second in (5, 65, 125, 185):
        await world.at(second).tick(review())
    failed = check(world.status, "error-rate")
    assert world.status["phase"] == "Completed" and failed["state"] == "Failed"
    assert failed["query"] == "rate(errors[1m])" and failed["details"] == {"pValue": 0.001}
    assert "query" not in world.status["message"] and failed["message"] in world.status["message"]


async def test_a_restart_after_settling_writes_nothing_new() -> None:
    later = {
        "name": "later",
        "start": "3m",
        "end": "10m",
        "interval": "1m",
        "checks": [{"name": "later-check", "kubernetes": {"measure": "restarts"}}],
    }
    spec = review(phases=[*review()["phases"], later])
    world = World()
    for second in (5, 65, 125, 185):
        await world.at(second).tick(spec)
    assert world.status["phase"] == "later" and "query" not in check(world.status, "restarts")
    written = world.status
    again = await world.at(190).tick(spec)  # the written status, as a restarted operator reads it
    assert again.status is None and again.events == () and world.status == written


def test_the_final_review_finds_rollout_and_availability_checks_by_their_spec() -> None:
    status = ReviewStatus(
        checks=[
            CheckStatus(
                name="up",
                phase="p",
                provider="kubernetes",
                state=CheckState.PASSED,
                history=[Sample(t="2026-01-01T00:00:00Z", v=0.5), Sample(t="2026-01-01T00:01:00Z", v=1.0)],
            ),
        ]
    )
    points = finals.FinalReviews._availability(status, {"up": "availableRatio"})
    assert [v for _, v in points] == [0.5, 1.0]
    assert finals.FinalReviews._availability(status, {"up": "restarts"}) == []


async def test_a_memo_stays_while_a_later_phase_reads_it_then_goes() -> None:
    def phase(name: str, start: int, check: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": name,
            "start": f"{start}m",
            "end": f"{start + 3}m",
            "interval": "1m",
            "checks": [check],
        }

    spec = review(
        phases=[
            phase("first", 0, {"name": "snap", "postgres": {"slowStatements": {}}}),
            phase("second", 3, {"name": "slow", "postgres": {"slowStatements": {"snapshotFrom": "snap"}}}),
            phase("third", 6, {"name": "restarts", "kubernetes": {"measure": "restarts"}}),
        ],
        providers={"postgresDsnSecretRef": {"name": "db", "key": "dsn"}},
    )
    world = World()
    world.inputs.secrets[("shop", "db", "dsn")] = "postgresql://x@127.0.0.1/x"
    world.providers.answers["snap"] = Measurement.ok(0.0, memo={"snapshot": {"ids": ["1"]}})
    for second in (5, 65, 125, 185):
        await world.at(second).tick(spec)
    assert world.status["phase"] == "second"
    assert check(world.status, "snap")["memo"] == {"snapshot": {"ids": ["1"]}}  # slow reads it
    for second in (245, 305, 365):
        await world.at(second).tick(spec)
    assert world.status["phase"] == "third"
    assert "memo" not in check(world.status, "snap")
