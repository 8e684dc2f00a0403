"""Deciding a check: one run's result, the check's state, and its state at phase end.

The only place where a measurement becomes Passed, Failed, Error or Inconclusive.
Called by ``postdeploy.engine`` after a provider measured. Pure: it takes the check's
previous status and returns the next one.

Rules, in the order they apply to a run:

1. The data source failed (``Error``) or answered with nothing (``NoData``): the run
   is Error or Inconclusive, never Failed, unless the check sets
   ``treatMissingAsFailure``. More than ``consecutiveErrorLimit`` errors in a row
   make the check Error.
2. ``failWhen`` is true: a failed run. More than ``failureLimit`` failed runs make
   the check Failed, which is final for the review.
3. ``passWhen`` is given and false, or a condition cannot be decided (``baseline``
   has no value): an Inconclusive run. Otherwise a Passed run.
4. Nothing to measure for this target (``NotApplicable``: no HPA to check): a
   Skipped run, which is neither good nor bad.

A run's message is the decision (preceded by the value and baseline unless the run
passed: those are shown beside it), then what the provider said about the value (the
statistics behind it, which statements are slow...).

At the end of its phase a check that has not failed is Passed when its last
decisive run passed, Skipped when its last run was skipped, Error when its last run
errored, else Inconclusive.

Once its phase has completed, a check that passed or was skipped is *settled*
(``settle``): it keeps its state, value, baseline, conditions, message, counts and
history, but not the resolved query and the details of its last run (but for the error
types the report reads), the closing sample of a held value, ``lastResult`` (its state)
and ``lastSlot``, and ``lastRun`` in whole seconds: nothing reads them any more
(docs/engine.md, "Status").
"""

from __future__ import annotations

import datetime
import functools
import math
from typing import Any

import orjson

from postdeploy.decisions.templates import ResolvedCheck
from postdeploy.kit import details as details_
from postdeploy.kit import exceptions
from postdeploy.models.measurements import Measurement, MeasurementState
from postdeploy.models.reviews import CheckState, CheckStatus, Sample

__all__ = ["RUN_RESULTS", "SETTLED", "TERMINAL", "finish", "initial", "record", "settle"]

TERMINAL = frozenset({CheckState.FAILED, CheckState.ERROR, CheckState.SKIPPED})
# Final states whose details and query are dropped once the phase has completed.
SETTLED = frozenset({CheckState.PASSED, CheckState.SKIPPED})
RUN_RESULTS = ("Passed", "Failed", "Error", "Inconclusive", "Pending", "Skipped")
HISTORY_LIMIT = 12  # samples kept per check by default (POSTDEPLOY_HISTORY_LIMIT)
_DETAILS_LIMIT = 4096  # characters of JSON kept in status per check


def initial(check: ResolvedCheck) -> CheckStatus:
    return CheckStatus(
        name=check.name,
        phase=check.phase,
        provider=check.spec.provider_name,
        fail_when=check.spec.fail_when,
        pass_when=check.spec.pass_when,
    )


