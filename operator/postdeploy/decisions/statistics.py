"""Statistics for deciding checks: A/B tests, sample-ratio mismatch, trends, forecasts.

Pure functions over numbers, no I/O and nothing beyond the standard library's
:mod:`math`. Callers: the ``statistics`` provider's computations (period-over-period
change, the two-proportion z-test with lift and confidence interval, the
sample-ratio-mismatch check) and the trend analysis of Prometheus range samples
(memory-leak and gradual-latency checks: Mann-Kendall, Theil-Sen, least squares and
the time until a limit is reached). The distributions these need (normal, Student t,
chi-square) are built here on the regularized incomplete gamma and beta functions and
are public so other decision code can reuse them.

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

Accuracy, checked against SciPy in ``tests/unit/test_statistics.py``: the normal
quantile to 1e-15 relative (Acklam's approximation refined by Halley steps) for
p down to 1e-300; the chi-square survival function to 1e-12 absolute (df up to
1000); the Student t CDF and quantile to 1e-10 (1e-13 for the CDF up to df 1e5,
about 1e-11 at df 1e7). The pairwise methods (Mann-Kendall, Theil-Sen) are O(n²),
fine for the few thousand samples of a Prometheus range query.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal

__all__ = [
    "Alternative",
    "MannKendallResult",
    "ProportionTestResult",
    "RegressionResult",
    "SampleRatioMismatchResult",
    "TheilSenResult",
    "Trend",
    "chi_square_sf",
    "linear_regression",
    "mann_kendall",
    "normal_cdf",
    "normal_quantile",
    "normal_sf",
    "period_change",
    "sample_ratio_mismatch",
    "student_t_cdf",
    "student_t_quantile",
    "theil_sen",
    "time_to_reach",
    "two_proportion_z_test",
]

Alternative = Literal["two-sided", "less", "greater"]
Trend = Literal["increasing", "decreasing", "no trend"]

_EPSILON = 1e-16  # relative convergence target for series and continued fractions
_TINY = 1e-300  # keeps Lentz's continued fractions away from division by zero
_MAX_ITERATIONS = 100_000
_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)

# Stirling's series in 1/z² (Bernoulli numbers B_2k / (2k (2k - 1))), highest first.
_STIRLING_SERIES = (
    1.0 / 156.0, -691.0 / 360360.0, 1.0 / 1188.0, -1.0 / 1680.0, 1.0 / 1260.0,
    -1.0 / 360.0, 1.0 / 12.0,
)  # fmt: skip

# Acklam's rational approximations of the normal quantile, highest power first.
_ACKLAM_CENTRAL_NUMERATOR = (
    -3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02,
    1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00,
)  # fmt: skip
_ACKLAM_CENTRAL_DENOMINATOR = (
    -5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02,
    6.680131188771972e01, -1.328068155288572e01, 1.0,
)  # fmt: skip
_ACKLAM_TAIL_NUMERATOR = (
    -7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00,
    -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00,
)  # fmt: skip
_ACKLAM_TAIL_DENOMINATOR = (
    7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00,
    3.754408661907416e00, 1.0,
)  # fmt: skip


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
        _check_probability("alpha", alpha)
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


def normal_cdf(x: float) -> float:
    """P(Z <= x) for a standard normal Z."""
    return 0.5 * math.erfc(-x / _SQRT2)


def normal_sf(x: float) -> float:
    """P(Z > x) for a standard normal Z, accurate far into the upper tail."""
    return 0.5 * math.erfc(x / _SQRT2)


def normal_quantile(p: float) -> float:
    """The x with ``normal_cdf(x) == p``, for 0 < p < 1 (Acklam, then Halley steps)."""
    _check_probability("p", p)
    if p > 0.5:
        return -normal_quantile(1.0 - p)  # 1 - p is exact for p in [0.5, 1]
    if p < 0.02425:
        q = math.sqrt(-2.0 * math.log(p))
        x = _horner(_ACKLAM_TAIL_NUMERATOR, q) / _horner(_ACKLAM_TAIL_DENOMINATOR, q)
    else:
        q = p - 0.5
        r = q * q
        x = q * _horner(_ACKLAM_CENTRAL_NUMERATOR, r) / _horner(_ACKLAM_CENTRAL_DENOMINATOR, r)
    # Acklam is good to 1.15e-9 relative; each Halley step triples the correct digits.
    for _ in range(2):
        error = normal_cdf(x) - p
        if error == 0.0:
            break
        # error / density, in logs: exp(x²/2) alone overflows for subnormal p.
        u = math.copysign(math.exp(math.log(abs(error)) + 0.5 * x * x) * _SQRT2PI, error)
        x -= u / (1.0 + 0.5 * x * u)
    return x


def chi_square_sf(statistic: float, degrees_of_freedom: float) -> float:
    """P(X > statistic) for X chi-square distributed: Q(k/2, x/2), the upper gamma."""
    _check_finite("statistic", statistic)
    _check_finite("degrees_of_freedom", degrees_of_freedom)
    if degrees_of_freedom <= 0:
        raise ValueError(f"degrees_of_freedom must be positive, got {degrees_of_freedom}")
    if statistic <= 0:
        return 1.0
    return _upper_gamma_regularized(0.5 * degrees_of_freedom, 0.5 * statistic)


def student_t_cdf(t: float, degrees_of_freedom: float) -> float:
    """P(T <= t) for Student's t with the given (positive, possibly fractional) df."""
    tail = _student_t_tail(t, degrees_of_freedom)
    return tail if t <= 0 else 1.0 - tail


