"""Replaying a review over past releases on a simulated clock.

Called by ``kubectl postdeploy backtest`` (``postdeploy.plugin.backtesting``) and by
the benchmark. For each release it walks the resolved review as the engine does
(``postdeploy.engine.ticks``): ``decisions.phases.plan`` says which checks are due at
the simulated time and when to wake next; each due check is measured by the real
provider with ``ReviewContext.now`` set to that time, decided by
``decisions.checks.record`` (and ``finish`` at its phase's end), and the verdict comes
from ``decisions.verdicts.verdict``. Nothing here judges a value itself.

What is replayed (``replayable``): ``prometheus`` checks (every mode: instant, ranges,
trends, baselines, whatever the provider does with ``ctx.now``), ``alertmanager``
checks as counts over the alerting rules' queries (``postdeploy.backtests.alerts``;
listed as not replayed when their matchers cannot be written so), ``postgres``
queries and ``statistics`` tests (their SQL runs read-only with ``%(now)s`` = the
slot's time, so it sees the business tables as of then only if the query filters on
time, as the built-in template's do). What is not, and why, is said by
``replayable`` and listed in the result: the cluster (``kubernetes``, ``job``,
``cleanup``), people (``manual``), endpoints (``http``), ``report``, and
``pg_stat_statements`` (cumulative totals since its last reset, no history). A
verdict is the verdict of the replayed checks.

A release whose phases run past ``until`` (default: now) is replayed up to then; its
verdict is then the engine's verdict of a running review (``Failing`` is final, since
a Failed check stays Failed; ``Passing`` is not). Prometheus requests are learned in
a recording pass and batched into range queries, asked while the releases are replayed
(``postdeploy.backtests.batches``).

Read-only by construction: the only clients are Prometheus's query API (POST of
queries, and a GET of its alerting rules) and PostgreSQL in a read-only transaction; nothing from
``postdeploy.actions`` or the Kubernetes API is used here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import time
import types
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

import httpx

from postdeploy.backtests import alerts, batches
from postdeploy.decisions import checks as check_decisions
from postdeploy.decisions import phases as phase_plans
from postdeploy.decisions import templates, verdicts
from postdeploy.models.measurements import Measurement, ReviewContext, Target
from postdeploy.models.reviews import CheckState, CheckStatus
from postdeploy.providers import postgres, prometheus, prometheus_compare, statistics

__all__ = [
    "Backtest",
    "CheckOutcome",
    "NotReplayed",
    "Release",
    "ReleaseOutcome",
    "Replayer",
    "replayable",
]

_NOT_REPLAYED = {
    "kubernetes": "reads the cluster as it is now; its past state is not kept",
    "job": "runs a Job now (a backtest creates nothing)",
    "cleanup": "acts on the cluster now (a backtest changes nothing)",
    "manual": "a person's confirmation, not a measurement",
    "http": "an endpoint answers for now, not for a past time",
    "report": "builds the report of a live review",
}


def replayable(check: templates.ResolvedCheck) -> str | None:
    """None when the check can be replayed, else why not."""
    name = check.spec.provider_name
    if name in _NOT_REPLAYED:
        return _NOT_REPLAYED[name]
    if check.spec.postgres is not None and check.spec.postgres.slow_statements is not None:
        return "pg_stat_statements keeps totals since its last reset, not their history"
    return None


@dataclasses.dataclass(frozen=True)
class Release:
    at: datetime.datetime  # timezone-aware UTC: the replay's deployedAt
    version: str = "unknown"
    source: str = ""  # where it was found: "given", "ReplicaSet checkout-5d4f", "PromQL"


@dataclasses.dataclass(frozen=True)
class NotReplayed:
    check: str
    phase: str
    provider: str
    reason: str


@dataclasses.dataclass(frozen=True)
class CheckOutcome:
    name: str
    phase: str
    provider: str
    state: str
    runs: int
    failures: int
    value: float | None
    baseline: float | None
    message: str | None
    failed_at: datetime.datetime | None = None


@dataclasses.dataclass(frozen=True)
class ReleaseOutcome:
    release: Release
    verdict: str
    complete: bool
    replayed_until: datetime.datetime
    checks: tuple[CheckOutcome, ...]

    @property
    def first_failure(self) -> CheckOutcome | None:
        failed = [c for c in self.checks if c.failed_at is not None]
        return min(failed, key=lambda c: c.failed_at or self.release.at) if failed else None


@dataclasses.dataclass(frozen=True)
class Backtest:
    target: Target
    template: str
    until: datetime.datetime
    releases: tuple[ReleaseOutcome, ...]
    replayed: tuple[str, ...]  # check names
    not_replayed: tuple[NotReplayed, ...]
    queries: Mapping[str, int]  # Prometheus requests: sent (instant, range), answered from batches
    seconds: float
    cpu_seconds: float = 0.0  # this process's CPU time (the machine may be shared)


Measure = Callable[[templates.ResolvedCheck, ReviewContext], Awaitable[Measurement]]


class Replayer:
    """Replays one resolved review for one target over any number of releases."""

    def __init__(
        self,
        review: templates.ResolvedReview,
        target: Target,
        *,
        prometheus_url: str | None,
        postgres_dsn: str | None = None,
        until: datetime.datetime | None = None,
        batch: bool = True,
        concurrency: int = 4,
        measure_timeout: float = 60.0,
        template: str = "",
        api: batches.ReplayApi | None = None,
        rules: Sequence[alerts.Rule] | None = None,
    ) -> None:
        self.target = target
        self.template = template
        self.until = until or datetime.datetime.now(datetime.UTC)
        self.batch = batch
        self.concurrency = concurrency
        self.measure_timeout = measure_timeout
        self.api = api or batches.ReplayApi()
        self.prometheus_url = prometheus_url
        self.rules = list(rules) if rules is not None else None  # None: read them from Prometheus
        self._prefetching: asyncio.Future[None] | None = None  # the covers being asked
        pg = postgres.PostgresProvider(default_dsn=postgres_dsn)
        self._providers: dict[str, Any] = {
            "prometheus": self._prometheus(),
            "postgres": pg,
            "statistics": statistics.StatisticsProvider(pg),
        }
        kept, skipped = [], []
        for phase in review.phases:
            checks = []
            for check in phase.checks:
                reason = replayable(check)
                if reason is None:
                    checks.append(check)
                else:
                    skipped.append(NotReplayed(check.name, phase.name, check.spec.provider_name, reason))
            kept.append(dataclasses.replace(phase, checks=tuple(checks)))
        self.review = dataclasses.replace(review, phases=tuple(kept))
        self.not_replayed = skipped

    def _prometheus(self) -> prometheus.PrometheusProvider:
        # A provider per pass: its coalescer remembers answers for a while, and the
        # recording pass's empty answers must not be served to the real one.
        # The history replayed has long settled: a batch is kept as soon as it counts.
        return prometheus.PrometheusProvider(
            self.prometheus_url,
            api=self.api,
            comparisons=prometheus_compare.Comparisons(hold=datetime.timedelta(0)),
        )

    async def close(self) -> None:
        await self.api.close()

    async def _alert_rules(self) -> None:
        """Alertmanager checks become counts over the alerting rules' queries (``alerts``);
        those that cannot are moved to the not-replayed list."""
        checks = [c for p in self.review.phases for c in p.checks if c.spec.alertmanager is not None]
        if not checks:
            return
        rules = self.rules
        problem = "no Prometheus URL to read the alerting rules from"
        if rules is None and self.prometheus_url:
            try:
                rules = await alerts.fetch_rules(self.prometheus_url)
            except (httpx.HTTPError, ValueError) as error:
                problem = f"cannot read the alerting rules from Prometheus: {type(error).__name__}: {error}"
        now = self.until
        values = ReviewContext(
            review_name="backtest",
            review_namespace=self.target.namespace,
            review_uid="",
            target=self.target,
            version="unknown",
            deployed_at=now,
            now=now,
            phase_name="",
            phase_start=now,
            phase_end=now,
            check_name="",
            parameters=self.review.spec.parameters,
        ).template_values()
        phases = []
        for phase in self.review.phases:
            kept = []
            for check in phase.checks:
                if check.spec.alertmanager is None:
                    kept.append(check)
                    continue
                replaced = alerts.translate(check, rules, values) if rules is not None else problem
                if isinstance(replaced, str):
                    self.not_replayed.append(NotReplayed(check.name, phase.name, "alertmanager", replaced))
                else:
                    kept.append(replaced)
            phases.append(dataclasses.replace(phase, checks=tuple(kept)))
        self.review = dataclasses.replace(self.review, phases=tuple(phases))

    async def run(self, releases: Sequence[Release]) -> Backtest:
        started = time.monotonic()
        cpu = time.process_time()
        await self._alert_rules()
        if self.batch:
            prometheus_only = dataclasses.replace(
                self.review,
                phases=tuple(
                    dataclasses.replace(p, checks=tuple(c for c in p.checks if c.spec.prometheus is not None))
                    for p in self.review.phases
                ),
            )
            self.api.recording = True
            try:
                await self._all(prometheus_only, releases, recording=True)
            finally:
                self.api.recording = False
                self._providers["prometheus"] = self._prometheus()
            # The covers are asked while the replay runs: a request waits for its own.
            self._prefetching = asyncio.ensure_future(
                self.api.prefetch(batches.plan_covers(self.api.instants, self.api.ranges))
            )
            try:
                outcomes = await self._all(self.review, releases, recording=False)
            finally:
                await self._prefetching
        else:
            outcomes = await self._all(self.review, releases, recording=False)
        return Backtest(
            target=self.target,
            template=self.template,
            until=self.until,
            releases=tuple(outcomes),
            replayed=tuple(c.name for p in self.review.phases for c in p.checks),
            not_replayed=tuple(self.not_replayed),
            queries={
                "instant": self.api.sent["instant"],
                "range": self.api.sent["range"],
                "answeredFromBatches": self.api.answered,
            },
            seconds=time.monotonic() - started,
            cpu_seconds=time.process_time() - cpu,
        )

    async def _all(
        self, review: templates.ResolvedReview, releases: Sequence[Release], *, recording: bool
    ) -> list[ReleaseOutcome]:
        limit = asyncio.Semaphore(self.concurrency)

        async def one(release: Release) -> ReleaseOutcome:
            async with limit:
                return await self.replay(review, release, recording=recording)

        return list(await asyncio.gather(*(one(r) for r in releases)))

    async def replay(
        self, review: templates.ResolvedReview, release: Release, *, recording: bool = False
    ) -> ReleaseOutcome:
        """One release, as the engine's ticks would have run it (see the module docstring).

        ``recording``: every slot of every check is measured (no check stops at a final
        state), so that the recording pass sees every request the real pass may make.
        """
        deployed = release.at
        statuses: dict[str, CheckStatus] = {}
        completed: set[str] = set()
        failed_at: dict[str, datetime.datetime] = {}
        now = deployed
        complete = False
        while now <= self.until:
            plan = phase_plans.plan(review, deployed, now, frozenset(completed), statuses)
            # Finishing a phase may make the next one due at the same time (as in a tick).
            for _ in range(len(review.phases) + 1):
                if plan.phase is None:
                    break
                phase = plan.phase
                results = await asyncio.gather(
                    *(self._run(d, phase, review, release, now, statuses, recording) for d in plan.due)
                )
                for status in results:
                    if status.state is CheckState.FAILED and status.name not in failed_at:
                        failed_at[status.name] = now
                    statuses[status.name] = status
                if not plan.finish_phase:
                    break
                for check in phase.checks:
                    current = statuses.get(check.name) or check_decisions.initial(check)
                    statuses[check.name] = check_decisions.finish(check, current)
                completed.add(phase.name)
                plan = phase_plans.plan(review, deployed, now, frozenset(completed), statuses)
            if plan.phase is None:
                complete = True
                break
            if plan.wake_at is None or plan.wake_at > self.until or plan.wake_at <= now:
                break
            now = plan.wake_at
        checks = [statuses.get(c.name) or check_decisions.initial(c) for p in review.phases for c in p.checks]
        verdict = verdicts.verdict(checks, complete=complete, rolled_back=False)
        return ReleaseOutcome(
            release=release,
            verdict=verdict.value,
            complete=complete,
            replayed_until=now,
            checks=tuple(
                CheckOutcome(
                    name=s.name,
                    phase=s.phase,
                    provider=s.provider or "",
                    state=s.state.value,
                    runs=s.runs,
                    failures=s.failures,
                    value=s.value,
                    baseline=s.baseline,
                    message=s.message,
                    failed_at=failed_at.get(s.name),
                )
                for s in checks
            ),
        )

    async def _run(
        self,
        due: phase_plans.Due,
        phase: templates.ResolvedPhase,
        review: templates.ResolvedReview,
        release: Release,
        now: datetime.datetime,
        statuses: Mapping[str, CheckStatus],
        recording: bool,
    ) -> CheckStatus:
        check = due.check
        previous = statuses.get(check.name) or check_decisions.initial(check)
        deployed = release.at
        ctx = ReviewContext(
            review_name="backtest",
            review_namespace=self.target.namespace,
            review_uid="",
            target=self.target,
            version=release.version,
            deployed_at=deployed,
            now=now,
            phase_name=phase.name,
            phase_start=deployed + phase.start,
            phase_end=deployed + phase.end,
            check_name=check.name,
            interval=check.interval,
            memo=types.MappingProxyType(previous.memo or {}),
            parameters=review.spec.parameters,
            memos={name: s.memo for name, s in statuses.items() if s.memo},
        )
        measurement = await self._measure(check, ctx)
        if recording:  # only the requests matter: the check runs on, slot after slot
            return previous.model_copy(update={"last_slot": due.slot, "state": CheckState.RUNNING})
        status, _ = check_decisions.record(check, previous, measurement, now, due.slot)
        return status

    @contextlib.contextmanager
    def _armed(self, scope: asyncio.Timeout) -> Iterator[None]:
        """``measure_timeout`` from now or, while the covering range queries are still
        being asked, from when they are all answered: waiting for a cover is not a
        provider hanging."""
        loop = asyncio.get_running_loop()
        pending = self._prefetching
        if pending is None or pending.done():
            scope.reschedule(loop.time() + self.measure_timeout)
            yield
            return

        active = [True]  # a callback already scheduled may run after the scope ended

        def arm(_: object) -> None:
            if active[0]:
                scope.reschedule(loop.time() + self.measure_timeout)

        pending.add_done_callback(arm)
        try:
            yield
        finally:
            active[0] = False
            pending.remove_done_callback(arm)

    async def _measure(self, check: templates.ResolvedCheck, ctx: ReviewContext) -> Measurement:
        """As ``engine.registry.Providers.measure``: a provider that raises or hangs is an Error."""
        name = check.spec.provider_name
        try:
            async with asyncio.timeout(None) as scope:
                with self._armed(scope):
                    result: Measurement = await self._providers[name].measure(
                        check.spec.provider_spec, ctx, baseline=check.spec.baseline
                    )
                    return result
        except TimeoutError:
            return Measurement.error(f"{name} provider took longer than {self.measure_timeout:g}s")
        except Exception as error:  # a provider bug must not stop the backtest
            return Measurement.error(f"{name} provider failed: {type(error).__name__}: {error}")
