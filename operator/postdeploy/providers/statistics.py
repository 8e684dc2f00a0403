"""Statistics checks: A/B test significance and sample-ratio mismatch from SQL counts.

Called by ``postdeploy.engine`` for a check with a ``statistics`` block
(``models.checks.StatisticsCheck``). The engine builds one ``StatisticsProvider`` at
start-up around the ``PostgresProvider``; the query runs exactly like a ``postgres``
check (read-only transaction, statement timeout, named parameters, the check's
Secret DSN or the operator's default), and the arithmetic is
``postdeploy.decisions.statistics``.

The query returns one row per group, in the order the groups should be reported:

- ``group``: the group's name (``group`` is an SQL keyword: write ``AS "group"``);
- ``trials``: units in the group (users assigned, sessions...), a whole number;
- ``successes``: units that converted; needed by ``twoProportion`` only.

``twoProportion``: the control is ``control`` or else the first row; every other group
is compared with it by a two-proportion z-test (two-sided, confidence ``1 - alpha``).
The *best* variant is the one with the highest success rate; the value is its p-value
and the details carry, per group, the rate, the difference and relative lift against
the control with its confidence interval, the p-value and whether it is significant,
plus ``winner``: the best variant when it is significantly better, the control when
every variant is significantly worse, else ``not significant yet``. No correction for
several variants is applied: with many, lower ``alpha``. The same run checks the split
(``srmPValue``, ``sampleRatioMismatch``: the sampleRatio test below on the groups'
trials against ``expectedRatios``), since a broken split voids the comparison; the
message says the winner (or "not significant yet") and whether the split holds.

``proportionChange``: exactly two rows, the reference period first and the current
one second (e.g. conversions in the period of equal length before the deployment and
since it). The value is the relative change of the rate, ``current / reference - 1``
(``changeCiLow``/``changeCiHigh`` its confidence interval); ``pValue`` is the
two-proportion z-test's, ``tolerance`` the check's baseline tolerance (0.1 without
one). ``drop`` is 1 when the rate fell by more than the tolerance *and* the fall is
significant, and the message says which of the two holds, so that
``failWhen: value < -tolerance and pValue < alpha`` reads the same way in status.

``sampleRatio``: Pearson's chi-square test of the groups' ``trials`` against
``expectedRatios`` (in row order; equal shares by default). The value is the p-value;
``mismatch`` is true when it is below ``alpha``, which defaults to 0.001 here (the
usual SRM threshold: a mismatch means a broken assignment, not an effect) unless the
check sets ``alpha``.
"""

from __future__ import annotations

import dataclasses
import decimal
import math
from collections.abc import Sequence
from typing import Any

from postdeploy.decisions import statistics
from postdeploy.kit import details as details_
from postdeploy.kit import exceptions
from postdeploy.models.checks import Baseline, StatisticsCheck
from postdeploy.models.measurements import Measurement, ReviewContext
from postdeploy.providers.postgres import PostgresProvider, Rows, failed

__all__ = ["SRM_ALPHA", "StatisticsProvider"]

SRM_ALPHA = 0.001  # sampleRatio's alpha when the check does not set one
NOT_YET = "not significant yet"
DEFAULT_TOLERANCE = 0.1  # as in postdeploy.decisions.checks, without a baseline


class _BadRows(ValueError):
    """The rows do not have the documented shape; the message says what is wrong."""


