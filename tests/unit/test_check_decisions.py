"""Deciding checks: runs, limits, missing data and the state at phase end.

Covers: a failWhen that holds fails the check (failureLimit respected); an Error or
NoData measurement is never a failure unless treatMissingAsFailure; more than
consecutiveErrorLimit errors make the check Error; a missing baseline makes the run
Inconclusive; passWhen gates Passed; history is capped; the state at phase end.
"""

from __future__ import annotations

import datetime
from typing import Any

from postdeploy.decisions import checks, slos, templates
from postdeploy.models.measurements import Measurement
from postdeploy.models.reviews import CheckState, Sample

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def _check(**fields: Any) -> templates.ResolvedCheck:
    spec = {"target": {"name": "a"}, "phases": [{"name": "p", "start": "0s", "end": "1h", "checks": [
        {"name": "c", "prometheus": {"query": "up"}, **fields}]}]}
    check = templates.resolve(spec).check("c")
    assert check is not None
    return check


def _run(check: templates.ResolvedCheck, *measurements: Measurement) -> tuple[Any, list[str]]:
    status = checks.initial(check)
    results = []
    for slot, measurement in enumerate(measurements):
        status, result = checks.record(check, status, measurement, NOW, slot)
        results.append(result)
    return status, results


def test_fail_when_true_fails_the_check_with_value_and_reason() -> None:
    check = _check(failWhen="value > 0.05")
    status, results = _run(check, Measurement.ok(0.01), Measurement.ok(0.2))
    assert results == ["Passed", "Failed"]
    assert status.state is CheckState.FAILED
    assert status.value == 0.2
    assert "value 0.2" in status.message and "failWhen 'value > 0.05'" in status.message


def test_failure_limit_tolerates_that_many_failures() -> None:
    check = _check(failWhen="value > 1", failureLimit=2)
    status, _ = _run(check, Measurement.ok(5), Measurement.ok(5))
    assert status.state is CheckState.RUNNING and status.failures == 2
    status, _ = checks.record(check, status, Measurement.ok(5), NOW, 3)
    assert status.state is CheckState.FAILED


def test_errors_and_no_data_never_fail() -> None:
    check = _check(failWhen="value > 1", consecutiveErrorLimit=2)
    status, results = _run(
        check, Measurement.error("connection refused"), Measurement.no_data("empty vector"),
        Measurement.error("connection refused"), Measurement.error("connection refused"),
    )
    assert results == ["Error", "Inconclusive", "Error", "Error"]
    assert status.failures == 0
    assert status.state is CheckState.RUNNING  # 2 consecutive errors, limit 2
    status, _ = checks.record(check, status, Measurement.error("connection refused"), NOW, 9)
    assert status.state is CheckState.ERROR
    assert "consecutiveErrorLimit 2" in status.message


def test_missing_data_fails_only_when_the_check_asks() -> None:
    check = _check(failWhen="value > 1", treatMissingAsFailure=True)
    status, results = _run(check, Measurement.no_data("empty"))
    assert results == ["Failed"] and status.state is CheckState.FAILED


def test_missing_baseline_is_inconclusive() -> None:
    check = _check(failWhen="value > baseline * (1 + tolerance)", baseline={"offset": "1w"})
    status, results = _run(check, Measurement.ok(10.0, baseline=None))
    assert results == ["Inconclusive"]
    assert "baseline has no value" in status.message
    status, results = _run(check, Measurement.ok(10.0, baseline=5.0))
    assert results == ["Failed"]


def test_pass_when_gates_passing() -> None:
    check = _check(passWhen="value == 1")
    status, results = _run(check, Measurement.ok(0), Measurement.ok(1))
    assert results == ["Inconclusive", "Passed"]
    assert checks.finish(check, status).state is CheckState.PASSED


def test_state_at_phase_end() -> None:
    check = _check(failWhen="value > 1")
    passed, _ = _run(check, Measurement.ok(0.5))
    assert checks.finish(check, passed).state is CheckState.PASSED
    errored, _ = _run(check, Measurement.ok(0.5), Measurement.error("down"))
    assert checks.finish(check, errored).state is CheckState.ERROR
    unknown, _ = _run(check, Measurement.no_data("nothing"))
    assert checks.finish(check, unknown).state is CheckState.INCONCLUSIVE
    never = checks.initial(check)
    assert checks.finish(check, never).state is CheckState.INCONCLUSIVE


def test_pending_runs_do_not_count() -> None:
    check = _check()
    status, results = _run(check, Measurement.pending("job running"))
    assert results == ["Pending"] and status.runs == 0 and status.state is CheckState.RUNNING


def test_history_is_capped() -> None:
    check = _check()
    status, _ = _run(check, *[Measurement.ok(float(i)) for i in range(100)])
    assert len(status.history) == checks.HISTORY_LIMIT
    assert status.history[-1].v == 99.0


def test_history_limit_is_configurable() -> None:
    check = _check()
    status = checks.initial(check)
    for slot in range(10):
        status, _ = checks.record(check, status, Measurement.ok(float(slot)), NOW, slot, history_limit=3)
    assert [sample.v for sample in status.history] == [7.0, 8.0, 9.0]


def _samples(values: list[float], limit: int = 100) -> list[Sample]:
    history: list[Sample] = []
    for minute, value in enumerate(values):
        at = checks.stamp(NOW + datetime.timedelta(minutes=minute, microseconds=123))
        history = checks.append_sample(history, Sample(t=at, v=value, s="Passed"), limit)
    return history


def test_a_held_value_is_kept_as_the_first_and_last_sample_of_its_run() -> None:
    history = _samples([1.0] * 60)
    assert [(s.t, s.v) for s in history] == [("2026-01-01T00:00:00Z", 1.0), ("2026-01-01T00:59:00Z", 1.0)]
    history = _samples([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    assert [s.v for s in history] == [1.0, 1.0, 0.0, 0.0, 1.0]


def test_the_step_function_and_so_the_downtime_is_kept() -> None:
    values = [1.0] * 10 + [0.0] * 7 + [1.0] * 5 + [0.0] * 3 + [1.0] * 9
    until = NOW + datetime.timedelta(minutes=len(values))
    full = [(NOW + datetime.timedelta(minutes=i), v) for i, v in enumerate(values)]

    def points(history: list[Sample]) -> list[tuple[datetime.datetime, float]]:
        return [(datetime.datetime.fromisoformat(s.t), float(s.v or 0.0)) for s in history]

    kept = _samples(values)
    assert len(kept) < len(values) / 3
    assert slos.downtime(points(kept), until) == slos.downtime(full, until) == datetime.timedelta(minutes=10)


def test_history_values_are_rounded_and_times_whole_seconds() -> None:
    check = _check()
    status, _ = checks.record(
        check, checks.initial(check), Measurement.ok(0.0123456789), NOW.replace(microsecond=5), 0
    )
    assert status.value == 0.0123456789  # the value itself is kept whole
    assert status.history[-1].v == 0.01235
    assert status.history[-1].t == "2026-01-01T00:00:00Z"
