"""The final review: SLO table, customer impact, sign-offs, action items, final verdict.

Called by ``postdeploy.engine.ticks`` on every tick once all phases have completed,
until the review is Complete. It gathers what ``postdeploy.decisions.slos`` judges:

- rollout start (``deployedAt``) and complete (the target's Progressing condition
  ``NewReplicaSetAvailable``, else the first run of a ``rolloutComplete`` check that
  measured 1);
- availability samples: the history of ``availableRatio``/``readyRatio`` checks;
- the error ratio since the deployment and just before it, by a Prometheus range
  query (``spec.slo.errorRateQuery`` or the standard ``http_requests_total`` one),
  else the history and baseline of a check named ``error-rate``;
- whether this review rolled the target back (``status.actions``);

then the customer impact people entered (``kubectl postdeploy impact``), the
``ReviewSignoff`` objects of the review that the admission webhook stamped (others
are ignored as unverified), and the action items. The SLOs are measured once; the
sign-offs are read again on every tick while some are missing.

While a required role has not signed, the review is not Complete: phase
``AwaitingSignoff``, condition ``AwaitingSignoff`` True naming the roles. Then it
completes: condition ``Complete``, the Event ``ReviewCompleted``, the report rewritten
with the final review, and (through ``postdeploy.engine.executions``) the
``completion`` notification, whose summary is the review's message set here.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from postdeploy.decisions import slos as slo_decisions
from postdeploy.decisions import templates, templating, verdicts
from postdeploy.engine.settings import Settings
from postdeploy.kit import durations, kube, times, workloads
from postdeploy.models.crds import API_VERSION, SIGNOFFS
from postdeploy.models.measurements import ReviewContext, Target
from postdeploy.models.people import FinalReview, Impact, SignoffPolicy, SignoffRecord, SloTargets
from postdeploy.models.reviews import ReviewStatus
from postdeploy.reports import documents, inputs, store

__all__ = ["AWAITING_SIGNOFF", "FinalReviews", "Outcome", "signoff_policy"]

logger = logging.getLogger(__name__)
AWAITING_SIGNOFF = "AwaitingSignoff"
_DEFAULT_ERROR_RATE = (
    'sum(rate(http_requests_total{namespace="{{namespace}}",job="{{target}}",code=~"5.."}[5m]))'
    ' / sum(rate(http_requests_total{namespace="{{namespace}}",job="{{target}}"}[5m]))'
)


@dataclasses.dataclass(frozen=True)
class Outcome:
    awaiting: bool
    final: FinalReview
    message: str
    events: tuple[tuple[str, str, str], ...]  # (type, reason, message)


def signoff_policy(review: templates.ResolvedReview) -> SignoffPolicy:
    """The review's policy; a review on the built-in checklist awaits the default roles."""
    policy: SignoffPolicy | None = getattr(review.spec, "signoffs", None)
    if policy is not None:
        return policy
    on_default = review.spec.template_ref is None and review.spec.use_default_template
    return SignoffPolicy(required=on_default)


