"""Freezing a rollout: ``spec.paused: true`` on a Deployment or an Argo Rollout.

Called by ``postdeploy.engine.executions`` for the ``pause`` action. A paused
Deployment keeps its running pods but starts no further rollout step
(``kubectl rollout pause``); a paused Argo Rollout stops at its current step
(``kubectl argo rollouts pause``). StatefulSets and DaemonSets have no such field:
freezing them would mean rewriting their update strategy, which a person should
decide, so for them the pause is skipped with that reason (the breach is still
annotated and notified). The pause stays after the review ends; a person resumes
the rollout (``kubectl rollout resume``) once the cause is understood.
"""

from __future__ import annotations

from postdeploy.actions import targets
from postdeploy.kit import exceptions, kube

__all__ = ["PAUSABLE", "check", "is_paused", "pause"]

PAUSABLE = ("Deployment", "Rollout")


def is_paused(obj: targets.Obj) -> bool:
    return bool((obj.get("spec") or {}).get("paused"))


def check(obj: targets.Obj) -> None:
    """Raise Unpausable when the object's kind cannot be paused."""
    kind = obj.get("kind", "")
    if kind not in PAUSABLE:
        raise exceptions.Unpausable(
            f"a {kind} has no pause (only {' and '.join(PAUSABLE)} do); annotated and notified instead"
        )


async def pause(api: kube.Client, obj: targets.Obj) -> bool:
    """Pause the target; False when it was paused already. Raises Unpausable."""
    check(obj)
    if is_paused(obj):
        return False
    metadata = obj["metadata"]
    await targets.patch(
        api,
        obj["kind"],
        metadata["namespace"],
        metadata["name"],
        {"spec": {"paused": True}},
        targets.MERGE_PATCH,
    )
    return True
