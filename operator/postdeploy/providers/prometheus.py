"""PromQL checks: instant values, reduced ranges, trends, and baselines.

Called by ``postdeploy.engine`` for a check with a ``prometheus`` block
(``models.checks.PrometheusCheck``). The engine builds one ``PrometheusProvider`` at
start-up (operator-wide default URL and timeout) and closes it at clean-up.

What one run does:

Evaluation times are ``ctx.now`` rounded down to the whole second
(``decisions.phases.aligned``), the grid the engine schedules runs on, so identical
queries of reviews due in the same second coincide and are sent once (``coalescing``).

- **instant** (no ``range``): the templated query evaluated at that time; a scalar is
  the value, several series are combined by ``aggregate`` (max, min, sum, mean), or
  counted (``count``: how many series have a finite value; no series at all is the
  value 0, a real answer such as "no new error types", not missing data).
- **range** with ``reduce``: a range query over ``[now - range, now]`` at ``step``;
  each series' samples are reduced (last, mean, max, min), then series are combined.
  ``range`` is a duration, or ``phase`` (since the phase started) or ``sinceDeploy``
  (since deployedAt), never shorter than one ``step``.
- **range** with ``trend``: per series, ``slope`` is the least-squares slope per
  hour, ``mannKendall`` Kendall's tau (details ``pValue``, ``trend``) and
  ``timeToLimit`` the hours until the fitted line reaches the series' value of
  ``limitQuery`` (``1e9`` and ``growing: false`` when it does not grow significantly);
  one limit applies to every series, several are paired with the series by labels;
  ``relativeChange`` fits a Theil-Sen line (robust to outliers) and reports how much it
  moved from the window's first sample to its last, relative to where it started
  (``±1e9`` when it started at 0), with ``absoluteChange``, ``startValue``,
  ``endValue`` and Mann-Kendall's ``pValue``/``tau`` in the details, so a condition
  can require a change that is both large and significant. Every trend reports
  ``windowHours``. Mann-Kendall and Theil-Sen compare every pair of samples, so a
  series of more than ``trends.PAIRWISE_POINTS`` samples is first averaged over consecutive
  blocks down to that many; the analysis (``postdeploy.decisions.trends``, pure) runs in
  a worker thread.
  ``max``/``min`` pick the series with the largest/smallest statistic; for
  ``timeToLimit`` ``max`` (the default, "the worst") picks the series that reaches
  its limit first and ``min`` the last. ``sum``/``mean`` add or average the series
  sample by sample first and analyse that one series.
- **compare** (``models.checks.Comparison``): counts after vs before the deployment,
  compared anytime-valid; ``prometheus_compare`` asks, ``decisions.sequential`` compares.
  The provider keeps each comparison's running test (``self.comparisons``), so a
  run asks Prometheus only for the batches it has not kept, and recounts only the
  newest few (``prometheus_compare.HOLD``).
- **baseline** (``models.checks.Baseline``): the same measurement, made the same way,
  as of ``now - offset`` or as of ``deployedAt`` (``preDeploy``). A baseline that
  cannot be measured leaves ``Measurement.baseline`` empty with ``baselineNote`` in
  the details; the measurement itself stands. A ``preDeploy`` baseline measured
  ``BASELINE_SETTLED`` or more after deployedAt cannot change any more: it is kept in
  the check's memo (with its query and time) and reused by later runs.

NaN and infinite samples are ignored; a query with nothing finite left is NoData.
Prometheus being down, slow, or refusing the query is an Error measurement, never an
exception. Queries are sent from the event loop by ``prometheus_api`` (one pooled
aiohttp session for every Prometheus URL, at most ``_CONNECTIONS`` requests at once).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from postdeploy.decisions import phases, templating, trends
from postdeploy.kit import details as details_
from postdeploy.kit import durations, exceptions
from postdeploy.models.checks import Baseline, PrometheusCheck
from postdeploy.models.measurements import Measurement, MeasurementState, ReviewContext
from postdeploy.providers import coalescing, prometheus_compare
from postdeploy.providers.prometheus_api import PrometheusApi

__all__ = ["BASELINE_SETTLED", "SERIES_SHOWN", "PrometheusProvider"]

logger = logging.getLogger(__name__)

SERIES_SHOWN = 20  # series listed in the details
_CONNECTIONS = 32  # concurrent Prometheus requests per operator
# A pre-deployment baseline looks only at samples from before deployedAt; once this
# much later every scrape of that time has landed, so its value is kept in the check's
# memo and not asked again (at 2,000 reviews that was over half of all queries).
BASELINE_SETTLED = datetime.timedelta(minutes=2)
_MAX_POINTS = 11_000  # Prometheus refuses range queries with more points per series


_REDUCERS: dict[str, Callable[[Sequence[float]], float]] = {
    "last": lambda values: values[-1],
    "mean": lambda values: math.fsum(values) / len(values),
    "max": max,
    "min": min,
}


class PrometheusProvider:
    """Measures PromQL; one instance serves every check of every review."""
    limits_itself = True

    def __init__(
        self,
        default_url: str | None,
        timeout_seconds: float = 10,
        concurrency: int | None = None,
        api: PrometheusApi | None = None,
        comparisons: prometheus_compare.Comparisons | None = None,
    ) -> None:
        self._default_url = default_url
        # ``api``: another transport (the backtest's, which batches a replay's queries).
        self._api = api or PrometheusApi(timeout_seconds, connections=_CONNECTIONS)
        # Identical queries at the same (aligned) evaluation time — reviews of one
        # target, namespace-wide checks — are sent once; the answer is shared.
        # ``concurrency`` bounds the queries Prometheus gets at once.
        self.coalescer: coalescing.Coalescer[Any] = coalescing.Coalescer(
            ttl=2 * phases.EVALUATION_STEP, concurrency=concurrency
        )
        # What the comparison checks counted at earlier runs, so a run asks and adds
        # only the batches it has not kept (``comparisons``: another memory, e.g. the
        # backtest's, which keeps batches at once as its history has long settled).
        self.comparisons = comparisons if comparisons is not None else prometheus_compare.Comparisons()

    async def close(self) -> None:
        """Close the HTTP connections to every Prometheus this provider talked to."""
        await self._api.close()

    def _range_query(self, url: str) -> prometheus_compare.RangeQuery:
        """Range queries to ``url`` through the coalescer (for the comparison mode)."""

        async def ask(query: str, start: float, end: float, step: float) -> Any:
            return await self.coalescer.run(
                (url, "range", query, end, end - start, step),
                lambda: self._api.query_range(url, query, start, end, step),
            )

        return ask

    async def measure(
        self, spec: PrometheusCheck, ctx: ReviewContext, baseline: Baseline | None = None
    ) -> Measurement:
        url = (spec.address or self._default_url or "").rstrip("/")
        if not url:
            return Measurement.error(
                "no Prometheus URL: set prometheus.address in the check, the review's "
                "providers, or the operator's default",
                query=spec.query,
            )
        now = phases.aligned(ctx.now)
        # Windows ({{sinceDeploy}}, range: phase) end where the query is evaluated.
        ctx = dataclasses.replace(ctx, now=now)
        if spec.compare is not None:
            if baseline is not None:
                return Measurement.error(
                    "compare brings its own before-windows: remove baseline", query=spec.query
                )
            return await prometheus_compare.measure(spec, ctx, self._range_query(url), self.comparisons, url)
        values = ctx.template_values()
        try:
            query = templating.render_promql(spec.query, values)
            limit_query = templating.render_promql(spec.limit_query, values) if spec.limit_query else None
            step = durations.parse_duration(spec.step).total_seconds()
            range_ = _range(spec.range, ctx, step)
        except ValueError as exc:
            return Measurement.error(f"invalid check: {exc}", query=spec.query)
        if spec.trend is not None and range_ is None:
            return Measurement.error(f"trend {spec.trend} needs a range", query=query)
        if spec.trend == "timeToLimit" and limit_query is None:
            return Measurement.error("trend timeToLimit needs limitQuery", query=query)

        evaluation = _Evaluation(self._api, url, spec, query, limit_query, range_, step, self.coalescer)
        when = _baseline_time(baseline, ctx, now)
        if when is None:
            measurement = await evaluation.run(now)
        else:
            kept = _kept_baseline(ctx.memo, query, when)
            if kept is not None:
                measurement, earlier = await evaluation.run(now), Measurement.ok(kept)
            else:
                measurement, earlier = await asyncio.gather(evaluation.run(now), evaluation.run(when))
            if measurement.state is MeasurementState.OK:
                extra: dict[str, Any] = {"baselineAt": when.isoformat()}
                if earlier.state is MeasurementState.OK:
                    measurement = dataclasses.replace(measurement, baseline=earlier.value)
                else:
                    extra["baselineNote"] = f"no baseline: {earlier.message}"
                measurement = dataclasses.replace(measurement, details={**measurement.details, **extra})
            settled = baseline is not None and baseline.pre_deploy and now - when >= BASELINE_SETTLED
            if kept is None and settled and earlier.state is MeasurementState.OK:
                memo = {"baseline": {"query": query, "at": when.isoformat(), "value": earlier.value}}
                measurement = dataclasses.replace(measurement, memo={**ctx.memo, **memo})
        return dataclasses.replace(measurement, query=query)


def _range(text: str | None, ctx: ReviewContext, step: float) -> datetime.timedelta | None:
    """The range a check's ``range`` stands for now; at least one step."""
    if text is None:
        return None
    if text == "phase":
        window = ctx.now - ctx.phase_start
    elif text == "sinceDeploy":
        window = ctx.now - ctx.deployed_at
    else:
        window = durations.parse_duration(text)
    return max(window, datetime.timedelta(seconds=max(step, 1.0)))


