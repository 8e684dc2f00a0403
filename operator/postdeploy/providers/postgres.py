"""PostgreSQL checks: the team's SQL, run read-only, turned into a value and rows.

Called by ``postdeploy.engine`` for a check with a ``postgres`` block
(``models.checks.PostgresCheck``), and by the ``statistics`` provider, which runs its
count query through ``PostgresProvider.fetch``. The engine builds one
``PostgresProvider`` at start-up with the operator-wide default DSN; a check's
``dsnSecretRef`` is resolved by the engine into ``ctx.secrets["dsn"]``, which wins.

Every run opens its own connection and closes it: checks run every few minutes, a
connection costs milliseconds, and no idle connections sit on the team's database
between runs (nor is there a pool to size, share between DSNs, or close).

How one query runs:

- the transaction is ``READ ONLY`` and gets ``SET LOCAL statement_timeout`` from the
  check's ``timeout``; the connection is always rolled back and closed;
- the query goes over the extended protocol, so it is exactly one statement (no
  ``COMMIT; DELETE ...``), and values only ever travel as bound parameters:
  ``%(deployed_at)s``, ``%(now)s``, ``%(version)s``, ``%(target)s``,
  ``%(namespace)s``, ``%(phase_start)s``, ``%(phase_end)s`` and the review's
  ``spec.parameters`` (``templating.sql_parameters``). As with any psycopg query
  that has parameters, a literal ``%`` is written ``%%`` (``LIKE '/api/%%'``);
- rows are streamed and at most ``rowLimit`` are read (the query is cancelled after);
- the value is ``column`` (or the first column) of the first row; the details carry
  the columns, up to 20 rows made JSON-safe, and every numeric column of the first
  row under its own name, so a condition can compare ``value`` with, say,
  ``previous``.

A check with ``slowStatements`` instead of ``query`` looks at ``pg_stat_statements``
since the deployment (``postdeploy.providers.statements``).

A database that is down, slow or refuses the query is an Error measurement carrying
the SQL error class and message (``ReadOnlySqlTransaction: cannot execute DELETE in a
read-only transaction``); no rows, or NULL, is NoData. The DSN and its password never
appear in a message, a detail or a log line. Use a role that can only read as well:
the read-only transaction keeps honest mistakes out, a role keeps everything out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import decimal
import logging
import math
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from postdeploy.decisions import templating
from postdeploy.kit import details as details_
from postdeploy.kit import durations, exceptions
from postdeploy.models.checks import Baseline, PostgresCheck, SlowStatements
from postdeploy.models.measurements import Measurement, ReviewContext
from postdeploy.providers import statements

if TYPE_CHECKING:
    # Imported by the first SQL query, not with this module: psycopg and its bundled
    # libpq are about 24 MB of an operator's memory, which one without SQL checks
    # (or before its reviews reach the phases that have them) does not need.
    import psycopg

__all__ = ["ROWS_SHOWN", "PostgresProvider", "Rows"]

logger = logging.getLogger(__name__)

ROWS_SHOWN = 20
_RESERVED = frozenset({"columns", "rows", "rowCount", "truncated", "parameters", "column", "rowsShown"})
_PARAMETER = re.compile(r"%\(([^)]+)\)s")


def failed(exc: Exception, optional: bool, query: str | None) -> Measurement:
    """The measurement for a query that could not run."""
    if optional and isinstance(exc, exceptions.NotConfigured):
        return Measurement.not_applicable(f"{exc} (the check is optional)", query=query)
    return Measurement.error(str(exc), query=query)


@dataclasses.dataclass(frozen=True)
class Rows:
    """What a query returned: column names, at most ``row_limit`` rows, and whether
    there were more."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool


class PostgresProvider:
    """Runs read-only SQL; one instance serves every check of every review."""
    limits_itself = False

    def __init__(
        self,
        default_dsn: str | None = None,
        *,
        connect_timeout_seconds: float = 10,
        application_name: str = "postdeploy",
    ) -> None:
        self._default_dsn = default_dsn
        self._connect_timeout = connect_timeout_seconds
        self._application_name = application_name

    async def measure(
        self, spec: PostgresCheck, ctx: ReviewContext, baseline: Baseline | None = None
    ) -> Measurement:
        """Run the check's query. ``baseline`` is ignored: the SQL compares periods itself."""
        if spec.slow_statements is not None:
            return await self._slow_statements(spec, spec.slow_statements, ctx)
        assert spec.query is not None  # the model requires query or slowStatements
        try:
            timeout = durations.parse_duration(spec.timeout).total_seconds()
            result = await self.fetch(spec.query, ctx, timeout_seconds=timeout, row_limit=spec.row_limit)
        except (exceptions.QueryFailed, ValueError) as exc:
            return failed(exc, spec.optional, spec.query)

        info: dict[str, Any] = {
            "columns": result.columns,
            "rowCount": len(result.rows),
            "truncated": result.truncated,
            "parameters": _used_parameters(spec.query, ctx),
            "rows": [details_.json_value(list(row)) for row in result.rows[:ROWS_SHOWN]],
        }
        if not result.rows:
            return Measurement.no_data("the query returned no rows", query=spec.query, details=info)
        column = spec.column or result.columns[0]
        if column not in result.columns:
            return Measurement.error(
                f"column {column!r} is not in the result (columns: {', '.join(result.columns)})",
                query=spec.query,
                details=info,
            )
        first = result.rows[0]
        info["column"] = column
        for name, cell in zip(result.columns, first, strict=True):
            number = _number(cell)
            if number is not None and name not in _RESERVED:
                info.setdefault(name, number)
        info = details_.fit(info, "rows")
        raw = first[result.columns.index(column)]
        if raw is None:
            return Measurement.no_data(f"{column} is NULL in the first row", query=spec.query, details=info)
        value = _number(raw)
        if value is None:
            return Measurement.error(
                f"{column} is {type(raw).__name__}, not a number", query=spec.query, details=info
            )
        return Measurement.ok(value, query=spec.query, details=info)

    async def _slow_statements(
        self, spec: PostgresCheck, slow: SlowStatements, ctx: ReviewContext
    ) -> Measurement:
        """Keep a snapshot of ``pg_stat_statements`` on the first run; flag slow ones after."""
        source = "this check"
        snapshot = statements.Snapshot.from_memo(ctx.memo)
        note = None
        if snapshot is None and slow.snapshot_from:
            snapshot = statements.Snapshot.from_memo(ctx.memos.get(slow.snapshot_from))
            if snapshot is not None:
                source = slow.snapshot_from
            else:
                note = f"check {slow.snapshot_from!r} kept no snapshot: this check took its own"
        try:
            timeout = durations.parse_duration(spec.timeout).total_seconds()
            if snapshot is None:
                rows = await self.fetch(
                    statements.SNAPSHOT_SQL, ctx, timeout_seconds=timeout, row_limit=slow.snapshot_limit
                )
                taken = statements.snapshot_from_rows(rows.rows, rows.truncated, ctx.now)
                found: dict[str, Any] = {
                    "snapshotAt": taken.at,
                    "snapshotStatements": len(taken.ids),
                    "snapshotComplete": taken.complete,
                }
                if note:
                    found["snapshotNote"] = note
                return Measurement.ok(
                    0.0,
                    message=f"snapshot of {len(taken.ids)} statement(s) kept; later runs compare with it",
                    query=statements.describe(slow, snapshot=True),
                    details=found,
                    memo=taken.to_memo(),
                )
            rows = await self.fetch(
                statements.DELTA_SQL,
                ctx,
                timeout_seconds=timeout,
                row_limit=statements.FLAGGED_LIMIT,
                parameters=statements.delta_parameters(snapshot, slow),
            )
        except (exceptions.QueryFailed, ValueError) as exc:
            return failed(exc, spec.optional, statements.describe(slow, snapshot=snapshot is None))
        measurement = statements.flagged(rows.rows, rows.truncated, snapshot, slow, source)
        return dataclasses.replace(measurement, query=statements.describe(slow, snapshot=False))

    async def fetch(
        self,
        query: str,
        ctx: ReviewContext,
        *,
        timeout_seconds: float,
        row_limit: int,
        parameters: Mapping[str, Any] | None = None,
    ) -> Rows:
        """Run ``query`` read-only with the review's named parameters (and ``parameters``,
        which win: values a provider computes, such as a snapshot's arrays).

        Raises ``QueryFailed`` (with a message safe to show) when the database cannot
        be reached, refuses the query, or takes longer than ``timeout_seconds``.
        """
        import psycopg

        dsn = ctx.secrets.get("dsn") or self._default_dsn
        if not dsn:
            raise exceptions.NotConfigured(
                "no PostgreSQL DSN: set dsnSecretRef in the check or the operator's default DSN"
            )
        secrets = _secrets_of(dsn)
        # The server's statement_timeout is the real limit; this one covers a dead
        # network, where no server is left to enforce anything.
        overall = self._connect_timeout + timeout_seconds + 5
        try:
            async with asyncio.timeout(overall):
                bound = {**templating.sql_parameters(ctx), **(parameters or {})}
                return await self._run(dsn, query, bound, timeout_seconds, row_limit)
        except TimeoutError:
            raise exceptions.QueryFailed(f"PostgreSQL did not answer within {overall:g}s") from None
        except psycopg.ProgrammingError as exc:
            # psycopg's own complaints about the query text, before anything is sent.
            text = _describe(exc, secrets)
            if "placeholder" in text:
                text += "; write a literal % as %%"
            elif "parameter missing" in text:
                text += f"; available: {', '.join(sorted(templating.sql_parameters(ctx)))}"
            raise exceptions.QueryFailed(text) from None
        except psycopg.Error as exc:
            raise exceptions.QueryFailed(_describe(exc, secrets)) from None
        except OSError as exc:
            raise exceptions.QueryFailed(
                f"could not connect to PostgreSQL: {details_.scrub(str(exc), secrets)}"
            ) from None

    async def _run(
        self, dsn: str, query: str, parameters: dict[str, Any], timeout: float, row_limit: int
    ) -> Rows:
        import psycopg

        connection = await psycopg.AsyncConnection.connect(dsn, **self._connect_options(dsn))
        try:
            await connection.set_read_only(True)  # the next BEGIN is BEGIN READ ONLY
            async with connection.cursor() as cursor:
                await cursor.execute(
                    "SELECT set_config('statement_timeout', %s, true)",  # SET LOCAL
                    [f"{max(1, round(timeout * 1000))}ms"],
                )
                logger.debug("SQL (read-only, %gs, %d rows at most): %s", timeout, row_limit, query)
                rows: list[tuple[Any, ...]] = []
                columns: list[str] | None = None
                truncated = False
                # An async generator at run time; closing it early cancels the query.
                generator = cast(AsyncGenerator[Any, None], cursor.stream(query, parameters))
                async with contextlib.aclosing(generator) as stream:
                    async for row in stream:
                        if columns is None:
                            columns = _columns(cursor)
                        if len(rows) >= row_limit:
                            truncated = True
                            break
                        rows.append(tuple(row))
                if columns is None:
                    columns = _columns(cursor)
            return Rows(columns, rows, truncated)
        finally:
            await connection.close()  # discards the transaction: nothing to commit

    def _connect_options(self, dsn: str) -> dict[str, Any]:
        import psycopg
        from psycopg import conninfo

        options: dict[str, Any] = {"autocommit": False}
        try:
            given = conninfo.conninfo_to_dict(dsn)
        except psycopg.ProgrammingError:
            raise exceptions.QueryFailed("the PostgreSQL DSN is not a valid connection string") from None
        if "connect_timeout" not in given:
            options["connect_timeout"] = max(2, math.ceil(self._connect_timeout))
        if "application_name" not in given:
            options["application_name"] = self._application_name
        return options


