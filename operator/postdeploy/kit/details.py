"""Keeping what a provider reports JSON-safe, small, and free of credentials.

Called by the providers before they return a ``Measurement``. The engine stores a
check's details in ``status.checks[].details`` and drops them whole when their JSON
passes a few kilobytes (``postdeploy.decisions.checks``), so a provider trims its own
lists first (``fit``) and keeps the numbers conditions refer to. Messages name the
data source by a URL without its user and password (``redact_url``) and have any
known secret value cut out (``scrub``).
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import json
import math
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["BUDGET", "fit", "json_value", "redact_url", "scrub"]

# Characters of JSON a provider aims for; below the engine's limit to leave room.
BUDGET = 3500


def json_value(value: Any) -> Any:
    """``value`` as something ``json.dumps`` accepts without surprises.

    Dates and times become ISO 8601 strings, Decimals floats, intervals seconds,
    NaN and infinities None, bytes a short note; unknown types their ``str``.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return json_value(float(value))
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_value(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_value(dataclasses.asdict(value))
    return str(value)


def fit(details: Mapping[str, Any], key: str, budget: int = BUDGET) -> dict[str, Any]:
    """``details`` with the list at ``key`` shortened until the whole fits ``budget``.

    Everything else is kept. When items were dropped, ``<key>Shown`` says how many
    are left, so a reader knows the list is not complete.
    """
    result = dict(details)
    items = list(result.get(key) or [])
    total = len(items)
    while items and len(json.dumps(result, default=str)) > budget:
        items = items[: len(items) // 2] if len(items) > 8 else items[:-1]
        result[key] = items
        result[f"{key}Shown"] = len(items)
    if len(items) == total:
        result.pop(f"{key}Shown", None)
    return result


def redact_url(url: str) -> str:
    """``url`` without user and password (a URL may carry basic-auth credentials)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every non-empty secret value replaced by ``***``."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