class StatisticsProvider:
    """Runs a count query through ``PostgresProvider`` and tests the counts."""
    limits_itself = False

    def __init__(
        self, postgres: PostgresProvider, *, timeout_seconds: float = 30, max_groups: int = 1000
    ) -> None:
        self._postgres = postgres
        self._timeout = timeout_seconds
        self._max_groups = max_groups

    async def measure(
        self, spec: StatisticsCheck, ctx: ReviewContext, baseline: Baseline | None = None
    ) -> Measurement:
        """Test the counts. ``baseline`` is ignored: the test has its own control."""
        try:
            result = await self._postgres.fetch(
                spec.query, ctx, timeout_seconds=self._timeout, row_limit=self._max_groups
            )
        except exceptions.QueryFailed as exc:
            return failed(exc, spec.optional, spec.query)
        if result.truncated:
            return Measurement.error(
                f"the query returned more than {self._max_groups} groups", query=spec.query
            )
        if not result.rows:
            return Measurement.no_data("the query returned no groups", query=spec.query)
        try:
            if spec.test == "twoProportion":
                measurement = _two_proportion(spec, _groups(result, with_successes=True))
            elif spec.test == "proportionChange":
                tolerance = baseline.tolerance if baseline is not None else DEFAULT_TOLERANCE
                measurement = _proportion_change(spec, _groups(result, with_successes=True), tolerance)
            else:
                measurement = _sample_ratio(spec, _groups(result, with_successes=False))
        except ValueError as exc:  # _BadRows, and the statistics module's own checks
            return Measurement.error(str(exc), query=spec.query)
        return dataclasses.replace(
            measurement, query=spec.query, details=details_.fit(measurement.details, "groups")
        )


def _two_proportion(spec: StatisticsCheck, groups: list[tuple[str, int, int]]) -> Measurement:
    if len(groups) < 2:
        return Measurement.no_data(f"a comparison needs at least 2 groups, got {len(groups)}")
    names = [name for name, _, _ in groups]
    control_name = spec.control or names[0]
    if control_name not in names:
        raise _BadRows(f"control group {control_name!r} is not in the result (groups: {', '.join(names)})")
    _, control_trials, control_successes = groups[names.index(control_name)]
    if control_trials <= 0:
        return Measurement.no_data(f"control group {control_name!r} has no trials yet")

    confidence = 1.0 - spec.alpha
    rows: list[dict[str, Any]] = []
    variants: list[tuple[str, statistics.ProportionTestResult]] = []
    for name, trials, successes in groups:
        row: dict[str, Any] = {"group": name, "trials": trials, "successes": successes}
        if name == control_name:
            row.update(control=True, rate=successes / control_trials)
        elif trials <= 0:
            row.update(rate=None, note="no trials yet")
        else:
            test = statistics.two_proportion_z_test(
                control_successes, control_trials, successes, trials, confidence=confidence
            )
            variants.append((name, test))
            row.update(
                rate=test.p2,
                difference=test.difference,
                lift=test.relative_lift,
                ci=list(test.confidence_interval),
                liftCi=_relative(test.confidence_interval, test.p1),
                pValue=test.p_value,
                significant=test.significant(spec.alpha),
            )
        rows.append(row)
    if not variants:
        return Measurement.no_data("no variant has trials yet", details={"groups": rows})

    best_name, best = max(variants, key=lambda item: item[1].p2)
    if best.significant(spec.alpha) and best.difference > 0:
        winner = best_name
    elif all(t.significant(spec.alpha) and t.difference < 0 for _, t in variants):
        winner = control_name
    else:
        winner = NOT_YET
    found: dict[str, Any] = {
        "test": "twoProportion",
        "control": control_name,
        "controlRate": control_successes / control_trials,
        "best": best_name,
        "bestRate": best.p2,
        "pValue": best.p_value,
        "difference": best.difference,
        "ciLow": best.confidence_interval[0],
        "ciHigh": best.confidence_interval[1],
        "confidence": confidence,
        "alpha": spec.alpha,
        "significant": best.significant(spec.alpha),
        "winner": winner,
        "groups": rows,
    }
    if best.relative_lift is not None:
        found["lift"] = best.relative_lift
    found.update(_split(spec, groups))
    message = _ab_message(found, best, best_name, control_name)
    return Measurement.ok(best.p_value, message=message, details=details_.json_value(found))


