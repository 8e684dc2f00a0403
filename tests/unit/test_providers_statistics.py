"""The statistics provider's tests over counts, with canned query results.

The rows come from a ``PostgresProvider`` subclass whose ``fetch`` returns fixed
rows (the real query path is covered by ``tests/e2e/test_providers_statistics.py``).

Covers:
- twoProportion: the first row is the control unless ``control`` names one; every
  variant is compared with it; the value is the p-value of the best variant (highest
  rate), matching SciPy's normal distribution; lift, difference and interval;
- the winner: the best variant when significantly better, the control when every
  variant is significantly worse, else "not significant yet";
- sampleRatio: equal shares by default, ``expectedRatios`` in row order, the strict
  default alpha of 0.001 unless the check sets one; p-value against SciPy's chi-square;
- shapes that are wrong (missing columns, duplicate groups, fractional or negative
  counts, more successes than trials, an unknown control, ratio count mismatch) are
  Errors that say what is wrong; no rows or a single group is NoData;
- a query that fails is an Error with the query in the measurement.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from scipy import stats

from postdeploy.kit import exceptions
from postdeploy.models.checks import StatisticsCheck
from postdeploy.models.measurements import Measurement, MeasurementState, ReviewContext
from postdeploy.providers.postgres import PostgresProvider, Rows
from postdeploy.providers.statistics import StatisticsProvider
from tests.contexts import make_context


class CannedRows(PostgresProvider):
    """A PostgresProvider that answers every query with the same rows (or failure)."""

    def __init__(
        self, rows: list[tuple[Any, ...]], columns: tuple[str, ...], failure: str | None = None
    ) -> None:
        super().__init__(None)
        self.result = Rows(list(columns), rows, truncated=False)
        self.failure = failure

    async def fetch(self, query: str, ctx: ReviewContext, *, timeout_seconds: float, row_limit: int) -> Rows:
        if self.failure:
            raise exceptions.QueryFailed(self.failure)
        return self.result


async def _measure(rows: list[tuple[Any, ...]], **spec: Any) -> Measurement:
    columns = spec.pop("columns", ("group", "trials", "successes"))
    failure = spec.pop("failure", None)
    provider = StatisticsProvider(CannedRows(rows, columns, failure))
    spec.setdefault("test", "twoProportion")
    spec.setdefault("query", "SELECT variant AS \"group\", n AS trials, x AS successes FROM ab")
    return await provider.measure(StatisticsCheck(**spec), make_context())


def _z_p_value(x1: int, n1: int, x2: int, n2: int) -> float:
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return float(2 * stats.norm.sf(abs((x2 / n2 - x1 / n1) / se)))


async def test_a_significant_lift_makes_the_variant_the_winner() -> None:
    m = await _measure([("A", 10000, 1000), ("B", 10000, 1200)])
    assert m.state is MeasurementState.OK
    assert m.value == pytest.approx(_z_p_value(1000, 10000, 1200, 10000), rel=1e-9)
    assert m.details["winner"] == "B"
    assert m.details["control"] == "A"
    assert m.details["lift"] == pytest.approx(0.2)
    assert m.details["difference"] == pytest.approx(0.02)
    assert m.details["ciLow"] < 0.02 < m.details["ciHigh"]
    assert m.details["significant"] is True
    a, b = m.details["groups"]
    assert a == {"group": "A", "trials": 10000, "successes": 1000, "control": True, "rate": 0.1}
    assert b["pValue"] == m.value and b["significant"] is True
    assert m.query.startswith("SELECT variant")


async def test_no_difference_is_not_significant_yet() -> None:
    m = await _measure([("A", 5000, 400), ("B", 5000, 405)])
    assert m.value is not None and m.value > 0.05
    assert m.details["winner"] == "not significant yet"
    assert m.details["significant"] is False


async def test_the_control_can_be_named_and_the_best_variant_is_reported() -> None:
    rows = [("B", 10000, 1000), ("C", 10000, 1150), ("A", 10000, 1000)]
    m = await _measure(rows, control="A")
    assert m.details["control"] == "A"
    assert m.details["best"] == "C"
    assert m.value == pytest.approx(_z_p_value(1000, 10000, 1150, 10000), rel=1e-9)


async def test_every_variant_significantly_worse_makes_the_control_the_winner() -> None:
    m = await _measure([("A", 10000, 1200), ("B", 10000, 1000), ("C", 10000, 990)])
    assert m.details["winner"] == "A"


async def test_alpha_sets_the_confidence_of_the_interval() -> None:
    wide = await _measure([("A", 10000, 1000), ("B", 10000, 1100)], alpha=0.01)
    narrow = await _measure([("A", 10000, 1000), ("B", 10000, 1100)], alpha=0.1)
    assert wide.details["confidence"] == 0.99
    assert wide.details["ciHigh"] - wide.details["ciLow"] > narrow.details["ciHigh"] - narrow.details["ciLow"]


async def test_sample_ratio_mismatch_against_scipy() -> None:
    m = await _measure([("A", 5500, 0), ("B", 4500, 0)], test="sampleRatio")
    expected = stats.chisquare([5500, 4500], [5000, 5000])
    assert m.state is MeasurementState.OK
    assert m.value == pytest.approx(expected.pvalue, rel=1e-9)
    assert m.details["chiSquare"] == pytest.approx(expected.statistic)
    assert m.details["mismatch"] is True
    assert m.details["alpha"] == 0.001


async def test_sample_ratio_uses_expected_ratios_in_row_order_and_needs_no_successes() -> None:
    m = await _measure(
        [("A", 7020, None), ("B", 2980, None)], test="sampleRatio", expectedRatios=[0.7, 0.3],
    )
    assert m.details["mismatch"] is False
    assert m.details["groups"][0]["expectedShare"] == pytest.approx(0.7)
    only_two = await _measure([("A", 7020), ("B", 2980)], test="sampleRatio", columns=("group", "trials"))
    assert only_two.state is MeasurementState.OK


async def test_sample_ratio_with_an_explicit_alpha() -> None:
    m = await _measure([("A", 5100, 0), ("B", 4900, 0)], test="sampleRatio", alpha=0.05)
    assert m.details["alpha"] == 0.05
    assert m.details["mismatch"] is True  # p = 0.0455


@pytest.mark.parametrize(
    ("rows", "spec", "words"),
    [
        (
            [("A", 10, 1), ("B", 10, 1)],
            {"columns": ("variant", "n", "x")},
            "must return the columns group, trials",
        ),
        ([("A", 10, 1), ("A", 10, 2)], {}, "group 'A' appears in more than one row"),
        ([("A", 10.5, 1), ("B", 10, 1)], {}, "trials of group 'A' is 10.5, not a whole number"),
        ([("A", 10, -1), ("B", 10, 1)], {}, "successes of group 'A' is -1"),
        ([("A", 10, "x"), ("B", 10, 1)], {}, "successes of group 'A' is 'x', not a count"),
        ([("A", 10, 11), ("B", 10, 1)], {}, "more successes (11) than trials (10)"),
        ([("A", 10, 1), ("B", 10, 1)], {"control": "Z"}, "control group 'Z' is not in the result"),
        ([("A", 10, 1), ("B", 10, 1)], {"test": "sampleRatio", "expectedRatios": [1, 1, 1]},
         "expectedRatios has 3 entries but the query returned 2 groups"),
    ],
)
async def test_rows_of_the_wrong_shape_are_errors(
    rows: list[tuple[Any, ...]], spec: dict[str, Any], words: str
) -> None:
    m = await _measure(rows, **spec)
    assert m.state is MeasurementState.ERROR
    assert words in m.message


@pytest.mark.parametrize("rows", [[], [("A", 100, 10)], [("A", 100, 10), ("B", 0, 0)]])
async def test_too_little_to_compare_is_no_data(rows: list[tuple[Any, ...]]) -> None:
    m = await _measure(rows)
    assert m.state is MeasurementState.NO_DATA


async def test_a_failing_query_is_an_error() -> None:
    m = await _measure([], failure="UndefinedTable: relation \"ab\" does not exist")
    assert m.state is MeasurementState.ERROR
    assert m.message == "UndefinedTable: relation \"ab\" does not exist"
    assert m.query is not None and "FROM ab" in m.query
