"""Slow statements since the deployment, from ``pg_stat_statements``: queries and arithmetic.

Used by ``postdeploy.providers.postgres`` for a check whose ``postgres`` block has
``slowStatements`` (``models.checks.SlowStatements``); the provider runs the SQL
below through its read-only path and this module turns the rows into a snapshot or a
measurement. No I/O here.

``pg_stat_statements`` only keeps totals since its last reset, so "since the
deployment" needs a snapshot at the deployment:

1. The first run (or the run of an earlier check named by ``snapshotFrom``) keeps, for
   the current database, every statement's ``calls`` and ``total_exec_time`` (summed
   over roles), the ``snapshotLimit`` statements with the largest total time first.
   It lives in the check's memo (the review's status), so a restarted operator keeps
   it: ``{"snapshot": {"at", "complete", "ids", "calls", "totalMs"}}``.
2. Each later run sends the snapshot back as three arrays and lets PostgreSQL take the
   differences: executions since the snapshot and their mean time. A statement is
   flagged when that mean exceeds the threshold over at least ``minCalls``
   executions, and it is *new* (absent from a complete snapshot), *slower* (its mean
   grew by more than ``slowerBy``), or not in a snapshot that had to be cut short (it
   may be either). Counters that went down mean the statistics were reset: the
   statement's totals since the reset count as its executions since the snapshot.

The value is the number of flagged statements; the details list them (query text cut
to 160 characters, calls, mean, mean before, why). Needs PostgreSQL 13 or later
(``total_exec_time``) and, to see other roles' statements, ``pg_read_all_stats``.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from postdeploy.kit import details as details_
from postdeploy.kit import durations
from postdeploy.models.checks import SlowStatements
from postdeploy.models.measurements import Measurement

__all__ = [
    "DELTA_SQL",
    "FLAGGED_LIMIT",
    "SNAPSHOT_SQL",
    "Snapshot",
    "delta_parameters",
    "describe",
    "flagged",
    "snapshot_from_rows",
]

FLAGGED_LIMIT = 100  # flagged statements read at most
_QUERY_CHARS = 160

_STATEMENTS = """
    SELECT s.queryid, sum(s.calls)::bigint AS calls, sum(s.total_exec_time) AS total_ms,
           min(s.query) AS query
    FROM pg_stat_statements AS s
    WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND s.queryid IS NOT NULL
    GROUP BY s.queryid
"""

SNAPSHOT_SQL = f"""
SELECT queryid::text AS queryid, calls, total_ms
FROM ({_STATEMENTS}) AS statements
ORDER BY total_ms DESC, queryid
"""

DELTA_SQL = f"""
WITH now_stats AS ({_STATEMENTS}),
before AS (
    SELECT * FROM unnest(%(pd_ids)s::bigint[], %(pd_calls)s::bigint[], %(pd_total_ms)s::float8[])
        AS b(queryid, calls, total_ms)
),
deltas AS (
    SELECT n.queryid, n.query,
           b.queryid IS NULL AS absent,
           n.calls < coalesce(b.calls, 0) AS reset,
           CASE WHEN b.queryid IS NULL OR n.calls < b.calls THEN n.calls
                ELSE n.calls - b.calls END AS calls,
           CASE WHEN b.queryid IS NULL OR n.calls < b.calls THEN n.total_ms
                ELSE n.total_ms - b.total_ms END AS total_ms,
           b.total_ms / nullif(b.calls, 0) AS before_mean_ms
    FROM now_stats AS n LEFT JOIN before AS b USING (queryid)
)
SELECT queryid::text AS queryid, left(query, {_QUERY_CHARS}) AS query, calls,
       total_ms / calls AS mean_ms, before_mean_ms, absent, reset
FROM deltas
WHERE calls >= %(pd_min_calls)s
  AND total_ms / calls > %(pd_threshold_ms)s
  AND (absent OR reset OR total_ms / calls > before_mean_ms * (1 + %(pd_slower_by)s))
