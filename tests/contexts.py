"""A ``ReviewContext`` for provider tests, with every field filled in.

Imported by the provider test modules (unit and e2e); tests override what they are
about (``target_name``, ``secrets``, ``now``...).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from postdeploy.models.measurements import ReviewContext, Target

__all__ = ["NOW", "make_context"]

NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)


def make_context(
    *,
    target_name: str = "shop",
    namespace: str = "prod",
    version: str = "1.4.2",
    now: datetime.datetime = NOW,
    deployed_at: datetime.datetime | None = None,
    secrets: Mapping[str, str] | None = None,
    parameters: Mapping[str, str] | None = None,
    **overrides: Any,
) -> ReviewContext:
    deployed = deployed_at or now - datetime.timedelta(minutes=30)
    fields: dict[str, Any] = {
        "review_name": f"{target_name}-review",
        "review_namespace": namespace,
        "review_uid": "0b8a2f4e-0000-4000-8000-000000000001",
        "target": Target("Deployment", target_name, namespace),
        "version": version,
        "deployed_at": deployed,
        "now": now,
        "phase_name": "immediate",
        "phase_start": deployed,
        "phase_end": deployed + datetime.timedelta(hours=2),
        "check_name": "a-check",
        "secrets": dict(secrets or {}),
        "parameters": dict(parameters or {}),
    }
    fields.update(overrides)
    return ReviewContext(**fields)
