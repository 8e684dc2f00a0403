"""Test helpers for the PromQL the providers send."""

from __future__ import annotations

import re

from postdeploy.providers import prometheus_compare

PART = prometheus_compare.PART
_TOGETHER = re.compile(
    rf'label_replace\(\((.*)\), "{PART}", "events", "", ""\) '
    rf'or label_replace\(\((.*)\), "{PART}", "total", "", ""\)'
)


def parts(query: str) -> tuple[str, str] | None:
    """The events and requests queries of a ``prometheus_compare.together`` query;
    None for any other query."""
    match = _TOGETHER.fullmatch(query)
    return (match[1], match[2]) if match else None
