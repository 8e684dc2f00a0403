"""Statistics for deciding checks: A/B tests, sample-ratio mismatch, trends, forecasts.

Pure functions over numbers, no I/O and nothing beyond the standard library's
:mod:`math`. Callers: the ``statistics`` provider's computations (period-over-period
change, the two-proportion z-test with lift and confidence interval, the
sample-ratio-mismatch check) and the trend analysis of Prometheus range samples
(memory-leak and gradual-latency checks: Mann-Kendall, Theil-Sen, least squares and
the time until a limit is reached). The distributions these need (normal, Student t,
chi-square) are ``postdeploy.decisions.distributions``.

Degenerate inputs are decided once, the same way everywhere:

- ``ValueError`` (with a message naming the problem) for NaN or infinite numbers,
  sequences of different lengths, impossible counts (``n <= 0``, ``x < 0``, ``x > n``),
  probabilities outside (0, 1), fewer than 3 points for Mann-Kendall and regression
  (2 for Theil-Sen), and times that are all equal (no slope can be fitted).
- Well-defined results, not errors, for series whose values are all equal or that
  have no spread to measure: Mann-Kendall says "no trend" (S = 0, variance 0, Z = 0,
  p = 1, tau 0); regression gives slope 0, standard error 0, p = 1 and r² = 0 (as
  ``scipy.stats.linregress``); a perfect non-flat line gives standard error 0 and
  p = 0. A z-test whose pooled proportion is 0 or 1 has Z = 0 and p = 1. Relative
  lift and relative change are ``None`` when the reference is 0.

Checked against SciPy in ``tests/unit/test_statistics.py``. The pairwise methods
(Mann-Kendall, Theil-Sen) are O(n²), fine for the few thousand samples of a
Prometheus range query (``postdeploy.decisions.trends`` thins longer ones).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Sequence
from typing import Literal

from postdeploy.decisions import distributions

__all__ = [
    "Alternative",
    "MannKendallResult",
    "ProportionTestResult",
    "RegressionResult",
    "SampleRatioMismatchResult",
    "TheilSenResult",
    "Trend",
    "linear_regression",
    "mann_kendall",
    "period_change",
    "sample_ratio_mismatch",
    "theil_sen",
    "time_to_reach",
    "two_proportion_z_test",
]

Alternative = Literal["two-sided", "less", "greater"]
Trend = Literal["increasing", "decreasing", "no trend"]

_SQRT2 = math.sqrt(2.0)




# --- results ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ProportionTestResult:
    """Two-proportion z-test of group 2 (treatment) against group 1 (control)."""

    p1: float
    p2: float
    difference: float  # p2 - p1
    relative_lift: float | None  # (p2 - p1) / p1; None when p1 == 0
    z: float  # with the pooled standard error (the test's null: p1 == p2)
    p_value: float
    alternative: Alternative
    confidence: float
    confidence_interval: tuple[float, float]  # two-sided, unpooled (Wald) standard error

    def significant(self, alpha: float = 0.05) -> bool:
        """Whether the p-value is below ``alpha``."""
        distributions.check_probability("alpha", alpha)
        return self.p_value < alpha


@dataclasses.dataclass(frozen=True, slots=True)
class SampleRatioMismatchResult:
    """Pearson's chi-square goodness-of-fit of observed counts to the planned split."""

    statistic: float
    degrees_of_freedom: int
    p_value: float
    expected: tuple[float, ...]  # the counts the planned ratios predict
    alpha: float
    mismatch: bool  # p_value < alpha: the split is broken, distrust the experiment


@dataclasses.dataclass(frozen=True, slots=True)
class MannKendallResult:
    """Mann-Kendall trend test of values in time order."""

    n: int
    s: int
    variance: float  # with the tie correction
    z: float  # with the continuity correction
    p_value: float  # two-sided
    tau: float  # Kendall's tau-b between position and value (tau-a when nothing ties)
    alpha: float
    trend: Trend


@dataclasses.dataclass(frozen=True, slots=True)
class TheilSenResult:
    """Median of pairwise slopes and the matching intercept."""

    slope: float
    intercept: float  # median(values) - slope * median(times), as scipy.stats.theilslopes


@dataclasses.dataclass(frozen=True, slots=True)
class RegressionResult:
    """Ordinary least-squares line ``value = intercept + slope * time``."""

    n: int
    slope: float
    intercept: float
    slope_stderr: float
    confidence: float
    slope_confidence_interval: tuple[float, float]  # Student t with n - 2 degrees of freedom
    r_squared: float
    p_value: float  # two-sided, for slope != 0


# --- distributions ---------------------------------------------------------------------














# --- tests -----------------------------------------------------------------------------