def _split(spec: StatisticsCheck, groups: list[tuple[str, int, int]]) -> dict[str, Any]:
    """The sample-ratio test of the groups' trials, for an A/B comparison's details."""
    ratios = spec.expected_ratios or [1.0] * len(groups)
    if len(ratios) != len(groups):
        raise _BadRows(
            f"expectedRatios has {len(ratios)} entries but the query returned {len(groups)} groups"
        )
    test = statistics.sample_ratio_mismatch([t for _, t, _ in groups], ratios, alpha=SRM_ALPHA)
    total = sum(t for _, t, _ in groups)
    return {
        "srmPValue": test.p_value,
        "srmChiSquare": test.statistic,
        "srmAlpha": SRM_ALPHA,
        "sampleRatioMismatch": test.mismatch,
        "shares": [t / total for _, t, _ in groups],
        "expectedShares": [r / math.fsum(ratios) for r in ratios],
    }


def _ab_message(
    found: dict[str, Any], best: statistics.ProportionTestResult, best_name: str, control: str
) -> str:
    comparison = (
        f"{best_name} {best.p2:.2%} vs {control} {best.p1:.2%}"
        + (f", lift {best.relative_lift:+.1%}" if best.relative_lift is not None else "")
        + f" (difference {best.difference:+.2%}, {found['confidence']:.0%} CI "
        f"{best.confidence_interval[0]:+.2%}..{best.confidence_interval[1]:+.2%}), p={best.p_value:.3g}"
    )
    winner = found["winner"]
    verdict = f"winner {winner}" if winner != NOT_YET else NOT_YET
    shares = "/".join(f"{share:.1%}" for share in found["shares"])
    planned = "/".join(f"{share:.1%}" for share in found["expectedShares"])
    if found["sampleRatioMismatch"]:
        return (
            f"sample-ratio mismatch: split {shares} where {planned} was planned "
            f"(p={found['srmPValue']:.3g}), so the comparison cannot be trusted; {verdict}: {comparison}"
        )
    return f"{verdict}: {comparison}; split {shares} as planned (SRM p={found['srmPValue']:.3g})"


def _relative(interval: tuple[float, float], reference: float) -> list[float] | None:
    if reference == 0:
        return None
    return [interval[0] / reference, interval[1] / reference]


def _proportion_change(
    spec: StatisticsCheck, groups: list[tuple[str, int, int]], tolerance: float
) -> Measurement:
    if len(groups) != 2:
        raise _BadRows(
            f"proportionChange needs exactly 2 rows (the reference period, then the current one), "
            f"got {len(groups)}"
        )
    (before_name, before_trials, before_successes), (now_name, now_trials, now_successes) = groups
    if before_trials == 0 or now_trials == 0:
        empty = before_name if before_trials == 0 else now_name
        return Measurement.no_data(f"{empty!r} has no trials yet")
    if before_successes == 0:
        return Measurement.no_data(f"{before_name!r} has no successes: no rate to compare with")
    test = statistics.two_proportion_z_test(
        before_successes, before_trials, now_successes, now_trials, confidence=1.0 - spec.alpha
    )
    assert test.relative_lift is not None  # before_successes > 0
    change = test.relative_lift
    ci = _relative(test.confidence_interval, test.p1) or [change, change]
    significant = test.significant(spec.alpha)
    beyond = change < -tolerance
    found: dict[str, Any] = {
        "test": "proportionChange",
        "reference": before_name,
        "current": now_name,
        "referenceRate": test.p1,
        "currentRate": test.p2,
        "referenceTrials": before_trials,
        "currentTrials": now_trials,
        "referenceSuccesses": before_successes,
        "currentSuccesses": now_successes,
        "change": change,
        "changeCiLow": ci[0],
        "changeCiHigh": ci[1],
        "difference": test.difference,
        "z": test.z,
        "pValue": test.p_value,
        "alpha": spec.alpha,
        "confidence": 1.0 - spec.alpha,
        "tolerance": tolerance,
        "significant": significant,
        "beyondTolerance": beyond,
        "drop": 1 if beyond and significant else 0,
    }
    described = (
        f"{now_name} {test.p2:.2%} vs {before_name} {test.p1:.2%} ({change:+.1%}, "
        f"{1.0 - spec.alpha:.0%} CI {ci[0]:+.1%}..{ci[1]:+.1%}), p={test.p_value:.3g}"
    )
    limit = f"the {tolerance:.0%} tolerance"
    if change >= 0:
        verdict = "no drop"
    elif beyond and significant:
        verdict = f"a drop larger than {limit} and significant"
    elif beyond:
        verdict = f"a drop larger than {limit} but not significant (p >= {spec.alpha:g})"
    elif significant:
        verdict = f"a significant drop, but within {limit}"
    else:
        verdict = f"a drop within {limit} and not significant"
    return Measurement.ok(change, message=f"{verdict}: {described}", details=found)