def _kept_baseline(memo: Mapping[str, Any], query: str, when: datetime.datetime) -> float | None:
    """The pre-deployment baseline measured on an earlier run, if it was of this query."""
    kept = memo.get("baseline")
    if not isinstance(kept, Mapping) or kept.get("query") != query or kept.get("at") != when.isoformat():
        return None
    value = kept.get("value")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _baseline_time(
    baseline: Baseline | None, ctx: ReviewContext, now: datetime.datetime
) -> datetime.datetime | None:
    if baseline is None:
        return None
    if baseline.offset:
        return now - durations.parse_duration(baseline.offset)
    if baseline.pre_deploy:
        return ctx.deployed_at
    return None


@dataclasses.dataclass(frozen=True)
class _Evaluation:
    """One check's query, evaluable as of any time (now, or a baseline's time)."""

    api: PrometheusApi
    url: str
    spec: PrometheusCheck
    query: str
    limit_query: str | None
    range: datetime.timedelta | None
    step: float
    coalescer: coalescing.Coalescer[Any]

    async def run(self, at: datetime.datetime) -> Measurement:
        try:
            if self.range is None:
                return self._instant(await self._instant_series(self.query, at), at)
            series = await self._range_series(at)
            if self.spec.trend is None:
                return self._reduced(series, at)
            limits = None
            if self.limit_query is not None:
                limits = await self._instant_series(self.limit_query, at)
            # Pairwise tests are O(n²) in pure Python: keep them off the event loop.
            return await asyncio.to_thread(self._trend, series, limits, at)
        except exceptions.QueryFailed as exc:
            return Measurement.error(str(exc))

    # --- asking Prometheus ----------------------------------------------------------

    async def _instant_series(self, query: str, at: datetime.datetime) -> list[trends.Series]:
        # Whole seconds: Prometheus's own resolution for rules, and what lets queries of
        # different reviews in the same tick coincide.
        second = math.floor(at.timestamp())
        logger.debug("PromQL instant query at %s: %s", at.isoformat(), query)
        result = await self.coalescer.run(
            (self.url, "instant", query, second),
            lambda: self.api.query(self.url, query, second),
        )
        return _parse_instant(result)

    async def _range_series(self, at: datetime.datetime) -> list[trends.Series]:
        assert self.range is not None
        seconds = self.range.total_seconds()
        step = max(self.step, math.ceil(seconds / _MAX_POINTS))
        logger.debug("PromQL range query %gs ending %s: %s", seconds, at.isoformat(), self.query)
        end = math.floor(at.timestamp())
        # Whole seconds, so the windows of reviews due in the same second coincide.
        start = round(end - seconds)
        result = await self.coalescer.run(
            (self.url, "range", self.query, end, seconds, step),
            lambda: self.api.query_range(self.url, self.query, start, end, step),
        )
        return _parse_range(result)

    # --- turning series into a measurement -----------------------------------------------

    def _instant(self, series: list[trends.Series], at: datetime.datetime) -> Measurement:
        if not series and self.spec.aggregate == "count":
            return self._combined([], 0, at)
        if not series:
            return Measurement.no_data("the query returned no series")
        finite = [s for s in series if s.values]
        if not finite:
            return Measurement.no_data(f"all {len(series)} series are NaN or infinite")
        latest = [(s.labels, s.values[-1]) for s in finite]
        return self._combined(latest, len(series), at)

    def _reduced(self, series: list[trends.Series], at: datetime.datetime) -> Measurement:
        finite = [s for s in series if s.values]
        if not series and self.spec.aggregate == "count":
            return self._combined([], 0, at)
        if not finite:
            return Measurement.no_data(
                "the range query returned no finite samples"
                + (f" ({len(series)} series, all NaN or infinite)" if series else "")
            )
        reducer = _REDUCERS[self.spec.reduce]
        reduced = [(s.labels, reducer(s.values)) for s in finite]
        return self._combined(reduced, len(series), at)

    def _combined(
        self, series: list[tuple[dict[str, str], float]], total: int, at: datetime.datetime
    ) -> Measurement:
        if self.spec.aggregate == "count":
            value = float(len(series))
        else:
            value = trends.AGGREGATES[self.spec.aggregate](tuple(v for _, v in series))
        if not math.isfinite(value):  # a sum of huge numbers
            return Measurement.no_data(f"the {self.spec.aggregate} of the series is not finite")
        worst_first = sorted(series, key=lambda s: s[1], reverse=self.spec.aggregate != "min")
        details = {
            **self._window(at),
            "seriesCount": total,
            "series": [{"labels": labels, "value": v} for labels, v in worst_first[:SERIES_SHOWN]],
        }
        return Measurement.ok(value, details=details_.fit(details, "series"))

    def _trend(
        self, series: list[trends.Series], limits: list[trends.Series] | None, at: datetime.datetime
    ) -> Measurement:
        if self.spec.aggregate in ("sum", "mean"):
            series = trends.pointwise(series, self.spec.aggregate)
        candidates = [s for s in series if len(s.values) >= trends.MIN_SAMPLES]
        if not candidates:
            most = max((len(s.values) for s in series), default=0)
            return Measurement.no_data(
                f"a trend needs at least {trends.MIN_SAMPLES} finite samples per series, got at most {most}"
            )
        extra: dict[str, Any] = {}
        if self.spec.trend == "timeToLimit":
            assert limits is not None
            paired, missing = trends.pair_limits(candidates, limits)
            if not paired:
                return Measurement.no_data(
                    "limitQuery returned no finite value matching the query's series"
                    if limits
                    else "limitQuery returned no series"
                )
            if missing:
                extra["seriesWithoutLimit"] = missing
            results = [trends.time_to_limit(s, limit) for s, limit in paired]
            pick = min if self.spec.aggregate != "min" else max
        else:
            analyse = trends.ANALYSES[self.spec.trend or "slope"]
            results = [analyse(s) for s in candidates]
            pick = min if self.spec.aggregate == "min" else max
        chosen = pick(results, key=lambda r: r.value)
        ranked = sorted(results, key=lambda r: r.value, reverse=pick is max)
        details = {
            **self._window(at),
            **chosen.details,
            **extra,
            "analysis": self.spec.trend,
            "windowHours": trends.span_hours(chosen.series),
            "labels": chosen.labels,
            "seriesCount": len(series),
            "series": [{"labels": r.labels, "value": r.value} for r in ranked[:SERIES_SHOWN]],
        }
        return Measurement.ok(chosen.value, details=details_.fit(details, "series"))

    def _window(self, at: datetime.datetime) -> dict[str, Any]:
        window: dict[str, Any] = {"evaluatedAt": at.isoformat()}
        if self.range is not None:
            window["range"] = self.spec.range
            window["rangeSeconds"] = self.range.total_seconds()
            window["step"] = self.spec.step
            if self.spec.trend is None:
                window["reduce"] = self.spec.reduce
        if self.limit_query is not None and self.spec.trend == "timeToLimit":
            window["limitQuery"] = self.limit_query
        return window


