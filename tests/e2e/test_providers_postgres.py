"""The postgres provider against the test bed's PostgreSQL (``shop`` database).

Covers:
- a value from the first row, ``column`` choosing another column, the first row's
  numeric columns in the details, named parameters bound from the review;
- at most ``rowLimit`` rows are read, at most 20 shown; no rows and NULL are NoData;
- the read-only transaction refuses writes even for a superuser (the Error carries
  ``ReadOnlySqlTransaction`` and PostgreSQL's message) and a second statement cannot
  be smuggled in after ``COMMIT;``;
- ``timeout`` becomes the statement timeout: a slow query is an Error (QueryCanceled)
  well before it would finish;
- SQL errors, a wrong password and a server that is not there are Error
  measurements whose messages never contain the DSN or its password;
- the check's Secret DSN wins over the operator's default DSN.
"""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
import pytest
from psycopg import conninfo

from postdeploy.models.checks import PostgresCheck
from postdeploy.models.measurements import Measurement, MeasurementState
from postdeploy.providers.postgres import PostgresProvider
from testbed import ports
from tests.contexts import make_context

# One session-wide server shared with the other PostgreSQL e2e tests.
pytest_plugins = ["tests.e2e.conftest_postgres"]
pytestmark = pytest.mark.e2e


@pytest.fixture
def ro_dsn(postgres_db: dict[str, Any]) -> str:
    dsn: str = postgres_db["env"]["POSTGRES_DSN"]
    return dsn


@pytest.fixture
def admin_dsn(postgres_db: dict[str, Any]) -> str:
    dsn: str = postgres_db["env"]["POSTGRES_ADMIN_DSN"]
    return dsn


async def _measure(dsn: str | None, query: str, secret_dsn: str | None = None, **spec: Any) -> Measurement:
    provider = PostgresProvider(dsn, connect_timeout_seconds=3)
    secrets = {"dsn": secret_dsn} if secret_dsn else {}
    return await provider.measure(PostgresCheck(query=query, **spec), make_context(secrets=secrets))


def _text_of(m: Measurement) -> str:
    return json.dumps([m.message, m.query, dict(m.details)], default=str)


def _secrets(dsn: str) -> list[str]:
    return [dsn, str(conninfo.conninfo_to_dict(dsn)["password"])]


async def test_value_is_the_first_column_of_the_first_row(ro_dsn: str) -> None:
    m = await _measure(ro_dsn, "SELECT count(*) AS requests, 7 AS days FROM user_activity")
    assert m.state is MeasurementState.OK
    assert m.value is not None and m.value > 0
    assert m.details["columns"] == ["requests", "days"]
    assert m.details["days"] == 7.0
    assert m.query == "SELECT count(*) AS requests, 7 AS days FROM user_activity"


async def test_column_chooses_the_value_and_parameters_are_bound(ro_dsn: str) -> None:
    query = (
        "SELECT %(version)s AS version, %(target)s AS target, "
        "extract(epoch FROM %(deployed_at)s::timestamptz) AS deployed, 2.5::numeric AS ratio"
    )
    m = await _measure(ro_dsn, query, column="deployed")
    assert m.state is MeasurementState.OK
    ctx = make_context()
    assert m.value == ctx.deployed_at.timestamp()
    assert m.details["rows"][0][:2] == ["1.4.2", "shop"]
    assert m.details["ratio"] == 2.5
    assert m.details["parameters"]["version"] == "1.4.2"


async def test_a_missing_column_is_an_error_listing_the_columns(ro_dsn: str) -> None:
    m = await _measure(ro_dsn, "SELECT 1 AS a, 2 AS b", column="c")
    assert m.state is MeasurementState.ERROR
    assert m.message == "column 'c' is not in the result (columns: a, b)"


async def test_rows_are_limited_and_shown_up_to_twenty(ro_dsn: str) -> None:
    m = await _measure(ro_dsn, "SELECT n FROM generate_series(1, 100000) AS n", rowLimit=50)
    assert m.state is MeasurementState.OK
    assert m.value == 1.0
    assert m.details["rowCount"] == 50
    assert m.details["truncated"] is True
    assert len(m.details["rows"]) == 20


