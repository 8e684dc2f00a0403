"""The statistics provider on the test bed's seeded A/B tests (``shop`` database).

Covers, through the real read-only query path:
- ``checkout_redesign`` (B converts 12% vs 10%): B is the winner, p < 0.05;
- ``search_ranking`` (8% both): not significant yet;
- ``onboarding_tips`` (55/45 where 50/50 was planned): a sample-ratio mismatch, while
  ``checkout_redesign``'s split passes the same test;
- the experiment's name travels as a bound parameter from the review's parameters;
- a query the database refuses is an Error.
"""

from __future__ import annotations

from typing import Any

import pytest

from postdeploy.models.checks import StatisticsCheck
from postdeploy.models.measurements import Measurement, MeasurementState
from postdeploy.providers.postgres import PostgresProvider
from postdeploy.providers.statistics import StatisticsProvider
from tests.contexts import make_context

pytest_plugins = ["tests.e2e.conftest_postgres"]
pytestmark = pytest.mark.e2e

COUNTS = """
    SELECT a.variant AS "group",
           count(*) AS trials,
           count(c.user_id) AS successes
    FROM experiment_assignments AS a
    LEFT JOIN experiment_conversions AS c USING (experiment, user_id)
    WHERE a.experiment = %(experiment)s
    GROUP BY a.variant
    ORDER BY a.variant
"""


async def _measure(postgres_db: dict[str, Any], experiment: str, **spec: Any) -> Measurement:
    provider = StatisticsProvider(PostgresProvider(postgres_db["env"]["POSTGRES_DSN"]))
    spec.setdefault("query", COUNTS)
    ctx = make_context(parameters={"experiment": experiment})
    return await provider.measure(StatisticsCheck(**spec), ctx)


async def test_a_real_lift_is_a_winner(postgres_db: dict[str, Any]) -> None:
    m = await _measure(postgres_db, "checkout_redesign", test="twoProportion")
    assert m.state is MeasurementState.OK, m.message
    assert m.value is not None and m.value < 0.05
    assert m.details["winner"] == "B"
    assert m.details["control"] == "A"
    # Seeded at exactly 900 of 7,500 vs 750 of 7,500, whatever the date (testbed.business_data).
    assert m.details["lift"] == pytest.approx(0.2)


async def test_no_difference_is_not_significant_yet(postgres_db: dict[str, Any]) -> None:
    m = await _measure(postgres_db, "search_ranking", test="twoProportion")
    assert m.state is MeasurementState.OK, m.message
    assert m.details["winner"] == "not significant yet"


async def test_a_broken_split_is_a_sample_ratio_mismatch(postgres_db: dict[str, Any]) -> None:
    broken = await _measure(postgres_db, "onboarding_tips", test="sampleRatio")
    assert broken.state is MeasurementState.OK, broken.message
    assert broken.details["mismatch"] is True
    assert broken.value is not None and broken.value < 0.001
    healthy = await _measure(postgres_db, "checkout_redesign", test="sampleRatio", expectedRatios=[0.5, 0.5])
    assert healthy.details["mismatch"] is False


async def test_a_refused_query_is_an_error(postgres_db: dict[str, Any]) -> None:
    m = await _measure(postgres_db, "x", test="twoProportion", query="SELECT * FROM no_such_table")
    assert m.state is MeasurementState.ERROR
    assert m.message.startswith("UndefinedTable:")
