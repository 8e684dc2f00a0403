"""The cleanup check: phase 5's housekeeping, an action run in a check's slot.

Called by ``postdeploy.engine.registry`` for checks with a ``cleanup`` block: it acts
(deletes), so it is an action, not a measurement provider, but its outcome is recorded
and decided like a measurement. The deleting is done by ``postdeploy.actions.cleanups``.
The value is the number of objects deleted (or, on a dry run, that would be); the
details list each one with why it was chosen and what happened, and carry ``failed``
and ``credentials`` counts for conditions (the default condition fails the check when
a deletion failed). The first real run is kept in the check's memo and reported again
by later runs, so a cleanup happens once per review even though its phase may run the
check several times.
"""

from __future__ import annotations

from typing import Any

from postdeploy.actions import cleanups
from postdeploy.kit import details as details_
from postdeploy.kit import kube
from postdeploy.models.measurements import Measurement, ReviewContext
from postdeploy.models.people import CleanupCheck

__all__ = ["CleanupAct"]


class CleanupAct:
    """Deletes what the review left behind, once per review (dry runs every time)."""

    def __init__(self, api: kube.Client) -> None:
        self.api = api

    @staticmethod
    def _measurement(result: dict[str, Any], memo: dict[str, Any] | None) -> Measurement:
        verb = "would delete" if result["dryRun"] else "deleted"
        message = f"{verb} {result['count']} object(s)"
        if result["credentials"]:
            message += f", {result['credentials']} credential(s) among them"
        if result["failed"]:
            message += f"; {result['failed']} deletion(s) failed"
        if result["problems"]:
            message += f"; {'; '.join(result['problems'])}"
        return Measurement.ok(
            float(result["count"]),
            message=message[:500],
            query=result["query"],
            details=details_.fit(result, "objects"),
            memo=memo,
        )

    async def act(self, spec: CleanupCheck, ctx: ReviewContext) -> Measurement:
        if ctx.memo.get("result") and not spec.dry_run:
            return self._measurement(dict(ctx.memo["result"]), None)
        # Labelled and named objects only in the review's own namespace (a review acts
        # there, docs/security.md); old ReplicaSets are the target's.
        namespaces = [ctx.review_namespace]
        target = (ctx.target.kind, ctx.target.namespace, ctx.target.name)
        candidates, problems = await cleanups.plan(
            self.api, spec, namespaces, ctx.review_name, ctx.version, target
        )
        if problems and not candidates:
            return Measurement.error("; ".join(problems)[:500], query=f"label {spec.label}")
        await cleanups.apply(self.api, candidates, spec.dry_run)
        rows = [c.row() for c in candidates]
        done = [r for r in rows if r["result"] in ("deleted", "would delete")]
        result = {
            "query": f"{spec.label} in ({ctx.review_name}, {ctx.version})",
            "dryRun": spec.dry_run,
            "count": len(done),
            "credentials": sum(1 for r in done if r["credential"]),
            "failed": sum(1 for r in rows if r["result"].startswith("failed")),
            "problems": problems,
            "objects": rows,
        }
        memo = None if spec.dry_run else {"result": details_.fit(result, "objects", budget=2500)}
        return self._measurement(result, memo)