# A tick runs all its due checks at one ``now``: their times are worded once (a few).
@functools.lru_cache(maxsize=8)
def stamp(moment: datetime.datetime) -> str:
    """A sample's time as history records it: whole seconds, UTC, ``Z``."""
    return moment.astimezone(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@functools.lru_cache(maxsize=8)
def _run_time_text(moment: datetime.datetime) -> str:
    """``lastRun``: full precision (the scale bench measures lag from it), UTC with ``Z``."""
    return moment.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


def _sample_value(value: float | None) -> float | None:
    """A history value to 4 significant digits: what a chart or an SLO can use."""
    return None if value is None else float(f"{value:.4g}")


def append_sample(history: list[Sample], sample: Sample, limit: int) -> list[Sample]:
    """``history`` with ``sample``, at most ``limit`` long; a run of equal samples (same
    value and result) is kept as its first and its last, so a value held for hours
    takes two samples and the history still reads as a step function (an SLO counts a
    sample's value until the next sample: ``decisions.slos.downtime``)."""
    key = (sample.v, sample.s)
    if len(history) >= 2 and (history[-2].v, history[-2].s) == (history[-1].v, history[-1].s) == key:
        extended = [*history[:-1], sample]
    else:
        extended = [*history, sample]
    return extended[-limit:] if limit > 0 else []


def _finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return value


def _environment(check: ResolvedCheck, measurement: Measurement) -> dict[str, float | None]:
    env: dict[str, float | None] = {}
    for key, value in measurement.details.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            env[key] = float(value)
    env["value"] = _finite(measurement.value)
    env["baseline"] = _finite(measurement.baseline)
    env["tolerance"] = check.spec.baseline.tolerance if check.spec.baseline else 0.1
    return env


def _decide(check: ResolvedCheck, measurement: Measurement) -> tuple[str, str]:
    """(run result, explanation) for a measurement in the OK state."""
    env = _environment(check, measurement)
    try:
        if check.fail_when and check.fail_when.evaluate(env):
            return "Failed", f"failWhen {check.fail_when.text!r} is true"
        if check.pass_when and not check.pass_when.evaluate(env):
            return "Inconclusive", f"passWhen {check.pass_when.text!r} is not yet true"
    except exceptions.Undecidable as reason:
        return "Inconclusive", f"cannot decide: {reason}"
    return "Passed", "within limits"


def _compact(details: Any) -> dict[str, Any] | None:

    if not details:
        return None
    text = orjson.dumps(details, default=str, option=orjson.OPT_NON_STR_KEYS)
    if len(text) <= _DETAILS_LIMIT:
        result: dict[str, Any] = orjson.loads(text)
        return result
    return {"truncated": True, "size": len(text)}


def _describe(value: float | None, baseline: float | None) -> str:
    parts = []
    if value is not None:
        parts.append(f"value {value:.6g}")
    if baseline is not None:
        parts.append(f"baseline {baseline:.6g}")
    return ", ".join(parts)


def record(
    check: ResolvedCheck,
    previous: CheckStatus,
    measurement: Measurement,
    now: datetime.datetime,
    slot: int,
    history_limit: int = HISTORY_LIMIT,
) -> tuple[CheckStatus, str]:
    """The check's status after one run, and the run's result."""
    spec = check.spec
    # Shallow: every field below is replaced, never changed in place.
    status = previous.model_copy()
    status.last_slot = slot
    status.last_run = _run_time_text(now)
    status.query = measurement.query or status.query
    if measurement.memo is not None:
        status.memo = dict(measurement.memo) or None
    if measurement.details:
        status.details = _compact(dict(measurement.details))

    if measurement.state is MeasurementState.PENDING:
        status.state = (
            CheckState.AWAITING_CONFIRMATION if spec.manual is not None else CheckState.RUNNING
        )
        status.message = measurement.message
        return status, "Pending"

    status.runs += 1
    missing = measurement.state in (MeasurementState.ERROR, MeasurementState.NO_DATA)
    if measurement.state is MeasurementState.NOT_APPLICABLE:
        result, explanation = "Skipped", f"not applicable: {measurement.message}"
        status.consecutive_errors = 0
    elif missing and not spec.treat_missing_as_failure:
        if measurement.state is MeasurementState.ERROR:
            result = "Error"
            status.errors += 1
            status.consecutive_errors += 1
            why = f"data source error: {measurement.message}"
        else:
            result = "Inconclusive"
            status.inconclusives += 1
            status.consecutive_errors = 0
            why = f"no data: {measurement.message}"
        explanation = why
    elif missing:
        result, explanation = "Failed", f"missing data counted as failure: {measurement.message}"
    else:
        status.value = _finite(measurement.value)
        status.baseline = _finite(measurement.baseline)
        status.consecutive_errors = 0
        result, explanation = _decide(check, measurement)
        if result == "Inconclusive":
            status.inconclusives += 1
        # A passing run's message is read beside its value and baseline (the plugin's
        # and the report's tables); one that did not pass travels alone (conditions,
        # Events, notifications, the post-mortem), so it says them.
        described = _describe(status.value, status.baseline) if result != "Passed" else ""
        explanation = f"{described}: {explanation}" if described else explanation
        if measurement.message:
            explanation = f"{explanation}; {measurement.message}"

    if result == "Failed":
        status.failures += 1
        status.consecutive_failures += 1
    elif result == "Passed":
        status.consecutive_failures = 0
    status.last_result = result
    # Built unvalidated: a string, a float or None, and a result, all made here.
    sample = Sample.model_construct(t=stamp(now), v=_sample_value(_finite(measurement.value)), s=result)
    status.history = append_sample(status.history, sample, max(1, history_limit))

    if status.failures > spec.failure_limit:
        status.state = CheckState.FAILED
        status.message = (
            f"{explanation} ({status.failures} failed run(s), failureLimit {spec.failure_limit})"
        )
    elif status.consecutive_errors > spec.consecutive_error_limit:
        status.state = CheckState.ERROR
        status.message = (
            f"{explanation} ({status.consecutive_errors} errors in a row, "
            f"consecutiveErrorLimit {spec.consecutive_error_limit})"
        )
    else:
        status.state = CheckState.RUNNING
        status.message = explanation
    return status, result


def finish(check: ResolvedCheck, status: CheckStatus) -> CheckStatus:
    """The check's final state when its phase ends."""
    if status.state in TERMINAL:
        return status
    final = status.model_copy()  # fields are replaced below, never changed in place
    if status.last_result == "Passed":
        final.state = CheckState.PASSED
    elif status.last_result == "Skipped":
        final.state = CheckState.SKIPPED
    elif status.last_result == "Error":
        final.state = CheckState.ERROR
    elif status.state is CheckState.AWAITING_CONFIRMATION:
        final.state = CheckState.INCONCLUSIVE
        final.message = "not confirmed before the phase ended"
    elif status.runs == 0:
        final.state = CheckState.INCONCLUSIVE
        final.message = final.message or "never measured"
    else:
        final.state = CheckState.INCONCLUSIVE
    return final


def settle(status: CheckStatus) -> CheckStatus:
    """A check of a completed phase as its status keeps it from then on.

    A check that passed or was skipped drops the resolved query and the details of its
    last run, and the closing sample of a held value from its history: its message
    states the decision and the statistics behind it (a comparison's counts, shares,
    ratio interval, p-value and batches), its value, baseline, conditions, counts and
    the rest of its history stay, the report reads only the error types in the details
    (``kit.details.for_report``, kept), and the query was in the check's Events and is
    the template's with the review's parameters. ``lastResult`` (equal to its state)
    and ``lastSlot`` go too, and ``lastRun`` keeps whole seconds.
    A Failed, Error or Inconclusive check keeps everything: it is what a reader
    investigates; so does a cleanup check, whose details record what it deleted (the
    report lists them). Pure and idempotent, so a restarted operator settles the same way.
    """
    if status.state not in SETTLED or status.provider == "cleanup":
        return status
    kept = details_.for_report(status.details)
    history = status.history
    # The last sample of a run of equal ones only said the value still held at the last
    # run: lastRun says when that was, and a step function (the downtime SLO, a chart)
    # holds a value until the next sample anyway; no sample follows a settled check's.
    while len(history) >= 2 and (history[-1].v, history[-1].s) == (history[-2].v, history[-2].s):
        history = history[:-1]
    # lastResult equals the settled state, lastSlot only tells the planner what ran in a
    # phase it no longer plans, and lastRun's fraction of a second is the scale bench's
    # measure of lag in running phases.
    last_run = _whole_seconds(status.last_run)
    if (
        status.query is None
        and status.details == kept
        and history == status.history
        and status.last_result is None
        and status.last_slot == -1
        and last_run == status.last_run
    ):
        return status
    return status.model_copy(
        update={
            "query": None,
            "details": kept,
            "history": history,
            "last_result": None,
            "last_slot": -1,
            "last_run": last_run,
        }
    )


def _whole_seconds(when: str | None) -> str | None:
    """``2026-01-01T01:59:00.086865Z`` as ``2026-01-01T01:59:00Z``."""
    if when is None or "." not in when:
        return when
    return when[: when.index(".")] + "Z"
