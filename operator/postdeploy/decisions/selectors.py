"""Label selectors for sharding reviews across operator deployments.

Called by the review watch handler (``postdeploy.handlers.reviews``) with the
operator's ``--selector``. The syntax is the equality-based part of Kubernetes label
selectors: ``key=value`` (or ``==``), ``key!=value``, ``key`` (exists), ``!key``
(absent), comma-separated, all of which must hold. Set-based forms (``in``,
``notin``) are refused with a clear error rather than misread.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

__all__ = ["Selector", "parse"]

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"


@dataclasses.dataclass(frozen=True)
class Selector:
    equal: tuple[tuple[str, str], ...] = ()
    unequal: tuple[tuple[str, str], ...] = ()
    present: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return (
            all(labels.get(k) == v for k, v in self.equal)
            and all(labels.get(k) != v for k, v in self.unequal)
            and all(k in labels for k in self.present)
            and all(k not in labels for k in self.absent)
        )


def parse(text: str) -> Selector:
    equal: list[tuple[str, str]] = []
    unequal: list[tuple[str, str]] = []
    present: list[str] = []
    absent: list[str] = []
    for raw in (part.strip() for part in text.split(",")):
        if not raw:
            continue
        if match := re.fullmatch(rf"({_KEY})\s*!=\s*({_VALUE})", raw):
            unequal.append((match.group(1), match.group(3)))
        elif match := re.fullmatch(rf"({_KEY})\s*==?\s*({_VALUE})", raw):
            equal.append((match.group(1), match.group(3)))
        elif match := re.fullmatch(rf"!\s*({_KEY})", raw):
            absent.append(match.group(1))
        elif re.fullmatch(_KEY, raw):
            present.append(raw)
        else:
            raise ValueError(f"invalid label selector term {raw!r}: use key=value, key!=value, key or !key")
    return Selector(tuple(equal), tuple(unequal), tuple(present), tuple(absent))