# --- parsing the API's answers -----------------------------------------------------------


def _sample(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _parse_instant(result: Any) -> list[trends.Series]:
    """Series of an instant query: a vector, or a scalar as one unlabelled series."""
    if not isinstance(result, list):
        raise exceptions.QueryFailed(f"unexpected answer from Prometheus: {type(result).__name__}")
    if len(result) == 2 and not isinstance(result[0], dict):  # scalar or string
        try:
            number = float(result[1])
        except (TypeError, ValueError):
            raise exceptions.QueryFailed("the query returns a string, not a number") from None
        if not math.isfinite(number):
            return [trends.Series({}, [], [])]
        return [trends.Series({}, [float(result[0])], [number])]
    series = []
    for item in result:
        if not isinstance(item, dict):
            raise exceptions.QueryFailed("unexpected answer from Prometheus: not a list of series")
        if "values" in item:
            raise exceptions.QueryFailed(
                "the query returns a range vector: wrap it in a function such as rate() or "
                "avg_over_time(), or set range to query over a window"
            )
        labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
        sample = item.get("value")  # absent for a native histogram sample
        if isinstance(sample, list) and len(sample) == 2 and _sample(sample[1]) is not None:
            series.append(trends.Series(labels, [float(sample[0])], [float(sample[1])]))
        else:
            series.append(trends.Series(labels, [], []))
    return series


def _parse_range(result: Any) -> list[trends.Series]:
    if not isinstance(result, list):
        raise exceptions.QueryFailed(f"unexpected answer from Prometheus: {type(result).__name__}")
    series = []
    for item in result:
        if not isinstance(item, dict):
            raise exceptions.QueryFailed("unexpected answer from Prometheus: not a list of series")
        labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
        times, values = [], []
        for sample in item.get("values") or []:
            number = _sample(sample[1])
            if number is not None:
                times.append(float(sample[0]))
                values.append(number)
        series.append(trends.Series(labels, times, values))
    return series