def two_proportion_z_test(
    x1: int,
    n1: int,
    x2: int,
    n2: int,
    alternative: Alternative = "two-sided",
    confidence: float = 0.95,
) -> ProportionTestResult:
    """Compare the success rate x2/n2 (treatment) with x1/n1 (control).

    ``alternative`` is the hypothesis about p2: "less" means p2 < p1, "greater" means
    p2 > p1. Z uses the pooled standard error; the confidence interval of p2 - p1 is
    always two-sided and uses the unpooled (Wald) standard error.
    """
    for name, x, n in (("1", x1, n1), ("2", x2, n2)):
        if n <= 0:
            raise ValueError(f"group {name}: the number of trials must be positive, got n={n}")
        if x < 0 or x > n:
            raise ValueError(f"group {name}: successes must be between 0 and n={n}, got x={x}")
    if alternative not in ("two-sided", "less", "greater"):
        raise ValueError(f"alternative must be two-sided, less or greater, got {alternative!r}")
    distributions.check_probability("confidence", confidence)
    p1, p2 = x1 / n1, x2 / n2
    difference = p2 - p1
    pooled = (x1 + x2) / (n1 + n2)
    pooled_se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    if pooled_se == 0.0:  # nobody or everybody converted in both groups: nothing to test
        z, p_value = 0.0, 1.0
    else:
        z = difference / pooled_se
        if alternative == "two-sided":
            p_value = math.erfc(abs(z) / _SQRT2)
        elif alternative == "less":
            p_value = distributions.normal_cdf(z)
        else:
            p_value = distributions.normal_sf(z)
    wald_se = math.sqrt(p1 * (1.0 - p1) / n1 + p2 * (1.0 - p2) / n2)
    margin = -distributions.normal_quantile(0.5 * (1.0 - confidence)) * wald_se
    return ProportionTestResult(
        p1=p1,
        p2=p2,
        difference=difference,
        relative_lift=difference / p1 if p1 != 0 else None,
        z=z,
        p_value=p_value,
        alternative=alternative,
        confidence=confidence,
        confidence_interval=(difference - margin, difference + margin),
    )


def sample_ratio_mismatch(
    observed: Sequence[int],
    expected_ratios: Sequence[float],
    alpha: float = 0.001,
) -> SampleRatioMismatchResult:
    """Chi-square test that the observed group sizes follow the planned ratios.

    The ratios need not sum to 1 (``[1, 1]`` is a 50/50 split). The strict default
    alpha of 0.001 is the common SRM practice: a mismatch flags a broken assignment,
    not an effect, so it must be very unlikely by chance.
    """
    if len(observed) != len(expected_ratios):
        raise ValueError(
            f"observed has {len(observed)} groups but expected_ratios has {len(expected_ratios)}"
        )
    if len(observed) < 2:
        raise ValueError("sample ratio mismatch needs at least 2 groups")
    if any(count < 0 for count in observed):
        raise ValueError(f"observed counts must not be negative, got {list(observed)}")
    for ratio in expected_ratios:
        distributions.check_finite("expected ratio", ratio)
        if ratio <= 0:
            raise ValueError(f"expected ratios must be positive, got {list(expected_ratios)}")
    distributions.check_probability("alpha", alpha)
    total = sum(observed)
    if total == 0:
        raise ValueError("sample ratio mismatch needs at least one observation")
    ratio_sum = math.fsum(expected_ratios)
    expected = tuple(total * ratio / ratio_sum for ratio in expected_ratios)
    statistic = math.fsum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    degrees_of_freedom = len(observed) - 1
    p_value = distributions.chi_square_sf(statistic, degrees_of_freedom)
    return SampleRatioMismatchResult(
        statistic=statistic,
        degrees_of_freedom=degrees_of_freedom,
        p_value=p_value,
        expected=expected,
        alpha=alpha,
        mismatch=p_value < alpha,
    )


