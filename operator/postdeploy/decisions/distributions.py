"""The probability distributions the statistical tests need: normal, Student t, chi-square.

Pure functions over numbers, nothing beyond the standard library's :mod:`math` (and a
:mod:`functools` cache of the t quantile), built
on the regularized incomplete gamma and beta functions. Called by
``postdeploy.decisions.statistics`` (the tests and fits), ``postdeploy.decisions.sequential``
and the unit tests; ``check_probability`` and ``check_finite`` are the argument checks
those share, so a bad argument is refused with the same message everywhere.

Accuracy, checked against SciPy in ``tests/unit/test_statistics.py``: the normal
quantile to 1e-15 relative (Acklam's approximation refined by Halley steps) for
p down to 1e-300; the chi-square survival function to 1e-12 absolute (df up to
1000); the Student t CDF and quantile to 1e-10 (1e-13 for the CDF up to df 1e5,
about 1e-11 at df 1e7).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

__all__ = [
    "check_finite",
    "check_probability",
    "chi_square_sf",
    "normal_cdf",
    "normal_quantile",
    "normal_sf",
    "student_t_cdf",
    "student_t_quantile",
    "student_t_tail",
]

_SQRT2 = math.sqrt(2.0)
_EPSILON = 1e-16  # relative convergence target for series and continued fractions
_MAX_ITERATIONS = 100_000
_SQRT2PI = math.sqrt(2.0 * math.pi)
# Stirling's series in 1/z² (Bernoulli numbers B_2k / (2k (2k - 1))), highest first.
_STIRLING_SERIES = (
    1.0 / 156.0, -691.0 / 360360.0, 1.0 / 1188.0, -1.0 / 1680.0, 1.0 / 1260.0,
    -1.0 / 360.0, 1.0 / 12.0,
)  # fmt: skip
_TINY = 1e-300  # keeps Lentz's continued fractions away from division by zero
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


def normal_cdf(x: float) -> float:
    """P(Z <= x) for a standard normal Z."""
    return 0.5 * math.erfc(-x / _SQRT2)


def normal_sf(x: float) -> float:
    """P(Z > x) for a standard normal Z, accurate far into the upper tail."""
    return 0.5 * math.erfc(x / _SQRT2)


def normal_quantile(p: float) -> float:
    """The x with ``normal_cdf(x) == p``, for 0 < p < 1 (Acklam, then Halley steps)."""
    check_probability("p", p)
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
    check_finite("statistic", statistic)
    check_finite("degrees_of_freedom", degrees_of_freedom)
    if degrees_of_freedom <= 0:
        raise ValueError(f"degrees_of_freedom must be positive, got {degrees_of_freedom}")
    if statistic <= 0:
        return 1.0
    return _upper_gamma_regularized(0.5 * degrees_of_freedom, 0.5 * statistic)


def student_t_cdf(t: float, degrees_of_freedom: float) -> float:
    """P(T <= t) for Student's t with the given (positive, possibly fractional) df."""
    tail = student_t_tail(t, degrees_of_freedom)
    return tail if t <= 0 else 1.0 - tail


def student_t_quantile(p: float, degrees_of_freedom: float) -> float:
    """The t with ``student_t_cdf(t, df) == p``, for 0 < p < 1.

    Closed forms for df 1 and 2; otherwise Newton's method on the CDF inside a
    bracket. ±inf only where the quantile is beyond the float range (df < 1 far out).
    """
    check_probability("p", p)
    check_finite("degrees_of_freedom", degrees_of_freedom)
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


def student_t_tail(t: float, df: float) -> float:
    """P(T > |t|), computed directly so that it keeps its precision far out."""
    if math.isnan(t):
        raise ValueError("t must be a number, got nan")
    check_finite("degrees_of_freedom", df)
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


def check_probability(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be between 0 and 1 (exclusive), got {value}")


def check_finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")


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


# Cached: a regression's confidence interval asks the same (p, df) again and again
# (a trend re-fitted every 15 minutes, 28 releases of a backtest: 12,000 root-findings
# that cost a third of the backtest's trend CPU); the function is pure.
@functools.lru_cache(maxsize=4096)
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
    while student_t_tail(low, df) > p:  # widen until the root is bracketed
        high = low
        low *= 2.0
        if math.isinf(low):
            return low
    for _ in range(1000):
        error = student_t_tail(t, df) - p
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
