"""The test bed's PostgreSQL: what the postgres provider and the business checks rely on.

Covers:

- the seeded ``shop`` data answers the checklist's daily-active-users query: seven
  whole days of plausible counts, and one row per calendar day a rolling window
  touches (both as of the seeding moment, where the data ends);
- the other Phase 3 questions have answers: feature adoption since a launch, an A/B
  test whose variant B has a real lift;
- what these tests assert is fixed by construction: seeded at other dates and times
  (a Monday just after midnight after a weekend, a quiet Sunday night), the exact
  counts are the same (experiments, the new feature since its launch and over the
  last 30 hours) and the orderings and bounds hold (search leads feature adoption,
  daily actives, a flat conversion rate between equal periods);
- ``inject_conversion_drop`` halves the conversion rate (and revenue) after a chosen
  deployment time while the previous equal period keeps its level;
- a deliberately slow statement (1.2 s) shows up in ``pg_stat_statements`` for the
  read-only role with ``mean_exec_time > 1000``, text included;
- the read-only role cannot write: INSERT/UPDATE/DELETE/TRUNCATE/CREATE fail with
  ``ReadOnlySqlTransaction`` by default, and with ``InsufficientPrivilege`` once it
  has turned ``default_transaction_read_only`` off itself; it cannot reset the
  statement statistics either;
- ``stop()`` leaves no server process behind, frees the port and removes the data
  directory.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import pathlib
from typing import Any

import psycopg
import pytest
from psycopg import conninfo, errors

from testbed import business_data, ports, postgres

# The fixture module is a plugin, not an import: one session-wide server for all users.
pytest_plugins = ["tests.e2e.conftest_postgres"]
pytestmark = pytest.mark.e2e

State = dict[str, Any]

# The checklist's queries with CURRENT_DATE and NOW() read as of the seeding moment:
# the data ends there, and a test that ran past midnight would otherwise see an empty
# "today" and a partial "yesterday".
DAU_WHOLE_DAYS = """
    SELECT DATE(created_at) AS date,
           COUNT(DISTINCT user_id) AS daily_active_users,
           COUNT(*) AS total_requests
    FROM user_activity
    WHERE created_at >= %(today)s::date - 7 AND created_at < %(today)s::date
    GROUP BY DATE(created_at)
    ORDER BY date DESC
"""

DAU_ROLLING = """
    SELECT DATE(created_at) AS date,
           COUNT(DISTINCT user_id) AS dau,
           COUNT(*) AS requests
    FROM user_activity
    WHERE created_at > %(now)s - INTERVAL '7 days' AND created_at <= %(now)s
    GROUP BY DATE(created_at)
    ORDER BY date
"""

FEATURE_ADOPTION = """
    SELECT feature_name, COUNT(DISTINCT user_id) AS unique_users, COUNT(*) AS uses
    FROM feature_usage WHERE created_at >= %(deployed)s
    GROUP BY feature_name ORDER BY uses DESC
"""

EXPERIMENT_COUNTS = """
    SELECT a.experiment, a.variant, count(*), count(c.user_id)
    FROM experiment_assignments AS a
    LEFT JOIN experiment_conversions AS c USING (experiment, user_id)
    GROUP BY a.experiment, a.variant ORDER BY a.experiment, a.variant
"""

# (experiment, variant, exposed, converted): exact, whenever the data is seeded.
EXPERIMENTS = [
    ("checkout_redesign", "A", 7500, 750),
    ("checkout_redesign", "B", 7500, 900),
    ("onboarding_tips", "A", 8250, 1650),
    ("onboarding_tips", "B", 6750, 1350),
    ("search_ranking", "A", 7500, 600),
    ("search_ranking", "B", 7500, 600),
]
# smart_shuffle's (unique users, uses) since its launch and over the last 30 hours.
SMART_SHUFFLE_SINCE_LAUNCH = (1200, 1800)
SMART_SHUFFLE_LAST_30_HOURS = (1160, 1694)

SLOW_QUERIES = """
    SELECT query, mean_exec_time, calls
    FROM pg_stat_statements
    WHERE mean_exec_time > 1000
    ORDER BY mean_exec_time DESC
