"""The pure statistics module against SciPy as the reference.

Covers:
- distributions: normal CDF/survival/quantile (tails down to 1e-300), chi-square
  survival function, Student t CDF and quantile, over grids of arguments;
- two-proportion z-test: z, p-value for every alternative, Wald interval, lift,
  equivalence with the 2x2 chi-square test, invalid counts, degenerate pooling;
- sample-ratio mismatch: statistic and p-value vs ``scipy.stats.chisquare``, the flag;
- Mann-Kendall: S and tie-corrected variance worked out by hand, tau-b and the
  asymptotic p-value vs ``scipy.stats.kendalltau``, direction, flat series;
- Theil-Sen vs ``scipy.stats.theilslopes`` (outliers, unsorted and repeated times);
- least squares vs ``scipy.stats.linregress`` and the interval vs ``scipy.stats.t.ppf``;
- time to reach a limit: a linear leak within 1%, flat or shrinking series give None;
- period-over-period change; the ValueErrors for degenerate input.

SciPy is a test-only dependency; values must agree to 1e-9 (relative to the larger
of 1 and the reference), the distributions to 1e-12 (normal, chi-square) and 1e-10 (t).
"""

from __future__ import annotations

import collections
import math
import random

import pytest
from scipy import stats

from postdeploy.decisions import distributions, statistics

TOLERANCE = 1e-9


def _assert_close(actual: float, expected: float, tolerance: float = TOLERANCE) -> None:
    """|actual - expected| within tolerance, relative once |expected| exceeds 1."""
    assert abs(actual - expected) <= tolerance * max(1.0, abs(expected)), (actual, expected)


def _noisy(seed: int, n: int, slope: float, intercept: float, noise: float) -> list[float]:
    rng = random.Random(seed)
    return [intercept + slope * i + rng.gauss(0.0, noise) for i in range(n)]


# --- distributions ---------------------------------------------------------------------

NORMAL_PROBABILITIES = [
    1e-300, 1e-100, 1e-30, 1e-15, 1e-12, 1e-9, 1e-6, 1e-4, 1e-3, 0.01, 0.02425, 0.025,
    0.05, 0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.8, 0.9, 0.95, 0.975, 0.97575,
    0.99, 0.999, 1 - 1e-6, 1 - 1e-9, 1 - 1e-12,
]  # fmt: skip


@pytest.mark.parametrize("p", NORMAL_PROBABILITIES)
def test_normal_quantile_matches_scipy_to_1e_12(p: float) -> None:
    _assert_close(distributions.normal_quantile(p), stats.norm.ppf(p), 1e-12)


@pytest.mark.parametrize("x", [-37.0, -20.0, -8.0, -3.0, -1.0, 0.0, 0.5, 1.96, 5.0, 9.0, 30.0])
def test_normal_cdf_and_sf_match_scipy_relatively_in_the_tails(x: float) -> None:
    # Both round x / sqrt(2) before erfc; far out that costs about x² ulps (1e-13 at 37).
    assert distributions.normal_cdf(x) == pytest.approx(stats.norm.cdf(x), rel=1e-12, abs=0)
    assert distributions.normal_sf(x) == pytest.approx(stats.norm.sf(x), rel=1e-12, abs=0)


@pytest.mark.parametrize("p", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_normal_quantile_rejects_probabilities_outside_the_open_interval(p: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        distributions.normal_quantile(p)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 7, 10, 20, 50, 100, 250])
def test_chi_square_sf_matches_scipy_to_1e_12(df: int) -> None:
    for x in [1e-8, 0.01, 0.5, 1.0, 2.0, 3.84, 5.0, 10.0, 20.0, 50.0, 100.0, 300.0, 1000.0]:
        actual, expected = distributions.chi_square_sf(x, df), stats.chi2.sf(x, df)
        assert abs(actual - expected) <= 1e-12, (df, x, actual, expected)
        assert actual == pytest.approx(expected, rel=1e-10, abs=1e-300), (df, x)


def test_chi_square_sf_of_a_non_positive_statistic_is_one() -> None:
    assert distributions.chi_square_sf(0.0, 3) == 1.0