class FinalReviews:
    def __init__(self, api: kube.Client, http: httpx.AsyncClient, settings: Settings) -> None:
        self.api = api
        self.http = http
        self.settings = settings

    # --- inputs -------------------------------------------------------------------

    async def _rollout_completed(
        self,
        target: Target,
        status: ReviewStatus,
        deployed_at: datetime.datetime,
        measures: Mapping[str, str],
    ) -> datetime.datetime | None:
        try:
            workload = await workloads.read(self.api, target.kind, target.namespace, target.name)
        except kube.ApiError:
            workload = None
        for condition in ((workload or {}).get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Progressing" and condition.get("reason") == "NewReplicaSetAvailable":
                at = times.parse_or_none(condition.get("lastUpdateTime"))
                if at is not None and at >= deployed_at - datetime.timedelta(seconds=5):
                    return max(at, deployed_at)
        for check in status.checks:
            if measures.get(check.name) == "rolloutComplete":
                first = next((s for s in check.history if s.v == 1), None)
                if first is not None:
                    return times.parse_or_none(first.t)
        return None

    @staticmethod
    def _availability(
        status: ReviewStatus, measures: Mapping[str, str]
    ) -> list[tuple[datetime.datetime, float]]:
        for measure in ("availableRatio", "readyRatio"):
            for check in status.checks:
                if measures.get(check.name) == measure:
                    points = [(times.parse_or_none(s.t), s.v) for s in check.history if s.v is not None]
                    return [(t, v) for t, v in points if t is not None and v is not None]
        return []

    async def _range(self, url: str, query: str, start: float, end: float) -> list[tuple[float, float]]:
        step = max(1.0, (end - start) / 200)
        response = await self.http.get(
            f"{url.rstrip('/')}/api/v1/query_range",
            params={"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:.3f}"},
            timeout=self.settings.measure_timeout_seconds,
        )
        response.raise_for_status()
        points: list[tuple[float, float]] = []
        for series in response.json().get("data", {}).get("result", []):
            for at, raw in series.get("values", []):
                value = float(raw)
                if value == value and abs(value) != float("inf"):
                    points.append((float(at), value))
        return points

    async def _error_ratio(
        self,
        review: templates.ResolvedReview,
        slo: SloTargets,
        ctx: ReviewContext,
        status: ReviewStatus,
    ) -> tuple[list[tuple[datetime.datetime, float]], float | None, str]:
        providers = review.spec.providers
        url = (providers.prometheus_url if providers else None) or self.settings.prometheus_url
        if url:
            try:
                query = templating.render_promql(
                    slo.error_rate_query or _DEFAULT_ERROR_RATE, ctx.template_values()
                )
                start, end = ctx.deployed_at.timestamp(), ctx.now.timestamp()
                after = await self._range(url, query, start, end)
                before = await self._range(url, query, start - max(60.0, end - start), start)
                if after:
                    baseline = sum(v for _, v in before) / len(before) if before else None
                    points = [(datetime.datetime.fromtimestamp(t, datetime.UTC), v) for t, v in after]
                    return points, baseline, query
            except (httpx.HTTPError, ValueError) as error:
                logger.info("error-spike SLO: Prometheus: %s", error)
        check = next((c for c in status.checks if c.name == "error-rate"), None)
        if check is not None:
            found = [(times.parse_or_none(s.t), s.v) for s in check.history]
            return [(t, v) for t, v in found if t and v is not None], check.baseline, "check error-rate"
        return [], None, ""

    async def _signoffs(self, namespace: str, name: str) -> dict[str, SignoffRecord]:
        listed = await self.api.get(kube.path(API_VERSION, SIGNOFFS, namespace))
        found: dict[str, SignoffRecord] = {}
        for item in sorted(listed.get("items", []), key=lambda i: str((i.get("spec") or {}).get("signedAt"))):
            spec = item.get("spec") or {}
            signer = (spec.get("signedBy") or {}).get("username")
            if spec.get("review") != name or not signer:
                continue  # another review's, or not stamped by the webhook: unverified
            found[str(spec.get("role"))] = SignoffRecord(
                role=str(spec.get("role")),
                signed=True,
                by=signer,
                at=spec.get("signedAt"),
                notes=str(spec.get("notes", "")),
            )
        return found

    # --- the step -----------------------------------------------------------------

    async def conclude(
        self,
        body: Mapping[str, Any],
        review: templates.ResolvedReview,
        status: ReviewStatus,
        target: Target,
        now: datetime.datetime,
    ) -> Outcome:
        """Fill ``status.finalReview`` and the final conditions; whether sign-offs are awaited."""
        metadata = body.get("metadata") or {}
        name, namespace = str(metadata.get("name")), str(metadata.get("namespace"))
        annotations = dict(metadata.get("annotations") or {})
        previous: FinalReview | None = getattr(status, "final_review", None)
        final = previous.model_copy(deep=True) if previous else FinalReview()
        deployed_at = times.parse_or_none(status.deployed_at) or now
        slo: SloTargets = getattr(review.spec, "slo", None) or SloTargets()
        rollback = next(
            (
                a
                for a in getattr(status, "actions", [])
                if a.action == "rollback" and a.state.value == "Done" and not a.dry_run
            ),
            None,
        )
        if not final.slos:
            # The kubernetes checks by what they measure, from the spec (a settled check's
            # status no longer holds its query: decisions.checks.settle).
            measures = {
                c.name: str(c.spec.kubernetes.measure)
                for p in review.phases
                for c in p.checks
                if c.spec.kubernetes
            }
            ctx = ReviewContext(
                review_name=name,
                review_namespace=namespace,
                review_uid=str(metadata.get("uid", "")),
                target=target,
                version=status.version or "",
                deployed_at=deployed_at,
                now=now,
                phase_name="final-review",
                phase_start=now,
                phase_end=now,
                check_name="slo",
                parameters=review.spec.parameters,
            )
            errors, baseline, _ = await self._error_ratio(review, slo, ctx, status)
            final.slos = slo_decisions.evaluate(
                slo,
                slo_decisions.Inputs(
                    deployed_at=deployed_at,
                    now=now,
                    rollout_completed_at=await self._rollout_completed(target, status, deployed_at, measures),
                    availability=self._availability(status, measures),
                    error_ratio=errors,
                    error_baseline=baseline,
                    rolled_back=rollback is not None,
                    rollback_detail=(rollback.cause if rollback else "")[:200],
                ),
            )
            final.computed_at = now.isoformat()
        impact = inputs.impact(annotations)
        final.impact = Impact.model_validate(impact) if impact else None
        policy = signoff_policy(review)
        try:
            signed = await self._signoffs(namespace, name)
        except kube.ApiError as error:
            if error.status not in (403, 404):
                raise
            signed = {}  # no ReviewSignoff CRD, or not allowed to list: nobody signed
        final.signoffs = [signed.get(role) or SignoffRecord(role=role) for role in policy.roles]
        final.signoffs += [r for role, r in signed.items() if role not in policy.roles]
        final.awaiting = [r for r in policy.roles if r not in signed] if policy.required else []
        final.action_items = slo_decisions.action_items(status.checks, final.slos, inputs.notes(annotations))
        verdict = status.verdict.value if status.verdict else "Inconclusive"
        if slo_decisions.met(final.slos) is False and verdict == "Passed":
            verdict = "Failed"
        final.verdict = verdict
        final.report = store.configmap_name(name)
        awaiting = bool(final.awaiting)
        missed = [s.name for s in final.slos if s.met is False]
        slo_text = "all SLOs met" if not missed else f"SLOs missed: {', '.join(missed)}"
        if awaiting:
            status.phase = AWAITING_SIGNOFF
            message = f"awaiting sign-off by {', '.join(final.awaiting)}; verdict {verdict}, {slo_text}"
        else:
            final.completed_at = (previous.completed_at if previous else None) or now.isoformat()
            signers = ", ".join(f"{r.role}: {r.by}" for r in final.signoffs if r.signed) or "none required"
            message = f"final verdict {verdict}; {slo_text}; sign-offs: {signers}"
        events = self._events(previous, final, message)
        if previous is None or previous.dump() != final.dump():
            await self._write_report(body, status, final, review, now)
        status.final_review = final
        return Outcome(awaiting, final, message[:300], tuple(events))

    @staticmethod
    def settle(
        status: ReviewStatus, outcome: Outcome, now: datetime.datetime, generation: int | None
    ) -> None:
        """The final conditions and message, after the engine set the others."""
        final = outcome.final
        if outcome.awaiting:
            waiting = f"awaiting sign-off by {', '.join(final.awaiting)}"
            for type_, state in ((AWAITING_SIGNOFF, "True"), ("Complete", "False"), ("Progressing", "True")):
                reason = "SignoffMissing" if type_ == AWAITING_SIGNOFF else AWAITING_SIGNOFF
                status.conditions = verdicts.set_condition(
                    status.conditions, type_, state, reason, waiting, now, generation
                )
        else:
            signed = [f"{r.role}: {r.by}" for r in final.signoffs if r.signed]
            text = f"signed off by {', '.join(signed)}" if signed else "no sign-off required"
            status.conditions = verdicts.set_condition(
                status.conditions, AWAITING_SIGNOFF, "False", "SignedOff", text, now, generation
            )
        status.message = outcome.message

    @staticmethod
    def _events(previous: FinalReview | None, final: FinalReview, message: str) -> list[tuple[str, str, str]]:
        events = []
        if previous is None or not previous.slos:
            rows = "; ".join(f"{s.name} {s.value or 'unknown'} (target {s.target})" for s in final.slos)
            kind = "Warning" if any(s.met is False for s in final.slos) else "Normal"
            events.append((kind, "FinalReview", f"SLOs: {rows}"))
        before = {r.role for r in (previous.signoffs if previous else []) if r.signed}
        for record in final.signoffs:
            if record.signed and record.role not in before:
                events.append(("Normal", "SignedOff", f"{record.role} signed off by {record.by}"))
        if final.awaiting and (previous is None or previous.awaiting != final.awaiting):
            events.append(("Normal", AWAITING_SIGNOFF, f"awaiting sign-off by {', '.join(final.awaiting)}"))
        if not final.awaiting and (previous is None or previous.completed_at is None):
            kind = "Normal" if final.verdict == "Passed" else "Warning"
            events.append((kind, "ReviewCompleted", message))
        return events

    async def _write_report(
        self,
        body: Mapping[str, Any],
        status: ReviewStatus,
        final: FinalReview,
        review: templates.ResolvedReview,
        now: datetime.datetime,
    ) -> None:
        current = dict(body)
        raw = status.dump()
        raw["finalReview"] = final.dump()
        current["status"] = raw
        report_spec = next(
            (c.spec.report for p in review.phases for c in p.checks if getattr(c.spec, "report", None)), None
        )
        specs = (report_spec.charts if report_spec else None) or store.DEFAULT_CHARTS
        deployed_at = times.parse_or_none(status.deployed_at) or now
        window = durations.parse_duration(report_spec.window) if report_spec and report_spec.window else None
        providers = review.spec.providers
        url = (providers.prometheus_url if providers else None) or self.settings.prometheus_url
        metadata = body.get("metadata") or {}
        values = {
            "target": review.spec.target.name,
            "namespace": review.spec.target.namespace or str(metadata.get("namespace")),
            "version": status.version or "",
            "review": str(metadata.get("name")),
            **review.spec.parameters,
        }
        start, end = store.chart_window(deployed_at, now, window)
        charts: Sequence[documents.Chart] = await store.fetch_charts(
            self.http, url, specs, values, start, end
        )
        if not any(c.points for c in charts):
            charts = documents.history_charts(status.checks)
        try:
            await store.write(self.api, current, documents.build(current, charts, now))
        except kube.ApiError as error:
            logger.warning(
                "cannot write the report of %s: %s %s", metadata.get("name"), error.status, error.reason
            )