def student_t_quantile(p: float, degrees_of_freedom: float) -> float:
    """The t with ``student_t_cdf(t, df) == p``, for 0 < p < 1.

    Closed forms for df 1 and 2; otherwise Newton's method on the CDF inside a
    bracket. ±inf only where the quantile is beyond the float range (df < 1 far out).
    """
    _check_probability("p", p)
    _check_finite("degrees_of_freedom", degrees_of_freedom)
    if degrees_of_freedom <= 0:
        raise ValueError(f"degrees_of_freedom must be positive, got {degrees_of_freedom}")
    if p > 0.5:
        return -student_t_quantile(1.0 - p, degrees_of_freedom)  # exact 1 - p, as above
    if p == 0.5:
        return 0.0
    df = degrees_of_freedom
    if df == 1.0:  # Cauchy; -cot(pi p) keeps full precision in the tail
        return -1.0 / math.tan(math.pi * p)
    if df == 2.0:
        return -(1.0 - 2.0 * p) / math.sqrt(2.0 * p * (1.0 - p))
    return _student_t_lower_quantile(p, df)


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
    _check_probability("confidence", confidence)
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
            p_value = normal_cdf(z)
        else:
            p_value = normal_sf(z)
    wald_se = math.sqrt(p1 * (1.0 - p1) / n1 + p2 * (1.0 - p2) / n2)
    margin = -normal_quantile(0.5 * (1.0 - confidence)) * wald_se
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
        _check_finite("expected ratio", ratio)
        if ratio <= 0:
            raise ValueError(f"expected ratios must be positive, got {list(expected_ratios)}")
    _check_probability("alpha", alpha)
    total = sum(observed)
    if total == 0:
        raise ValueError("sample ratio mismatch needs at least one observation")
    ratio_sum = math.fsum(expected_ratios)
    expected = tuple(total * ratio / ratio_sum for ratio in expected_ratios)
    statistic = math.fsum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    degrees_of_freedom = len(observed) - 1
    p_value = chi_square_sf(statistic, degrees_of_freedom)
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
    _check_probability("alpha", alpha)
    n = len(values)
    s = 0
    for i in range(n - 1):
        current = values[i]
        for later in values[i + 1 :]:
            s += (later > current) - (later < current)
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
    _check_probability("confidence", confidence)
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
        p_value = 2.0 * _student_t_tail(slope / slope_stderr, df)
    margin = -student_t_quantile(0.5 * (1.0 - confidence), df) * slope_stderr
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
    _check_finite("limit", limit)
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
    _check_finite("current", current)
    _check_finite("previous", previous)
    if previous == 0:
        return None
    return (current - previous) / abs(previous)


# --- internals -------------------------------------------------------------------------


def _upper_gamma_regularized(a: float, x: float) -> float:
    """Q(a, x) = Γ(a, x) / Γ(a): a series for P below a + 1, Lentz's fraction above."""
    log_front = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:
        term = total = 1.0 / a
        denominator = a
        for _ in range(_MAX_ITERATIONS):
            denominator += 1.0
            term *= x / denominator
            total += term
            if abs(term) < abs(total) * _EPSILON:
                return 1.0 - total * math.exp(log_front)
        raise ArithmeticError(f"incomplete gamma series did not converge for a={a}, x={x}")
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITERATIONS):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        step = d * c
        h *= step
        if abs(step - 1.0) < _EPSILON:
            return math.exp(log_front) * h
    raise ArithmeticError(f"incomplete gamma fraction did not converge for a={a}, x={x}")


def _beta_regularized(
    a: float, b: float, x: float, y: float, log_x: float | None = None
) -> tuple[float, float]:
    """(I_x(a, b), 1 - I_x(a, b)) with y = 1 - x given exactly by the caller.

    ``log_x`` may be given when x itself underflows (the far tail of Student's t).
    """
    if x <= 0.0 and log_x is None:
        return 0.0, 1.0
    if y <= 0.0:
        return 1.0, 0.0
    if log_x is None:
        # Near 1, log1p of the small complement keeps the digits that log(x) would lose.
        log_x = math.log(x) if x < 0.5 else math.log1p(-y)
    log_y = math.log(y) if y < 0.5 else math.log1p(-x)
    front = math.exp(a * log_x + b * log_y - _log_beta(a, b))
    if x < (a + 1.0) / (a + b + 2.0):
        value = front * _beta_fraction(a, b, x) / a
        return value, 1.0 - value
    complement = front * _beta_fraction(b, a, y) / b
    return 1.0 - complement, complement


