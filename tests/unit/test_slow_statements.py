"""Slow statements since the deployment: the snapshot and the flags, without a database.

The SQL itself runs in ``tests/e2e/test_default_checks.py``; here the rows are canned.

Covers:
- the first run keeps a snapshot in the memo (columnar, query ids as text, complete or
  cut at ``snapshotLimit``) and flags nothing; later runs send it back as bound arrays
  with the threshold in milliseconds, and say where the snapshot came from;
- the snapshot survives the trip through the check's status (what a restarted
  operator reads back); a damaged memo is no snapshot;
- ``snapshotFrom`` reads another check's snapshot, and falls back to its own;
- flagged statements: why (new, slower, not in a cut snapshot, reset), the message
  with the worst one, the count as the value;
- no DSN: Error, or Skipped when the check is optional.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

from postdeploy.decisions import checks as check_decisions
from postdeploy.decisions import templates
from postdeploy.models.checks import PostgresCheck, SlowStatements
from postdeploy.models.measurements import MeasurementState, ReviewContext
from postdeploy.models.reviews import CheckState, CheckStatus
from postdeploy.providers import statements
from postdeploy.providers.postgres import PostgresProvider, Rows
from tests.contexts import NOW, make_context


class Recorder(PostgresProvider):
    """Answers the snapshot query and the delta query with canned rows; keeps the calls."""

    def __init__(
        self, snapshot: list[tuple[Any, ...]], flagged: list[tuple[Any, ...]], cut: bool = False
    ) -> None:
        super().__init__("postgresql://unused")
        self.snapshot, self.flagged, self.cut = snapshot, flagged, cut
        self.calls: list[tuple[str, int, dict[str, Any]]] = []

    async def fetch(
        self, query: str, ctx: ReviewContext, *, timeout_seconds: float, row_limit: int,
        parameters: dict[str, Any] | None = None,
    ) -> Rows:  # fmt: skip
        self.calls.append((query, row_limit, dict(parameters or {})))
        if query == statements.SNAPSHOT_SQL:
            return Rows(["queryid", "calls", "total_ms"], self.snapshot, truncated=self.cut)
        columns = ["queryid", "query", "calls", "mean_ms", "before_mean_ms", "absent", "reset"]
        return Rows(columns, self.flagged, truncated=False)


SNAPSHOT = [("-4611686018427387904", 120, 4800.25), ("7088900375722481863", 3, 30.5)]
SPEC = PostgresCheck(slowStatements=SlowStatements(threshold="1s", snapshotLimit=2))


async def test_the_first_run_keeps_a_snapshot_and_later_runs_compare_with_it() -> None:
    provider = Recorder(
        SNAPSHOT, [("7088900375722481863", "SELECT pg_sleep($1)", 1, 1302.0, 10.2, False, False)]
    )
    first = await provider.measure(SPEC, make_context())
    assert first.state is MeasurementState.OK and first.value == 0
    assert first.memo == {
        "snapshot": {
            "at": NOW.isoformat(),
            "complete": True,
            "ids": ["-4611686018427387904", "7088900375722481863"],
            "calls": [120, 3],
            "totalMs": [4800.25, 30.5],
        }
    }
    assert provider.calls[0][:2] == (statements.SNAPSHOT_SQL, 2)
    assert first.query is not None and first.query.startswith("pg_stat_statements snapshot")

    later = await provider.measure(SPEC, make_context(memo=first.memo))
    query, limit, bound = provider.calls[1]
    assert query == statements.DELTA_SQL and limit == statements.FLAGGED_LIMIT
    assert bound["pd_ids"] == ["-4611686018427387904", "7088900375722481863"]
    assert bound["pd_calls"] == [120, 3] and bound["pd_total_ms"] == [4800.25, 30.5]
    assert bound["pd_threshold_ms"] == 1000.0 and bound["pd_min_calls"] == 1 and bound["pd_slower_by"] == 0.2
    assert later.memo is None  # the snapshot stays as it was
    assert later.value == 1
    assert later.details["snapshotFrom"] == "this check"
    assert later.details["statements"] == [
        {
            "queryid": "7088900375722481863",
            "query": "SELECT pg_sleep($1)",
            "calls": 1,
            "meanMs": 1302.0,
            "meanMsBefore": 10.2,
            "why": "slower since the deployment",
        }
    ]
    assert later.message == (
        "1 statement(s) slower than 1s on average since the deployment; worst: 1302 ms over 1 call(s), "
        "slower since the deployment: SELECT pg_sleep($1)"
    )


async def test_the_snapshot_survives_the_status_and_a_restart() -> None:
    template = {
        "phases": [{"name": "immediate", "start": "0s", "end": "2h", "checks": [
            {"name": "slow-queries", "postgres": {"slowStatements": {}}, "failWhen": "value > 0"}
        ]}]
    }  # fmt: skip
    review = templates.resolve(templates.merge(template, {"target": {"name": "app"}}))
    check = review.check("slow-queries")
    assert check is not None and check.spec.postgres is not None
    provider = Recorder(SNAPSHOT, [])
    first = await provider.measure(check.spec.postgres, make_context())
    status, result = check_decisions.record(check, check_decisions.initial(check), first, NOW, 0)
    assert result == "Passed"
    reread = CheckStatus.model_validate(status.dump())  # what the next operator reads
    assert statements.Snapshot.from_memo(reread.memo) == statements.Snapshot.from_memo(first.memo)
    again = await provider.measure(check.spec.postgres, make_context(memo=reread.memo or {}))
    assert provider.calls[-1][0] == statements.DELTA_SQL and again.value == 0
    kept, _ = check_decisions.record(check, reread, again, NOW + datetime.timedelta(minutes=10), 1)
    assert kept.memo == reread.memo and kept.state is CheckState.RUNNING


def test_a_damaged_memo_is_no_snapshot() -> None:
    good = statements.Snapshot("t", True, ["1"], [2], [3.0]).to_memo()
    assert statements.Snapshot.from_memo(good) is not None
    for memo in (
        None,
        {},
        {"snapshot": "x"},
        {"snapshot": {**good["snapshot"], "calls": [1, 2]}},
        {"snapshot": {**good["snapshot"], "calls": ["many"]}},
        {"snapshot": {k: v for k, v in good["snapshot"].items() if k != "ids"}},
    ):
        assert statements.Snapshot.from_memo(memo) is None, memo


async def test_snapshot_from_reads_another_checks_snapshot_or_takes_its_own() -> None:
    spec = PostgresCheck(slowStatements=SlowStatements(snapshotFrom="slow-queries-immediate"))
    taken = statements.Snapshot("2026-11-26T10:00:00+00:00", True, ["1"], [5], [50.0]).to_memo()
    provider = Recorder(SNAPSHOT, [])
    m = await provider.measure(spec, make_context(memos={"slow-queries-immediate": taken}))
    assert provider.calls[-1][0] == statements.DELTA_SQL and provider.calls[-1][2]["pd_ids"] == ["1"]
    assert m.details["snapshotFrom"] == "slow-queries-immediate"
    assert m.details["snapshotAt"] == "2026-11-26T10:00:00+00:00"
    own = await provider.measure(spec, make_context(memos={}))
    assert provider.calls[-1][0] == statements.SNAPSHOT_SQL and own.memo is not None
    assert (
        own.details["snapshotNote"]
        == "check 'slow-queries-immediate' kept no snapshot: this check took its own"
    )


def test_why_a_statement_is_flagged() -> None:
    spec = SlowStatements()
    complete = statements.Snapshot("t", True, [], [], [])
    cut = dataclasses.replace(complete, complete=False)
    rows = [
        ("1", "SELECT new", 4, 2500.0, None, True, False),
        ("2", "SELECT   slower\n FROM t", 10, 1500.0, 20.0, False, False),
        ("3", "SELECT after_reset", 2, 1200.0, 900.0, False, True),
    ]
    m = statements.flagged(rows, False, complete, spec, "this check")
    assert m.value == 3
    assert [s["why"] for s in m.details["statements"]] == [
        "new since the deployment",
        "slower since the deployment",
        "statistics reset since the snapshot",
    ]
    assert m.details["statements"][1]["query"] == "SELECT slower FROM t"
    assert m.details["newStatements"] == 1 and m.details["slowerStatements"] == 1
    assert "worst: 2500 ms over 4 call(s), new since the deployment: SELECT new (and 2 more)" in m.message
    unsure = statements.flagged(rows[:1], False, cut, spec, "this check")
    assert unsure.details["statements"][0]["why"] == "not in the snapshot (cut at snapshotLimit)"
    none = statements.flagged([], False, complete, spec, "this check")
    assert none.value == 0 and none.message == (
        f"no statement slower than 1s on average since the deployment "
        f"(against this check's snapshot of {len(complete.ids)} statement(s))"
    )
    shared = statements.flagged([], False, complete, spec, "slow-queries-immediate")
    assert "(against slow-queries-immediate's snapshot of" in shared.message


async def test_no_dsn_is_an_error_or_skipped_when_optional() -> None:
    provider = PostgresProvider(None)
    required = await provider.measure(SPEC, make_context())
    assert required.state is MeasurementState.ERROR and "no PostgreSQL DSN" in required.message
    optional = await provider.measure(SPEC.model_copy(update={"optional": True}), make_context())
    assert optional.state is MeasurementState.NOT_APPLICABLE
    assert optional.message.endswith("(the check is optional)")
    query = await provider.measure(PostgresCheck(query="SELECT 1", optional=True), make_context())
    assert query.state is MeasurementState.NOT_APPLICABLE