async def test_no_rows_and_null_are_no_data(ro_dsn: str) -> None:
    empty = await _measure(ro_dsn, "SELECT 1 WHERE false")
    assert empty.state is MeasurementState.NO_DATA
    assert empty.message == "the query returned no rows"
    null = await _measure(ro_dsn, "SELECT NULL::int AS errors")
    assert null.state is MeasurementState.NO_DATA
    assert "NULL" in null.message


async def test_a_literal_percent_is_written_twice(ro_dsn: str) -> None:
    m = await _measure(ro_dsn, "SELECT count(*) FROM user_activity WHERE endpoint LIKE '/%%'")
    assert m.state is MeasurementState.OK


async def test_writes_are_refused_by_the_read_only_transaction(admin_dsn: str) -> None:
    # The superuser may write: only the provider's READ ONLY transaction stops it.
    m = await _measure(admin_dsn, "DELETE FROM user_activity WHERE user_id = 1")
    assert m.state is MeasurementState.ERROR
    assert m.message.startswith(
        "ReadOnlySqlTransaction: cannot execute DELETE in a read-only transaction"
    )
    created = await _measure(admin_dsn, "CREATE TABLE postdeploy_probe (a int)")
    assert created.state is MeasurementState.ERROR
    assert "read-only transaction" in created.message
    with psycopg.connect(admin_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM user_activity WHERE user_id = 1").fetchone() != (0,)
        assert conn.execute("SELECT to_regclass('postdeploy_probe')").fetchone() == (None,)


async def test_a_second_statement_cannot_escape_the_transaction(admin_dsn: str) -> None:
    with psycopg.connect(admin_dsn) as conn:
        (before,) = conn.execute("SELECT count(*) FROM sessions").fetchone() or (0,)
    m = await _measure(admin_dsn, "COMMIT; DELETE FROM sessions")
    assert m.state is MeasurementState.ERROR
    with psycopg.connect(admin_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM sessions").fetchone() == (before,)


async def test_statement_timeout_is_an_error(ro_dsn: str) -> None:
    started = time.monotonic()
    m = await _measure(ro_dsn, "SELECT pg_sleep(10)", timeout="500ms")
    assert time.monotonic() - started < 5
    assert m.state is MeasurementState.ERROR
    assert m.message.startswith("QueryCanceled: canceling statement due to statement timeout")


async def test_sql_errors_name_the_class_and_not_the_dsn(ro_dsn: str) -> None:
    m = await _measure(ro_dsn, "SELECT no_such_column FROM user_activity")
    assert m.state is MeasurementState.ERROR
    assert m.message.startswith("UndefinedColumn: column \"no_such_column\" does not exist")
    for secret in _secrets(ro_dsn):
        assert secret not in _text_of(m)


async def test_an_unknown_parameter_is_an_error(ro_dsn: str) -> None:
    m = await _measure(ro_dsn, "SELECT %(experiment)s")
    assert m.state is MeasurementState.ERROR
    assert "experiment" in m.message


async def test_a_wrong_password_never_shows_the_dsn(ro_dsn: str) -> None:
    parts = conninfo.conninfo_to_dict(ro_dsn)
    wrong = conninfo.make_conninfo(ro_dsn, password="Wr0ng-" + str(parts["password"]))
    m = await _measure(wrong, "SELECT 1")
    assert m.state is MeasurementState.ERROR
    assert "password authentication failed" in m.message
    for secret in [*_secrets(wrong), *_secrets(ro_dsn)]:
        assert secret not in _text_of(m)


async def test_a_server_that_is_not_there_is_an_error() -> None:
    dsn = f"postgresql://reader:Secr3t-pw@{ports.LOOPBACK}:{ports.free_port()}/shop"
    m = await _measure(dsn, "SELECT 1")
    assert m.state is MeasurementState.ERROR
    assert "Connection refused" in m.message or "connection" in m.message.lower()
    assert "Secr3t-pw" not in _text_of(m)


async def test_no_dsn_at_all_is_an_error() -> None:
    m = await _measure(None, "SELECT 1")
    assert m.state is MeasurementState.ERROR
    assert "no PostgreSQL DSN" in m.message


async def test_the_checks_secret_dsn_wins_over_the_default(ro_dsn: str, admin_dsn: str) -> None:
    m = await _measure(ro_dsn, "SELECT current_user = 'postgres'", secret_dsn=admin_dsn)
    assert m.value == 1.0
    m = await _measure(ro_dsn, "SELECT current_user = 'postgres'")
    assert m.value == 0.0