def _log_beta(a: float, b: float) -> float:
    """log B(a, b), without lgamma's cancellation when one argument is large."""
    small, large = min(a, b), max(a, b)
    if large < 10.0:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    # lgamma(large + small) - lgamma(large) through Stirling's formula, term by term.
    growth = (
        (large - 0.5) * math.log1p(small / large)
        + small * math.log(large + small)
        - small
        + _stirling_correction(large + small)
        - _stirling_correction(large)
    )
    return math.lgamma(small) - growth


def _stirling_correction(z: float) -> float:
    """lgamma(z) - ((z - 1/2) log z - z + log(2 pi) / 2), for z >= 10 (error < 1e-17)."""
    w = 1.0 / (z * z)
    return _horner(_STIRLING_SERIES, w) / z


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    c = 1.0
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (_TINY if abs(d) < _TINY else d)
    h = d
    for m in range(1, _MAX_ITERATIONS):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1.0) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1.0)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (_TINY if abs(d) < _TINY else d)
            c = 1.0 + numerator / c
            c = _TINY if abs(c) < _TINY else c
            step = d * c
            h *= step
        if abs(step - 1.0) < _EPSILON:
            return h
    raise ArithmeticError(f"incomplete beta fraction did not converge for a={a}, b={b}, x={x}")


def _student_t_tail(t: float, df: float) -> float:
    """P(T > |t|), computed directly so that it keeps its precision far out."""
    if math.isnan(t):
        raise ValueError("t must be a number, got nan")
    _check_finite("degrees_of_freedom", df)
    if df <= 0:
        raise ValueError(f"degrees_of_freedom must be positive, got {df}")
    if math.isinf(t):
        return 0.0
    # P(|T| > |t|) = I_x(df/2, 1/2) with x = df / (df + t²); both x and 1 - x are direct.
    t2 = t * t
    if math.isinf(t2):  # |t| beyond 1e154: x = df / t², in logs as it may underflow
        log_x = math.log(df) - 2.0 * math.log(abs(t))
        x = math.exp(log_x)
        return 0.5 * _beta_regularized(0.5 * df, 0.5, x, 1.0 - x, log_x)[0]
    return 0.5 * _beta_regularized(0.5 * df, 0.5, df / (df + t2), t2 / (df + t2))[0]


def _student_t_pdf(t: float, df: float) -> float:
    log_density = (
        math.lgamma(0.5 * (df + 1.0))
        - math.lgamma(0.5 * df)
        - 0.5 * math.log(df * math.pi)
        - 0.5 * (df + 1.0) * _log1p_square_over(t, df)
    )
    return math.exp(log_density)


def _log1p_square_over(t: float, df: float) -> float:
    """log(1 + t² / df), also where t² overflows."""
    ratio = t * t / df
    if math.isinf(ratio):
        return 2.0 * math.log(abs(t)) - math.log(df)
    return math.log1p(ratio)


def _student_t_lower_quantile(p: float, df: float) -> float:
    """Negative t with lower tail p < 0.5: Newton's method kept inside a bracket."""
    z = normal_quantile(p)
    z2 = z * z
    # Cornish-Fisher expansion (Abramowitz & Stegun 26.7.5) as the starting point.
    t = z + (
        (z2 + 1.0) * z / 4.0 / df
        + ((5.0 * z2 + 16.0) * z2 + 3.0) * z / 96.0 / df**2
        + (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) * z / 384.0 / df**3
    )
    t = min(t, z)  # the t distribution's tails are heavier than the normal's
    high = 0.0
    low = t
    while _student_t_tail(low, df) > p:  # widen until the root is bracketed
        high = low
        low *= 2.0
        if math.isinf(low):
            return low
    for _ in range(1000):
        error = _student_t_tail(t, df) - p
        if error == 0.0:
            return t
        if error > 0.0:
            high = t
        else:
            low = t
        density = _student_t_pdf(t, df)
        candidate = t - error / density if density > 0.0 else low
        if not low < candidate < high:  # Newton left the bracket: bisect it instead,
            # geometrically while the bracket spans orders of magnitude.
            wide = high < 0.5 * low
            candidate = -math.sqrt(-low) * math.sqrt(-high) if wide else 0.5 * (low + high)
        if abs(candidate - t) <= 4e-16 * abs(t) or high - low <= 4e-16 * abs(t):
            return candidate
        t = candidate
    return t


def _horner(coefficients: Sequence[float], x: float) -> float:
    total = 0.0
    for coefficient in coefficients:
        total = total * x + coefficient
    return total


def _median(items: Sequence[float]) -> float:
    ordered = sorted(items)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return 0.5 * (ordered[middle - 1] + ordered[middle])


def _check_probability(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be between 0 and 1 (exclusive), got {value}")


def _check_finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")


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
