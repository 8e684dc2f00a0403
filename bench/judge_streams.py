"""Synthetic request streams for the judge benchmark, and what Prometheus answers about them.

Used by ``bench.judge`` (``make bench-judge``); pure arithmetic on numpy arrays, unit
tested in ``tests/unit/test_judge_bench.py``.

A stream is one service around one deployment, minute by minute:

- **requests** per minute are Poisson with a daily cycle: the rate is lowest at 04:00
  (``night_share`` of the peak) and highest at 16:00, a raised cosine in between;
  ``rps`` is the *daily mean*, so the peak is ``rps / ((1 + night_share) / 2)``;
- **errors** are a binomial thinning of the requests with the true 5xx share (one
  share before the deployment, possibly another after it);
- **latency**: each request's latency is drawn from a ``Latency`` distribution and
  counted in Prometheus-style ``le`` buckets (``prometheus_client``'s default bounds,
  as the sample app's histogram); per minute the bucket counts are multinomial.

Only the minutes a rule looks at are drawn (``Stream`` holds disjoint segments), each
segment with running totals, so the counts of any window inside a segment cost O(1).

What Prometheus would answer is modelled as counts over a window: ``rate(x[5m])`` at
time t is (count in [t - 5m, t)) / 5m. Prometheus actually takes the difference of the
first and last scrape inside the window and extrapolates it to the window's edges;
in a ratio of two rates of series scraped together (errors / requests, bucket /
bucket) the extrapolation factor cancels, so what remains is that a real window
counts over up to one scrape interval less than its nominal length. Counters are
taken to exist before the window (no first-increment loss of a new series), and a
deployment switches all traffic at once at a minute boundary.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from prometheus_client import Histogram

__all__ = [
    "DEFAULT_BOUNDS",
    "Latency",
    "Segment",
    "Stream",
    "Traffic",
    "WindowCounts",
    "draw_stream",
    "histogram_quantile",
    "mixture_for_p95",
]

# prometheus_client's default buckets, as the sample app's histogram, without +Inf.
DEFAULT_BOUNDS: tuple[float, ...] = tuple(Histogram.DEFAULT_BUCKETS[:-1])
MINUTES_PER_DAY = 1440
TROUGH_MINUTE = 4 * 60  # 04:00, the quietest minute of the day

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True)
class Traffic:
    """Requests per second over the day: daily mean ``rps``, night at ``night_share`` of the peak."""

    rps: float
    night_share: float = 0.2

    @property
    def peak(self) -> float:
        return self.rps / ((1 + self.night_share) / 2)

    def per_minute(self, minute_of_day: FloatArray) -> FloatArray:
        """Expected requests in each minute starting at these minutes of the day."""
        middle = (minute_of_day + 0.5 - TROUGH_MINUTE) / MINUTES_PER_DAY
        shape = self.night_share + (1 - self.night_share) * (1 - np.cos(2 * np.pi * middle)) / 2
        result: FloatArray = 60.0 * self.peak * shape
        return result


def _normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


@dataclasses.dataclass(frozen=True)
class Latency:
    """A two-part lognormal mixture: share ``slow_share`` of requests take ``slow`` times a
    base lognormal (median ``median``, log-sd ``sigma``), the rest ``fast`` times it.

    ``Latency(median, sigma)`` is the plain lognormal (both factors 1).
    """

    median: float = 0.1
    sigma: float = 0.5
    slow_share: float = 0.0
    slow: float = 1.0
    fast: float = 1.0

    def cdf(self, x: float) -> float:
        if x <= 0:
            return 0.0
        if math.isinf(x):
            return 1.0
        mu = math.log(self.median)

        def part(factor: float) -> float:
            return _normal_cdf((math.log(x / factor) - mu) / self.sigma)

        return (1 - self.slow_share) * part(self.fast) + self.slow_share * part(self.slow)

    def mean(self) -> float:
        base = self.median * math.exp(self.sigma**2 / 2)
        return base * ((1 - self.slow_share) * self.fast + self.slow_share * self.slow)

    def quantile(self, q: float) -> float:
        """The q-quantile, by bisection on the CDF in log space (to 1e-12 relative)."""
        low, high = math.log(self.median) - 40 * self.sigma, math.log(self.median) + 40 * self.sigma
        low += math.log(min(self.fast, self.slow))
        high += math.log(max(self.fast, self.slow))
        for _ in range(200):
            middle = (low + high) / 2
            if self.cdf(math.exp(middle)) < q:
                low = middle
            else:
                high = middle
        return math.exp((low + high) / 2)

    def bucket_shares(self, bounds: Sequence[float] = DEFAULT_BOUNDS) -> FloatArray:
        """Probability of each bucket (le bounds[0], (bounds[0], bounds[1]], ..., +Inf)."""
        cumulative = [self.cdf(b) for b in bounds] + [1.0]
        shares = np.diff(np.array([0.0, *cumulative]))
        clipped: FloatArray = np.clip(shares, 0.0, None)
        result: FloatArray = clipped / clipped.sum()
        return result

    def sample(self, rng: np.random.Generator, size: int) -> FloatArray:
        base = rng.lognormal(math.log(self.median), self.sigma, size)
        slow = rng.random(size) < self.slow_share
        result: FloatArray = base * np.where(slow, self.slow, self.fast)
        return result


def mixture_for_p95(base: Latency, increase: float, slow_share: float = 0.1) -> Latency:
    """A latency whose p95 is ``(1 + increase)`` times ``base``'s and whose mean is the same.

    ``slow_share`` of the requests get slower by a factor ``slow`` and the others faster
    by ``fast = (1 - slow_share * slow) / (1 - slow_share)``, which keeps the mean; ``slow``
    is found by bisection so that the mixture's p95 hits the target.
    """
    target = (1 + increase) * base.quantile(0.95)

    def build(slow: float) -> Latency:
        fast = (1 - slow_share * slow) / (1 - slow_share)
        return dataclasses.replace(base, slow_share=slow_share, slow=slow, fast=fast)

    low, high = 1.0, (1 - 1e-9) / slow_share
    if build(high).quantile(0.95) < target:
        raise ValueError(f"a p95 increase of {increase:.0%} needs more than {slow_share:.0%} slow requests")
    for _ in range(100):
        middle = (low + high) / 2
        if build(middle).quantile(0.95) < target:
            low = middle
        else:
            high = middle
    return build((low + high) / 2)


@dataclasses.dataclass(frozen=True)
class WindowCounts:
    requests: int
    errors: int
    buckets: IntArray  # per bucket (not cumulative), the last one +Inf


@dataclasses.dataclass(frozen=True)
class Segment:
    """Minutes [start, end) relative to the deployment, with running totals from ``start``."""

    start: int
    end: int
    requests: IntArray  # length end - start + 1, requests[0] = 0
    errors: IntArray
    buckets: IntArray  # shape (end - start + 1, buckets)


@dataclasses.dataclass(frozen=True)
class Stream:
    """One deployment's traffic: segments of minutes relative to the deployment (minute 0)."""

    deploy_minute_of_day: int
    segments: tuple[Segment, ...]

    def counts(self, start: int, end: int) -> WindowCounts:
        """Requests, errors and bucket counts in minutes [start, end) after the deployment."""
        for segment in self.segments:
            if segment.start <= start and end <= segment.end:
                i, j = start - segment.start, end - segment.start
                return WindowCounts(
                    int(segment.requests[j] - segment.requests[i]),
                    int(segment.errors[j] - segment.errors[i]),
                    segment.buckets[j] - segment.buckets[i],
                )
        raise ValueError(f"minutes [{start}, {end}) were not drawn: segments {self.spans()}")

    def spans(self) -> list[tuple[int, int]]:
        return [(s.start, s.end) for s in self.segments]


