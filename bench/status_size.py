"""How large a review's status grows over its 72 hours, and how often it is written.

``python -m bench.status_size`` runs the real engine (``postdeploy.engine.ticks``) on
one review of the built-in template from its deployment to its completion, tick by
tick at the times the engine asks to be woken, with the clock set by hand and fakes
for what the engine reads (no cluster, no data source): every check of all three
phases answers as the real provider would for a healthy release - the resolved query
(a PostgreSQL check's SQL), the details (a comparison's statistics and totals query,
per-pod series, a trend's fit, rows, a pg_stat_statements snapshot of ``--statements``
entries in the memo) - PromQL checks with a value that differs in every run (as real
rates do), the others with a steady value; ticks begin 20-300 ms after their wake-up,
and the final review is written as for a healthy release with its sign-offs. It
prints the status's size (compact JSON) at the end of each phase and at completion,
the largest while each phase ran, the ticks, and how many of them the scheduler would
write at once (``urgent``) or keep for the next write that matters or the refresh
(docs/engine.md, "When the status is written"), and which fields the bytes at
completion are in.

Seconds of CPU; no test bed. ``--history-limit`` overrides POSTDEPLOY_HISTORY_LIMIT.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import json
import random
import sys
from collections.abc import Mapping
from typing import Any, cast

from postdeploy import defaults
from postdeploy.decisions import slos as slo_decisions
from postdeploy.decisions import templating
from postdeploy.engine import finals, ticks
from postdeploy.engine.registry import Providers
from postdeploy.engine.settings import Settings
from postdeploy.models.checks import Check
from postdeploy.models.measurements import Measurement, ReviewContext
from postdeploy.models.people import FinalReview, SignoffPolicy, SignoffRecord, SloTargets
from postdeploy.models.reviews import ReviewStatus
from postdeploy.providers import statements
from postdeploy.reports import store

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
REFRESH = datetime.timedelta(seconds=300)


class _Inputs:
    def __init__(self) -> None:
        self.default = defaults.manifest()["spec"]

    async def template(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return dict(self.default) if name == "postdeploy-default" else None

    async def secret(self, namespace: str, name: str, key: str) -> str:
        return "postgresql://bench@127.0.0.1/bench"

    async def workload(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    async def rollout_time(self, workload: dict[str, Any]) -> datetime.datetime | None:
        return None

    async def target_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return {"metadata": {"name": name, "namespace": namespace}}


class _Providers:
    """Answers shaped like the real providers' (docs/benchmarks.md, "Status size"):
    resolved queries, the details each provider reports (a comparison's statistics and
    its totals query, per-pod series, a trend's fit, rows), values that move a little
    every run for PromQL (as real rates do) and steady ones for the rest; a healthy
    release, so every check passes (an HPA-less target skips ``hpa``)."""

    def __init__(self, seed: int, snapshot_statements: int) -> None:
        self.random = random.Random(seed)
        self.statements = snapshot_statements
        self.http = None

    def _pods(self, ctx: ReviewContext, value: float) -> list[dict[str, Any]]:
        namespace, name = ctx.target.namespace, ctx.target.name
        return [
            {
                "labels": {"namespace": namespace, "pod": f"{name}-7d9f8b6c5d-{suffix}", "container": name},
                "value": value * (1 - 0.1 * i * self.random.random()),
            }
            for i, suffix in enumerate(("x2k4p", "m8q7z", "b5n3w"))
        ]

    def _prometheus(self, check: Check, ctx: ReviewContext) -> Measurement:
        spec = check.prometheus
        assert spec is not None
        values = {"window": "1m", **ctx.template_values()}
        render = functools.partial(templating.render_promql, values=values)
        query = render(spec.query)
        jitter = self.random.random()
        evaluated = {"evaluatedAt": ctx.now.isoformat()}
        if spec.compare is not None:
            total_after = 12000.0 + 5000 * jitter
            total_before = 6 * total_after
            events_after, events_before = round(total_after * 0.004), round(total_before * 0.004)
            details: dict[str, Any] = {
                "ratio": 0.9 + 0.2 * jitter,
                "ratioLower": 0.55 + 0.1 * jitter,
                "ratioUpper": 1.4 + 0.2 * jitter,
                "pValue": 0.6 + 0.3 * jitter,
                "alpha": spec.compare.alpha,
                "minEffect": spec.compare.min_effect,
                "eventsAfter": float(events_after),
                "totalAfter": total_after,
                "eventsBefore": float(events_before),
                "totalBefore": total_before,
                "shareAfter": events_after / total_after,
                "shareBefore": events_before / total_before,
                "batches": 120,
                "minRequests": spec.compare.min_requests,
                "unpairedAfter": 0.0,
            }
            if spec.compare.buckets:
                details.update(
                    boundary=0.25, quantile=0.95, quantileBefore=0.21, quantileAfter=0.2 + 0.02 * jitter
                )
            details.update(step=spec.step, beforeWindow="2h", multiplier=spec.compare.multiplier, offset=None)
            if spec.compare.total:
                details["totalQuery"] = render(spec.compare.total)
            message = (
                f"events: {events_after}/{total_after:.0f} ({events_after / total_after:.3%}) after vs "
                f"{events_before}/{total_before:.0f} ({events_before / total_before:.3%}) before; ratio in "
                f"[{details['ratioLower']:.3g}, {details['ratioUpper']:.3g}] at alpha 0.005, "
                f"p={details['pValue']:.3g} for a rise above x1.2"
            )
            return Measurement.ok(details["ratio"], query=query, details=details, message=message)
        if spec.trend is not None:
            value = 500 + 100 * jitter if spec.trend == "timeToLimit" else 0.01 * jitter
            fit = {
                "relativeChange": value,
                "absoluteChange": 0.0001 * jitter,
                "startValue": 0.2,
                "endValue": 0.2 + 0.002 * jitter,
                "pValue": 0.3 + 0.5 * jitter,
                "tau": 0.05 * jitter,
            }
            if spec.trend == "timeToLimit":
                fit = {
                    "hoursToLimit": value,
                    "growing": True,
                    "limit": 483183820.8,
                    "slopePerHour": 1.2e5 * jitter,
                    "pValue": 0.2 + 0.5 * jitter,
                }
                evaluated["limitQuery"] = render(spec.limit_query or "")
            pods = self._pods(ctx, value)
            details = {
                **evaluated,
                "range": spec.range,
                "rangeSeconds": 7200.0,
                "step": spec.step,
                **fit,
                "analysis": spec.trend,
                "windowHours": 2.0,
                "labels": pods[0]["labels"],
                "seriesCount": len(pods),
                "series": pods,
            }
            return Measurement.ok(value, query=query, details=details)
        if "unless on (type)" in query:  # new error types: none
            return Measurement.ok(0.0, query=query, details={**evaluated, "seriesCount": 0, "series": []})
        per_pod = "podSelector" in spec.query
        value = 0.1 + 0.05 * jitter
        series = self._pods(ctx, value) if per_pod else [{"labels": {}, "value": value}]
        details = {**evaluated, "seriesCount": len(series), "series": series}
        baseline = value * (1 + 0.05 * (self.random.random() - 0.5)) if check.baseline else None
        return Measurement.ok(value, baseline=baseline, query=query, details=details)

    async def measure(self, check: Check, ctx: ReviewContext) -> Measurement:
        if check.prometheus is not None:
            return self._prometheus(check, ctx)
        if check.kubernetes is not None:
            measure = check.kubernetes.measure
            if measure == "hpaHealthy":
                return Measurement.not_applicable(f"no HorizontalPodAutoscaler targets {ctx.target.name}")
            if measure in ("readyRatio", "availableRatio"):
                return Measurement.ok(
                    1.0, query=measure, details={"ready": 3, "desired": 3}, message="3/3 ready"
                )
            if measure == "rolloutComplete":
                return Measurement.ok(1.0, query=measure, message="rollout complete")
            return Measurement.ok(0.0, query=measure, message=f"no {measure} since the deployment")
        if check.manual is not None:
            return Measurement.ok(1.0, query="confirmed", message="confirmed by jane@example.com")
        if check.postgres is not None and check.postgres.slow_statements is not None:
            slow = check.postgres.slow_statements
            if ctx.memo or slow.snapshot_from:
                return Measurement.ok(
                    0.0,
                    query=statements.describe(slow, snapshot=False),
                    details={"flagged": 0, "statements": []},
                    message="no slow statement",
                )
            ids = [str(self.random.getrandbits(63)) for _ in range(self.statements)]
            snapshot = statements.Snapshot(
                ctx.now.isoformat(),
                True,
                ids,
                [self.random.randrange(1, 10**6) for _ in ids],
                [round(self.random.random() * 1e5, 3) for _ in ids],
            )
            return Measurement.ok(
                0.0,
                query=statements.describe(slow, snapshot=True),
                details={"snapshotAt": snapshot.at, "snapshotStatements": len(ids), "snapshotComplete": True},
                memo=snapshot.to_memo(),
            )
        if check.postgres is not None and check.postgres.query is not None:
            columns = ["dau_ratio", "requests_ratio", "daily_active_users", "previous_daily_active_users"]
            # engagement's ratios; the feature-adoption count of features below their minimum
            value = 1.01 if "requests_ratio" in check.postgres.query else 0.0
            row = [value, 0.99, 10234, 10133]
            details = {
                "columns": columns,
                "rowCount": 1,
                "truncated": False,
                "parameters": {},
                "rows": [row],
                "column": columns[0],
                **dict(zip(columns, row, strict=True)),
            }
            return Measurement.ok(value, query=check.postgres.query, details=details)
        return Measurement.ok(0.0, query=f"{check.provider_name} of {ctx.target.name}")


class _Finals:
    """The final review as the operator writes it for a healthy release: the SLOs as
    ``decisions.slos`` judges a rollout done in 4 minutes, no downtime and the error
    ratio at its baseline; the three default roles signed off; the action items; the
    report's ConfigMap; the final conditions and message."""

    settle = staticmethod(finals.FinalReviews.settle)

    async def conclude(
        self,
        body: Mapping[str, Any],
        review: Any,
        status: ReviewStatus,
        target: Any,
        now: datetime.datetime,
    ) -> finals.Outcome:
        deployed = datetime.datetime.fromisoformat(str(status.deployed_at))
        rate = next((c for c in status.checks if c.name == "error-rate"), None)
        slos = slo_decisions.evaluate(
            SloTargets(),
            slo_decisions.Inputs(
                deployed_at=deployed,
                now=now,
                rollout_completed_at=deployed + datetime.timedelta(minutes=4, seconds=12),
                availability=[(deployed, 1.0), (now, 1.0)],
                error_ratio=[(deployed + datetime.timedelta(minutes=m), 0.004) for m in range(0, 4320, 30)],
                error_baseline=0.004 if rate else None,
            ),
        )
        signed = [
            SignoffRecord(
                role=role, signed=True, by=f"{role}@example.com", at=now.isoformat(), notes="looks good"
            )
            for role in SignoffPolicy().roles
        ]
        final = FinalReview(
            verdict="Passed",
            slos=slos,
            signoffs=signed,
            action_items=slo_decisions.action_items(status.checks, slos, []),
            report=store.configmap_name(str(body["metadata"]["name"])),
            computed_at=now.isoformat(),
            completed_at=now.isoformat(),
        )
        status.final_review = final
        signers = ", ".join(f"{r.role}: {r.by}" for r in signed)
        message = f"final verdict Passed; all SLOs met; sign-offs: {signers}"
        return finals.Outcome(False, final, message, ())


async def simulate(
    history_limit: int, seed: int = 1, snapshot_statements: int = 50, dump: str | None = None
) -> dict[str, Any]:
    now = T0
    inputs = _Inputs()
    engine = ticks.Engine(
        cast(Any, None),
        cast(Providers, _Providers(seed, snapshot_statements)),
        Settings(history_limit=history_limit),
        clock=lambda: now,
        inputs=inputs,
        final_reviews=cast(Any, _Finals()),
    )
    spec = {
        "target": {"name": "checkout"},
        "version": "2.0.0",
        "deployedAt": T0.isoformat(),
        "providers": {"postgresDsnSecretRef": {"name": "db", "key": "dsn"}},
    }
    metadata = {"name": "checkout-2", "namespace": "shop", "uid": "u", "generation": 1}
    status: dict[str, Any] = {}
    written_at = T0
    unwritten = False
    counts = {"ticks": 0, "changed": 0, "urgent": 0, "writes": 0}
    sizes: dict[str, int] = {}
    largest: dict[str, int] = {}  # the largest status while each phase ran
    lateness = random.Random(seed + 1)
    phase = None
    while True:
        result = await engine.tick({"metadata": metadata, "spec": spec, "status": status})
        counts["ticks"] += 1
        if result.status is not None:
            counts["changed"] += 1
            status = result.status
            urgent = getattr(result, "urgent", True)  # an engine before the rule writes every change
            if urgent or now - written_at >= REFRESH:
                counts["urgent"] += int(urgent)
                counts["writes"] += 1
                written_at, unwritten = now, False
            else:
                unwritten = True
        elif unwritten and now - written_at >= REFRESH:
            counts["writes"] += 1
            written_at, unwritten = now, False
        size = len(json.dumps(status, separators=(",", ":")))
        if status.get("phase") != phase and phase is not None:
            sizes[f"end of {phase}"] = size
        phase = status.get("phase")
        largest[str(phase)] = max(largest.get(str(phase), 0), size)
        if result.done or result.wake_at is None:
            break
        wake = result.wake_at
        if unwritten:
            wake = min(wake, written_at + REFRESH)
        # A tick begins a little after its wake-up, as on a live operator (sub-second times).
        late = datetime.timedelta(microseconds=lateness.randrange(20_000, 300_000))
        now = max(wake, now + datetime.timedelta(milliseconds=1)) + late
    sizes["completed"] = len(json.dumps(status, separators=(",", ":")))
    by_field: dict[str, int] = {}
    for key, value in status.items():
        if key != "checks":
            by_field[key] = len(json.dumps(value, separators=(",", ":")))
    for check in status.get("checks", []):
        for key, value in check.items():
            by_field[f"checks[].{key}"] = by_field.get(f"checks[].{key}", 0) + len(
                json.dumps({key: value}, separators=(",", ":"))
            )
    if dump is not None:
        with open(dump, "w") as out:
            json.dump(status, out, indent=1)
    return {
        "history_limit": history_limit,
        "checks": len(status.get("checks", [])),
        "hours": round((now - T0).total_seconds() / 3600, 2),
        "sizes": sizes,
        "largest_while": largest,
        **counts,
        # Bytes at completion by field (per-check fields summed over the checks), largest first.
        "bytes_by_field": dict(sorted(by_field.items(), key=lambda item: -item[1])[:20]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.status_size", description=__doc__)
    parser.add_argument("--history-limit", type=int, default=Settings().history_limit)
    parser.add_argument(
        "--statements", type=int, default=50, help="pg_stat_statements entries in the slow-queries snapshot"
    )
    parser.add_argument("--dump", metavar="FILE", help="write the completed review's status to FILE (JSON)")
    args = parser.parse_args(argv)
    result = asyncio.run(simulate(args.history_limit, snapshot_statements=args.statements, dump=args.dump))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
