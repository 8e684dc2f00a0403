"""The annotations people write on a review, and how they are read back.

Written by ``kubectl postdeploy`` (``postdeploy.plugin``), read by the report
(``postdeploy.reports.documents``) and the final review (``postdeploy.engine.finals``):

- ``note.postdeploy.io/<kind>-<id>``: one note, JSON ``{kind, text, by, at}`` plus
  ``category``/``action`` for lessons, ``priority``/``effort`` for improvements and
  tech debt, ``type``/``cause``/``fix``/``priority`` for an error remediation;
- ``postdeploy.io/impact``: customer impact, JSON ``{tickets, complaints, positive, by, at}``;
- ``rerun.postdeploy.io/<check>``: a token; a new token asks the engine to run the
  check again in its current phase (``postdeploy.engine.reruns``).

``by`` in these is what the plugin learnt from the API server (a SelfSubjectReview)
when it wrote them: informative, not proof. Sign-offs, which are proof, are
``ReviewSignoff`` objects stamped by the admission webhook.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "IMPACT_ANNOTATION",
    "NOTE_KINDS",
    "NOTE_PREFIX",
    "RERUN_PREFIX",
    "impact",
    "notes",
    "reruns",
]

NOTE_PREFIX = "note.postdeploy.io/"
IMPACT_ANNOTATION = "postdeploy.io/impact"
RERUN_PREFIX = "rerun.postdeploy.io/"
NOTE_KINDS = ("lesson", "runbook", "tech-debt", "improvement", "remediation", "note")


def _json(text: str) -> dict[str, Any]:
    try:
        parsed = json.loads(text)
    except ValueError:
        return {"text": text}
    return parsed if isinstance(parsed, dict) else {"text": str(parsed)}


def notes(annotations: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every note, oldest first; a note's kind comes from its JSON, else its key."""
    found = []
    for key, value in annotations.items():
        if not key.startswith(NOTE_PREFIX):
            continue
        note = _json(value)
        suffix = key[len(NOTE_PREFIX) :]
        kind = str(note.get("kind") or next((k for k in NOTE_KINDS if suffix.startswith(k)), "note"))
        note["kind"] = kind if kind in NOTE_KINDS else "note"
        note["key"] = suffix
        note["text"] = str(note.get("text", ""))[:2000]
        found.append(note)
    return sorted(found, key=lambda n: (str(n.get("at", "")), n["key"]))


def _count(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


def impact(annotations: Mapping[str, str]) -> dict[str, Any] | None:
    raw = annotations.get(IMPACT_ANNOTATION)
    if raw is None:
        return None
    data = _json(raw)
    return {
        "tickets": _count(data.get("tickets")),
        "complaints": _count(data.get("complaints")),
        "positive": _count(data.get("positive")),
        "by": str(data["by"]) if data.get("by") else None,
        "at": str(data["at"]) if data.get("at") else None,
    }


def reruns(annotations: Mapping[str, str]) -> dict[str, str]:
    """Check name -> the latest rerun token asked for it."""
    return {k[len(RERUN_PREFIX) :]: v for k, v in annotations.items() if k.startswith(RERUN_PREFIX)}
