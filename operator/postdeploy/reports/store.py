"""Where the report lives: the ConfigMap ``<review>-report``, owned by the review.

Called by the report check (phase 4, ``postdeploy.reports.publishing``) and by the
final review (``postdeploy.engine.finals``), which both rewrite it, and read by
``kubectl postdeploy report``. The ConfigMap holds ``report.md``, ``report.html``
and ``summary.json`` (verdict, SLOs, action items); owned by the review, it goes
when the review goes.

Charts come from Prometheus range queries (``fetch_charts``) over a window centred on
the deployment (``chart_window``): as long before it as the time since it, so the
deployment line sits in the middle and before and after compare like with like
(``report.window`` sets the span before, and after, explicitly). A chart whose query
fails is drawn from nothing ("no data") and the failure is in its caption, never an
error of the review.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from postdeploy.decisions import templating
from postdeploy.kit import kube
from postdeploy.models.crds import API_VERSION
from postdeploy.models.people import ChartSpec
from postdeploy.reports import documents, markdown, pages

__all__ = [
    "DEFAULT_CHARTS",
    "DEFAULT_RATE_WINDOW",
    "MIN_SPAN",
    "chart_window",
    "configmap_name",
    "fetch_charts",
    "render_all",
    "write",
]

logger = logging.getLogger(__name__)
_SELECTOR = 'namespace="{{namespace}}",job="{{target}}"'
# The default charts' rate() window: the review's (or its template's) parameter
# rateWindow, as the built-in checks use it, else this.
DEFAULT_RATE_WINDOW = "5m"
_WINDOW = "[{{rateWindow}}]"
DEFAULT_CHARTS = (
    ChartSpec(
        name="Error rate",
        unit="ratio",
        query=f'sum(rate(http_requests_total{{{_SELECTOR},code=~"5.."}}{_WINDOW}))'
        f" / sum(rate(http_requests_total{{{_SELECTOR}}}{_WINDOW}))",
    ),
    ChartSpec(
        name="p95 latency",
        unit="s",
        query="histogram_quantile(0.95, sum by (le) "
        f"(rate(http_request_duration_seconds_bucket{{{_SELECTOR}}}{_WINDOW})))",
    ),
    ChartSpec(
        name="Throughput", unit="req/s", query=f"sum(rate(http_requests_total{{{_SELECTOR}}}{_WINDOW}))"
    ),
    ChartSpec(
        name="Memory (working set)",
        unit="bytes",
        query='sum(container_memory_working_set_bytes{namespace="{{namespace}}",container="{{target}}"})',
    ),
)


MIN_SPAN = datetime.timedelta(minutes=1)


def chart_window(
    deployed_at: datetime.datetime, now: datetime.datetime, window: datetime.timedelta | None = None
) -> tuple[datetime.datetime, datetime.datetime]:
    """The charts' time range: ``window`` (default: the time since the deployment, at
    least ``MIN_SPAN``) before the deployment and as long after it."""
    span = window if window is not None else max(now - deployed_at, MIN_SPAN)
    return deployed_at - span, deployed_at + span


def configmap_name(review: str) -> str:
    return f"{review[:246]}-report"


async def _range(
    http: httpx.AsyncClient, url: str, query: str, start: float, end: float, step: float
) -> list[tuple[float, float]]:
    response = await http.get(
        f"{url.rstrip('/')}/api/v1/query_range",
        params={"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:.3f}"},
    )
    response.raise_for_status()
    result = response.json().get("data", {}).get("result", [])
    summed: dict[float, float] = {}
    for series in result:
        for at, raw in series.get("values", []):
            value = float(raw)
            if value == value and abs(value) != float("inf"):  # NaN and infinities are gaps
                summed[float(at)] = summed.get(float(at), 0.0) + value
    return sorted(summed.items())


async def fetch_charts(
    http: httpx.AsyncClient,
    prometheus_url: str | None,
    specs: Sequence[ChartSpec],
    values: Mapping[str, str],
    start: datetime.datetime,
    end: datetime.datetime,
    step: datetime.timedelta | None = None,
) -> list[documents.Chart]:
    charts = []
    values = {"rateWindow": DEFAULT_RATE_WINDOW, **values}
    span = max(1.0, (end - start).total_seconds())
    seconds = step.total_seconds() if step else max(1.0, span / 120)
    for spec in specs:
        try:
            query = templating.render_promql(spec.query, values)
        except ValueError as problem:
            charts.append(documents.Chart(spec.name, spec.unit, (), f"{spec.query} ({problem})"))
            continue
        if not prometheus_url:
            charts.append(documents.Chart(spec.name, spec.unit, (), f"{query} (no Prometheus configured)"))
            continue
        try:
            points = await _range(http, prometheus_url, query, start.timestamp(), end.timestamp(), seconds)
        except (httpx.HTTPError, ValueError) as error:
            logger.warning("chart %r: %s", spec.name, error)
            charts.append(documents.Chart(spec.name, spec.unit, (), f"{query} (Prometheus: {error})"[:500]))
            continue
        charts.append(
            documents.Chart(spec.name, spec.unit, tuple(points), query, start.timestamp(), end.timestamp())
        )
    return charts


def render_all(report: documents.Report) -> dict[str, str]:
    summary = {
        "review": f"{report.namespace}/{report.name}",
        "version": report.version,
        "verdict": report.verdict,
        "phase": report.phase,
        "generatedAt": report.generated_at,
        "actionItems": [i.dump() for i in report.action_items],
        "slos": [s.dump() for s in report.final.slos] if report.final else [],
        "charts": [
            {"title": c.title, "unit": c.unit, "source": c.source, "points": [list(p) for p in c.points]}
            for c in report.charts
        ],
    }
    return {
        "report.md": markdown.render(report),
        "report.html": pages.render(report),
        "summary.json": json.dumps(summary, indent=1),
    }


async def write(api: kube.Client, review: Mapping[str, Any], report: documents.Report) -> str:
    """Create or replace the report ConfigMap; returns its name."""
    metadata = review.get("metadata") or {}
    name = configmap_name(str(metadata.get("name")))
    namespace = str(metadata.get("namespace"))
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "postdeploy.io/review": str(metadata.get("name"))[:63],
                "postdeploy.io/part": "report",
            },
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "PostDeploymentReview",
                    "name": str(metadata.get("name")),
                    "uid": str(metadata.get("uid")),
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "data": render_all(report),
    }
    try:
        await api.create(kube.path("v1", "configmaps", namespace), body)
    except kube.ApiError as error:
        if error.status != 409:
            raise
        await api.patch(
            kube.path("v1", "configmaps", namespace, name),
            {"data": body["data"]},
            content_type=kube.STRATEGIC_MERGE_PATCH,
        )
    return name
