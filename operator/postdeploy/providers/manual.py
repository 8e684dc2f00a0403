"""The manual provider: a person confirms (or rejects) a checklist item.

Called by ``postdeploy.engine`` for checks with a ``manual`` block. The check is
pending until the review carries the annotation ``confirm.postdeploy.io/<check>``,
written by ``kubectl postdeploy confirm``: a JSON object with ``result``
(``confirmed`` or ``rejected``), ``note`` and ``by``; plain text is read as a note
that confirms, unless it starts with ``reject``. Confirmed is 1, rejected 0.
"""

from __future__ import annotations

import json
from typing import Any

from postdeploy.kit import durations
from postdeploy.models.checks import Baseline, ManualCheck
from postdeploy.models.measurements import Measurement, ReviewContext

__all__ = ["ANNOTATION_PREFIX", "ManualProvider", "parse_confirmation"]

ANNOTATION_PREFIX = "confirm.postdeploy.io/"


def parse_confirmation(text: str) -> dict[str, Any]:
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        result = str(parsed.get("result", "confirmed")).lower()
        return {
            "result": "rejected" if result.startswith("reject") else "confirmed",
            "note": str(parsed.get("note", ""))[:500],
            "by": str(parsed.get("by", ""))[:200],
            "at": str(parsed.get("at", ""))[:40],
        }
    lowered = text.strip().lower()
    return {
        "result": "rejected" if lowered.startswith("reject") else "confirmed",
        "note": text.strip()[:500],
        "by": "",
        "at": "",
    }


class ManualProvider:
    limits_itself = False

    async def measure(
        self, spec: ManualCheck, ctx: ReviewContext, baseline: Baseline | None = None
    ) -> Measurement:
        """Read the confirmation annotation. ``baseline`` is ignored: a person decides."""
        query = f"annotation {ANNOTATION_PREFIX}{ctx.check_name}"
        raw = ctx.annotations.get(ANNOTATION_PREFIX + ctx.check_name)
        if raw is None:
            message = f"awaiting confirmation: {spec.description or ctx.check_name}"
            if spec.remind_after:
                overdue = ctx.now - ctx.phase_start - durations.parse_duration(spec.remind_after)
                if overdue.total_seconds() > 0:
                    message += f" (overdue by {durations.format_duration(overdue)})"
            return Measurement.pending(message, query=query)
        confirmation = parse_confirmation(raw)
        value = 1.0 if confirmation["result"] == "confirmed" else 0.0
        who = f" by {confirmation['by']}" if confirmation["by"] else ""
        note = f": {confirmation['note']}" if confirmation["note"] else ""
        return Measurement.ok(
            value, message=f"{confirmation['result']}{who}{note}", query=query, details=confirmation
        )