T_DEGREES = [1, 2, 3, 4.5, 5, 8, 10, 30, 100, 1000, 100_000]


@pytest.mark.parametrize("df", T_DEGREES)
def test_student_t_cdf_matches_scipy_to_1e_10(df: float) -> None:
    for t in [-1e6, -300.0, -30.0, -5.0, -2.0, -1.0, -0.1, 0.0, 0.1, 1.0, 2.0, 5.0, 30.0, 1e6]:
        actual, expected = distributions.student_t_cdf(t, df), stats.t.cdf(t, df)
        assert abs(actual - expected) <= 1e-10, (df, t, actual, expected)
        assert actual == pytest.approx(expected, rel=1e-10, abs=1e-300), (df, t)


@pytest.mark.parametrize("df", [1e4, 1e5])
def test_student_t_cdf_keeps_its_digits_for_many_degrees_of_freedom(df: float) -> None:
    # Regressions over thousands of samples: plain lgamma differences and log(x) near 1
    # would lose ~1e-11 here; the careful log-beta and log1p keep 1e-13.
    for t in [-3.0, -2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 3.0]:
        assert abs(distributions.student_t_cdf(t, df) - stats.t.cdf(t, df)) <= 1e-13, (df, t)


def test_student_t_cdf_with_one_degree_of_freedom_is_cauchy_near_zero() -> None:
    # SciPy's t.cdf rounds to 0.5 for |t| below ~1e-8 at df=1; the closed form does not.
    for t in [1e-12, 1e-9, 7e-9, -3e-9]:
        expected = 0.5 + math.atan(t) / math.pi
        assert distributions.student_t_cdf(t, 1) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("df", T_DEGREES)
def test_student_t_quantile_matches_scipy_to_1e_10(df: float) -> None:
    for p in [1e-12, 1e-8, 1e-4, 0.01, 0.025, 0.05, 0.1, 0.3, 0.5, 0.7, 0.95, 0.975, 0.99]:
        _assert_close(distributions.student_t_quantile(p, df), stats.t.ppf(p, df), 1e-10)


def test_student_t_quantile_inverts_the_cdf() -> None:
    for df in [1.5, 3, 17]:
        for p in [1e-9, 0.2, 0.6, 0.999]:
            t = distributions.student_t_quantile(p, df)
            assert distributions.student_t_cdf(t, df) == pytest.approx(p, rel=1e-12)


def test_distributions_reject_bad_degrees_of_freedom() -> None:
    with pytest.raises(ValueError, match="degrees_of_freedom must be positive"):
        distributions.chi_square_sf(1.0, 0)
    with pytest.raises(ValueError, match="degrees_of_freedom must be positive"):
        distributions.student_t_cdf(1.0, -2)
    with pytest.raises(ValueError, match="degrees_of_freedom must be positive"):
        distributions.student_t_quantile(0.3, 0)


# --- two-proportion z-test -------------------------------------------------------------

PROPORTION_DATASETS = [
    (200, 1000, 250, 1000),
    (45, 1200, 38, 1180),
    (4821, 100_000, 5012, 99_870),
    (1, 50, 0, 60),
    (0, 100, 5, 100),
    (99, 100, 100, 100),
]


def _reference_z_test(
    x1: int, n1: int, x2: int, n2: int, confidence: float
) -> tuple[float, dict[str, float], tuple[float, float]]:
    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    z = (p2 - p1) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    p_values = {
        "two-sided": 2 * stats.norm.sf(abs(z)),
        "less": stats.norm.cdf(z),
        "greater": stats.norm.sf(z),
    }
    margin = stats.norm.ppf(0.5 + confidence / 2) * math.sqrt(
        p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2
    )
    return z, p_values, (p2 - p1 - margin, p2 - p1 + margin)


