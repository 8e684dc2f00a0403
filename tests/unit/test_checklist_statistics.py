"""The statistics behind the checklist's checks, against SciPy on fixed datasets.

Covers, to 1e-9 (relative to the larger of 1 and the reference):
- proportionChange (conversion since the deployment vs the period before): the
  relative change, its confidence interval, z and the two-sided p-value against
  SciPy's normal distribution and 2x2 chi-square; the tolerance from the baseline
  (0.1 without one); a status message that says whether a drop is larger than the
  tolerance, significant, both or neither; two rows exactly, NoData without trials;
- twoProportion's split check: chi-square statistic and p-value against
  ``scipy.stats.chisquare``, equal shares or ``expectedRatios``; the message names
  the winner or says "not significant yet", and leads with a sample-ratio mismatch;
- relativeChange (gradual degradation): the Theil-Sen line's start, end and slope
  against ``scipy.stats.theilslopes``, the Mann-Kendall p-value against SciPy's
  normal tail; a flat noisy series and one with a single spike show no change; long
  series are averaged in blocks before the pairwise methods.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from scipy import stats

from postdeploy.decisions import statistics, trends
from postdeploy.models.checks import Baseline, StatisticsCheck
from postdeploy.models.measurements import Measurement, MeasurementState, ReviewContext
from postdeploy.providers.postgres import PostgresProvider, Rows
from postdeploy.providers.statistics import StatisticsProvider
from tests.contexts import make_context

TOLERANCE = 1e-9


def _close(actual: float, expected: float) -> None:
    assert abs(actual - expected) <= TOLERANCE * max(1.0, abs(expected)), (actual, expected)


class Counts(PostgresProvider):
    """Answers every query with the given (group, trials, successes) rows."""

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        super().__init__(None)
        self.rows = rows

    async def fetch(self, query: str, ctx: ReviewContext, **_: Any) -> Rows:
        return Rows(["group", "trials", "successes"], self.rows, truncated=False)


async def _measure(rows: list[tuple[Any, ...]], baseline: Baseline | None = None, **spec: Any) -> Measurement:
    spec.setdefault("query", "SELECT 1")
    return await StatisticsProvider(Counts(rows)).measure(StatisticsCheck(**spec), make_context(), baseline)


# --- proportionChange ------------------------------------------------------------------

PERIODS = [
    # (before trials, before successes, after trials, after successes)
    (7475, 299, 8381, 290),
    (6656, 269, 6470, 215),
    (9120, 321, 9344, 160),
    (1200, 42, 1250, 36),
    (500, 25, 480, 31),
]


def _reference(n1: int, x1: int, n2: int, x2: int, alpha: float) -> dict[str, float]:
    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    z = (p2 - p1) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    margin = stats.norm.ppf(1 - alpha / 2) * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    chi2 = stats.chi2_contingency([[x1, n1 - x1], [x2, n2 - x2]], correction=False)
    return {
        "z": z,
        "pValue": 2 * stats.norm.sf(abs(z)),
        "chi2p": float(chi2.pvalue),
        "change": p2 / p1 - 1,
        "low": (p2 - p1 - margin) / p1,
        "high": (p2 - p1 + margin) / p1,
    }


@pytest.mark.parametrize(("n1", "x1", "n2", "x2"), PERIODS)
@pytest.mark.parametrize("alpha", [0.05, 0.01])
async def test_proportion_change_matches_scipy(n1: int, x1: int, n2: int, x2: int, alpha: float) -> None:
    m = await _measure(
        [("previous period", n1, x1), ("since deployment", n2, x2)], test="proportionChange", alpha=alpha
    )
    assert m.state is MeasurementState.OK, m.message
    expected = _reference(n1, x1, n2, x2, alpha)
    assert m.value is not None
    _close(m.value, expected["change"])
    _close(m.details["z"], expected["z"])
    _close(m.details["pValue"], expected["pValue"])
    _close(m.details["pValue"], expected["chi2p"])
    _close(m.details["changeCiLow"], expected["low"])
    _close(m.details["changeCiHigh"], expected["high"])
    assert m.details["referenceRate"] == x1 / n1 and m.details["currentRate"] == x2 / n2
    assert m.details["tolerance"] == 0.1  # no baseline: the decision module's default


@pytest.mark.parametrize(
    ("rows", "tolerance", "verdict", "drop"),
    [
        # -50%, p ~ 1e-13: both
        (
            [("before", 9120, 321), ("after", 9344, 160)],
            0.1,
            "a drop larger than the 10% tolerance and significant",
            1,
        ),
        # -13.5%, p = 0.07: larger than the tolerance, not significant
        (
            [("before", 7475, 299), ("after", 8381, 290)],
            0.1,
            "a drop larger than the 10% tolerance but not significant (p >= 0.05)",
            0,
        ),
        # -17.8%, p = 0.03, with a 25% tolerance: significant, within it
        (
            [("before", 6656, 269), ("after", 6470, 215)],
            0.25,
            "a significant drop, but within the 25% tolerance",
            0,
        ),
        (
            [("before", 6774, 234), ("after", 6740, 230)],
            0.1,
            "a drop within the 10% tolerance and not significant",
            0,
        ),
        ([("before", 500, 25), ("after", 480, 31)], 0.1, "no drop", 0),
    ],
)
async def test_proportion_change_says_which_condition_holds(
    rows: list[tuple[Any, ...]], tolerance: float, verdict: str, drop: int
) -> None:
    m = await _measure(rows, Baseline(tolerance=tolerance), test="proportionChange")
    assert m.message.startswith(verdict + ": after "), m.message
    assert m.details["drop"] == drop
    assert m.details["tolerance"] == tolerance
    assert (m.details["pValue"] < 0.05) is m.details["significant"]


async def test_proportion_change_needs_two_periods_with_trials() -> None:
    one = await _measure([("before", 10, 1)], test="proportionChange")
    assert one.state is MeasurementState.ERROR and "exactly 2 rows" in one.message
    empty = await _measure([("before", 100, 3), ("after", 0, 0)], test="proportionChange")
    assert empty.state is MeasurementState.NO_DATA and "'after' has no trials yet" in empty.message
    nothing_before = await _measure([("before", 100, 0), ("after", 100, 3)], test="proportionChange")
    assert nothing_before.state is MeasurementState.NO_DATA


# --- A/B: the split and the message ------------------------------------------------------

AB = [
    ([("A", 7503, 738), ("B", 7458, 905)], None),
    ([("A", 8260, 1667), ("B", 6718, 1313)], None),
    ([("A", 3000, 300), ("B", 3100, 330), ("C", 2950, 250)], None),
    ([("A", 6000, 600), ("B", 2050, 230)], [0.75, 0.25]),
]


@pytest.mark.parametrize(("rows", "ratios"), AB)
async def test_the_split_of_an_ab_test_matches_scipy(
    rows: list[tuple[str, int, int]], ratios: list[float] | None
) -> None:
    m = await _measure(rows, test="twoProportion", expectedRatios=ratios)
    observed = [n for _, n, _ in rows]
    shares = ratios or [1.0] * len(rows)
    expected = [sum(observed) * s / sum(shares) for s in shares]
    reference = stats.chisquare(observed, expected)
    _close(m.details["srmChiSquare"], float(reference.statistic))
    _close(m.details["srmPValue"], float(reference.pvalue))
    assert m.details["sampleRatioMismatch"] == bool(reference.pvalue < 0.001)
    for share, want in zip(m.details["expectedShares"], shares, strict=True):
        _close(share, want / sum(shares))


async def test_the_message_names_the_winner_or_says_not_significant_yet() -> None:
    winner = await _measure(AB[0][0], test="twoProportion")
    assert winner.message.startswith("winner B: B 12.13% vs A 9.84%, lift +23.4%"), winner.message
    assert "split 50.2%/49.8% as planned (SRM p=0.713)" in winner.message
    flat = await _measure([("A", 7567, 591), ("B", 7378, 607)], test="twoProportion")
    assert flat.message.startswith("not significant yet: B 8.23% vs A 7.81%"), flat.message
    broken = await _measure(AB[1][0], test="twoProportion")
    assert broken.message.startswith("sample-ratio mismatch: split 55.1%/44.9% where 50.0%/50.0% was planned")
    assert "cannot be trusted; not significant yet" in broken.message
    variant = winner.details["groups"][1]
    _close(variant["liftCi"][0], variant["ci"][0] / winner.details["controlRate"])


# --- relativeChange --------------------------------------------------------------------


def _series(values: list[float], step: float = 600.0, start: float = 1.7e9) -> trends.Series:
    return trends.Series({"job": "x"}, [start + i * step for i in range(len(values))], values)


def _creep(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [0.11 * (1 + 3 * i / (n - 1)) * math.exp(rng.gauss(0, 0.05)) for i in range(n)]


def _flat(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [0.2 * math.exp(rng.gauss(0, 0.08)) for _ in range(n)]


@pytest.mark.parametrize("values", [_creep(133, 1), _flat(133, 2), _creep(40, 3), _flat(12, 4)])
def test_relative_change_matches_scipy(values: list[float]) -> None:
    series = _series(values)
    result = trends.relative_change(series)
    hours = [(t - series.times[0]) / 3600 for t in series.times]
    slope, intercept, _, _ = stats.theilslopes(values, hours)
    span = hours[-1]
    _close(result.details["slopePerHour"], slope)
    _close(result.details["startValue"], intercept)
    _close(result.details["endValue"], intercept + slope * span)
    _close(result.details["absoluteChange"], slope * span)
    _close(result.value, slope * span / abs(intercept))
    s = sum((b > a) - (b < a) for i, a in enumerate(values) for b in values[i + 1 :])
    n = len(values)
    variance = n * (n - 1) * (2 * n + 5) / 18  # no ties in these series
    z = (s - math.copysign(1, s)) / math.sqrt(variance) if s else 0.0
    _close(result.details["pValue"], 2 * stats.norm.sf(abs(z)))


def test_a_creep_is_a_large_significant_change_and_noise_is_not() -> None:
    creep = trends.relative_change(_series(_creep(133, 5)))
    assert creep.value > 2.5 and creep.details["pValue"] < 1e-20
    for seed in range(20):
        flat = trends.relative_change(_series(_flat(133, seed)))
        assert not (flat.value > 0.25 and flat.details["pValue"] < 0.01), (seed, flat.details)


def test_one_spike_is_not_a_trend() -> None:
    values = _flat(133, 7)
    for i in range(60, 66):  # an hour of errors ten times as high, mid-window
        values[i] *= 10
    result = trends.relative_change(_series(values))
    assert abs(result.value) < 0.05


def test_a_line_from_zero_is_reported_as_plus_or_minus_1e9() -> None:
    # value = hours since the first sample: the Theil-Sen line starts at exactly 0.
    rising = trends.relative_change(_series([i * 600 / 3600 for i in range(40)]))
    assert rising.details["startValue"] == 0.0 and rising.value == trends.NO_START
    falling = trends.relative_change(_series([-i * 600 / 3600 for i in range(40)]))
    assert falling.value == -trends.NO_START
    flat = trends.relative_change(_series([0.0] * 30))
    assert flat.value == 0.0


def test_long_series_are_averaged_in_blocks_before_pairwise_methods() -> None:
    values = _creep(2000, 9)
    series = _series(values, step=60)
    thin = trends.thinned(series)
    assert len(thin.values) == trends.PAIRWISE_POINTS
    for k in (0, 1, 499, 999):
        _close(thin.values[k], (values[2 * k] + values[2 * k + 1]) / 2)
        _close(thin.times[k], (series.times[2 * k] + series.times[2 * k + 1]) / 2)
    result = trends.relative_change(series)
    origin = series.times[0]
    slope, intercept, _, _ = stats.theilslopes(thin.values, [(t - origin) / 3600 for t in thin.times])
    _close(result.details["slopePerHour"], slope)
    _close(result.details["startValue"], intercept)
    assert result.details["samples"] == 2000
    assert result.details["pValue"] == statistics.mann_kendall(thin.values).p_value
    short = _series(values[:999])
    assert trends.thinned(short) is short
