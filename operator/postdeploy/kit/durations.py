"""Durations as users write them: ``90s``, ``5m``, ``2h``, ``3d``, ``1w``, ``1h30m``.

Used by the models (validation, and the CRD's ``pattern``), the phase scheduler and
providers (PromQL ranges and offsets). Plain strings in the spec, so tests and
demos compress a 72-hour review into minutes without any special mode.

A duration is at most ``MAX`` (3650d, ten years): with ``deployedAt`` bounded too
(``models.reviews``), every date the engine computes from them stays far inside what
``datetime`` can hold, so no input makes a tick overflow.
"""

from __future__ import annotations

import datetime
import functools
import re

__all__ = ["MAX", "PATTERN", "format_duration", "parse_duration", "promql_duration"]

MAX = datetime.timedelta(days=3650)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# One or more <number><unit> groups, largest unit first is not enforced.
PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d|w))+$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(PATTERN)


def parse_duration(text: str) -> datetime.timedelta:
    """Parse ``1h30m`` into a timedelta; raise ValueError naming the bad text."""
    if not isinstance(text, str):
        raise ValueError(
            f"invalid duration {text!r}: use a number and a unit (ms, s, m, h, d, w), e.g. 30s, 5m, 2h, 3d"
        )
    # Only short texts are cached, so that a hostile spec cannot fill memory.
    return _parse(text) if len(text) <= 32 else _parse.__wrapped__(text)


# Cached: providers parse their check's step and offsets at every run (76,000 times
# in a 28-release backtest); a timedelta is immutable. Errors are not cached.
@functools.lru_cache(maxsize=1024)
def _parse(text: str) -> datetime.timedelta:
    if not _WHOLE.match(text):
        raise ValueError(
            f"invalid duration {text!r}: use a number and a unit (ms, s, m, h, d, w), e.g. 30s, 5m, 2h, 3d"
        )
    seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
    if not seconds <= MAX.total_seconds():  # also inf, from a number too long for a float
        raise ValueError(f"invalid duration {text[:40]!r}: at most {MAX.days}d")
    return datetime.timedelta(seconds=seconds)


def format_duration(delta: datetime.timedelta) -> str:
    """The shortest ``2h5m``-style text for a timedelta (whole seconds)."""
    total = round(delta.total_seconds())
    if total == 0:
        return "0s"
    sign = "-" if total < 0 else ""
    total = abs(total)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)


def promql_duration(delta: datetime.timedelta) -> str:
    """A duration PromQL accepts in ``[...]`` and ``offset`` (whole seconds, >= 1s)."""
    return f"{max(1, round(delta.total_seconds()))}s"