@pytest.mark.parametrize(("x1", "n1", "x2", "n2"), PROPORTION_DATASETS)
@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_z_test_matches_the_scipy_normal_formula(
    x1: int, n1: int, x2: int, n2: int, alternative: statistics.Alternative, confidence: float
) -> None:
    result = statistics.two_proportion_z_test(x1, n1, x2, n2, alternative, confidence)
    z, p_values, interval = _reference_z_test(x1, n1, x2, n2, confidence)
    _assert_close(result.z, z)
    _assert_close(result.p_value, p_values[alternative])
    _assert_close(result.confidence_interval[0], interval[0])
    _assert_close(result.confidence_interval[1], interval[1])
    assert result.p1 == x1 / n1 and result.p2 == x2 / n2
    assert result.difference == pytest.approx(x2 / n2 - x1 / n1)


@pytest.mark.parametrize(("x1", "n1", "x2", "n2"), PROPORTION_DATASETS)
def test_two_sided_z_test_equals_the_uncorrected_2x2_chi_square(
    x1: int, n1: int, x2: int, n2: int
) -> None:
    result = statistics.two_proportion_z_test(x1, n1, x2, n2)
    table = stats.chi2_contingency([[x1, n1 - x1], [x2, n2 - x2]], correction=False)
    _assert_close(result.z**2, table.statistic)
    _assert_close(result.p_value, table.pvalue)


def test_z_test_reports_lift_and_significance() -> None:
    result = statistics.two_proportion_z_test(200, 1000, 250, 1000)
    assert result.relative_lift == pytest.approx(0.25)
    assert result.significant(0.05)
    assert not result.significant(0.001)
    assert result.confidence_interval[0] > 0  # the interval agrees: treatment is better


def test_z_test_lift_is_none_without_control_conversions() -> None:
    assert statistics.two_proportion_z_test(0, 100, 5, 100).relative_lift is None


def test_z_test_without_any_variation_is_not_significant() -> None:
    result = statistics.two_proportion_z_test(0, 100, 0, 80)
    assert (result.z, result.p_value, result.confidence_interval) == (0.0, 1.0, (0.0, 0.0))
    assert not result.significant()


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2", "message"),
    [
        (1, 0, 1, 10, "group 1: the number of trials must be positive"),
        (1, 10, 1, -5, "group 2: the number of trials must be positive"),
        (11, 10, 1, 10, "group 1: successes must be between 0 and n=10"),
        (1, 10, -1, 10, "group 2: successes must be between 0 and n=10"),
    ],
)
def test_z_test_rejects_impossible_counts(
    x1: int, n1: int, x2: int, n2: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        statistics.two_proportion_z_test(x1, n1, x2, n2)


def test_z_test_rejects_unknown_alternative_and_confidence() -> None:
    with pytest.raises(ValueError, match="alternative"):
        statistics.two_proportion_z_test(1, 10, 2, 10, "bigger")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="confidence"):
        statistics.two_proportion_z_test(1, 10, 2, 10, confidence=95)


# --- sample-ratio mismatch -------------------------------------------------------------

SRM_DATASETS = [
    ([50_421, 49_579], [0.5, 0.5]),
    ([50_000, 50_000], [1, 1]),
    ([1000, 1100, 950], [1, 1, 1]),
    ([8000, 2100], [0.8, 0.2]),
    ([10, 31], [1, 3]),
    ([3300, 3350, 3100, 240], [1, 1, 1, 0.08]),
]


@pytest.mark.parametrize(("observed", "ratios"), SRM_DATASETS)
def test_sample_ratio_mismatch_matches_scipy_chisquare(
    observed: list[int], ratios: list[float]
) -> None:
    result = statistics.sample_ratio_mismatch(observed, ratios)
    expected = [sum(observed) * r / sum(ratios) for r in ratios]
    reference = stats.chisquare(observed, f_exp=expected)
    _assert_close(result.statistic, reference.statistic)
    _assert_close(result.p_value, reference.pvalue)
    assert result.degrees_of_freedom == len(observed) - 1
    for actual, wanted in zip(result.expected, expected, strict=True):
        _assert_close(actual, wanted)


def test_sample_ratio_mismatch_flags_only_below_alpha() -> None:
    # chi² = 2 * 500² / 50500 = 9.90, p = 0.0017: suspicious but not below 0.001.
    assert not statistics.sample_ratio_mismatch([50_000, 51_000], [1, 1]).mismatch
    # chi² = 2 * 1000² / 51000 = 39.2, p = 4e-10: a broken split.
    broken = statistics.sample_ratio_mismatch([50_000, 52_000], [1, 1])
    assert broken.mismatch and broken.alpha == 0.001
    assert statistics.sample_ratio_mismatch([50_000, 51_000], [1, 1], alpha=0.01).mismatch