def mann_kendall(values: Sequence[float], alpha: float = 0.05) -> MannKendallResult:
    """Mann-Kendall test for a monotonic trend in values taken at increasing times.

    Needs at least 3 values. Equal values are ties: they reduce the variance of S
    (the tie correction) and tau is tau-b. All-equal values are "no trend".
    """
    _check_series("values", values, minimum=3)
    distributions.check_probability("alpha", alpha)
    n = len(values)
    # S = sum over pairs i < j of sign(values[j] - values[i]), counted from the end
    # with the later values kept sorted: O(n log n) comparisons instead of n²/2 in
    # Python (a trend re-fitted every 15 minutes is most of a backtest's CPU).
    s = 0
    later: list[float] = []
    for current in reversed(values):
        s += (len(later) - bisect.bisect_right(later, current)) - bisect.bisect_left(later, current)
        bisect.insort(later, current)
    tie_groups: dict[float, int] = {}
    for value in values:
        tie_groups[value] = tie_groups.get(value, 0) + 1
    variance = (
        n * (n - 1) * (2 * n + 5) - sum(t * (t - 1) * (2 * t + 5) for t in tie_groups.values())
    ) / 18.0
    corrected = s - 1 if s > 0 else s + 1 if s < 0 else 0  # continuity: S moves in steps of 2
    z = corrected / math.sqrt(variance) if variance > 0.0 else 0.0
    p_value = min(1.0, math.erfc(abs(z) / _SQRT2))
    pairs = n * (n - 1) // 2
    tied_pairs = sum(t * (t - 1) // 2 for t in tie_groups.values())
    tau = s / math.sqrt(pairs * (pairs - tied_pairs)) if pairs > tied_pairs else 0.0
    trend: Trend = "no trend"
    if p_value < alpha:
        trend = "increasing" if z > 0 else "decreasing"
    return MannKendallResult(
        n=n, s=s, variance=variance, z=z, p_value=p_value, tau=tau, alpha=alpha, trend=trend
    )


def theil_sen(times: Sequence[float], values: Sequence[float]) -> TheilSenResult:
    """Theil-Sen line: the median slope over all pairs with different times.

    Robust to outliers (a GC pause, a scrape glitch). Needs at least 2 points and
    2 distinct times.
    """
    _check_pairs(times, values, minimum=2)
    slopes = [
        (values[j] - values[i]) / (times[j] - times[i])
        for i in range(len(times) - 1)
        for j in range(i + 1, len(times))
        if times[j] != times[i]
    ]
    if not slopes:
        raise ValueError("theil_sen needs at least 2 distinct times, all times are equal")
    slope = _median(slopes)
    return TheilSenResult(slope=slope, intercept=_median(values) - slope * _median(times))


def linear_regression(
    times: Sequence[float], values: Sequence[float], confidence: float = 0.95
) -> RegressionResult:
    """Least-squares line with the slope's standard error, t interval and p-value.

    Needs at least 3 points (one degree of freedom for the error) and 2 distinct
    times. Times may be large (Unix seconds): sums are taken around the means.
    """
    _check_pairs(times, values, minimum=3)
    distributions.check_probability("confidence", confidence)
    n = len(times)
    mean_t = math.fsum(times) / n
    mean_v = math.fsum(values) / n
    dt = [t - mean_t for t in times]
    dv = [v - mean_v for v in values]
    sxx = math.fsum(d * d for d in dt)
    if sxx == 0.0:
        raise ValueError("linear_regression needs at least 2 distinct times, all times are equal")
    sxy = math.fsum(a * b for a, b in zip(dt, dv, strict=True))
    syy = math.fsum(d * d for d in dv)
    slope = sxy / sxx
    intercept = mean_v - slope * mean_t
    df = n - 2
    sse = math.fsum((v - slope * d) ** 2 for v, d in zip(dv, dt, strict=True))
    slope_stderr = math.sqrt(sse / df / sxx)
    if syy == 0.0:  # flat: slope 0 exactly, and no variation for the line to explain
        r_squared, p_value = 0.0, 1.0
    elif slope_stderr == 0.0:  # a perfect line
        r_squared, p_value = 1.0, 0.0
    else:
        r_squared = min(1.0, sxy * sxy / (sxx * syy))
        p_value = 2.0 * distributions.student_t_tail(slope / slope_stderr, df)
    margin = -distributions.student_t_quantile(0.5 * (1.0 - confidence), df) * slope_stderr
    return RegressionResult(
        n=n,
        slope=slope,
        intercept=intercept,
        slope_stderr=slope_stderr,
        confidence=confidence,
        slope_confidence_interval=(slope - margin, slope + margin),
        r_squared=r_squared,
        p_value=min(1.0, p_value),
    )


def time_to_reach(
    times: Sequence[float],
    values: Sequence[float],
    limit: float,
    confidence: float = 0.95,
) -> float | None:
    """Seconds from the last time until the fitted line reaches ``limit``.

    None unless the growth is significant: a slope <= 0, or a confidence interval
    that includes 0, never reaches the limit (no leak). 0.0 when the fitted line is
    already at or above the limit at the last time.
    """
    distributions.check_finite("limit", limit)
    fit = linear_regression(times, values, confidence)
    if fit.slope <= 0 or fit.slope_confidence_interval[0] <= 0:
        return None
    last = max(times)
    return max(0.0, (limit - fit.intercept) / fit.slope - last)


def period_change(current: float, previous: float) -> float | None:
    """Relative change ``(current - previous) / |previous|``; None when previous == 0.

    Dividing by the magnitude keeps the sign meaning "went up" for negative values
    too (a net loss that shrinks is a positive change).
    """
    distributions.check_finite("current", current)
    distributions.check_finite("previous", previous)
    if previous == 0:
        return None
    return (current - previous) / abs(previous)


# --- internals -------------------------------------------------------------------------






















def _median(items: Sequence[float]) -> float:
    ordered = sorted(items)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return 0.5 * (ordered[middle - 1] + ordered[middle])






def _check_series(name: str, values: Sequence[float], minimum: int) -> None:
    if len(values) < minimum:
        raise ValueError(f"{name} needs at least {minimum} points, got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be finite numbers (no NaN or infinity)")


def _check_pairs(times: Sequence[float], values: Sequence[float], minimum: int) -> None:
    if len(times) != len(values):
        raise ValueError(f"times has {len(times)} points but values has {len(values)}")
    _check_series("times", times, minimum)
    _check_series("values", values, minimum)
