"""Keeping what a provider reports JSON-safe, small, and free of credentials.

Called by the providers before they return a ``Measurement``. The engine stores a
check's details in ``status.checks[].details`` and drops them whole when their JSON
passes a few kilobytes (``postdeploy.decisions.checks``), so a provider trims its own
lists first (``fit``) and keeps the numbers conditions refer to. Of a check settled
after its phase (passed or skipped) the engine keeps only what the report reads
(``for_report``). Messages name the data source by a URL without its user and
password (``redact_url``) and have any known secret value cut out (``scrub``).
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

__all__ = [
    "BUDGET",
    "ERROR_TYPE_LABELS",
    "ERROR_TYPE_LISTS",
    "error_type",
    "fit",
    "for_report",
    "json_value",
    "listed",
    "redact_url",
    "scrub",
]

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


# Where the report (``postdeploy.reports.documents``) finds error types in a check's
# details: items of these lists whose labels carry one of these labels.
ERROR_TYPE_LISTS = ("errors", "series", "rows")
ERROR_TYPE_LABELS = ("type", "error_type", "errorType", "error", "exception", "reason", "kind")


def error_type(item: Any) -> str | None:
    """The error type an item of an ``ERROR_TYPE_LISTS`` list names, if any."""
    if not isinstance(item, Mapping):
        return None
    labels = item["labels"] if isinstance(item.get("labels"), Mapping) else item
    return next((str(labels[k]) for k in ERROR_TYPE_LABELS if labels.get(k)), None)


def for_report(details: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What the report reads of a measurement's details: the items that name an error
    type (its remediation table); None when there are none.

    The engine keeps only this of a check that passed or was skipped once its phase has
    completed (``postdeploy.decisions.checks.settle``)."""
    kept: dict[str, Any] = {}
    for key in ERROR_TYPE_LISTS:
        items = [item for item in listed(details, key) if error_type(item) is not None]
        if items:
            kept[key] = items
    return kept or None


def listed(details: Mapping[str, Any] | None, key: str) -> list[Any]:
    """The list at ``key`` of ``details``; empty when there is none (or a number, such
    as the ``series: 1`` of a provider that counts rather than lists)."""
    value = (details or {}).get(key)
    return value if isinstance(value, list) else []


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
