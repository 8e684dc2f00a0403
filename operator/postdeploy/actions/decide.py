"""Which actions a breach takes: the one place where that is decided. Pure.

Called by ``postdeploy.engine.ticks`` after a tick has decided its checks. Input:
the checks' states, what each check asks for (``onFailure``), the review's policy
(``spec.rollback``), the target's GitOps owner, and the action records already in
status. Output: new records, all ``Pending``, for ``postdeploy.engine.executions``
to carry out.

Rules:

1. Only a ``Failed`` check acts. ``Error`` and ``Inconclusive`` (a data source down
   or silent) never do; a check that sets ``treatMissingAsFailure`` has already
   turned missing data into ``Failed`` before this runs.
2. A check is decided once: a check named by any existing record is done with.
   Together with rule 1 this makes deciding idempotent: the same status in gives no
   new records out, however often a tick repeats.
3. The actions form a ladder, each step including the ones below it:
   none < annotate < notify < pause < rollback. A check gets
   ``min(onFailure, spec.rollback.policy)``.
4. A rollback of a target that Argo CD or Flux manages becomes notify (annotate and
   notify) unless ``spec.rollback.allowGitOps``: a sync would undo it.
5. At most one rollback per review, ever, and at most one pause: once either has a
   record, in any state, a later request for it becomes notify. A pause after a
   rollback becomes notify too (the rollback already stopped the release).
6. ``dryRun`` marks every record; the executor then records what it would have done
   and changes nothing on the target.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence

from postdeploy.actions import gitops
from postdeploy.models.checks import OnFailure
from postdeploy.models.reviews import ActionRecord, ActionState, CheckState, CheckStatus, RollbackSpec

__all__ = ["LADDER", "Policy", "decide", "undecided"]

LADDER = (OnFailure.NONE, OnFailure.ANNOTATE, OnFailure.NOTIFY, OnFailure.PAUSE, OnFailure.ROLLBACK)
_RANK = {level: rank for rank, level in enumerate(LADDER)}


@dataclasses.dataclass(frozen=True)
class Policy:
    """The review's ``spec.rollback``, with its defaults filled in."""

    cap: OnFailure = OnFailure.ROLLBACK
    dry_run: bool = False
    allow_gitops: bool = False

    @classmethod
    def from_spec(cls, spec: RollbackSpec | None) -> Policy:
        if spec is None:
            return cls()
        return cls(cap=spec.policy, dry_run=spec.dry_run, allow_gitops=spec.allow_git_ops)


def undecided(
    checks: Sequence[CheckStatus],
    requests: Mapping[str, OnFailure],
    recorded: Sequence[ActionRecord],
) -> list[CheckStatus]:
    """Failed checks that ask for an action and have no record yet (rules 1 and 2)."""
    handled = {r.check for r in recorded if r.check}
    return [
        c
        for c in checks
        if c.state is CheckState.FAILED
        and requests.get(c.name, OnFailure.NONE) is not OnFailure.NONE
        and c.name not in handled
    ]


def _cause(check: CheckStatus) -> str:
    parts = [f"check {check.name} failed"]
    if check.value is not None:
        parts.append(f"value {check.value:.6g}")
    if check.fail_when:
        parts.append(f"failWhen {check.fail_when!r}")
    return ", ".join(parts)


def decide(
    checks: Sequence[CheckStatus],
    requests: Mapping[str, OnFailure],
    policy: Policy,
    owner: gitops.Owner | None,
    recorded: Sequence[ActionRecord],
    now: datetime.datetime,
) -> list[ActionRecord]:
    """New Pending records for the checks that failed and have not been decided yet."""
    records: list[ActionRecord] = []
    taken: set[str] = {r.action for r in recorded if r.action in ("pause", "rollback")}
    rolled_back = any(
        r.action == "rollback" and r.state not in (ActionState.SKIPPED, ActionState.FAILED)
        for r in recorded
    )
    for check in undecided(checks, requests, recorded):
        requested = requests[check.name]
        level = requested
        reasons: list[str] = []
        if _RANK[policy.cap] < _RANK[level]:
            level = policy.cap
            reasons.append(f"spec.rollback.policy caps actions at {policy.cap.value}")
        if level is OnFailure.ROLLBACK and owner is not None and not policy.allow_gitops:
            level = OnFailure.NOTIFY
            reasons.append(
                f"the target is {owner.describe()}: a sync would undo a rollback "
                "(set spec.rollback.allowGitOps to roll back anyway)"
            )
        if level is OnFailure.ROLLBACK and "rollback" in taken:
            level = OnFailure.NOTIFY
            reasons.append("at most one rollback per review, and this review already has one")
        if level is OnFailure.PAUSE and ("pause" in taken or rolled_back):
            level = OnFailure.NOTIFY
            reasons.append(
                "this review already rolled back the target" if rolled_back
                else "at most one pause per review, and this review already has one"
            )
        base = {
            "check": check.name,
            "requested": requested.value,
            "cause": _cause(check),
            "value": check.value,
            "threshold": check.fail_when,
            "dry_run": policy.dry_run,
            "decided_at": now.isoformat(),
            "state": ActionState.PENDING,
        }
        reason = "; ".join(reasons) or None
        if level is OnFailure.NONE:
            records.append(ActionRecord(id=f"none-{check.name}", action="none", reason=reason, **base))
            continue
        steps = [step for step in LADDER[1:] if _RANK[step] <= _RANK[level]]
        # pause and rollback are alternatives at the top of the ladder, not a sequence.
        if level is OnFailure.ROLLBACK:
            steps.remove(OnFailure.PAUSE)
        for step in steps:
            strongest = step is level
            records.append(
                ActionRecord(
                    id=f"{step.value}-{check.name}",
                    action=step.value,
                    reason=reason if strongest else None,
                    **base,
                )
            )
        if level in (OnFailure.PAUSE, OnFailure.ROLLBACK):
            taken.add(level.value)
        rolled_back = rolled_back or level is OnFailure.ROLLBACK
    return records
