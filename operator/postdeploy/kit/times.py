"""Times as the API server and users write them: RFC 3339 / ISO 8601 text.

The one parser for the timestamps in objects (``creationTimestamp``, the review's
status times, ``deployedAt``) and in command-line flags. Python accepts ``Z`` since
3.11; a time without an offset is taken as UTC, so every parsed time is aware and can
be compared with ``datetime.now(UTC)``.
"""

from __future__ import annotations

import datetime

__all__ = ["parse", "parse_or_none"]


def parse(text: str) -> datetime.datetime:
    """An aware time from RFC 3339 text; raise ValueError for anything else."""
    parsed = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def parse_or_none(text: str | None) -> datetime.datetime | None:
    """``parse``, with None for a missing or empty time."""
    return parse(text) if text else None
