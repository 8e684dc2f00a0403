"""Backtest speed: ``python -m bench.backtest`` (``make bench-backtest``).

Starts the test bed's Prometheus with its eight days of backfilled history
(``testbed.observability``, with Prometheus's query log on), then backtests the
built-in template on ``shop/checkout`` over 28 releases placed every 6 hours over the
last 7 days, up to the history's end — the replay ``kubectl postdeploy backtest``
runs. It prints the wall time and this process's CPU time, the replayable checks and
how many slot measurements they made, and the Prometheus queries: as counted by the
backtest and as logged by Prometheus itself, with and without batching (the
unbatched run sends every query as the operator would, slot by slot). Then the same
replay of ``leaky`` and ``creepy``, and per workload which releases failed, first on
which check, when, with value and baseline.

Usage::

    python -m bench.backtest [--releases 28] [--every 6h] [--no-unbatched] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import os
import pathlib
import sys
import tempfile
import time
from collections.abc import Sequence

from postdeploy import defaults
from postdeploy.backtests import releases, replays, summaries
from postdeploy.decisions import templates
from postdeploy.kit import durations
from postdeploy.models.measurements import Target
from testbed import observability

OVERRIDES = {
    # The history holds 8 days: releases of the last 7 compare throughput with the day before.
    "phases": [{"name": "immediate", "checks": [{"name": "throughput", "baseline": {"offset": "1d"}}]}]
}


def _logged(path: pathlib.Path, since: int) -> int:
    """Queries Prometheus logged after byte ``since`` of its query log (rule evaluations excluded)."""
    if not path.exists():
        return 0
    with path.open("rb") as handle:
        handle.seek(since)
        return sum(1 for line in handle if b'"ruleGroup"' not in line)


async def replay_history(
    url: str,
    end: datetime.datetime,
    count: int,
    every: datetime.timedelta,
    *,
    batch: bool = True,
    target: str = "checkout",
    dsn: str | None = None,
    phases: Sequence[str] | None = None,
) -> replays.Backtest:
    """The built-in template (with ``OVERRIDES``) replayed on ``shop/<target>`` over
    ``count`` releases placed ``every`` apart up to ``end``, the history's end (also
    what ``tests/e2e/test_backtest.py`` replays); ``phases``: only the checks of these."""
    review = templates.resolve(
        templates.merge(
            defaults.manifest()["spec"],
            {"target": {"kind": "Deployment", "name": target, "namespace": "shop"}, **OVERRIDES},
        )
    )
    if phases is not None:
        review = dataclasses.replace(
            review,
            phases=tuple(p if p.name in phases else dataclasses.replace(p, checks=()) for p in review.phases),
        )
    placed = releases.every(every, end - every * (count + 1), end)[-count:]
    replayer = replays.Replayer(
        review,
        Target("Deployment", target, "shop"),
        prometheus_url=url,
        postgres_dsn=dsn,
        until=end,
        batch=batch,
        template="postdeploy-default",
    )
    try:
        return await replayer.run(placed)
    finally:
        await replayer.close()


def _report(label: str, backtest: replays.Backtest, logged: int) -> None:
    runs = sum(c.runs for o in backtest.releases for c in o.checks)
    queries = backtest.queries
    counts = summaries.summary(backtest)["releases"]
    print(
        f"{label}: {len(backtest.releases)} releases x {len(backtest.replayed)} replayable checks, "
        f"{runs} slot measurements, {backtest.seconds:.1f} s wall, {backtest.cpu_seconds:.1f} s CPU; "
        f"Prometheus queries: {queries['range']} range + {queries['instant']} instant "
        f"(query log: {logged}), {queries['answeredFromBatches']} requests answered from range queries; "
        f"releases {counts}"
    )


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--releases", type=int, default=28)
    parser.add_argument("--every", default="6h")
    parser.add_argument("--no-unbatched", action="store_true", help="skip the slot-by-slot comparison run")
    parser.add_argument("--workdir", help="where the test bed lives (default: a temporary directory)")
    args = parser.parse_args()
    every = durations.parse_duration(args.every)
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as scratch:
        workdir = pathlib.Path(args.workdir or scratch)
        log = workdir / "queries.log"
        began = time.monotonic()
        state = observability.start(workdir / "observability", query_log=log)
        print(f"test bed up in {time.monotonic() - began:.0f} s (Prometheus with 8 days of history)")
        try:
            url = state["env"]["PROMETHEUS_URL"]
            end = datetime.datetime.fromtimestamp(state["history"]["timeline"]["end"], datetime.UTC)
            print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
            mark = log.stat().st_size if log.exists() else 0
            batched = asyncio.run(replay_history(url, end, args.releases, every, batch=True))
            _report("batched", batched, _logged(log, mark))
            if not args.no_unbatched:
                mark = log.stat().st_size if log.exists() else 0
                unbatched = asyncio.run(replay_history(url, end, args.releases, every, batch=False))
                _report("unbatched", unbatched, _logged(log, mark))
                same = summaries.as_dict(batched)["releases"] == summaries.as_dict(unbatched)["releases"]
                print(f"batched and unbatched outcomes identical: {same}")
            print("verdicts per workload of the history (releases failed per check):")
            for target in ("checkout", "leaky", "creepy"):
                backtest = (
                    batched
                    if target == "checkout"
                    else asyncio.run(
                        replay_history(url, end, args.releases, every, batch=True, target=target)
                    )
                )
                groups = summaries.summary(backtest)["releases"]
                print(f"  {target}: releases {groups}; per check (releases):")
                for name, counts in summaries.summary(backtest)["checks"].items():
                    shown = ", ".join(f"{state} {n}" for state, n in counts.items() if n)
                    print(f"    {name}: {shown}")
                for outcome in backtest.releases:
                    first = outcome.first_failure
                    if first is not None:
                        failed_checks = [c.name for c in outcome.checks if c.state == "Failed"]
                        after = (first.failed_at or outcome.release.at) - outcome.release.at
                        print(
                            f"    {outcome.release.at:%m-%d %H:%M} {outcome.verdict}: first {first.name} "
                            f"at +{after / datetime.timedelta(hours=1):.2f} h "
                            f"value {first.value} baseline {first.baseline}; failed {failed_checks}"
                        )
            print(json.dumps({"loadAverage": os.getloadavg()}))
        finally:
            observability.stop(state)


if __name__ == "__main__":
    main()
