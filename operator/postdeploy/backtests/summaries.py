"""A backtest as data (``-o json``), as a summary, and as plain-text tables.

Called by ``kubectl postdeploy backtest`` and by ``postdeploy.plugin.backtest_pages`` (the
HTML section). Pure.

The summary counts releases by verdict in three groups: ``Failed`` (a check failed:
``Failed``, or ``Failing`` for a release replayed only up to ``until``, which can no
longer pass since a Failed check is final), ``Inconclusive`` (a check errored or could
not decide) and ``Passed``; a release still ``Passing`` or ``Pending`` at ``until`` is
``Incomplete``. Per check it counts the releases in which the check ended Failed,
Error, Inconclusive, Passed or Skipped (a release replayed only part-way counts a
check still running as Running).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any, TextIO

from postdeploy.backtests.replays import Backtest, CheckOutcome, ReleaseOutcome

__all__ = ["GROUPS", "as_dict", "group", "release_rows", "summary", "write_table"]

GROUPS = ("Failed", "Inconclusive", "Passed", "Incomplete")
RELEASE_COLUMNS = ("RELEASE", "VERSION", "VERDICT", "FIRST FAILING CHECK", "WHEN", "VALUE", "BASELINE")
_GROUP = {
    "Failed": "Failed",
    "Failing": "Failed",
    "RolledBack": "Failed",
    "Inconclusive": "Inconclusive",
    "Passed": "Passed",
}


def group(outcome: ReleaseOutcome) -> str:
    return _GROUP.get(outcome.verdict, "Incomplete")


def _time(moment: datetime.datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment is not None else None


def _number(value: float | None) -> str | None:
    return f"{value:.4g}" if value is not None else None


def _after(outcome: ReleaseOutcome, check: CheckOutcome) -> str | None:
    if check.failed_at is None:
        return None
    minutes = int((check.failed_at - outcome.release.at).total_seconds() // 60)
    return f"+{minutes // 60}h{minutes % 60:02d}m"


def release_rows(backtest: Backtest) -> list[list[str | None]]:
    """RELEASE_COLUMNS for each release: when the first failing check failed, after the release."""
    rows = []
    for outcome in backtest.releases:
        first = outcome.first_failure
        verdict = outcome.verdict + ("" if outcome.complete else f" (to {_time(outcome.replayed_until)})")
        rows.append(
            [
                _time(outcome.release.at),
                outcome.release.version,
                verdict,
                first.name if first else None,
                _after(outcome, first) if first else None,
                _number(first.value) if first else None,
                _number(first.baseline) if first else None,
            ]
        )
    return rows


def summary(backtest: Backtest) -> dict[str, Any]:
    releases = {name: 0 for name in GROUPS}
    for outcome in backtest.releases:
        releases[group(outcome)] += 1
    checks: dict[str, dict[str, int]] = {}
    for name in backtest.replayed:
        checks[name] = {}
    for outcome in backtest.releases:
        for check in outcome.checks:
            counts = checks.setdefault(check.name, {})
            counts[check.state] = counts.get(check.state, 0) + 1
    return {"releases": releases, "checks": checks}


def _check(check: CheckOutcome) -> dict[str, Any]:
    return {
        "name": check.name,
        "phase": check.phase,
        "state": check.state,
        "runs": check.runs,
        "failures": check.failures,
        "value": check.value,
        "baseline": check.baseline,
        "failedAt": _time(check.failed_at),
        "message": check.message,
    }


def as_dict(backtest: Backtest) -> dict[str, Any]:
    """The backtest for ``-o json``."""
    target = backtest.target
    return {
        "target": {"kind": target.kind, "name": target.name, "namespace": target.namespace},
        "template": backtest.template,
        "until": _time(backtest.until),
        "summary": summary(backtest),
        "releases": [
            {
                "at": _time(o.release.at),
                "version": o.release.version,
                "source": o.release.source,
                "verdict": o.verdict,
                "complete": o.complete,
                "replayedUntil": _time(o.replayed_until),
                "firstFailure": _check(o.first_failure) if o.first_failure else None,
                "checks": [_check(c) for c in o.checks],
            }
            for o in backtest.releases
        ],
        "replayed": list(backtest.replayed),
        "notReplayed": [
            {"check": n.check, "phase": n.phase, "provider": n.provider, "reason": n.reason}
            for n in backtest.not_replayed
        ],
        "prometheusQueries": dict(backtest.queries),
        "seconds": round(backtest.seconds, 2),
        "cpuSeconds": round(backtest.cpu_seconds, 2),
    }


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], out: TextIO) -> None:
    cells = [[str(h) for h in headers]] + [["-" if v is None or v == "" else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")


def write_table(backtest: Backtest, out: TextIO) -> None:
    """The release table, the summary and what was not replayed, as plain text."""
    target = backtest.target
    out.write(
        f"Backtest of {backtest.template or 'the review'} on {target.kind} {target.namespace}/{target.name}: "
        f"{len(backtest.releases)} release(s), replayed up to {_time(backtest.until)}\n\n"
    )
    _table(RELEASE_COLUMNS, release_rows(backtest), out)
    counts = summary(backtest)
    out.write("\nReleases: " + ", ".join(f"{n} {name}" for name, n in counts["releases"].items()) + "\n\n")
    states = ("Failed", "Error", "Inconclusive", "Passed", "Skipped", "Running")
    _table(
        ("CHECK", *(s.upper() for s in states)),
        [[name, *(c.get(s, 0) for s in states)] for name, c in counts["checks"].items()],
        out,
    )
    if backtest.not_replayed:
        out.write("\nNot replayed:\n")
        _table(
            ("CHECK", "PHASE", "PROVIDER", "WHY"),
            [[n.check, n.phase, n.provider, n.reason] for n in backtest.not_replayed],
            out,
        )
    queries = backtest.queries
    out.write(
        f"\n{queries.get('instant', 0) + queries.get('range', 0)} Prometheus queries "
        f"({queries.get('range', 0)} range, {queries.get('instant', 0)} instant; "
        f"{queries.get('answeredFromBatches', 0)} requests answered from range queries) "
        f"in {backtest.seconds:.1f} s ({backtest.cpu_seconds:.1f} s of CPU)\n"
    )
