"""How large a review's status grows over its 72 hours, and how often it is written.

``python -m bench.status_size`` runs the real engine (``postdeploy.engine.ticks``) on
one review of the built-in template from its deployment to its completion, tick by
tick at the times the engine asks to be woken, with the clock set by hand and fakes
for what the engine reads (no cluster, no data source): every check of all three
phases answers, PromQL checks with a value that differs in every run (as real rates
do), the others with a steady value. It prints the status's size (compact JSON) at
the end of each phase and at completion, the ticks, and how many of them the
scheduler would write at once (``urgent``) or keep for the next write that matters
or the refresh (docs/engine.md, "When the status is written"), and which fields the
bytes at completion are in.

Seconds of CPU; no test bed. ``--history-limit`` overrides POSTDEPLOY_HISTORY_LIMIT.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import random
import sys
from typing import Any, cast

from postdeploy import defaults
from postdeploy.engine import ticks
from postdeploy.engine.registry import Providers
from postdeploy.engine.settings import Settings
from postdeploy.models.checks import Check
from postdeploy.models.measurements import Measurement, ReviewContext

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
    """Plausible answers: PromQL values that move a little every run, the rest steady."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.http = None

    async def measure(self, check: Check, ctx: ReviewContext) -> Measurement:
        selector = f'namespace="{ctx.target.namespace}", job="{ctx.target.name}"'
        if check.prometheus is not None:
            query = check.prometheus.query.replace("{{ selector }}", selector)
            query = query.replace("{{selector}}", selector)
            value = 0.01 + self.random.random() * 0.001
            return Measurement.ok(value, baseline=0.0101, query=query[:500], details={"series": 1})
        if check.kubernetes is not None:
            measure = check.kubernetes.measure
            return Measurement.ok(1.0 if "Ratio" in measure or "Complete" in measure else 0.0, query=measure)
        if check.manual is not None:
            return Measurement.ok(1.0, query="confirmed")
        return Measurement.ok(0.0, query=f"{check.provider_name} of {ctx.target.name}")


class _Finals:
    async def conclude(self, *args: Any) -> None:
        return None


async def simulate(history_limit: int, seed: int = 1) -> dict[str, Any]:
    now = T0
    inputs = _Inputs()
    engine = ticks.Engine(
        cast(Any, None),
        cast(Providers, _Providers(seed)),
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
        if status.get("phase") != phase and phase is not None:
            sizes[f"end of {phase}"] = len(json.dumps(status, separators=(",", ":")))
        phase = status.get("phase")
        if result.done or result.wake_at is None:
            break
        wake = result.wake_at
        if unwritten:
            wake = min(wake, written_at + REFRESH)
        now = max(wake, now + datetime.timedelta(milliseconds=1))
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
    return {
        "history_limit": history_limit,
        "checks": len(status.get("checks", [])),
        "hours": round((now - T0).total_seconds() / 3600, 2),
        "sizes": sizes,
        **counts,
        # Bytes at completion by field (per-check fields summed over the checks), largest first.
        "bytes_by_field": dict(sorted(by_field.items(), key=lambda item: -item[1])[:12]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.status_size", description=__doc__)
    parser.add_argument("--history-limit", type=int, default=Settings().history_limit)
    args = parser.parse_args(argv)
    result = asyncio.run(simulate(args.history_limit))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
