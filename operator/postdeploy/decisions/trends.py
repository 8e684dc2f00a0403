"""Trends in time series, pure: slope, Mann-Kendall, time to a limit, relative change.

Called by ``postdeploy.providers.prometheus`` for a check with ``trend`` (its module
docstring says what each analysis reports) once the range query's series are parsed,
and by the unit tests directly. No I/O: series in, a value and its details out; the
tests of significance and the fits themselves are ``postdeploy.decisions.statistics``.

- ``slope``: the least-squares slope per hour, with its standard error, confidence
  interval, r² and p-value;
- ``mann_kendall``: Kendall's tau between time and value (details ``pValue``, ``trend``);
- ``time_to_limit``: hours until the fitted line reaches ``limit``
  (``NOT_GROWING_HOURS`` and ``growing: false`` when it does not grow significantly);
- ``relative_change``: how far a Theil-Sen line moved over the window, relative to where
  it started (``±NO_START`` when it started at 0), with Mann-Kendall's p-value.

Mann-Kendall and Theil-Sen compare every pair of samples, so a series of more than
``PAIRWISE_POINTS`` samples is first averaged over consecutive blocks (``thinned``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from postdeploy.decisions import statistics

__all__ = [
    "AGGREGATES",
    "ANALYSES",
    "MIN_SAMPLES",
    "NOT_GROWING_HOURS",
    "NO_START",
    "PAIRWISE_POINTS",
    "Series",
    "TrendResult",
    "elapsed_hours",
    "mann_kendall",
    "pair_limits",
    "pointwise",
    "relative_change",
    "slope",
    "span_hours",
    "thinned",
    "time_to_limit",
]

NOT_GROWING_HOURS = 1e9  # timeToLimit's value when the limit is never reached
NO_START = 1e9  # relativeChange's magnitude when the line starts at 0
PAIRWISE_POINTS = 1000  # samples a pairwise (O(n²)) analysis looks at, at most
MIN_SAMPLES = 3  # finite samples a series needs for any trend


@dataclasses.dataclass(frozen=True)
class Series:
    """One time series as Prometheus returned it, non-finite samples dropped."""

    labels: dict[str, str]
    times: list[float]  # Unix seconds
    values: list[float]  # finite only, matching ``times``


# How several series (or several samples at one time) combine into one value.
AGGREGATES: dict[str, Callable[[Sequence[float]], float]] = {
    "max": max,
    "min": min,
    "sum": math.fsum,
    "mean": lambda values: math.fsum(values) / len(values),
}



@dataclasses.dataclass(frozen=True)
class TrendResult:
    series: Series
    value: float
    details: dict[str, Any]

    @property
    def labels(self) -> dict[str, str]:
        return self.series.labels


def slope(series: Series) -> TrendResult:
    hours = elapsed_hours(series)
    fit = statistics.linear_regression(hours, series.values)
    return TrendResult(
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


def mann_kendall(series: Series) -> TrendResult:
    result = statistics.mann_kendall(thinned(series).values)
    return TrendResult(
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


def time_to_limit(series: Series, limit: float) -> TrendResult:
    hours = elapsed_hours(series)
    fit = statistics.linear_regression(hours, series.values)
    reach = statistics.time_to_reach(hours, series.values, limit)  # in the times' unit
    growing = reach is not None
    value = reach if reach is not None else NOT_GROWING_HOURS
    return TrendResult(
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


def relative_change(series: Series) -> TrendResult:
    """How far a robust line moved over the window, relative to where it started."""
    thin = thinned(series)
    origin = series.times[0]
    fit = statistics.theil_sen([(t - origin) / 3600.0 for t in thin.times], thin.values)
    # The line at the window's first sample (hour 0) and at its last one.
    start = fit.intercept
    end = fit.intercept + fit.slope * span_hours(series)
    change = end - start
    relative = change / abs(start) if start != 0 else math.copysign(NO_START, change) if change else 0.0
    trend = statistics.mann_kendall(thin.values)
    return TrendResult(
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


ANALYSES: dict[str, Callable[[Series], TrendResult]] = {
    "slope": slope,
    "mannKendall": mann_kendall,
    "relativeChange": relative_change,
}


def elapsed_hours(series: Series) -> list[float]:
    start = series.times[0]
    return [(t - start) / 3600.0 for t in series.times]


def span_hours(series: Series) -> float:
    return (series.times[-1] - series.times[0]) / 3600.0 if series.times else 0.0


def thinned(series: Series, points: int = PAIRWISE_POINTS) -> Series:
    """At most ``points`` samples: consecutive blocks of samples averaged (time and value)."""
    n = len(series.values)
    if n <= points:
        return series
    times, values = [], []
    for block in range(points):
        lo, hi = block * n // points, (block + 1) * n // points
        times.append(math.fsum(series.times[lo:hi]) / (hi - lo))
        values.append(math.fsum(series.values[lo:hi]) / (hi - lo))
    return Series(series.labels, times, values)


def pointwise(series: list[Series], aggregate: str) -> list[Series]:
    """The series added (or averaged) sample by sample, as one unlabelled series."""
    by_time: dict[float, list[float]] = {}
    for s in series:
        for t, v in zip(s.times, s.values, strict=True):
            by_time.setdefault(t, []).append(v)
    times = sorted(by_time)
    combine = AGGREGATES[aggregate]
    values = [combine(by_time[t]) for t in times]
    keep = [(t, v) for t, v in zip(times, values, strict=True) if math.isfinite(v)]
    return [Series({}, [t for t, _ in keep], [v for _, v in keep])] if keep else []


def pair_limits(series: list[Series], limits: list[Series]) -> tuple[list[tuple[Series, float]], int]:
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
