"""Synthetic request streams for the judge benchmark, and what Prometheus answers about them.

Used by ``bench.judge`` (``make bench-judge``); pure arithmetic on numpy arrays, unit
tested in ``tests/unit/test_judge_bench.py``.

A stream is one service around one deployment, minute by minute:

- **requests** per minute are Poisson with a daily cycle: the rate is lowest at 04:00
  (``night_share`` of the peak) and highest at 16:00, a raised cosine in between;
  ``rps`` is the *daily mean*, so the peak is ``rps / ((1 + night_share) / 2)``;
- from the deployment on, the request rate may be a multiple of the cycle's
  (``traffic_after``: a release that loses or gains traffic);
- **errors** are a binomial thinning of the requests with the true 5xx share (one
  share before the deployment, possibly another after it);
- **latency**: each request's latency is drawn from a ``Latency`` distribution and
  counted in Prometheus-style ``le`` buckets (``prometheus_client``'s default bounds,
  as the sample app's histogram); per minute the bucket counts are multinomial.

Only the minutes a rule looks at are drawn (``Stream`` holds disjoint segments), in
blocks as long as the windows asked there allow (``plan_segments``: a comparison's
six-minute before-windows over 18 days are 4,320 blocks, not 25,920 minutes), each
segment with running totals, so the counts of any window cost O(1).

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
import functools
import itertools
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from prometheus_client import Histogram

__all__ = [
    "DEFAULT_BOUNDS",
    "Latency",
    "Segment",
    "Span",
    "Stream",
    "Traffic",
    "WindowCounts",
    "draw_stream",
    "histogram_quantile",
    "mixture_for_p95",
    "plan_segments",
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
    """Minutes [start, end) relative to the deployment, drawn in blocks of ``resolution``
    minutes, with running totals from ``start`` (index j: the first j blocks)."""

    start: int
    end: int
    resolution: int
    requests: IntArray  # length (end - start) / resolution + 1, requests[0] = 0
    errors: IntArray
    buckets: IntArray  # shape (blocks + 1, buckets)


@dataclasses.dataclass(frozen=True)
class Stream:
    """One deployment's traffic: segments of minutes relative to the deployment (minute 0)."""

    deploy_minute_of_day: int
    segments: tuple[Segment, ...]

    def counts(self, start: int, end: int) -> WindowCounts:
        """Requests, errors and bucket counts in minutes [start, end) after the deployment."""
        requests = errors = 0
        buckets: IntArray | None = None
        covered = 0
        for segment in self.segments:
            low, high = max(start, segment.start), min(end, segment.end)
            if low >= high:
                continue
            if (low - segment.start) % segment.resolution or (high - segment.start) % segment.resolution:
                raise ValueError(
                    f"minutes [{start}, {end}) cut blocks of {segment.resolution} minutes drawn from "
                    f"{segment.start}"
                )
            i, j = (low - segment.start) // segment.resolution, (high - segment.start) // segment.resolution
            requests += int(segment.requests[j] - segment.requests[i])
            errors += int(segment.errors[j] - segment.errors[i])
            part = segment.buckets[j] - segment.buckets[i]
            buckets = part if buckets is None else buckets + part
            covered += high - low
        if covered != end - start or buckets is None:
            raise ValueError(f"minutes [{start}, {end}) were not drawn: segments {self.spans()}")
        return WindowCounts(requests, errors, buckets)

    def counts_many(self, starts: IntArray, ends: IntArray) -> tuple[IntArray, IntArray, IntArray]:
        """``counts`` of many windows at once: requests, errors (one per window) and
        buckets (a row per window)."""
        requests = np.zeros(len(starts), dtype=np.int64)
        errors = np.zeros(len(starts), dtype=np.int64)
        buckets = np.zeros((len(starts), self.segments[0].buckets.shape[1]), dtype=np.int64)
        covered = np.zeros(len(starts), dtype=np.int64)
        for segment in self.segments:
            low, high = np.maximum(starts, segment.start), np.minimum(ends, segment.end)
            inside = low < high
            if not inside.any():
                continue
            low, high = low[inside], high[inside]
            if ((low - segment.start) % segment.resolution).any() or (
                (high - segment.start) % segment.resolution
            ).any():
                raise ValueError(
                    f"windows cut blocks of {segment.resolution} minutes drawn from {segment.start}"
                )
            i, j = (low - segment.start) // segment.resolution, (high - segment.start) // segment.resolution
            requests[inside] += segment.requests[j] - segment.requests[i]
            errors[inside] += segment.errors[j] - segment.errors[i]
            buckets[inside] += segment.buckets[j] - segment.buckets[i]
            covered[inside] += high - low
        if (covered != ends - starts).any():
            raise ValueError(f"some windows were not drawn: segments {self.spans()}")
        return requests, errors, buckets

    def spans(self) -> list[tuple[int, int]]:
        return [(s.start, s.end) for s in self.segments]


