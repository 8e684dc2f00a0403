"""The report check: phase 4's deployment report, written in a check's slot.

Called by ``postdeploy.engine.registry`` for checks with a ``report`` block: it writes
a ConfigMap, so it is an act rather than a measurement provider, but its outcome is
recorded and decided like a measurement. Reads the review
as last written, draws the before/after charts from Prometheus, builds the report
(``postdeploy.reports.documents``) and writes it to the ConfigMap ``<review>-report``
(``postdeploy.reports.store``). The value is the number of action items; the details
name the ConfigMap. The final review rewrites the report once more with the SLOs and
sign-offs.
"""

from __future__ import annotations

import httpx

from postdeploy.kit import durations, kube
from postdeploy.models.crds import API_VERSION, REVIEWS
from postdeploy.models.measurements import Measurement, ReviewContext
from postdeploy.models.people import ReportCheck
from postdeploy.reports import documents, store

__all__ = ["ReportAct"]



class ReportAct:
    """Builds the deployment report and writes it to the review's ConfigMap."""

    def __init__(self, api: kube.Client, http: httpx.AsyncClient, prometheus_url: str | None) -> None:
        self.api = api
        self.http = http
        self.prometheus_url = prometheus_url

    async def act(self, spec: ReportCheck, ctx: ReviewContext) -> Measurement:
        try:
            body = await self.api.get(kube.path(API_VERSION, REVIEWS, ctx.review_namespace, ctx.review_name))
            url = ((body.get("spec") or {}).get("providers") or {}).get(
                "prometheusUrl"
            ) or self.prometheus_url
            window = durations.parse_duration(spec.window) if spec.window else None
            start, end = store.chart_window(ctx.deployed_at, ctx.now, window)
            step = durations.parse_duration(spec.step) if spec.step else None
            charts = await store.fetch_charts(
                self.http,
                url,
                spec.charts or store.DEFAULT_CHARTS,
                ctx.template_values(),
                start,
                end,
                step,
            )
            report = documents.build(body, charts, ctx.now)
            name = await store.write(self.api, body, report)
        except kube.ApiError as error:
            return Measurement.error(f"Kubernetes API: {error.status} {error.reason}")
        drawn = sum(1 for c in charts if c.points)
        return Measurement.ok(
            float(len(report.action_items)),
            message=f"report written to ConfigMap {name}: {len(report.action_items)} action item(s), "
            f"{drawn}/{len(charts)} chart(s) with data",
            query=f"ConfigMap {ctx.review_namespace}/{name}",
            details={"configMap": name, "actionItems": len(report.action_items), "charts": drawn},
        )
