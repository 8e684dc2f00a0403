"""Carrying out the action records that a tick decided, each step written down first.

Called by the scheduler (``postdeploy.engine.schedulers``) after every tick
(``Executor.run``). The tick wrote the new records (state ``Pending``) in the same
status write that recorded the failed check, so a decision is never lost; this
module then takes each unfinished record in order and writes every step to status
through the review's ``Ledger``:

- annotate / pause / notify: do it (idempotent: the same annotations, an already
  paused target, a message id that exists), then write the final state;
- rollback: plan (read the target and its history), write ``Applying`` with the
  from/to revisions, the revision gone back to (``source``) and a fingerprint of the
  target's pod template, *then* patch the target, then write ``Done``. An operator
  killed after ``Applying`` finds on restart either the target already carrying
  ``source``'s template (the patch happened: write ``Done``), or the template
  unchanged since the plan (patch now), or a template someone else changed (a new
  rollout: refuse, ``Failed``).
  It never plans a second rollback, as ``decide`` never records a second one.

When the review has completed it also updates the breach annotations and creates
the completion message. Every message is handed to the ``Notifier``, which delivers
in the background and reports back through the ledger.

Events are posted on the review and, for what touched the target, on the target.
Nothing is done for a review whose target lies in a namespace the operator does not
allow it (``decisions/confinement.py``), even when its status holds records: the
spec may have changed since they were decided.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import pydantic

from postdeploy.actions import annotations as breach_annotations
from postdeploy.actions import notifications, pauses, rollbacks, targets
from postdeploy.decisions import confinement
from postdeploy.engine import failpoints
from postdeploy.engine.ledgers import Ledger
from postdeploy.kit import exceptions, kube
from postdeploy.models import crds
from postdeploy.models.reviews import (
    COMPLETED,
    ActionRecord,
    ActionState,
    NotificationRecord,
    NotificationTarget,
    ReviewStatus,
    RollbackSpec,
    Target,
)

__all__ = ["FINAL_ANNOTATIONS", "Executor", "Poster", "has_work"]

logger = logging.getLogger(__name__)
FINAL_ANNOTATIONS = "annotate-final"
# (objects the Event is about, type, reason, message)
Poster = Callable[[Sequence[Mapping[str, Any]], str, str, str], None]
_CONFLICT_RETRIES = 3


class _Refused(Exception):
    """The record cannot be carried out; final (state, reason)."""

    def __init__(self, state: ActionState, reason: str) -> None:
        super().__init__(reason)
        self.state = state
        self.reason = reason


_FINAL_STATES = frozenset(state.value for state in ActionState if state.final)


def has_work(status: Mapping[str, Any], receivers: int) -> bool:
    """Whether the executor has anything to do for a review with this status (wire form).

    Read from the dict, not a validated model: it is asked after every tick of every
    review, and the answer is nearly always no.
    """
    actions = status.get("actions") or []
    if any(a.get("state", ActionState.PENDING.value) not in _FINAL_STATES for a in actions):
        return True
    completed = status.get("phase") == COMPLETED
    if completed and not any(a.get("id") == FINAL_ANNOTATIONS for a in actions):
        return True
    notifications = status.get("notifications") or []
    if receivers and completed and not any(n.get("id") == "completion" for n in notifications):
        return True
    deliveries = (d for n in notifications for d in n.get("deliveries") or [])
    return any(d.get("state", "Pending") == "Pending" for d in deliveries)


@dataclasses.dataclass
class _Review:
    ref: notifications.ReviewRef
    target: Target
    receivers: list[NotificationTarget]
    dry_run: bool
    ledger: Ledger
    post: Poster

    @property
    def body(self) -> dict[str, Any]:
        ref = self.ref
        return {
            "apiVersion": crds.API_VERSION,
            "kind": "PostDeploymentReview",
            "metadata": {"name": ref.name, "namespace": ref.namespace, "uid": ref.uid},
        }

    @property
    def where(self) -> str:
        return f"{self.target.kind}/{self.target.name}"


class Executor:
    def __init__(
        self,
        notifier: notifications.Notifier,
        clock: Callable[[], datetime.datetime],
        *,
        retries: int = 5,
        retry_delay: float = 1.0,
        cross_namespace: Collection[tuple[str, str]] = frozenset(),
    ) -> None:
        self.notifier = notifier
        self.cross_namespace = cross_namespace
        self.clock = clock
        self.retries = retries
        self.retry_delay = retry_delay

    async def run(
        self,
        api: Any,
        ref: notifications.ReviewRef,
        spec: Mapping[str, Any],
        ledger: Ledger,
        post: Poster,
    ) -> bool:
        """Carry out unfinished records and completion duties; True when status changed."""
        if not has_work(ledger.view, len(spec.get("notifications") or [])):
            return False
        try:
            target = Target.model_validate(spec.get("target") or {})
            receivers = [NotificationTarget.model_validate(n) for n in spec.get("notifications") or []]
            rollback = spec.get("rollback")
            dry_run = RollbackSpec.model_validate(rollback).dry_run if rollback else False
        except pydantic.ValidationError:
            return False  # the tick reports the invalid spec; nothing can be acted on
        if confinement.namespace_refusal(ref.namespace, target.namespace, self.cross_namespace):
            return False  # the tick reports the refusal; nothing is done to another namespace
        if target.namespace is None:
            target = target.model_copy(update={"namespace": ref.namespace})
        review = _Review(
            ref=ref, target=target, receivers=receivers, dry_run=dry_run, ledger=ledger, post=post
        )
        before = ledger.status
        status = ReviewStatus.model_validate(before)
        if status.phase == COMPLETED and not any(r.id == FINAL_ANNOTATIONS for r in status.actions):
            final = ActionRecord(
                id=FINAL_ANNOTATIONS,
                action="annotate",
                cause=f"review completed with verdict {status.verdict.value if status.verdict else '-'}",
                dry_run=review.dry_run,
                decided_at=self.clock().isoformat(),
            )
            await self._save(review, final)
        for record in ReviewStatus.model_validate(ledger.status).actions:
            if not record.state.final:
                await self._carry_out(api, review, record)
        status = ReviewStatus.model_validate(ledger.status)
        if (
            status.phase == COMPLETED
            and review.receivers
            and not any(n.id == "completion" for n in status.notifications)
        ):
            verdict = status.verdict.value if status.verdict else None
            await self._notify(
                review,
                "completion",
                "completion",
                f"review {ref.name} of {review.where} {status.version or ''} completed: {verdict}",
            )
        self.notifier.dispatch(
            ref,
            review.receivers,
            lambda: ReviewStatus.model_validate(ledger.status).notifications,
            ledger.record_delivery,
        )
        return ledger.status != before

    # --- records ------------------------------------------------------------------------

    async def _save(
        self, review: _Review, record: ActionRecord, messages: Sequence[NotificationRecord] = ()
    ) -> None:
        status = ReviewStatus.model_validate(review.ledger.status)
        ids = [r.id for r in status.actions]
        if record.id in ids:
            status.actions[ids.index(record.id)] = record
        else:
            status.actions.append(record)
        known = {n.id for n in status.notifications}
        status.notifications.extend(m for m in messages if m.id not in known)
        await review.ledger.write(status.dump())

    async def _carry_out(self, api: Any, review: _Review, record: ActionRecord) -> None:
        attempts = record.attempts
        while True:
            try:
                if record.action == "annotate":
                    await self._annotate(api, review, record)
                elif record.action == "notify":
                    await self._notify_breach(review, record)
                elif record.action == "pause":
                    await self._pause(api, review, record)
                elif record.action == "rollback":
                    await self._rollback(api, review, record)
                else:
                    await self._finish(review, record, ActionState.SKIPPED, record.reason or "nothing to do")
                return
            except _Refused as refusal:
                await self._finish(review, self._current(review, record.id), refusal.state, refusal.reason)
                return
            except Exception as error:
                if isinstance(error, kube.ApiError) and error.status in (401, 403):
                    reason = f"the API server refused: {error.status} {error.reason}"
                    await self._finish(review, record, ActionState.FAILED, reason)
                    return
                attempts += 1
                logger.warning(
                    "review %s: action %s failed (attempt %d): %r", review.ref.key, record.id, attempts, error
                )
                # Continue from what was written last (a rollback may be Applying by now).
                current = self._current(review, record.id)
                if attempts >= self.retries:
                    await self._finish(
                        review,
                        current.model_copy(update={"attempts": attempts}),
                        ActionState.FAILED,
                        f"gave up after {attempts} attempts: {error!r}"[:500],
                    )
                    return
                record = current.model_copy(update={"attempts": attempts})
                await asyncio.sleep(self.retry_delay * 2 ** (attempts - 1))

    @staticmethod
    def _current(review: _Review, record_id: str) -> ActionRecord:
        """The record as last written."""
        status = ReviewStatus.model_validate(review.ledger.status)
        return next(r for r in status.actions if r.id == record_id)

    async def _finish(
        self,
        review: _Review,
        record: ActionRecord,
        state: ActionState,
        reason: str | None,
        message: tuple[str, str] | None = None,
        *,
        announce: bool = True,
    ) -> None:
        """Write the record's final state, with the message (event, summary) it makes.

        ``reason`` None keeps the reason the decision gave (why an action was capped).
        ``announce``: post an Event when skipped or failed (False: the caller posts its own).
        """
        reason = reason if reason is not None else record.reason
        done = record.model_copy(update={"state": state, "reason": reason, "at": self.clock().isoformat()})
        messages = []
        if message is not None and review.receivers:
            event, summary = message
            message_id = f"{event}-{record.check}" if event == "breach" else event
            messages.append(self._message(review, event, message_id, summary, done))
        await self._save(review, done, messages)
        if announce and state in (ActionState.SKIPPED, ActionState.FAILED) and record.action != "notify":
            what = record.action if record.action != "none" else "acting on the breach"
            kind = "Warning" if state is ActionState.FAILED else "Normal"
            review.post([review.body], kind, f"Action{state.value}", f"{what} ({record.id}): {reason}")

    async def _read(self, api: Any, review: _Review) -> targets.Obj:
        target = review.target
        assert target.namespace is not None
        obj = await targets.read(api, target.kind, target.namespace, target.name)
        if obj is None:
            raise _Refused(ActionState.FAILED, f"{review.where} not found in {target.namespace}")
        return obj

    async def _annotate(self, api: Any, review: _Review, record: ActionRecord) -> None:
        obj = await self._read(api, review)
        current = obj["metadata"].get("annotations") or {}
        if record.check is None:  # the review completed
            verdict = ReviewStatus.model_validate(review.ledger.status).verdict
            changes = breach_annotations.final(
                current, review=review.ref.key, verdict=verdict.value if verdict else "Inconclusive"
            )
        else:
            changes = breach_annotations.breach(
                check=record.check,
                value=record.value,
                threshold=record.threshold,
                review=review.ref.key,
                at=record.decided_at or self.clock().isoformat(),
            )
        described = ", ".join(f"{k}={v}" if v is not None else f"-{k}" for k, v in changes.items())
        if not changes:
            await self._finish(review, record, ActionState.DONE, "no breach annotations to change")
            return
        if record.dry_run:
            await self._finish(review, record, ActionState.DRY_RUN, f"dry run: would annotate {described}")
            return
        target = review.target
        assert target.namespace is not None
        await breach_annotations.apply(api, target.kind, target.namespace, target.name, changes)
        await self._finish(review, record, ActionState.DONE, None)
        reason = "BreachAnnotated" if record.check else "BreachAnnotationsUpdated"
        review.post([review.body, targets.reference(obj)], "Normal", reason, f"{review.where}: {described}")

    async def _notify_breach(self, review: _Review, record: ActionRecord) -> None:
        if not review.receivers:
            await self._finish(review, record, ActionState.SKIPPED, "spec.notifications names no receiver")
            return
        status = ReviewStatus.model_validate(review.ledger.status)
        asked = [r for r in status.actions if r.check == record.check]
        strongest = asked[-1].action if asked else "notify"
        summary = f"{review.where} {status.version or ''}: {record.cause}; action: {strongest}"
        await self._finish(review, record, ActionState.DONE, None, ("breach", summary))

    async def _pause(self, api: Any, review: _Review, record: ActionRecord) -> None:
        obj = await self._read(api, review)
        try:
            pauses.check(obj)
        except exceptions.Unpausable as why:
            raise _Refused(ActionState.SKIPPED, str(why)) from None
        if record.dry_run:
            summary = f"dry run: would pause {review.where}"
            await self._finish(review, record, ActionState.DRY_RUN, summary, ("pause", summary))
            return
        changed = await pauses.pause(api, obj)
        summary = f"paused {review.where}: {record.cause}"
        if not changed:
            summary = f"{review.where} was already paused"
        await self._finish(review, record, ActionState.DONE, None if changed else summary, ("pause", summary))
        review.post([review.body, targets.reference(obj)], "Warning", "Paused", summary)

    async def _rollback(self, api: Any, review: _Review, record: ActionRecord) -> None:
        status = ReviewStatus.model_validate(review.ledger.status)
        unpause = any(
            r.action == "pause" and r.state is ActionState.DONE and not r.dry_run for r in status.actions
        )
        obj = await self._read(api, review)
        if record.state is ActionState.PENDING:
            try:
                plan = await rollbacks.plan(api, obj, unpause=unpause)
            except exceptions.NotRolledBack as why:
                summary = f"{review.where} not rolled back: {why}"
                await self._finish(
                    review, record, ActionState.SKIPPED, str(why), ("rollback", summary), announce=False
                )
                review.post([review.body, targets.reference(obj)], "Warning", "RollbackSkipped", summary)
                return
            record = record.model_copy(
                update={
                    "from_revision": plan.from_revision,
                    "to_revision": plan.to_revision,
                    "from_image": plan.from_image,
                    "to_image": plan.to_image,
                    "source": plan.source,
                    "from_template": plan.current,
                }
            )
            if record.dry_run:
                summary = f"dry run: would roll back {review.where} {_from_to(record)}"
                await self._finish(review, record, ActionState.DRY_RUN, summary, ("rollback", summary))
                review.post([review.body], "Normal", "RollbackDryRun", summary)
                return
            # Written before the target is touched: a restart resumes from here.
            record = record.model_copy(update={"state": ActionState.APPLYING})
            await self._save(review, record)
            failpoints.hit("rollback-applying")
        for _ in range(_CONFLICT_RETRIES):
            plan = await self._replan(api, review, record, obj, unpause)
            try:
                await rollbacks.apply(api, obj, plan)
                failpoints.hit("rollback-patched")
                break
            except kube.ApiError as error:
                if error.status not in (409, 422):
                    raise
                obj = await self._read(api, review)  # changed meanwhile: look again
        else:
            raise _Refused(ActionState.FAILED, "the target kept changing while rolling back")
        summary = f"rolled back {review.where} {_from_to(record)}: {record.cause}"
        await self._finish(review, record, ActionState.DONE, None, ("rollback", summary))
        review.post([review.body, targets.reference(obj)], "Warning", "RolledBack", summary)

    async def _replan(
        self, api: Any, review: _Review, record: ActionRecord, obj: targets.Obj, unpause: bool
    ) -> rollbacks.Plan:
        """The plan for the revision recorded before, refusing when someone else changed the target."""
        try:
            plan = await rollbacks.plan(api, obj, source=record.source, unpause=unpause)
        except exceptions.NotRolledBack as why:
            raise _Refused(ActionState.FAILED, str(why)) from None
        if not plan.applied and plan.current != record.from_template:
            raise _Refused(
                ActionState.FAILED,
                f"the pod template of {review.where} changed after the rollback was planned "
                "(a new rollout?); not rolling back over that change",
            )
        return plan

    # --- messages -----------------------------------------------------------------------

    def _message(
        self, review: _Review, event: str, message_id: str, summary: str, record: ActionRecord | None
    ) -> NotificationRecord:
        status = ReviewStatus.model_validate(review.ledger.status)
        payload = notifications.message(
            event,
            message_id,
            review=review.ref,
            summary=summary,
            target=review.where,
            version=status.version,
            verdict=status.verdict.value if status.verdict else None,
            at=self.clock(),
            check=record.check if record else None,
            value=record.value if record else None,
            threshold=record.threshold if record else None,
            action=_action_summary(record) if record and record.action != "notify" else None,
            dry_run=bool(record and record.dry_run),
        )
        return notifications.record(message_id, payload, review.receivers, self.clock())

    async def _notify(self, review: _Review, event: str, message_id: str, summary: str) -> None:
        status = ReviewStatus.model_validate(review.ledger.status)
        status.notifications.append(self._message(review, event, message_id, summary, None))
        await review.ledger.write(status.dump())


def _from_to(record: ActionRecord) -> str:
    def side(revision: str | None, image: str | None) -> str:
        return f"revision {revision or '?'}" + (f" ({image})" if image else "")

    before = side(record.from_revision, record.from_image)
    return f"from {before} to {side(record.to_revision, record.to_image)}"


def _action_summary(record: ActionRecord) -> dict[str, Any]:
    keep = ("action", "state", "dryRun", "reason", "fromRevision", "toRevision", "fromImage", "toImage", "at")
    dumped = record.dump()
    return {k: dumped[k] for k in keep if k in dumped}