def _running(values: npt.NDArray[np.int64]) -> IntArray:
    zero = np.zeros((1, *values.shape[1:]), dtype=np.int64)
    result: IntArray = np.concatenate([zero, np.cumsum(values, axis=0, dtype=np.int64)])
    return result


Span = tuple[int, int] | tuple[int, int, int]  # minutes [start, end), and a resolution (1)


def plan_segments(spans: Sequence[Span]) -> list[tuple[int, int, int]]:
    """Disjoint (start, end, resolution) pieces covering ``spans``, each as coarse as the
    windows asked in it allow.

    A span (start, end, r) promises that every window asked in it starts and ends on a
    multiple of r minutes (counted from the deployment). Each elementary piece between
    span edges (and the grid points of coarser spans next to them) is drawn in blocks
    of the gcd of the resolutions of the spans covering it and of its own edges, so any
    promised window is made of whole blocks; neighbouring pieces of one resolution merge.
    """
    full = [(s[0], s[1], s[2] if len(s) == 3 else 1) for s in spans if s[1] > s[0]]
    edges = {edge for start, end, _ in full for edge in (start, end)}
    # An edge inside a coarser span also cuts that span at its own grid points around
    # the edge, so the coarse part keeps whole blocks and only the gap is drawn finer.
    for edge in list(edges):
        for start, end, resolution in full:
            if start < edge < end and edge % resolution:
                below = edge - edge % resolution
                edges.update(e for e in (below, below + resolution) if start <= e <= end)
    pieces: list[list[int]] = []
    for low, high in itertools.pairwise(sorted(edges)):
        covering = [r for start, end, r in full if start <= low and high <= end]
        if not covering:
            continue
        resolution = math.gcd(*covering, low, high)
        if pieces and pieces[-1][1] == low and pieces[-1][2] == resolution:
            pieces[-1][1] = high
        else:
            pieces.append([low, high, resolution])
    return [(a, b, r) for a, b, r in pieces]


@functools.lru_cache(maxsize=64)
def _shares(latency: Latency, bounds: tuple[float, ...]) -> FloatArray:
    return latency.bucket_shares(bounds)


def draw_stream(
    rng: np.random.Generator,
    traffic: Traffic,
    deploy_minute_of_day: int,
    spans: Sequence[Span],
    *,
    share_before: float,
    share_after: float,
    latency_before: Latency,
    latency_after: Latency,
    bounds: Sequence[float] = DEFAULT_BOUNDS,
    traffic_after: float = 1.0,
) -> Stream:
    """Draw the minutes of ``spans`` (see ``plan_segments``); minute 0 is the deployment.

    From the deployment on the request rate is ``traffic_after`` times the daily
    cycle's. A block of several minutes is drawn as one Poisson count with the summed
    mean of its minutes, thinned and split into buckets as one: the same distribution
    as the sum of its minutes drawn one by one.
    """
    shares = {False: _shares(latency_before, tuple(bounds)), True: _shares(latency_after, tuple(bounds))}
    segments = []
    for start, end, resolution in plan_segments(spans):
        minutes = np.arange(start, end)
        of_day = ((deploy_minute_of_day + minutes) % MINUTES_PER_DAY).astype(np.float64)
        means = traffic.per_minute(of_day).reshape(-1, resolution).sum(axis=1)
        after = minutes[::resolution] >= 0  # a block never straddles minute 0
        requests = rng.poisson(np.where(after, means * traffic_after, means)).astype(np.int64)
        errors = rng.binomial(requests, np.where(after, share_after, share_before)).astype(np.int64)
        buckets = np.empty((len(requests), len(bounds) + 1), dtype=np.int64)
        for is_after in (False, True):
            rows = after == is_after
            if rows.any():
                buckets[rows] = rng.multinomial(requests[rows], shares[is_after])
        segments.append(
            Segment(start, end, resolution, _running(requests), _running(errors), _running(buckets))
        )
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
