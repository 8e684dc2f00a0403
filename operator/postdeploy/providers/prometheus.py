"""PromQL checks: instant values, reduced ranges, trends, and baselines.

Called by ``postdeploy.engine`` for a check with a ``prometheus`` block
(``models.checks.PrometheusCheck``). The engine builds one ``PrometheusProvider`` at
start-up (operator-wide default URL and timeout) and closes it at clean-up.

What one run does:

Evaluation times are ``ctx.now`` rounded down to a quarter of the check's interval
(1 s to 15 s, see ``coalescing.aligned``), so identical queries of reviews due in the same few
seconds coincide and are sent once (``coalescing``).

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
  series of more than ``PAIRWISE_POINTS`` samples is first averaged over consecutive
  blocks down to that many; the analysis runs in a worker thread.
  ``max``/``min`` pick the series with the largest/smallest statistic; for
  ``timeToLimit`` ``max`` (the default, "the worst") picks the series that reaches
  its limit first and ``min`` the last. ``sum``/``mean`` add or average the series
  sample by sample first and analyse that one series.
- **compare** (``models.checks.Comparison``): counts after vs before the deployment,
  compared anytime-valid; ``prometheus_compare`` asks, ``decisions.sequential`` compares.
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

from postdeploy.decisions import statistics, templating
from postdeploy.kit import details as details_
from postdeploy.kit import durations, exceptions
from postdeploy.models.checks import Baseline, PrometheusCheck
from postdeploy.models.measurements import Measurement, MeasurementState, ReviewContext
from postdeploy.providers import coalescing, prometheus_compare
from postdeploy.providers.prometheus_api import PrometheusApi

__all__ = ["BASELINE_SETTLED", "NOT_GROWING_HOURS", "PAIRWISE_POINTS", "SERIES_SHOWN", "PrometheusProvider"]

logger = logging.getLogger(__name__)

SERIES_SHOWN = 20  # series listed in the details
NOT_GROWING_HOURS = 1e9  # timeToLimit's value when the limit is never reached
NO_START = 1e9  # relativeChange's magnitude when the line starts at 0
PAIRWISE_POINTS = 1000  # samples a pairwise (O(n²)) analysis looks at, at most
_CONNECTIONS = 32  # concurrent Prometheus requests per operator
# A pre-deployment baseline looks only at samples from before deployedAt; once this
# much later every scrape of that time has landed, so its value is kept in the check's
# memo and not asked again (at 2,000 reviews that was over half of all queries).
BASELINE_SETTLED = datetime.timedelta(minutes=2)
_MAX_POINTS = 11_000  # Prometheus refuses range queries with more points per series
_MIN_TREND_SAMPLES = 3


@dataclasses.dataclass(frozen=True)
class _Series:
    labels: dict[str, str]
    times: list[float]  # Unix seconds
    values: list[float]  # finite only, matching ``times``


_AGGREGATES: dict[str, Callable[[Sequence[float]], float]] = {
    "max": max,
    "min": min,
    "sum": math.fsum,
    "mean": lambda values: math.fsum(values) / len(values),
}
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
    ) -> None:
        self._default_url = default_url
        # ``api``: another transport (the backtest's, which batches a replay's queries).
        self._api = api or PrometheusApi(timeout_seconds, connections=_CONNECTIONS)
        # Identical queries at the same (aligned) evaluation time — reviews of one
        # target, namespace-wide checks — are sent once; the answer is shared.
        # ``concurrency`` bounds the queries Prometheus gets at once.
        self.coalescer: coalescing.Coalescer[Any] = coalescing.Coalescer(
            ttl=2 * coalescing.MAX_ALIGN_SECONDS, concurrency=concurrency
        )

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
        now = coalescing.aligned(ctx.now, ctx.interval)
        # Windows ({{sinceDeploy}}, range: phase) end where the query is evaluated.
        ctx = dataclasses.replace(ctx, now=now)
        if spec.compare is not None:
            if baseline is not None:
                return Measurement.error(
                    "compare brings its own before-windows: remove baseline", query=spec.query
                )
            return await prometheus_compare.measure(spec, ctx, self._range_query(url))
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

    async def _instant_series(self, query: str, at: datetime.datetime) -> list[_Series]:
        # Whole seconds: Prometheus's own resolution for rules, and what lets queries of
        # different reviews in the same tick coincide.
        second = math.floor(at.timestamp())
        logger.debug("PromQL instant query at %s: %s", at.isoformat(), query)
        result = await self.coalescer.run(
            (self.url, "instant", query, second),
            lambda: self.api.query(self.url, query, second),
        )
        return _parse_instant(result)

    async def _range_series(self, at: datetime.datetime) -> list[_Series]:
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

    def _instant(self, series: list[_Series], at: datetime.datetime) -> Measurement:
        if not series and self.spec.aggregate == "count":
            return self._combined([], 0, at)
        if not series:
            return Measurement.no_data("the query returned no series")
        finite = [s for s in series if s.values]
        if not finite:
            return Measurement.no_data(f"all {len(series)} series are NaN or infinite")
        latest = [(s.labels, s.values[-1]) for s in finite]
        return self._combined(latest, len(series), at)

    def _reduced(self, series: list[_Series], at: datetime.datetime) -> Measurement:
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
            value = _AGGREGATES[self.spec.aggregate](tuple(v for _, v in series))
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
        self, series: list[_Series], limits: list[_Series] | None, at: datetime.datetime
    ) -> Measurement:
        if self.spec.aggregate in ("sum", "mean"):
            series = _pointwise(series, self.spec.aggregate)
        candidates = [s for s in series if len(s.values) >= _MIN_TREND_SAMPLES]
        if not candidates:
            most = max((len(s.values) for s in series), default=0)
            return Measurement.no_data(
                f"a trend needs at least {_MIN_TREND_SAMPLES} finite samples per series, got at most {most}"
            )
        extra: dict[str, Any] = {}
        if self.spec.trend == "timeToLimit":
            assert limits is not None
            paired, missing = _pair_limits(candidates, limits)
            if not paired:
                return Measurement.no_data(
                    "limitQuery returned no finite value matching the query's series"
                    if limits
                    else "limitQuery returned no series"
                )
            if missing:
                extra["seriesWithoutLimit"] = missing
            results = [_time_to_limit(s, limit) for s, limit in paired]
            pick = min if self.spec.aggregate != "min" else max
        else:
            analyse = _ANALYSES[self.spec.trend or "slope"]
            results = [analyse(s) for s in candidates]
            pick = min if self.spec.aggregate == "min" else max
        chosen = pick(results, key=lambda r: r.value)
        ranked = sorted(results, key=lambda r: r.value, reverse=pick is max)
        details = {
            **self._window(at),
            **chosen.details,
            **extra,
            "analysis": self.spec.trend,
            "windowHours": _span_hours(chosen.series),
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


# --- trend analysis of one series ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _TrendResult:
    series: _Series
    value: float
    details: dict[str, Any]

    @property
    def labels(self) -> dict[str, str]:
        return self.series.labels


def _slope(series: _Series) -> _TrendResult:
    hours = _hours(series)
    fit = statistics.linear_regression(hours, series.values)
    return _TrendResult(
        series,
        fit.slope,
        {
            "slopePerHour": fit.slope,
            "slopeStderr": fit.slope_stderr,
            "slopeCiLow": fit.slope_confidence_interval[0],
            "slopeCiHigh": fit.slope_confidence_interval[1],
            "rSquared": fit.r_squared,
            "pValue": fit.p_value,
            "samples": fit.n,
            "lastValue": series.values[-1],
        },
    )


def _mann_kendall(series: _Series) -> _TrendResult:
    result = statistics.mann_kendall(_thinned(series).values)
    return _TrendResult(
        series,
        result.tau,
        {
            "tau": result.tau,
            "pValue": result.p_value,
            "z": result.z,
            "trend": result.trend,
            "samples": result.n,
            "lastValue": series.values[-1],
        },
    )


def _time_to_limit(series: _Series, limit: float) -> _TrendResult:
    hours = _hours(series)
    fit = statistics.linear_regression(hours, series.values)
    reach = statistics.time_to_reach(hours, series.values, limit)  # in the times' unit
    growing = reach is not None
    value = reach if reach is not None else NOT_GROWING_HOURS
    return _TrendResult(
        series,
        value,
        {
            "hoursToLimit": value,
            "growing": growing,
            "limit": limit,
            "lastValue": series.values[-1],
            "slopePerHour": fit.slope,
            "rSquared": fit.r_squared,
            "pValue": fit.p_value,
            "samples": fit.n,
        },
    )


def _relative_change(series: _Series) -> _TrendResult:
    """How far a robust line moved over the window, relative to where it started."""
    thin = _thinned(series)
    origin = series.times[0]
    fit = statistics.theil_sen([(t - origin) / 3600.0 for t in thin.times], thin.values)
    # The line at the window's first sample (hour 0) and at its last one.
    start = fit.intercept
    end = fit.intercept + fit.slope * _span_hours(series)
    change = end - start
    relative = change / abs(start) if start != 0 else math.copysign(NO_START, change) if change else 0.0
    trend = statistics.mann_kendall(thin.values)
    return _TrendResult(
        series,
        relative,
        {
            "relativeChange": relative,
            "absoluteChange": change,
            "startValue": start,
            "endValue": end,
            "slopePerHour": fit.slope,
            "tau": trend.tau,
            "pValue": trend.p_value,
            "trend": trend.trend,
            "samples": len(series.values),
            "lastValue": series.values[-1],
        },
    )


_ANALYSES: dict[str, Callable[[_Series], _TrendResult]] = {
    "slope": _slope,
    "mannKendall": _mann_kendall,
    "relativeChange": _relative_change,
}


def _hours(series: _Series) -> list[float]:
    start = series.times[0]
    return [(t - start) / 3600.0 for t in series.times]


def _span_hours(series: _Series) -> float:
    return (series.times[-1] - series.times[0]) / 3600.0 if series.times else 0.0


def _thinned(series: _Series, points: int = PAIRWISE_POINTS) -> _Series:
    """At most ``points`` samples: consecutive blocks of samples averaged (time and value)."""
    n = len(series.values)
    if n <= points:
        return series
    times, values = [], []
    for block in range(points):
        lo, hi = block * n // points, (block + 1) * n // points
        times.append(math.fsum(series.times[lo:hi]) / (hi - lo))
        values.append(math.fsum(series.values[lo:hi]) / (hi - lo))
    return _Series(series.labels, times, values)


def _pointwise(series: list[_Series], aggregate: str) -> list[_Series]:
    """The series added (or averaged) sample by sample, as one unlabelled series."""
    by_time: dict[float, list[float]] = {}
    for s in series:
        for t, v in zip(s.times, s.values, strict=True):
            by_time.setdefault(t, []).append(v)
    times = sorted(by_time)
    combine = _AGGREGATES[aggregate]
    values = [combine(by_time[t]) for t in times]
    keep = [(t, v) for t, v in zip(times, values, strict=True) if math.isfinite(v)]
    return [_Series({}, [t for t, _ in keep], [v for _, v in keep])] if keep else []


def _pair_limits(series: list[_Series], limits: list[_Series]) -> tuple[list[tuple[_Series, float]], int]:
    """Each series with its limit: the only limit there is, else the limit with the same
    labels, else the one limit whose shared labels agree (a limit series may carry extra
    labels such as ``resource="memory"``; when several agree the lowest counts)."""
    finite = [s for s in limits if s.values]
    if len(limits) == 1:
        if not finite:
            return [], len(series)
        return [(s, finite[0].values[-1]) for s in series], 0
    exact = {_identity(s.labels): s.values[-1] for s in finite}
    paired = []
    for s in series:
        limit = exact.get(_identity(s.labels))
        if limit is None:
            agreeing = [lim.values[-1] for lim in finite if _agree(s.labels, lim.labels)]
            limit = min(agreeing) if agreeing else None
        if limit is not None:
            paired.append((s, limit))
    return paired, len(series) - len(paired)


def _identity(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if k != "__name__"))


def _agree(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    shared = (a.keys() & b.keys()) - {"__name__"}
    return bool(shared) and all(a[k] == b[k] for k in shared)


# --- parsing the API's answers -----------------------------------------------------------


def _sample(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _parse_instant(result: Any) -> list[_Series]:
    """Series of an instant query: a vector, or a scalar as one unlabelled series."""
    if not isinstance(result, list):
        raise exceptions.QueryFailed(f"unexpected answer from Prometheus: {type(result).__name__}")
    if len(result) == 2 and not isinstance(result[0], dict):  # scalar or string
        try:
            number = float(result[1])
        except (TypeError, ValueError):
            raise exceptions.QueryFailed("the query returns a string, not a number") from None
        if not math.isfinite(number):
            return [_Series({}, [], [])]
        return [_Series({}, [float(result[0])], [number])]
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
            series.append(_Series(labels, [float(sample[0])], [float(sample[1])]))
        else:
            series.append(_Series(labels, [], []))
    return series


def _parse_range(result: Any) -> list[_Series]:
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
        series.append(_Series(labels, times, values))
    return series