@pytest.mark.parametrize(
    ("observed", "ratios", "message"),
    [
        ([10, 20], [1, 1, 1], "observed has 2 groups but expected_ratios has 3"),
        ([10], [1], "at least 2 groups"),
        ([10, -1], [1, 1], "must not be negative"),
        ([10, 20], [1, 0], "must be positive"),
        ([0, 0], [1, 1], "at least one observation"),
    ],
)
def test_sample_ratio_mismatch_rejects_bad_input(
    observed: list[int], ratios: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        statistics.sample_ratio_mismatch(observed, ratios)


# --- Mann-Kendall ----------------------------------------------------------------------


def test_mann_kendall_by_hand_with_ties() -> None:
    # values 3, 1, 4, 1, 5; sign(x_j - x_i) for i < j:
    #   i=0 (3): -1 +1 -1 +1 = 0;  i=1 (1): +1 0 +1 = 2;  i=2 (4): -1 +1 = 0;  i=3 (1): +1
    #   S = 3
    # Var = [n(n-1)(2n+5) - sum t(t-1)(2t+5)] / 18 with n=5 and one tie group (1, 1), t=2:
    #     = [5*4*15 - 2*1*9] / 18 = 282 / 18 = 47/3
    # Z = (S - 1) / sqrt(47/3) = 0.505291...;  tau-b = 3 / sqrt(10 * (10 - 1)) = 0.316228
    result = statistics.mann_kendall([3, 1, 4, 1, 5])
    assert result.s == 3
    assert result.variance == pytest.approx(47 / 3, rel=1e-15)
    assert result.z == pytest.approx(2 / math.sqrt(47 / 3), rel=1e-15)
    assert result.tau == pytest.approx(3 / math.sqrt(90), rel=1e-15)
    _assert_close(result.p_value, 2 * stats.norm.sf(2 / math.sqrt(47 / 3)))
    assert result.trend == "no trend"


MANN_KENDALL_DATASETS = [
    [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0],
    [1.0, 2.0, 2.0, 2.0, 3.0, 3.0, 4.0, 5.0, 5.0, 6.0, 6.0, 6.0, 6.0],
    [round(v) for v in _noisy(seed=1, n=60, slope=0.05, intercept=10.0, noise=1.0)],
    _noisy(seed=2, n=120, slope=-0.01, intercept=100.0, noise=1.0),
    _noisy(seed=3, n=40, slope=0.0, intercept=0.0, noise=1.0),
]


@pytest.mark.parametrize("values", MANN_KENDALL_DATASETS)
def test_mann_kendall_matches_scipy_kendalltau(values: list[float]) -> None:
    result = statistics.mann_kendall(values)
    positions = list(range(len(values)))
    reference = stats.kendalltau(positions, values, method="asymptotic")
    _assert_close(result.tau, reference.statistic)
    # SciPy's asymptotic test is Mann-Kendall without the continuity correction: the
    # same S and tie-corrected variance give its p-value.
    _assert_close(2 * stats.norm.sf(abs(result.s) / math.sqrt(result.variance)), reference.pvalue)
    n = len(values)
    pairs = n * (n - 1) // 2
    tied = sum(t * (t - 1) // 2 for t in collections.Counter(values).values())
    assert result.s == round(reference.statistic * math.sqrt(pairs * (pairs - tied)))
    expected_z = (result.s - math.copysign(1, result.s)) / math.sqrt(result.variance)
    _assert_close(result.z, expected_z)
    _assert_close(result.p_value, 2 * stats.norm.sf(abs(expected_z)))


def test_mann_kendall_finds_direction() -> None:
    rising = statistics.mann_kendall(_noisy(seed=4, n=50, slope=0.2, intercept=0, noise=1))
    falling = statistics.mann_kendall(_noisy(seed=5, n=50, slope=-0.2, intercept=0, noise=1))
    assert (rising.trend, falling.trend) == ("increasing", "decreasing")
    assert rising.p_value < 0.05 and rising.z > 0 and falling.z < 0


def test_mann_kendall_of_equal_values_is_no_trend() -> None:
    result = statistics.mann_kendall([7.0] * 10)
    assert (result.s, result.variance, result.z, result.p_value, result.tau) == (0, 0, 0, 1, 0)
    assert result.trend == "no trend"


def test_mann_kendall_needs_three_finite_values() -> None:
    with pytest.raises(ValueError, match="values needs at least 3 points, got 2"):
        statistics.mann_kendall([1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        statistics.mann_kendall([1.0, math.nan, 2.0])


# --- Theil-Sen -------------------------------------------------------------------------

THEIL_SEN_DATASETS = [
    ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1.0, 2.1, 2.9, 4.2, 50.0, 6.1, 6.8, 8.1, -20.0, 10.2]),
    ([5, 1, 3, 3, 9, 7, 2], [4.0, 1.5, 3.1, 2.7, 8.8, 6.0, 2.2]),
    ([0.0, 1.0], [3.0, 5.0]),
    (
        [1_700_000_000 + 60 * i for i in range(50)],
        _noisy(seed=6, n=50, slope=1e4, intercept=3e8, noise=2e5),
    ),
]


@pytest.mark.parametrize(("times", "values"), THEIL_SEN_DATASETS)
def test_theil_sen_matches_scipy_theilslopes(times: list[float], values: list[float]) -> None:
    result = statistics.theil_sen(times, values)
    reference = stats.theilslopes(values, times)
    _assert_close(result.slope, reference.slope)
    _assert_close(result.intercept, reference.intercept)


def test_theil_sen_ignores_outliers() -> None:
    values = [2.0 * t + 1 for t in range(20)]
    values[5], values[12] = 500.0, -300.0
    assert statistics.theil_sen(list(range(20)), values).slope == 2.0


def test_theil_sen_needs_two_distinct_times() -> None:
    with pytest.raises(ValueError, match="all times are equal"):
        statistics.theil_sen([3, 3, 3], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="times needs at least 2 points"):
        statistics.theil_sen([3], [1.0])
    with pytest.raises(ValueError, match="times has 3 points but values has 2"):
        statistics.theil_sen([1, 2, 3], [1.0, 2.0])


# --- least squares ---------------------------------------------------------------------

REGRESSION_DATASETS = [
    ([0, 1, 2], [1.0, 3.0, 2.0]),
    (list(range(12)), [2.1, 2.9, 4.2, 4.8, 6.3, 6.9, 8.4, 8.7, 10.2, 11.1, 11.8, 13.4]),
    ([5, 1, 3, 3, 9, 7], [4.0, 1.5, 3.1, 2.7, 8.8, 6.0]),
    (
        [1_700_000_000 + 60 * i for i in range(100)],
        _noisy(seed=7, n=100, slope=1e4, intercept=3e8, noise=5e5),
    ),
    (list(range(30)), _noisy(seed=8, n=30, slope=-0.3, intercept=5.0, noise=2.0)),
    (list(range(25)), _noisy(seed=9, n=25, slope=0.0, intercept=1.0, noise=0.1)),
]


@pytest.mark.parametrize(("times", "values"), REGRESSION_DATASETS)
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_linear_regression_matches_scipy_linregress(
    times: list[float], values: list[float], confidence: float
) -> None:
    result = statistics.linear_regression(times, values, confidence)
    reference = stats.linregress(times, values)
    _assert_close(result.slope, reference.slope)
    _assert_close(result.intercept, reference.intercept)
    _assert_close(result.slope_stderr, reference.stderr)
    _assert_close(result.p_value, reference.pvalue)
    _assert_close(result.r_squared, reference.rvalue**2)
    margin = stats.t.ppf(0.5 + confidence / 2, len(times) - 2) * reference.stderr
    _assert_close(result.slope_confidence_interval[0], reference.slope - margin)
    _assert_close(result.slope_confidence_interval[1], reference.slope + margin)


def test_linear_regression_of_a_flat_series() -> None:
    result = statistics.linear_regression([0, 1, 2, 3], [5.0] * 4)
    assert (result.slope, result.intercept, result.slope_stderr) == (0.0, 5.0, 0.0)
    assert (result.p_value, result.r_squared) == (1.0, 0.0)
    assert result.slope_confidence_interval == (0.0, 0.0)


def test_linear_regression_of_a_perfect_line() -> None:
    result = statistics.linear_regression([0, 1, 2, 3], [1.0, 3.0, 5.0, 7.0])
    assert (result.slope, result.intercept, result.slope_stderr) == (2.0, 1.0, 0.0)
    assert (result.p_value, result.r_squared) == (0.0, 1.0)


def test_linear_regression_rejects_degenerate_input() -> None:
    with pytest.raises(ValueError, match="times needs at least 3 points, got 2"):
        statistics.linear_regression([0, 1], [1.0, 2.0])
    with pytest.raises(ValueError, match="all times are equal"):
        statistics.linear_regression([4, 4, 4], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="values must be finite"):
        statistics.linear_regression([1, 2, 3], [1.0, math.inf, 3.0])


# --- time to reach a limit -------------------------------------------------------------

MIB = 1024 * 1024
START = 1_700_000_000


def test_a_linear_leak_reaches_the_limit_when_the_line_says() -> None:
    # Working set grows 10 MiB an hour from 200 MiB, sampled each minute for 6 hours,
    # with 1 MiB of noise; 90% of a 512 MiB limit is reached 20.08 hours later.
    rng = random.Random(11)
    times = [START + 60 * i for i in range(361)]
    values = [200 * MIB + 10 * MIB * (t - START) / 3600 + rng.gauss(0, MIB) for t in times]
    limit = 0.9 * 512 * MIB
    true_seconds = (limit - 200 * MIB) / (10 * MIB / 3600) - (times[-1] - START)
    assert true_seconds == pytest.approx(20.08 * 3600)
    seconds = statistics.time_to_reach(times, values, limit)
    assert seconds is not None
    assert seconds == pytest.approx(true_seconds, rel=0.01)
    assert statistics.mann_kendall(values).trend == "increasing"
    assert statistics.theil_sen(times, values).slope == pytest.approx(10 * MIB / 3600, rel=0.01)


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_a_flat_noisy_series_has_no_trend_and_never_reaches_the_limit(seed: int) -> None:
    rng = random.Random(seed)
    times = [START + 300 * i for i in range(288)]  # 24 hours every 5 minutes
    values = [512 * MIB + rng.gauss(0, 20 * MIB) for _ in times]
    assert statistics.mann_kendall(values).trend == "no trend"
    assert statistics.time_to_reach(times, values, 0.9 * 1024 * MIB) is None


def test_a_shrinking_series_never_reaches_the_limit() -> None:
    times = list(range(0, 3600, 60))
    values = [1000.0 - 0.5 * t for t in times]
    assert statistics.time_to_reach(times, values, 2000.0) is None


def test_a_line_already_past_the_limit_is_zero_seconds_away() -> None:
    times = [0, 60, 120, 180]
    assert statistics.time_to_reach(times, [10.0, 20.0, 31.0, 40.0], limit=25.0) == 0.0


def test_time_to_reach_on_an_exact_line() -> None:
    # value = 100 + 2 t; limit 1000 is reached at t = 450, 150 s after the last sample.
    times = [0, 100, 200, 300]
    assert statistics.time_to_reach(times, [100 + 2.0 * t for t in times], 1000) == 150.0


# --- period-over-period change ---------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "previous", "change"),
    [(110, 100, 0.1), (90, 100, -0.1), (0, 50, -1.0), (-50, -100, 0.5), (5, 5, 0.0)],
)
def test_period_change_is_relative_to_the_previous_magnitude(
    current: float, previous: float, change: float
) -> None:
    assert statistics.period_change(current, previous) == pytest.approx(change)


def test_period_change_from_zero_is_none() -> None:
    assert statistics.period_change(10, 0) is None


def test_period_change_rejects_nan() -> None:
    with pytest.raises(ValueError, match="current must be a finite number"):
        statistics.period_change(math.nan, 1.0)