ORDER BY total_ms / calls DESC, queryid
"""


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """``pg_stat_statements`` of the current database at one moment."""

    at: str  # ISO 8601
    complete: bool  # False when snapshotLimit cut it short
    ids: list[str]  # queryid as text: int64 does not survive every JSON reader
    calls: list[int]
    total_ms: list[float]

    def to_memo(self) -> dict[str, Any]:
        return {
            "snapshot": {
                "at": self.at,
                "complete": self.complete,
                "ids": self.ids,
                "calls": self.calls,
                "totalMs": self.total_ms,
            }
        }

    @classmethod
    def from_memo(cls, memo: Mapping[str, Any] | None) -> Snapshot | None:
        """The snapshot a memo holds; None when it holds none (or a damaged one)."""
        raw = (memo or {}).get("snapshot")
        if not isinstance(raw, Mapping):
            return None
        try:
            snapshot = cls(
                at=str(raw["at"]),
                complete=bool(raw["complete"]),
                ids=[str(i) for i in raw["ids"]],
                calls=[int(c) for c in raw["calls"]],
                total_ms=[float(t) for t in raw["totalMs"]],
            )
        except (KeyError, TypeError, ValueError):
            return None
        if not len(snapshot.ids) == len(snapshot.calls) == len(snapshot.total_ms):
            return None
        return snapshot


def describe(spec: SlowStatements, *, snapshot: bool) -> str:
    """What a run asks, for status (the SQL itself is fixed: ``SNAPSHOT_SQL``, ``DELTA_SQL``)."""
    if snapshot:
        return f"pg_stat_statements snapshot of this database (top {spec.snapshot_limit} by total time)"
    return (
        f"pg_stat_statements since the snapshot: mean > {spec.threshold} over >= {spec.min_calls} "
        f"call(s), new or slower by > {spec.slower_by:.0%}"
    )


def snapshot_from_rows(
    rows: Sequence[Sequence[Any]], truncated: bool, at: datetime.datetime
) -> Snapshot:
    """A snapshot from the rows of ``SNAPSHOT_SQL`` (queryid, calls, total_ms)."""
    return Snapshot(
        at=at.isoformat(),
        complete=not truncated,
        ids=[str(row[0]) for row in rows],
        calls=[int(row[1]) for row in rows],
        total_ms=[round(float(row[2]), 3) for row in rows],
    )


def delta_parameters(snapshot: Snapshot, spec: SlowStatements) -> dict[str, Any]:
    """The bound parameters of ``DELTA_SQL`` (prefixed, so no review parameter collides)."""
    return {
        "pd_ids": snapshot.ids,
        "pd_calls": snapshot.calls,
        "pd_total_ms": snapshot.total_ms,
        "pd_min_calls": spec.min_calls,
        "pd_threshold_ms": durations.parse_duration(spec.threshold).total_seconds() * 1000.0,
        "pd_slower_by": spec.slower_by,
    }


def flagged(
    rows: Sequence[Sequence[Any]],
    truncated: bool,
    snapshot: Snapshot,
    spec: SlowStatements,
    source: str,
) -> Measurement:
    """The measurement for the rows of ``DELTA_SQL``: how many statements are flagged.

    ``source`` says where the snapshot came from ("this check" or another check's name).
    """
    statements = []
    for queryid, query, calls, mean_ms, before_mean_ms, absent, reset in rows:
        if reset:
            why = "statistics reset since the snapshot"
        elif absent and snapshot.complete:
            why = "new since the deployment"
        elif absent:
            why = "not in the snapshot (cut at snapshotLimit)"
        else:
            why = "slower since the deployment"
        statements.append(
            {
                "queryid": queryid,
                "query": " ".join(str(query or "").split())[:_QUERY_CHARS],
                "calls": int(calls),
                "meanMs": round(float(mean_ms), 3),
                "meanMsBefore": None if before_mean_ms is None else round(float(before_mean_ms), 3),
                "why": why,
            }
        )
    threshold = spec.threshold
    count = len(statements)
    found: dict[str, Any] = {
        "snapshotAt": snapshot.at,
        "snapshotFrom": source,
        "snapshotStatements": len(snapshot.ids),
        "snapshotComplete": snapshot.complete,
        "threshold": threshold,
        "newStatements": sum(1 for s in statements if s["why"] == "new since the deployment"),
        "slowerStatements": sum(1 for s in statements if s["why"] == "slower since the deployment"),
        "statements": statements,
    }
    if truncated:
        found["truncated"] = True
    if count == 0:
        # Said in the message too: a check that passed keeps no details once its phase
        # has completed (postdeploy.decisions.checks.settle).
        owner = "this check's" if source == "this check" else f"{source}'s"
        message = (
            f"no statement slower than {threshold} on average since the deployment "
            f"(against {owner} snapshot of {len(snapshot.ids)} statement(s))"
        )
    else:
        worst = statements[0]
        more = "" if count == 1 else f" (and {count - 1} more{'+' if truncated else ''})"
        message = (
            f"{count}{'+' if truncated else ''} statement(s) slower than {threshold} on average "
            f"since the deployment; worst: {worst['meanMs']:.0f} ms over {worst['calls']} call(s), "
            f"{worst['why']}: {worst['query'][:80]}{more}"
        )
    return Measurement.ok(
        float(count), message=message, details=details_.fit(details_.json_value(found), "statements")
    )