"""

CONVERSION_RATE = """
    SELECT avg(converted::int)::float8, count(*)
    FROM sessions
    WHERE started_at >= %(start)s AND started_at < %(end)s
"""

REVENUE = """
    SELECT coalesce(sum(amount_cents), 0)
    FROM orders
    WHERE status = 'paid' AND created_at >= %(start)s AND created_at < %(end)s
"""

WRITES = [
    pytest.param(
        "INSERT INTO orders (user_id, session_id, created_at, amount_cents, status)"
        " VALUES (1, 1, now(), 100, 'paid')",
        id="insert",
    ),
    pytest.param("UPDATE orders SET amount_cents = amount_cents + 1 WHERE id = 1", id="update"),
    pytest.param("DELETE FROM orders WHERE id = 1", id="delete"),
    pytest.param("TRUNCATE orders", id="truncate"),
    pytest.param("CREATE TABLE sneaky (id int)", id="create-table"),
    pytest.param("CREATE TEMP TABLE sneaky (id int)", id="create-temp-table"),
]


def read_only(state: State) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(state["env"]["POSTGRES_DSN"], autocommit=True)


def seeded_at(state: State) -> datetime.datetime:
    return datetime.datetime.fromisoformat(state["seed"]["seeded_at"])


def test_dau_query_gives_seven_whole_days_of_plausible_counts(postgres_db: State) -> None:
    today = seeded_at(postgres_db).date()
    with read_only(postgres_db) as conn:
        rows = conn.execute(DAU_WHOLE_DAYS, {"today": today}).fetchall()
    assert [row[0] for row in rows] == [today - datetime.timedelta(days=n) for n in range(1, 8)]
    for _, dau, requests in rows:
        assert 3_000 <= dau <= 9_000
        assert 4 <= requests / dau <= 12
    active = [dau for _, dau, _ in rows]
    assert max(active) / min(active) < 1.3  # weekends are quieter, but not by much


def test_rolling_dau_window_has_a_row_per_calendar_day_it_touches(postgres_db: State) -> None:
    now = seeded_at(postgres_db)
    with read_only(postgres_db) as conn:
        rolling = conn.execute(DAU_ROLLING, {"now": now}).fetchall()
        whole = {row[0]: row[1:] for row in conn.execute(DAU_WHOLE_DAYS, {"today": now.date()})}
    first, last = (now - datetime.timedelta(days=7)).date(), now.date()
    days = [first + datetime.timedelta(days=n) for n in range((last - first).days + 1)]
    assert [row[0] for row in rolling] == days  # 8 dates unless it is exactly midnight
    for date, dau, requests in rolling[1:-1]:  # the whole days in between
        assert (dau, requests) == whole[date]
    assert 0 < rolling[0][2] < whole[first][1]  # the window starts mid-day


def test_feature_adoption_since_launch_shows_the_new_feature(postgres_db: State) -> None:
    launched = datetime.datetime.fromisoformat(postgres_db["seed"]["feature_launch_at"])
    with read_only(postgres_db) as conn:
        rows = conn.execute(FEATURE_ADOPTION, {"deployed": launched}).fetchall()
        before = conn.execute(
            "SELECT count(*) FROM feature_usage WHERE feature_name = 'smart_shuffle' AND created_at < %s",
            (launched,),
        ).fetchone()
    adoption = {name: users for name, users, _ in rows}
    assert before == (0,)
    assert adoption["smart_shuffle"] > 1_000
    assert rows[0][0] == "search"
    assert [row[0] for row in rows[:2]] == ["search", "playlists"]


@pytest.mark.parametrize(
    "clock",
    [
        # launched on Saturday at noon: the 36 hours since are weekend and a quiet night
        datetime.datetime(2026, 11, 30, 0, 0, 30, tzinfo=datetime.UTC),
        # the quietest hours of a Sunday night
        datetime.datetime(2026, 12, 6, 3, 0, tzinfo=datetime.UTC),
    ],
    ids=["monday-00:00:30", "sunday-03:00"],
)
def test_seeded_facts_hold_whatever_the_clock_says(postgres_db: State, clock: datetime.datetime) -> None:
    admin = postgres_db["env"]["POSTGRES_ADMIN_DSN"]
    copy = f"shop_at_{clock:%Y%m%d%H%M}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {copy}")
    try:
        dsn = conninfo.make_conninfo(admin, dbname=copy)
        seed = business_data.seed(dsn, now=clock)
        launched = datetime.datetime.fromisoformat(seed["feature_launch_at"])
        assert datetime.datetime.fromisoformat(seed["seeded_at"]) == clock
        with psycopg.connect(dsn) as conn:
            experiments = conn.execute(EXPERIMENT_COUNTS).fetchall()
            since_launch = conn.execute(FEATURE_ADOPTION, {"deployed": launched}).fetchall()
            last_30_hours = conn.execute(
                FEATURE_ADOPTION, {"deployed": clock - datetime.timedelta(hours=30)}
            ).fetchall()
            days = conn.execute(DAU_WHOLE_DAYS, {"today": clock.date()}).fetchall()
            period = datetime.timedelta(hours=30)
            periods = [
                conn.execute(CONVERSION_RATE, {"start": clock - n * period, "end": clock - (n - 1) * period})
                .fetchone()
                or (None, 0)
                for n in range(1, 9)
            ]
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {copy}")
    assert experiments == EXPERIMENTS
    launch = {name: (users, uses) for name, users, uses in since_launch}
    assert launch["smart_shuffle"] == SMART_SHUFFLE_SINCE_LAUNCH
    assert {name: (users, uses) for name, users, uses in last_30_hours}["smart_shuffle"] == (
        SMART_SHUFFLE_LAST_30_HOURS
    )
    # search leads by a margin: a third of the established features' uses in any window
    assert [row[0] for row in since_launch[:2]] == ["search", "playlists"]
    assert launch["search"][1] > 1.5 * SMART_SHUFFLE_SINCE_LAUNCH[1]
    assert [d for d, _, _ in days] == [clock.date() - datetime.timedelta(days=n) for n in range(1, 8)]
    active = [dau for _, dau, _ in days]
    assert min(active) >= 3_000 and max(active) / min(active) < 1.3
    rates = [rate for rate, _ in periods if rate is not None]
    assert len(rates) == 8
    assert max(rates) / min(rates) < 1.03  # 3.5% in every 30-hour period


def test_checkout_experiment_variant_b_has_a_significant_lift(postgres_db: State) -> None:
    with read_only(postgres_db) as conn:
        rows = conn.execute(
            """
            SELECT a.variant, count(*), count(c.user_id)
            FROM experiment_assignments AS a
            LEFT JOIN experiment_conversions AS c USING (experiment, user_id)
            WHERE a.experiment = 'checkout_redesign'
            GROUP BY a.variant ORDER BY a.variant
            """
        ).fetchall()
    (_, n_a, x_a), (_, n_b, x_b) = rows
    p_a, p_b, pooled = x_a / n_a, x_b / n_b, (x_a + x_b) / (n_a + n_b)
    z = (p_b - p_a) / math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    assert 0.08 < p_a < 0.12
    assert p_b / p_a - 1 > 0.1
    assert z > 2.58  # two-sided p < 0.01


def test_injected_conversion_drop_shows_against_the_previous_period(postgres_db: State) -> None:
    admin = postgres_db["env"]["POSTGRES_ADMIN_DSN"]
    copy = "shop_conversion_drop"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {copy} TEMPLATE shop")
    try:
        dsn = conninfo.make_conninfo(admin, dbname=copy)
        with psycopg.connect(dsn) as conn:
            now = conn.execute("SELECT now()").fetchone()
        assert now is not None
        deployed = now[0] - datetime.timedelta(days=2)
        after = {"start": deployed, "end": now[0]}
        before = {"start": deployed - datetime.timedelta(days=2), "end": deployed}
        removed = postgres.inject_conversion_drop(dsn, deployed, 0.5)
        with psycopg.connect(dsn) as conn:
            rate_after, sessions_after = conn.execute(CONVERSION_RATE, after).fetchone() or ()
            rate_before, _ = conn.execute(CONVERSION_RATE, before).fetchone() or ()
            revenue_after = (conn.execute(REVENUE, after).fetchone() or (0,))[0]
            revenue_before = (conn.execute(REVENUE, before).fetchone() or (0,))[0]
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {copy}")
    assert removed > 100
    assert sessions_after > 10_000
    assert 0.025 < rate_before < 0.045
    assert 0.35 < rate_after / rate_before < 0.65
    assert 0.3 < revenue_after / revenue_before < 0.7


def test_slow_query_is_visible_to_the_read_only_role(postgres_db: State) -> None:
    took = postgres.run_slow_query(postgres_db["env"]["POSTGRES_ADMIN_DSN"], 1.2)
    with read_only(postgres_db) as conn:
        rows = conn.execute(SLOW_QUERIES).fetchall()
    assert took >= 1.2
    slow = [row for row in rows if postgres.SLOW_QUERY_MARKER in row[0]]
    assert len(slow) == 1, rows
    query, mean_exec_time, calls = slow[0]
    assert "pg_sleep($1)" in query
    assert mean_exec_time > 1000
    assert calls >= 1


@pytest.mark.parametrize("statement", WRITES)
def test_read_only_role_cannot_write(postgres_db: State, statement: str) -> None:
    with read_only(postgres_db) as conn, pytest.raises(errors.ReadOnlySqlTransaction):
        conn.execute(statement.encode())


@pytest.mark.parametrize("statement", WRITES)
def test_read_only_role_cannot_write_after_turning_read_only_off(postgres_db: State, statement: str) -> None:
    with read_only(postgres_db) as conn:
        conn.execute("SET default_transaction_read_only = off")
        assert conn.execute("SHOW transaction_read_only").fetchone() == ("off",)
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(statement.encode())


def test_read_only_role_cannot_reset_statement_statistics(postgres_db: State) -> None:
    with read_only(postgres_db) as conn:
        conn.execute("SET default_transaction_read_only = off")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT pg_stat_statements_reset()")


def test_stop_leaves_no_process_port_or_data_behind(tmp_path: pathlib.Path) -> None:
    if not (postgres.BIN_DIR / "postgres").exists():
        pytest.skip(f"no PostgreSQL server binaries in {postgres.BIN_DIR}")
    state = postgres.start(tmp_path, seed=False)
    try:
        assert json.loads(json.dumps(state)) == state  # the orchestrator saves it
        pids = postgres.server_pids(state)
        assert len(pids) > 1  # the postmaster and its background workers
        assert not ports.is_port_free(state["port"])
        with psycopg.connect(state["env"]["POSTGRES_DSN"]) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        postgres.stop(state)
    assert [pid for pid in pids if is_running(pid)] == []
    assert ports.is_port_free(state["port"])
    assert not pathlib.Path(state["data_dir"]).exists()
    assert not pathlib.Path(state["socket_dir"]).exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(state["env"]["POSTGRES_ADMIN_DSN"], connect_timeout=3)
    postgres.stop(state)  # a second stop is harmless


def is_running(pid: int) -> bool:
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] != "Z" and os.path.exists(f"/proc/{pid}")
