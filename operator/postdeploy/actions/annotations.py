"""Breach annotations on the target, for pipelines and people to read.

Written by ``postdeploy.engine.executions`` when a check breaches (action
``annotate``) and once more when the review completes:

=================================  ==============================================
``postdeploy.io/breach``           ``active`` while the review runs; at the end the
                                   review's verdict (``Failed``, ``RolledBack``)
``postdeploy.io/breach-check``     the check that breached last
``postdeploy.io/breach-value``     its value
``postdeploy.io/breach-threshold`` its ``failWhen``
``postdeploy.io/breach-review``    ``namespace/name`` of the review
``postdeploy.io/breach-at``        when the breach was recorded (RFC 3339)
=================================  ==============================================

A review that completes Passed removes breach annotations left by earlier reviews:
the target now runs a release that passed. Annotations are metadata only; changing
them starts no rollout. The patches are JSON merge patches (``null`` removes a key).
"""

from __future__ import annotations

from collections.abc import Mapping

from postdeploy.actions import targets
from postdeploy.kit import kube

__all__ = [
    "ACTIVE", "AT", "BREACH", "CHECK", "KEYS", "REVIEW", "THRESHOLD", "VALUE", "apply", "breach", "final",
]

BREACH = "postdeploy.io/breach"
CHECK = "postdeploy.io/breach-check"
VALUE = "postdeploy.io/breach-value"
THRESHOLD = "postdeploy.io/breach-threshold"
REVIEW = "postdeploy.io/breach-review"
AT = "postdeploy.io/breach-at"
KEYS = (BREACH, CHECK, VALUE, THRESHOLD, REVIEW, AT)
ACTIVE = "active"

Changes = dict[str, str | None]


def breach(
    *, check: str, value: float | None, threshold: str | None, review: str, at: str
) -> Changes:
    """The annotations describing one breach."""
    return {
        BREACH: ACTIVE,
        CHECK: check,
        VALUE: "" if value is None else f"{value:.6g}",
        THRESHOLD: threshold or "",
        REVIEW: review,
        AT: at,
    }


def final(current: Mapping[str, str], *, review: str, verdict: str) -> Changes:
    """The change to make when the review completes with ``verdict``; empty for none."""
    if BREACH not in current:
        return {}
    if current.get(REVIEW) == review:
        return {} if current.get(BREACH) == verdict else {BREACH: verdict}
    if verdict == "Passed":
        return {key: None for key in KEYS if key in current}
    return {}


async def apply(api: kube.Client, kind: str, namespace: str, name: str, changes: Changes) -> None:
    """Set (or, for None, remove) annotations on the target."""
    if changes:
        body = {"metadata": {"annotations": dict(changes)}}
        await targets.patch(api, kind, namespace, name, body, targets.MERGE_PATCH)