def _running(values: npt.NDArray[np.int64]) -> IntArray:
    zero = np.zeros((1, *values.shape[1:]), dtype=np.int64)
    result: IntArray = np.concatenate([zero, np.cumsum(values, axis=0, dtype=np.int64)])
    return result


def draw_stream(
    rng: np.random.Generator,
    traffic: Traffic,
    deploy_minute_of_day: int,
    spans: Sequence[tuple[int, int]],
    *,
    share_before: float,
    share_after: float,
    latency_before: Latency,
    latency_after: Latency,
    bounds: Sequence[float] = DEFAULT_BOUNDS,
) -> Stream:
    """Draw the minutes of ``spans`` (merged where they touch); minute 0 is the deployment."""
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    shares = {False: latency_before.bucket_shares(bounds), True: latency_after.bucket_shares(bounds)}
    segments = []
    for start, end in merged:
        minutes = np.arange(start, end)
        of_day = ((deploy_minute_of_day + minutes) % MINUTES_PER_DAY).astype(np.float64)
        requests = rng.poisson(traffic.per_minute(of_day)).astype(np.int64)
        after = minutes >= 0
        errors = rng.binomial(requests, np.where(after, share_after, share_before)).astype(np.int64)
        buckets = np.empty((len(minutes), len(bounds) + 1), dtype=np.int64)
        for is_after in (False, True):
            rows = after == is_after
            if rows.any():
                buckets[rows] = rng.multinomial(requests[rows], shares[is_after])
        segments.append(Segment(start, end, _running(requests), _running(errors), _running(buckets)))
    return Stream(deploy_minute_of_day, tuple(segments))


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[int] | IntArray) -> float:
    """PromQL's ``histogram_quantile`` of per-bucket counts (the last bucket +Inf).

    As Prometheus computes it: rank = q x total; the first bucket whose cumulative count
    reaches the rank; linear interpolation inside it from its lower bound (0 for the
    first bucket); the second-highest bound when the rank falls in the +Inf bucket;
    NaN when there are no observations.
    """
    cumulative = np.cumsum(np.asarray(counts, dtype=np.float64))
    total = float(cumulative[-1])
    if total == 0 or math.isnan(q):
        return math.nan
    rank = q * total
    index = int(np.searchsorted(cumulative[:-1], rank, side="left"))
    if index == len(bounds):
        return float(bounds[-1])
    start = 0.0 if index == 0 else float(bounds[index - 1])
    below = 0.0 if index == 0 else float(cumulative[index - 1])
    inside = float(cumulative[index]) - below
    if inside <= 0:  # only when the rank is 0
        return start
    return start + (float(bounds[index]) - start) * (rank - below) / inside