def _columns(cursor: psycopg.AsyncCursor[Any]) -> list[str]:
    return [column.name for column in cursor.description or []]


def _number(value: Any) -> float | None:
    """A cell as a float: numbers, booleans (1/0), intervals (seconds), numeric text."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float, decimal.Decimal, str)):
        try:
            number = float(value)
        except (ValueError, OverflowError):
            return None
        return number if math.isfinite(number) else None
    return None


def _used_parameters(query: str, ctx: ReviewContext) -> dict[str, Any]:
    """The named parameters the query refers to, with the values they were bound to."""
    available = templating.sql_parameters(ctx)
    return {
        name: details_.json_value(available.get(name)) for name in sorted(set(_PARAMETER.findall(query)))
    }


def _secrets_of(dsn: str) -> list[str]:
    """Strings that must not appear in a message: the DSN itself and its password."""
    import psycopg
    from psycopg import conninfo

    found = [dsn]
    with contextlib.suppress(psycopg.ProgrammingError):
        password = conninfo.conninfo_to_dict(dsn).get("password")
        if password:
            found.append(str(password))
    return found


def _describe(exc: psycopg.Error, secrets: Sequence[str]) -> str:
    """``ClassName: primary message (SQLSTATE xxxxx)``, without credentials."""
    diag = exc.diag
    primary = diag.message_primary if diag is not None else None
    if primary:
        text = f"{type(exc).__name__}: {primary}"
        if exc.sqlstate:
            text += f" (SQLSTATE {exc.sqlstate})"
        if diag.message_hint:
            text += f"; hint: {diag.message_hint}"
    else:  # a connection failure: libpq's own words
        first = " ".join(str(exc).split())
        text = f"{type(exc).__name__}: {first}"
    return details_.scrub(text, secrets)[:500]
