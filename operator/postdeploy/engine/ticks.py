"""One tick of a review: resolve its spec, run its due checks, decide, build its status.

Called by the scheduler (``postdeploy.engine.schedulers``) whenever the review is
due (a check is due, a phase starts or ends, the spec or annotations changed).
All state lives in the review's status, which this module reads and rewrites, so a
restarted operator continues from the last written status, re-measuring what was not
written. The body passed to ``Engine.tick`` is read, never changed: the scheduler
hands over the newest status it holds (a fresh copy from its ledger).

The tick returns the new status (or None when nothing changed), whether it must be
written at once (``urgent``: see ``matters``; else the scheduler may keep it for a
few minutes), the Events to post (one per state change, derived by comparing old and
new status, so a repeated tick posts nothing twice) and when to wake next.

What the tick reads outside the review and its providers (templates, Secrets, the
target) comes through ``postdeploy.engine.inputs``, so ``Engine`` runs on fakes in the
unit tests (tests/unit/test_engine_ticks.py). A tick is three steps: ``_prepare``
(resolve, confine, version and ``deployedAt``), ``_run_phases`` (the due checks,
phase by phase) and ``_conclude`` (actions, verdict, conditions, final review,
Events, wake-up).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import types
from collections.abc import Callable, Mapping
from typing import Any, Literal

from postdeploy.actions import decide, gitops
from postdeploy.decisions import checks as check_decisions
from postdeploy.decisions import confinement, templates, verdicts
from postdeploy.decisions import phases as phase_plans
from postdeploy.engine import failpoints, finals, reruns
from postdeploy.engine.inputs import ClusterInputs, Inputs, secrets_for, template_of
from postdeploy.engine.registry import Providers
from postdeploy.engine.settings import Settings
from postdeploy.kit import exceptions, kube, metrics, times, workloads
from postdeploy.models.measurements import Measurement, ReviewContext, Target
from postdeploy.models.reviews import (
    COMPLETED,
    INVALID,
    ActionRecord,
    ActionState,
    CheckState,
    CheckStatus,
    Condition,
    PhaseState,
    PhaseStatus,
    ReviewStatus,
    Verdict,
)

__all__ = ["REMEASURED", "Engine", "Event", "TickResult", "matters"]

logger = logging.getLogger(__name__)

_RETRY = datetime.timedelta(seconds=15)


@dataclasses.dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class TickResult:
    status: dict[str, Any] | None  # the whole new status; None when unchanged
    events: tuple[Event, ...]
    wake_at: datetime.datetime | None  # None: nothing more to do until the spec changes
    done: bool = False
    # Whether the new status must be written before anything else happens: something a
    # reader or a restart needs changed (see ``matters``); else only re-measurements.
    urgent: bool = True


# Per check, what a restart may lose and measure again: the last value and what is
# derived from it, and the counts of runs that decide nothing. Every other field (state,
# failures, errors and the consecutive counts, memo, and the last result when it is or
# was Failed or Error: see ``_lasting``) and every field outside ``checks`` (phase,
# verdict, conditions, phases, actions, notifications, the final review) is one that a
# reader or a restart needs (docs/engine.md).
REMEASURED = frozenset(
    {
        "value",
        "baseline",
        "message",
        "runs",
        "inconclusives",
        "lastRun",
        "lastSlot",
        "history",
        "details",
        "query",
    }
)


# Run results a reader must see at once, and the first result after one of them.
_ALARMING = frozenset({"Failed", "Error"})


def _lasting(check: Mapping[str, Any]) -> dict[str, Any]:
    """What of a check's status must be written when it changes. A last result that
    moves among Passed, Inconclusive and Skipped is a re-measurement (the next run
    measures it again, and a phase's last slot is re-run after a restart before the
    phase finishes); one that turns Failed or Error, or stops being so, is not."""
    lasting = {k: v for k, v in check.items() if k not in REMEASURED}
    if lasting.get("lastResult") not in _ALARMING:
        lasting.pop("lastResult", None)
    return lasting


def matters(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether ``new`` differs from ``old`` in more than what a restart re-measures."""
    if old.keys() != new.keys():
        return True
    for key, value in new.items():
        if key != "checks":
            if old[key] != value:
                return True
            continue
        before = old[key] or []
        if len(before) != len(value):
            return True
        if any(_lasting(a) != _lasting(b) for a, b in zip(before, value, strict=True)):
            return True
    return False


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclasses.dataclass(frozen=True)
class _Setting:
    """What a tick works on once its inputs are read: the resolved review and its target."""

    review: templates.ResolvedReview
    target: Target
    version: str
    deployed_at: datetime.datetime