def _sample_ratio(spec: StatisticsCheck, groups: list[tuple[str, int, int]]) -> Measurement:
    if len(groups) < 2:
        return Measurement.no_data(f"a sample-ratio test needs at least 2 groups, got {len(groups)}")
    ratios = spec.expected_ratios or [1.0] * len(groups)
    if len(ratios) != len(groups):
        raise _BadRows(
            f"expectedRatios has {len(ratios)} entries but the query returned {len(groups)} groups"
        )
    observed = [trials for _, trials, _ in groups]
    if sum(observed) == 0:
        return Measurement.no_data("no group has trials yet")
    alpha = spec.alpha if "alpha" in spec.model_fields_set else SRM_ALPHA
    test = statistics.sample_ratio_mismatch(observed, ratios, alpha=alpha)
    total, ratio_sum = sum(observed), math.fsum(ratios)
    rows = [
        {
            "group": name,
            "observed": count,
            "expected": expected,
            "share": count / total,
            "expectedShare": ratio / ratio_sum,
        }
        for (name, count, _), expected, ratio in zip(groups, test.expected, ratios, strict=True)
    ]
    found = {
        "test": "sampleRatio",
        "pValue": test.p_value,
        "chiSquare": test.statistic,
        "degreesOfFreedom": test.degrees_of_freedom,
        "alpha": alpha,
        "mismatch": test.mismatch,
        "groups": rows,
    }
    return Measurement.ok(test.p_value, details=details_.json_value(found))


def _groups(result: Rows, *, with_successes: bool) -> list[tuple[str, int, int]]:
    """(group, trials, successes) per row, checked; successes 0 when not needed."""
    needed = ["group", "trials", "successes"] if with_successes else ["group", "trials"]
    missing = [c for c in needed if c not in result.columns]
    if missing:
        raise _BadRows(
            f"the query must return the columns {', '.join(needed)} (missing {', '.join(missing)}; "
            f"got {', '.join(result.columns)})"
        )
    index = {c: result.columns.index(c) for c in needed}
    groups: list[tuple[str, int, int]] = []
    seen: set[str] = set()
    for row in result.rows:
        name = str(row[index["group"]])
        if name in seen:
            raise _BadRows(f"group {name!r} appears in more than one row")
        seen.add(name)
        trials = _count(row, index["trials"], "trials", name)
        successes = _count(row, index["successes"], "successes", name) if with_successes else 0
        if successes > trials:
            raise _BadRows(f"group {name!r} has more successes ({successes}) than trials ({trials})")
        groups.append((name, trials, successes))
    return groups


def _count(row: Sequence[Any], position: int, column: str, group: str) -> int:
    raw = row[position]
    if isinstance(raw, bool) or not isinstance(raw, (int, float, decimal.Decimal)):
        raise _BadRows(f"{column} of group {group!r} is {raw!r}, not a count")
    if (isinstance(raw, float) and not math.isfinite(raw)) or raw != int(raw) or raw < 0:
        raise _BadRows(f"{column} of group {group!r} is {raw}, not a whole number >= 0")
    return int(raw)
