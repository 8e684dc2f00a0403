"""How ``postdeploy run`` writes its log: plain text or one JSON object per line, and
never a secret in either.

``configure`` (called by ``postdeploy.__main__``) installs one handler on the root
logger. Both formats pass every message and traceback through ``redact``, which
masks the password of any URL or DSN (``scheme://user:PASSWORD@host``,
``password=...``), bearer tokens, and every value given to ``add_secret`` (the
operator-wide PostgreSQL DSN from the environment, for one). A JSON line carries
``time``, ``level``, ``logger``, ``message``, and ``review`` (``namespace/name``) and
``check`` when the record knows them: kopf's per-object loggers do, and any call can
pass ``extra={"review": ..., "check": ...}``.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import threading
from typing import Any

__all__ = ["JsonFormatter", "TextFormatter", "add_secret", "configure", "redact"]

MASK = "***"
_PATTERNS = (
    # scheme://user:password@host  ->  scheme://user:***@host
    (re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@"), rf"\g<head>{MASK}@"),
    # libpq key=value DSNs and query strings: password=..., token=..., secret=...
    (
        re.compile(r"(?i)\b(?P<key>password|passwd|pwd|token|secret|api[_-]?key)=[^\s&;,'\"]+"),
        rf"\g<key>={MASK}",
    ),
    # Authorization headers
    (re.compile(r"(?i)\b(?P<scheme>bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\g<scheme> {MASK}"),
)
_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def add_secret(value: str | None) -> None:
    """Mask VALUE wherever it appears in the log from now on (values under 6 characters
    are ignored: masking them would mangle ordinary words)."""
    if value and len(value) >= 6:
        with _secrets_lock:
            _secrets.add(value)


def redact(text: str) -> str:
    with _secrets_lock:
        known = sorted(_secrets, key=len, reverse=True)
    for value in known:
        text = text.replace(value, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _review_of(record: logging.LogRecord) -> str | None:
    review = getattr(record, "review", None)
    if review:
        return str(review)
    ref: Any = getattr(record, "k8s_ref", None)  # set by kopf's per-object loggers
    if isinstance(ref, dict) and ref.get("kind") == "PostDeploymentReview" and ref.get("name"):
        return f"{ref.get('namespace') or ''}/{ref['name']}"
    return None


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        entry: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        review = _review_of(record)
        if review:
            entry["review"] = review
        check = getattr(record, "check", None)
        if check:
            entry["check"] = str(check)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def configure(fmt: str, level: int) -> None:
    """One handler on the root logger, writing FMT ("text" or "json") to stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