class Engine:
    def __init__(
        self,
        api: kube.Client,
        providers: Providers,
        settings: Settings,
        clock: Callable[[], datetime.datetime] = utcnow,
        inputs: Inputs | None = None,
        final_reviews: finals.FinalReviews | None = None,
    ) -> None:
        self.api = api
        self.providers = providers
        self.settings = settings
        self.clock = clock
        self.inputs: Inputs = inputs if inputs is not None else ClusterInputs(api)
        self._resolver = templates.Resolver()
        self.finals = (
            final_reviews if final_reviews is not None else finals.FinalReviews(api, providers.http, settings)
        )

    # --- inputs -------------------------------------------------------------------------

    async def read_secret(self, namespace: str, name: str, key: str) -> str:
        """A Secret's value (webhook URLs, DSNs); raises LookupError naming what is missing."""
        return await self.inputs.secret(namespace, name, key)

    # --- the tick -----------------------------------------------------------------------

    async def tick(self, body: Mapping[str, Any]) -> TickResult:
        """Read the review's inputs, run its due checks, decide; the new status."""
        metadata = body.get("metadata", {})
        failpoints.raise_at("tick-raise", metadata.get("annotations") or {})
        raw = body.get("status") or {}
        status = ReviewStatus.model_validate(raw)
        now = self.clock()
        if status.phase == COMPLETED:
            return self._completed(status, now, metadata.get("generation"))
        previous = _before(status)
        status.observed_generation = metadata.get("generation")
        setting = await self._prepare(body, previous, status, now)
        if isinstance(setting, TickResult):
            return setting
        by_name, completed, plan = await self._run_phases(setting, status, body, now)
        return await self._conclude(body, setting, previous, raw, status, by_name, completed, plan, now)

    async def _prepare(
        self,
        body: Mapping[str, Any],
        previous: ReviewStatus,
        status: ReviewStatus,
        now: datetime.datetime,
    ) -> _Setting | TickResult:
        """Resolve the spec, apply the confinement rules, find version and deployedAt;
        a TickResult instead when the review cannot run (invalid, refused, held)."""
        metadata = body.get("metadata", {})
        namespace = metadata.get("namespace", "")
        generation = metadata.get("generation")
        try:
            raw_spec = body.get("spec") or {}
            template = await template_of(self.inputs, raw_spec, namespace, self.settings.default_template)
            review = self._resolver.resolve(template, raw_spec)
        except exceptions.InvalidSpec as problem:
            return self._invalid(previous, str(problem), now, generation)
        except kube.ApiError as error:
            message = f"cannot read the template: {error.status} {error.reason}"
            return self._held(previous, "TemplateUnavailable", message, now, generation)

        spec = review.spec
        # Before anything is read or touched: the review's namespace, the allowed URLs.
        refusal = confinement.review_refusal(
            namespace, spec, self.settings.cross_namespace, self.settings.egress_allowlist
        )
        if refusal is not None:
            return self._invalid(previous, refusal, now, generation, kind="Refused")
        target = Target(spec.target.kind, spec.target.name, spec.target.namespace or namespace)
        status.target = f"{target.kind}/{target.name}"
        status.conditions = [c for c in status.conditions if c.type not in ("InvalidSpec", "Refused")]

        # Version and deployment time: from the spec, else what was recorded, else the target.
        version = spec.version or status.version
        deployed_at = spec.deployed_at or times.parse_or_none(status.deployed_at)
        if version is None or deployed_at is None:
            try:
                workload = await self.inputs.workload(target.kind, target.namespace, target.name)
            except kube.ApiError as error:
                message = f"cannot read {status.target}: {error.status} {error.reason}"
                return self._held(previous, "TargetUnavailable", message, now, generation)
            if workload is None:
                message = f"{target.kind} {target.namespace}/{target.name} not found"
                return self._held(previous, "TargetNotFound", message, now, generation)
            workload.setdefault("kind", target.kind)
            version = version or workloads.version_of(workload) or "unknown"
            if deployed_at is None:
                deployed_at = await self.inputs.rollout_time(workload)
            if deployed_at is None:
                deployed_at = times.parse_or_none(metadata.get("creationTimestamp")) or now
        if deployed_at.tzinfo is None:
            deployed_at = deployed_at.replace(tzinfo=datetime.UTC)
        status.version = version
        status.deployed_at = deployed_at.isoformat()
        status.conditions = [c for c in status.conditions if c.type != "TargetFound"]
        return _Setting(review, target, version, deployed_at)

    async def _run_phases(
        self,
        setting: _Setting,
        status: ReviewStatus,
        body: Mapping[str, Any],
        now: datetime.datetime,
    ) -> tuple[dict[str, CheckStatus], set[str], phase_plans.Plan]:
        """Run the due checks; finishing a phase may make the next one due in the same tick."""
        review, deployed_at = setting.review, setting.deployed_at
        by_name = {c.name: c for c in status.checks}
        completed = {p.name for p in status.phases if p.state == COMPLETED}
        annotations = dict(body.get("metadata", {}).get("annotations") or {})
        by_name = reruns.apply(by_name, annotations, completed)  # `kubectl postdeploy rerun`
        plan = phase_plans.plan(review, deployed_at, now, frozenset(completed), by_name)
        for _ in range(len(review.phases) + 1):
            if plan.phase is None:
                break
            phase = plan.phase
            # Every check of the batch sees the memos as they were before it ran.
            memos = {name: s.memo for name, s in by_name.items() if s.memo}
            results = await asyncio.gather(
                *(self._run(d, phase, setting, now, by_name, memos, annotations, body) for d in plan.due)
            )
            for check_status in results:
                by_name[check_status.name] = check_status
            if not plan.finish_phase:
                break
            for check in phase.checks:
                current = by_name.get(check.name) or check_decisions.initial(check)
                by_name[check.name] = check_decisions.finish(check, current)
            completed.add(phase.name)
            plan = phase_plans.plan(review, deployed_at, now, frozenset(completed), by_name)
        return by_name, completed, plan

    async def _conclude(
        self,
        body: Mapping[str, Any],
        setting: _Setting,
        previous: ReviewStatus,
        raw: Mapping[str, Any],
        status: ReviewStatus,
        by_name: Mapping[str, CheckStatus],
        completed: set[str],
        plan: phase_plans.Plan,
        now: datetime.datetime,
    ) -> TickResult:
        """Actions, phases, verdict, conditions, the final review; Events and wake-up."""
        review, generation = setting.review, body.get("metadata", {}).get("generation")
        status.checks = [
            by_name.get(c.name) or check_decisions.initial(c) for p in review.phases for c in p.checks
        ]
        # Decide actions for checks that failed and have none yet; the records are written
        # with this status, before postdeploy.engine.executions carries any of them out.
        deferred = not await self._decide(review, setting.target, status, now)
        # A review whose last run decided an action completes only once the action is
        # carried out: its verdict (RolledBack), breach annotations and completion
        # message must say what was done, not what was about to be.
        acting = any(not record.state.final for record in status.actions)
        complete = plan.phase is None and not acting
        status.phases = [
            self._phase_status(p, previous, completed, setting.deployed_at, now, plan) for p in review.phases
        ]
        status.phase = COMPLETED if complete else (plan.phase.name if plan.phase else previous.phase)
        rollback = _rollback_done(status.actions)
        status.verdict = verdicts.verdict(status.checks, complete=complete, rolled_back=rollback is not None)
        # The final review (SLOs, sign-offs, report) once every phase has completed; the
        # review is Complete only when the required roles have signed off.
        final = await self.finals.conclude(body, review, status, setting.target, now) if complete else None
        complete = complete and not (final is not None and final.awaiting)
        status.conditions = verdicts.conditions_for(
            status.conditions,
            status.checks,
            complete=complete,
            current_phase=status.phase,
            now=now,
            generation=generation,
        )
        status.conditions = _rolled_back_condition(status, rollback, now, generation)
        status.message = self._message(status, rollback)
        if final is not None:
            self.finals.settle(status, final, now, generation)
        events = self._events(previous, status)
        events += [Event(*e) for e in final.events] if final is not None else []
        # After the Events, which carry a settled check's query in their summary.
        status.checks = [check_decisions.settle(c) if c.phase in completed else c for c in status.checks]
        status.checks = _without_spent_memos(review, status.checks, completed)
        wake = plan.wake_at
        if final is not None and final.awaiting:
            wake = now + datetime.timedelta(seconds=self.settings.max_sleep_seconds)
        if wake is not None:
            wake = min(wake, now + datetime.timedelta(seconds=self.settings.max_sleep_seconds))
        if deferred or (acting and plan.phase is None):
            wake = min(wake, now + _RETRY) if wake is not None else now + _RETRY
        new = status.dump()
        # The input is the status as last written (a dump), so comparing with it is
        # comparing with previous.dump(), without dumping again.
        changed = new != raw
        urgent = changed and (bool(events) or matters(raw, new))
        return TickResult(new if changed else None, tuple(events), wake, done=complete, urgent=urgent)

    async def _decide(
        self,
        review: templates.ResolvedReview,
        target: Target,
        status: ReviewStatus,
        now: datetime.datetime,
    ) -> bool:
        """Append the action records for newly failed checks; False when deciding must wait."""
        requests = {c.name: c.spec.on_failure for p in review.phases for c in p.checks}
        if not decide.undecided(status.checks, requests, status.actions):
            return True
        try:
            obj = await self.inputs.target_object(target.kind, target.namespace, target.name)
        except kube.ApiError:
            return False  # GitOps ownership unknown: decide on a later tick
        owner = gitops.owner(obj.get("metadata") or {}) if obj is not None else None
        policy = decide.Policy.from_spec(review.spec.rollback)
        decided = decide.decide(status.checks, requests, policy, owner, status.actions, now)
        status.actions = [*status.actions, *decided]  # a new list: ``previous`` holds the old
        return True

    def _completed(
        self, previous: ReviewStatus, now: datetime.datetime, generation: int | None
    ) -> TickResult:
        """A completed review changes only when a rollback finished after its last phase."""
        rollback = _rollback_done(previous.actions)
        if rollback is None or previous.verdict is Verdict.ROLLED_BACK:
            return TickResult(None, (), None, done=True)
        status = previous.model_copy(deep=True)
        status.verdict = Verdict.ROLLED_BACK
        status.conditions = _rolled_back_condition(status, rollback, now, generation)
        status.message = self._message(status, rollback)
        return TickResult(status.dump(), tuple(self._events(previous, status)), None, done=True)

    async def _run(
        self,
        due: phase_plans.Due,
        phase: templates.ResolvedPhase,
        setting: _Setting,
        now: datetime.datetime,
        by_name: Mapping[str, CheckStatus],
        memos: Mapping[str, Mapping[str, Any]],
        annotations: Mapping[str, str],
        body: Mapping[str, Any],
    ) -> CheckStatus:
        check, review, deployed_at = due.check, setting.review, setting.deployed_at
        previous = by_name.get(check.name) or check_decisions.initial(check)
        metadata = body.get("metadata", {})
        slot_start = deployed_at + phase.start + due.slot * check.interval
        delay = (now - phase_plans.run_time(slot_start)).total_seconds()
        metrics.record_run_delay(delay)
        named = {"review": f"{metadata.get('namespace', '')}/{metadata.get('name', '')}", "check": check.name}
        logger.debug("run %s slot %d, %.3fs after its run time", check.name, due.slot, delay, extra=named)
        try:
            secrets = await secrets_for(self.inputs, check, review, metadata.get("namespace", ""))
        except LookupError as problem:
            measurement = Measurement.error(str(problem))
        else:
            ctx = ReviewContext(
                review_name=metadata.get("name", ""),
                review_namespace=metadata.get("namespace", ""),
                review_uid=metadata.get("uid", ""),
                target=setting.target,
                version=setting.version,
                deployed_at=deployed_at,
                now=now,
                phase_name=phase.name,
                phase_start=deployed_at + phase.start,
                phase_end=deployed_at + phase.end,
                check_name=check.name,
                interval=check.interval,
                memo=types.MappingProxyType(previous.memo or {}),
                secrets=secrets,
                parameters=review.spec.parameters,
                annotations=annotations,
                memos=memos,
            )
            measurement = await self.providers.measure(check.spec, ctx)
        status, _ = check_decisions.record(
            check, previous, measurement, now, due.slot, self.settings.history_limit
        )
        return status

    # --- status helpers -----------------------------------------------------------------

    @staticmethod
    def _phase_status(
        phase: templates.ResolvedPhase,
        previous: ReviewStatus,
        completed: set[str],
        deployed_at: datetime.datetime,
        now: datetime.datetime,
        plan: phase_plans.Plan,
    ) -> PhaseStatus:
        old = next((p for p in previous.phases if p.name == phase.name), None)
        starts, ends = deployed_at + phase.start, deployed_at + phase.end
        state: PhaseState
        if phase.name in completed:
            state = "Completed"
        elif plan.phase is not None and plan.phase.name == phase.name and now >= starts:
            state = "Running"
        else:
            state = "Pending"
        started = old.started_at if old and old.started_at else None
        if state != "Pending" and started is None:
            started = now.isoformat()
        finished = old.finished_at if old and old.finished_at else None
        if state == COMPLETED and finished is None:
            finished = now.isoformat()
        return PhaseStatus(
            name=phase.name,
            state=state,
            starts_at=starts.isoformat(),
            ends_at=ends.isoformat(),
            started_at=started,
            finished_at=finished,
        )

    @staticmethod
    def _message(status: ReviewStatus, rollback: ActionRecord | None = None) -> str:
        if rollback is not None:
            return f"{_rollback_text(status.target, rollback)}: {rollback.cause}"[:300]
        failed = [c for c in status.checks if c.state is CheckState.FAILED]
        if failed:
            return verdicts.brief(failed[0])[:300]
        counts: dict[str, int] = {}
        for check in status.checks:
            counts[check.state.value] = counts.get(check.state.value, 0) + 1
        return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))

    def _invalid(
        self,
        previous: ReviewStatus,
        message: str,
        now: datetime.datetime,
        generation: int | None,
        kind: Literal["InvalidSpec", "Refused"] = "InvalidSpec",
    ) -> TickResult:
        """The review cannot run: its spec is wrong (InvalidSpec), or the operator's
        confinement rules refuse it (Refused). Condition, verdict Invalid, one Event."""
        status = previous.model_copy(deep=True)
        status.observed_generation = generation
        status.phase = INVALID
        status.verdict = Verdict.INVALID
        status.message = message[:300]
        other = "Refused" if kind == "InvalidSpec" else "InvalidSpec"
        status.conditions = [c for c in status.conditions if c.type != other]
        status.conditions = verdicts.set_condition(
            status.conditions, kind, "True", kind, message, now, generation
        )
        status.conditions = verdicts.set_condition(
            status.conditions, "Progressing", "False", kind, message, now, generation
        )
        events: tuple[Event, ...] = ()
        if previous.message != status.message or previous.phase != INVALID:
            events = (Event("Warning", kind, message),)
        new = status.dump()
        # A missing template may appear later: look again after a while.
        wake = now + datetime.timedelta(seconds=60)
        return TickResult(new if new != previous.dump() else None, events, wake)

    def _held(
        self,
        previous: ReviewStatus,
        reason: str,
        message: str,
        now: datetime.datetime,
        generation: int | None,
    ) -> TickResult:
        """The review cannot start yet (target or template unreadable): say so, retry."""
        status = previous.model_copy(deep=True)
        status.observed_generation = generation
        status.verdict = status.verdict or Verdict.PENDING
        status.phase = status.phase or "Pending"
        status.message = message[:300]
        status.conditions = verdicts.set_condition(
            status.conditions,
            "TargetFound" if reason.startswith("Target") else "TemplateFound",
            "False",
            reason,
            message,
            now,
            generation,
        )
        events: tuple[Event, ...] = ()
        if previous.message != status.message:
            events = (Event("Warning", reason, message),)
        new = status.dump()
        return TickResult(new if new != previous.dump() else None, events, now + _RETRY)

    @staticmethod
    def _events(previous: ReviewStatus, status: ReviewStatus) -> list[Event]:
        events: list[Event] = []
        old_phases = {p.name: p.state for p in previous.phases}
        for phase in status.phases:
            before = old_phases.get(phase.name, "Pending")
            if before != phase.state and phase.state == "Running":
                events.append(Event("Normal", "PhaseStarted", f"phase {phase.name} started"))
            if before != phase.state and phase.state == COMPLETED:
                events.append(Event("Normal", "PhaseCompleted", f"phase {phase.name} completed"))
        old_checks = {c.name: c.state for c in previous.checks}
        for check in status.checks:
            was = old_checks.get(check.name, CheckState.PENDING)
            if was == check.state or check.state in (CheckState.PENDING, CheckState.RUNNING):
                continue
            kind = "Warning" if check.state in (CheckState.FAILED, CheckState.ERROR) else "Normal"
            events.append(Event(kind, f"Check{check.state.value}", verdicts.summary(check)[:1000]))
        # A review that begins (no verdict, or Pending until its first phase starts) and
        # is Passing gets no verdict Event: its PhaseStarted says it runs, and one write
        # fewer per new review counts when thousands start at once (docs/benchmarks.md).
        begins = previous.verdict in (None, Verdict.PENDING) and status.verdict is Verdict.PASSING
        if previous.verdict != status.verdict and status.verdict is not None and not begins:
            bad = (Verdict.FAILING, Verdict.FAILED, Verdict.ROLLED_BACK)
            kind = "Warning" if status.verdict in bad else "Normal"
            events.append(Event(kind, f"Verdict{status.verdict.value}", status.message or ""))
        return events


def _before(status: ReviewStatus) -> ReviewStatus:
    """The status as the tick found it, to compare the new one with (Events, phase times,
    whether anything changed): a shallow copy. It stays as it was because a tick only
    ever replaces fields - of the status, its checks, conditions, phases and actions -
    and never changes a list or model it read in place (tests/unit/test_engine_ticks.py
    holds it over ticks that run, fail, act and complete). Validating the input a second
    time instead took 2-4 % of the operator's samples at 4,000 reviews (docs/benchmarks.md)."""
    return status.model_copy()


def _without_spent_memos(
    review: templates.ResolvedReview, checks: list[CheckStatus], completed: set[str]
) -> list[CheckStatus]:
    """``checks`` without the memos nothing will read again: a completed phase's checks
    never run again, and another check reads a memo only as the snapshot of a slow
    statements check (``snapshotFrom``), kept while a phase still to complete has one."""
    wanted = {
        c.spec.postgres.slow_statements.snapshot_from
        for p in review.phases
        if p.name not in completed
        for c in p.checks
        if c.spec.postgres is not None and c.spec.postgres.slow_statements is not None
    }
    return [
        c.model_copy(update={"memo": None}) if c.memo and c.phase in completed and c.name not in wanted else c
        for c in checks
    ]


def _rollback_done(actions: list[ActionRecord]) -> ActionRecord | None:
    """The rollback this review applied to its target, if any (dry runs do not count)."""
    return next(
        (r for r in actions if r.action == "rollback" and r.state is ActionState.DONE and not r.dry_run),
        None,
    )


def _rollback_text(target: str | None, rollback: ActionRecord) -> str:
    def side(revision: str | None, image: str | None) -> str:
        return f"revision {revision or '?'}" + (f" ({image})" if image else "")

    return (
        f"rolled back {target or 'the target'} from {side(rollback.from_revision, rollback.from_image)} "
        f"to {side(rollback.to_revision, rollback.to_image)}"
    )


def _rolled_back_condition(
    status: ReviewStatus,
    rollback: ActionRecord | None,
    now: datetime.datetime,
    generation: int | None,
) -> list[Condition]:
    """RolledBack: True with from/to once this review rolled its target back."""
    if rollback is None:
        message = "the target was not rolled back"
        return verdicts.set_condition(
            status.conditions, "RolledBack", "False", "NotRolledBack", message, now, generation
        )
    message = f"{_rollback_text(status.target, rollback)} at {rollback.at}: {rollback.cause}"
    return verdicts.set_condition(
        status.conditions, "RolledBack", "True", "RolledBack", message, now, generation
    )
