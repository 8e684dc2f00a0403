"""Anytime-valid before/after comparisons of counts: error shares and latency tails.

Pure functions over numbers (no I/O; :mod:`math`, and numpy for a young test's
mixtures). Callers: the Prometheus
provider's comparison mode (``postdeploy.providers.prometheus``), which asks
Prometheus for the counts, and the judge benchmark (``make bench-judge``), which
feeds it synthetic request streams; both turn a result into a check's value and
details with :func:`measurement_details`, so the benchmark measures the code the
operator runs. docs/judge.md states the method; in short:

- The time since the deployment is cut into batches on a grid fixed in advance
  (anchored at the deployment, one ``step`` each). Batch ``i`` has ``x`` events
  (errors, or requests slower than a latency boundary) among ``n`` requests after
  the deployment, and ``y`` events among ``b`` requests in its own before-window
  (before-windows of different batches do not overlap). Given the batch's
  ``k = x + y`` events, ``x`` is Binomial(k, q) with
  ``q = rho*n / (rho*n + b)`` where ``rho`` is the ratio of the event shares
  (share after / share before): events are a thinned Poisson stream with requests
  as exposure, so a daily traffic cycle or a quiet night cancels out.
- For a hypothesis ``rho <= rho0`` the product over batches of the likelihood
  ratios ``L(rho0 * e^u) / L(rho0)``, mixed over ``u > 0`` with half-normal weights
  of scale ``prior_scale`` on a fixed grid, is a nonnegative supermartingale with
  mean at most 1. Ville's inequality bounds the chance that it *ever* reaches
  ``1/alpha`` by ``alpha``, however often it is looked at. The p-value
  ``min(1, 1 / running max)`` is anytime-valid; the confidence sequence is the
  set of ``rho0`` not rejected (one-sided at ``alpha`` each way).
- The test is a running product over batches, so it can be kept up to date: a
  :class:`RateAccumulator` (or :class:`HistogramAccumulator`) adds each closed batch
  once, and its result after any number of additions is that of
  :func:`compare_rates` (:func:`compare_histograms`) over all the batches at once:
  the p-value bit for bit (the same running sums in the same order), the bounds to
  the rounding of their sums (unit tests hold both to 1e-9 on random streams).
  ``compare_rates`` is the accumulator fed everything in one go. An accumulator's
  search for a bound starts from its last look's (see :func:`_bound`): what it finds
  is the same wherever it starts. A young test (fewer than ``_MEMO_MIN_BATCHES``
  batches) sums each mixture a whole row at a time with numpy (:func:`_row_mixture`),
  an older one point by point from its memo.

Public API:

- :class:`CountBatch` — one batch's four counts.
- :func:`compare_rates` — batches to a :class:`RateComparison` (``ratio``,
  ``ratio_lower``, ``ratio_upper``, ``p_value`` and the summed counts).
- :class:`RateAccumulator`, :class:`HistogramAccumulator` — the same comparisons
  kept up to date batch by batch (``add``, then ``result``), for a caller that
  looks again and again as batches close (the Prometheus provider, the backtest);
  ``look`` gives the result with further batches on top without adding them (the
  provider's newest batches, whose counts may still change).
- :func:`p_value_path` — the running anytime-valid p-value after each batch (for
  time-to-detect; ``compare_rates`` reports where it first fell below alpha).
- :func:`histogram_batches`, :func:`compare_histograms` — Prometheus ``le``
  bucket counts to a :class:`HistogramComparison`: the share of requests slower
  than a bucket boundary near the before-window's ``quantile`` (default p95),
  compared as above, plus before/after quantile estimates.
- :func:`measurement_details` — a result to a :class:`MeasurementReport`: the
  check's ``value`` (the ratio) and ``details`` (``ratio``, ``ratioLower``,
  ``ratioUpper``, ``pValue``, ``alpha``, ``minEffect``, counts...), or "not enough
  traffic yet (N requests)" when there is too little data to pass.

Inputs that are impossible (negative or non-finite counts, more events than
requests, alpha outside (0, 1)) raise ``ValueError`` naming the problem.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import math
import operator
from array import array
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = [
    "BoundaryMoved",
    "CountBatch",
    "HistogramAccumulator",
    "HistogramComparison",
    "MeasurementReport",
    "RateAccumulator",
    "RateComparison",
    "compare_histograms",
    "compare_rates",
    "histogram_batches",
    "histogram_quantile",
    "measurement_details",
    "p_value_path",
]

GRID_STEP = 0.05  # spacing of the mixing grid and of the bounds, in log(rho)
GRID_WIDTH = 5.0  # the mixing grid reaches prior_scale * GRID_WIDTH
_REFINEMENTS = 4  # bisections of the last grid step: bounds to 1/16 of GRID_STEP
_LOG_LIMIT = math.log(1e6)  # confidence bounds beyond 1e6 or below 1e-6 are reported as such
_LATTICE_PER_STEP: int = 1 << _REFINEMENTS
_LATTICE: float = GRID_STEP / _LATTICE_PER_STEP  # the bound searches' points in log(rho)
_MEMO_LOOKS = 16  # a likelihood keeps the points asked in this many last looks...
_MEMO_POINTS = 4096  # ...at most this many
# What a memo point costs in 8-byte numbers (the unit of ``size``): an entry in two dicts,
# a float and an int, 90-160 bytes as the dicts grow (tracemalloc; a unit test holds it).
_MEMO_POINT_NUMBERS = 20
# A likelihood of fewer batches memoises nothing: its mixtures in numpy rows cost less.
_MEMO_MIN_BATCHES = 128


@dataclasses.dataclass(frozen=True)
class CountBatch:
    """Counts of one batch: events (e.g. 5xx responses) and all requests after the
    deployment, and in the batch's own before-window."""

    events_after: float
    total_after: float
    events_before: float
    total_before: float

    def __post_init__(self) -> None:
        for name in ("events_after", "total_after", "events_before", "total_before"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite count >= 0, got {value!r}")
        if self.events_after > self.total_after:
            raise ValueError(f"events_after ({self.events_after}) exceeds total_after ({self.total_after})")
        if self.events_before > self.total_before:
            raise ValueError(
                f"events_before ({self.events_before}) exceeds total_before ({self.total_before})"
            )


@dataclasses.dataclass(frozen=True)
class RateComparison:
    """share_after / share_before with anytime-valid inference.

    ``ratio`` is the pooled ratio of shares (None when a share is undefined, inf
    when only the after-window has events). ``ratio_lower`` / ``ratio_upper`` bound
    rho, each side at level ``alpha`` for all looks at once (``ratio_upper`` is inf
    when the data cannot bound it). ``p_value`` is anytime-valid for the hypothesis
    ``rho <= 1 + min_effect`` (no increase beyond the minimum effect).
    ``first_crossing`` is the index of the batch after which ``p_value`` first fell
    below ``alpha`` (None if it has not).

    The counts (``events_after`` ... ``total_before``) and ``ratio`` are those of the
    paired batches only - requests on both sides - as the test sees them: a batch
    whose before-window holds no requests (history missing or beyond retention, a
    service younger than the window) compares nothing, and its requests after the
    deployment are ``unpaired_after`` (its events ``unpaired_events``), reported
    but never counted as evidence."""

    ratio: float | None
    ratio_lower: float
    ratio_upper: float
    p_value: float
    events_after: float
    total_after: float
    events_before: float
    total_before: float
    alpha: float
    min_effect: float
    batches: int
    informative_batches: int
    first_crossing: int | None
    unpaired_after: float = 0.0
    unpaired_events: float = 0.0

    @property
    def share_after(self) -> float | None:
        return self.events_after / self.total_after if self.total_after > 0 else None

    @property
    def share_before(self) -> float | None:
        return self.events_before / self.total_before if self.total_before > 0 else None


@dataclasses.dataclass(frozen=True)
class _Batch:
    """An informative batch: x events after of k, exposure ratio a = n / b."""

    x: float
    k: float
    a: float


def _check_parameters(alpha: float, min_effect: float, prior_scale: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if not (math.isfinite(min_effect) and min_effect >= 0):
        raise ValueError(f"min_effect must be a finite number >= 0, got {min_effect!r}")
    if not (math.isfinite(prior_scale) and prior_scale > 0):
        raise ValueError(f"prior_scale must be a finite number > 0, got {prior_scale!r}")


def _informative(batches: Sequence[CountBatch]) -> list[tuple[int, _Batch]]:
    """Batches whose likelihood depends on rho: events in the batch, and requests on
    both sides (without before-requests every event is an after-event whatever rho
    is; without after-requests none is)."""
    kept = []
    for index, batch in enumerate(batches):
        k = batch.events_after + batch.events_before
        if k > 0 and batch.total_after > 0 and batch.total_before > 0:
            kept.append((index, _Batch(batch.events_after, k, batch.total_after / batch.total_before)))
    return kept


@functools.cache
def _mixing_grid(prior_scale: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Offsets u = j * GRID_STEP (j = 1..J) in log(rho) and their half-normal weights
    (summing to 1): a discrete prior, so the mixture is exactly a mixture of
    likelihood ratios and no integration error touches its validity. Computed once
    per prior scale (every bound search asks for it)."""
    count = max(1, math.ceil(prior_scale * GRID_WIDTH / GRID_STEP))
    offsets = tuple(GRID_STEP * j for j in range(1, count + 1))
    raw = [math.exp(-0.5 * (u / prior_scale) ** 2) for u in offsets]
    total = math.fsum(raw)
    return offsets, tuple(math.log(w / total) for w in raw)


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(math.fsum(map(math.exp, map(operator.sub, values, itertools.repeat(top)))))


class _Likelihood:
    """log L(rho) - up to a constant - summed over batches, at rho = exp(v).

    log L(rho) = X log(rho) - sum_i k_i log(1 + rho a_i). The bound searches of
    :func:`_bound` ask it only on a lattice, v = n * ``_LATTICE``, where the sums are
    memoised by n. Batches can be added (``extend``): each memoised sum then adds the
    new batches' terms, so looking again after a few more batches costs the memo's
    size times the new batches, plus one pass over all batches per lattice point not
    asked before. ``prune`` (after each look) drops the points not asked in the last
    ``_MEMO_LOOKS`` looks and keeps at most ``_MEMO_POINTS``, least recently asked
    first out: bounds move little from one look to the next, so their bound searches ask
    mostly the same points. Below ``_MEMO_MIN_BATCHES`` batches nothing is memoised: a
    young test's wide bounds ask about a thousand points a look, each a dict entry of
    about 150 bytes, where its mixtures summed a row at a time in numpy
    (:meth:`rows`, :func:`_row_mixture`) cost less (``bench.judge_looks``' young test,
    a review's first 60 and 300 looks: 0.77 and 0.87 ms a look with 128 batches as the
    limit; 1.0-1.1 ms with 32 or 64; 1.4 ms for 300 looks with no memo at all)."""

    def __init__(self, batches: Sequence[_Batch] = ()) -> None:
        self._x = array("d")
        self._k = array("d")
        self._a = array("d")
        self._events = 0.0
        self._penalty: dict[int, float] = {}
        self._asked: dict[int, int] = {}  # lattice point -> the look that last asked it
        self._look = 0
        self.extend(batches)

    def __len__(self) -> int:
        return len(self._k)

    @property
    def events(self) -> float:
        """Events after the deployment, summed over the batches (X in log L)."""
        return self._events

    @property
    def memo_size(self) -> int:
        return len(self._penalty)

    def extend(self, batches: Sequence[_Batch]) -> None:
        if not batches:
            return
        self._x.extend(b.x for b in batches)
        self._k.extend(b.k for b in batches)
        self._a.extend(b.a for b in batches)
        self._events = math.fsum([self._events, *(b.x for b in batches)])
        log1p = math.log1p
        for n, penalty in self._penalty.items():
            rho = math.exp(n * _LATTICE)
            self._penalty[n] = math.fsum([penalty, *(b.k * log1p(rho * b.a) for b in batches)])

    def prune(self) -> None:
        self._look += 1
        oldest = self._look - _MEMO_LOOKS
        kept = sorted((look, n) for n, look in self._asked.items() if look >= oldest)[-_MEMO_POINTS:]
        self._asked = {n: look for look, n in kept}
        self._penalty = {n: self._penalty[n] for n in self._asked}

    def _penalty_at(self, rho: float) -> float:
        return _penalty(self._k, self._a, rho)

    def at(self, v: float) -> float:
        """log L at any v (not memoised)."""
        return self._events * v - self._penalty_at(math.exp(v))

    def penalty_point(self, n: int) -> float:
        """sum_i k_i log(1 + rho a_i) at rho = exp(n * ``_LATTICE``) (memoised from
        ``_MEMO_MIN_BATCHES`` batches on)."""
        if len(self._k) < _MEMO_MIN_BATCHES:
            return self._penalty_at(math.exp(n * _LATTICE))
        self._asked[n] = self._look
        penalty = self._penalty.get(n)
        if penalty is None:
            penalty = self._penalty_at(math.exp(n * _LATTICE))
            self._penalty[n] = penalty
        return penalty

    def at_point(self, n: int) -> float:
        """log L at the lattice point v = n * ``_LATTICE`` (memoised)."""
        return self._events * (n * _LATTICE) - self.penalty_point(n)

    def log_mixture(self, v0: float, log_weights: Sequence[float], sign: int) -> float:
        """log of the mixture martingale against rho0 = exp(v0), mixing over
        rho0 * exp(sign * u) for the grid offsets u (any v0; not memoised)."""
        return _mixture(
            self.at(v0),
            [self.at(v0 + sign * GRID_STEP * j) for j in range(1, len(log_weights) + 1)],
            log_weights,
        )

    def log_mixture_at_point(self, n0: int, log_weights: Sequence[float], sign: int) -> float:
        """``log_mixture`` at the lattice point v0 = n0 * ``_LATTICE``, memoised (see
        :func:`_log_mixture_at_point`)."""
        rows = self.rows()
        if rows is not None:
            return _row_mixture(rows, n0, log_weights, sign)
        return _log_mixture_at_point(self.at_point, n0, log_weights, sign)

    def rows(self) -> _Rows | None:
        """The batches, for log L at a whole row of points in one pass
        (:func:`_row_mixture`), while nothing is memoised (below ``_MEMO_MIN_BATCHES``
        batches); else None."""
        if len(self._k) >= _MEMO_MIN_BATCHES:
            return None
        return _Rows(self._events, self._k, self._a)


class _Overlay:
    """A likelihood with a few batches on top of a :class:`_Likelihood`, for one look,
    leaving it as it was: the base's memoised sums (which the overlay asks, and so
    memoises and marks as asked, for the base's batches alone) plus the extra
    batches' terms. So a look at "the kept batches and the newest ones" costs one
    bound search, with no copy of the kept test. ``prune`` prunes the base."""

    def __init__(self, base: _Likelihood, batches: Sequence[_Batch]) -> None:
        self._base = base
        self._k = [b.k for b in batches]
        self._a = [b.a for b in batches]
        self._events = math.fsum([base._events, *(b.x for b in batches)])
        self._penalty: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self._base) + len(self._k)

    @property
    def events(self) -> float:
        return self._events

    def prune(self) -> None:
        self._base.prune()

    def rows(self) -> _Rows | None:
        if len(self._base) >= _MEMO_MIN_BATCHES:
            return None
        return _Rows(self._events, self._base._k, self._base._a, self._k, self._a)

    def at_point(self, n: int) -> float:
        penalty = self._penalty.get(n)
        if penalty is None:
            terms = _terms(self._k, self._a, math.exp(n * _LATTICE))
            penalty = math.fsum([self._base.penalty_point(n), *terms])
            self._penalty[n] = penalty
        return self._events * (n * _LATTICE) - penalty


def _terms(k: Sequence[float], a: Sequence[float], rho: float) -> Iterator[float]:
    """k_i log(1 + rho a_i), one per batch (``map`` rather than a generator: the same
    products, in about 60 % of the time)."""
    return map(operator.mul, k, map(math.log1p, map(operator.mul, itertools.repeat(rho), a)))


def _penalty(k: Sequence[float], a: Sequence[float], rho: float) -> float:
    """sum_i k_i log(1 + rho a_i), exactly summed."""
    return math.fsum(_terms(k, a, rho))


class _Rows:
    """A likelihood's batches as :func:`_row_mixture` reads them: the events after the
    deployment (X), and the batches' k and a - the kept ones and those a look puts on
    top - in one numpy array each, made once per bound search."""

    def __init__(
        self,
        events: float,
        k: Sequence[float],
        a: Sequence[float],
        extra_k: Sequence[float] = (),
        extra_a: Sequence[float] = (),
    ) -> None:
        import numpy

        self._numpy = numpy
        self.events = events
        self.k = numpy.concatenate((numpy.asarray(k, dtype=float), numpy.asarray(extra_k, dtype=float)))
        self.a = numpy.concatenate((numpy.asarray(a, dtype=float), numpy.asarray(extra_a, dtype=float)))

    def mixture(self, n0: int, strides: Any, weights: Any) -> float:
        """:func:`_row_mixture` with the row's constants (:func:`_row_constants`) given."""
        numpy = self._numpy
        v = (strides + n0) * _LATTICE  # as n * _LATTICE for each lattice point n
        log_l = self.events * v - numpy.log1p(numpy.multiply.outer(numpy.exp(v), self.a)) @ self.k
        terms = weights + (log_l[1:] - log_l[0])
        top = float(terms.max())
        if top == -math.inf:
            return -math.inf
        if float(terms.min()) < top - 50.0:
            # The loop's rule: the first term that falls and is 50 below the largest
            # before it ends the sum (no term is that far below any: nothing to cut).
            tops = numpy.maximum.accumulate(terms)
            stops = numpy.flatnonzero((terms[1:] < terms[:-1]) & (terms[1:] < tops[:-1] - 50.0))
            if len(stops):
                terms = terms[: stops[0] + 1]
                top = float(terms.max())
        return top + math.log(float(numpy.exp(terms - top).sum()))


def _log_mixture_at_point(
    at_point: Callable[[int], float], n0: int, log_weights: Sequence[float], sign: int
) -> float:
    """log of the mixture martingale against rho0 = exp(n0 * ``_LATTICE``), from a
    likelihood's lattice points, stopping early: the terms (log weight + log
    likelihood ratio) are concave in u, so once they fall and are 50 below the
    largest, every later one is smaller still; the sum stops there, losing less than
    e^-50 of it per term (so slightly less evidence, never more)."""
    base = at_point(n0)
    stride = sign * _LATTICE_PER_STEP
    terms: list[float] = []
    top = -math.inf
    for j, w in enumerate(log_weights, start=1):
        term = w + at_point(n0 + stride * j) - base
        if terms and term < terms[-1] and term < top - 50.0:
            break
        terms.append(term)
        top = max(top, term)
    return _logsumexp(terms)


@functools.cache
def _row_constants(log_weights: tuple[float, ...], sign: int) -> tuple[Any, Any]:
    """For :func:`_row_mixture`: a row's lattice offsets from v0 (0, then a grid step
    each, ``sign``-wards) and the log weights, as numpy arrays (made once)."""
    import numpy

    stride = sign * _LATTICE_PER_STEP
    return numpy.arange(len(log_weights) + 1, dtype=numpy.float64) * stride, numpy.asarray(log_weights)


def _row_mixture(rows: _Rows, n0: int, log_weights: Sequence[float], sign: int) -> float:
    """:func:`_log_mixture_at_point` for a likelihood that memoises nothing, with numpy:
    log L at the whole row (v0 and each grid offset from it) in one pass over the
    batches, the same terms, cut where the loop stops, summed by ``logsumexp``. A young
    test's bound search asks about a hundred new points a mixture, over a few batches;
    point by point in Python that was most of a look's cost (1.4-1.7 ms a look, about
    a third of the operator's CPU with 2,000 young reviews). The sums are numpy's, not
    ``fsum``: the same to their rounding, so a bound search step could differ from the
    point-by-point one only on a tie with the threshold to ~1e-15. A row is some 15
    numpy calls on arrays of ~100 x batches numbers: with few batches the calls' own
    cost is most of it, so a bound search makes the arrays once (:class:`_Rows`).

    numpy is imported here, at the first young comparison, not with the module: an
    operator whose reviews compare nothing does not carry its ~10 MB."""
    return rows.mixture(n0, *_row_constants(tuple(log_weights), sign))


def _mixture(base: float, values: Sequence[float], log_weights: Sequence[float]) -> float:
    return _logsumexp([w + v - base for w, v in zip(log_weights, values, strict=True)])


class _PathState:
    """The one-sided mixture martingale against rho <= rho0, batch after batch: per
    grid point the log weight plus the running sum of log likelihood ratios
    L(rho0 e^u) / L(rho0), and the log of the running max of the mixture."""

    def __init__(self, rho0: float, prior_scale: float) -> None:
        offsets, log_weights = _mixing_grid(prior_scale)
        self.rho0 = rho0
        self.offsets = offsets
        self.rhos = [rho0 * math.exp(u) for u in offsets]
        self.sums = list(log_weights)
        self.best = 0.0  # log of the running max (M_0 = 1)

    def add(self, batch: _Batch) -> float:
        """Adds one informative batch; returns the p-value after it."""
        x, k, a = batch.x, batch.k, batch.a
        log1p = math.log1p
        base = k * log1p(self.rho0 * a)
        self.sums = [
            s + x * u - k * log1p(rho * a) + base
            for s, u, rho in zip(self.sums, self.offsets, self.rhos, strict=True)
        ]
        self.best = max(self.best, _logsumexp(self.sums))
        return math.exp(-self.best)


def _running_p_values(batches: Sequence[_Batch], rho0: float, prior_scale: float) -> list[float]:
    """p after each informative batch: 1 / running max of the one-sided mixture
    martingale against rho <= rho0 (capped at 1)."""
    state = _PathState(rho0, prior_scale)
    return [state.add(batch) for batch in batches]


def p_value_path(
    batches: Sequence[CountBatch], *, min_effect: float = 0.0, prior_scale: float = 1.0
) -> list[float]:
    """The anytime-valid p-value for ``rho <= 1 + min_effect`` after each batch
    (non-increasing; batches without information repeat the previous value)."""
    _check_parameters(0.5, min_effect, prior_scale)
    informative = _informative(batches)
    values = _running_p_values([b for _, b in informative], 1.0 + min_effect, prior_scale)
    path = []
    current = 1.0
    positions = {index: value for (index, _), value in zip(informative, values, strict=True)}
    for index in range(len(batches)):
        current = positions.get(index, current)
        path.append(current)
    return path


def _bound(
    likelihood: _Likelihood | _Overlay,
    start: int,
    prior_scale: float,
    alpha: float,
    sign: int,
    hint: int | None = None,
) -> tuple[float, int | None]:
    """The confidence bound on one side: for sign +1 the lower bound - every grid rho0
    up to it is rejected by the one-sided test of rho <= rho0 at alpha; for sign -1
    the upper bound (rho >= rho0). ``start`` is a grid index to search from (near
    the estimate). Rounded outwards to the grid: 0 or inf when nothing is rejected.

    Also returns the lattice point of the bound (``n``: the bound is exp(n *
    ``_LATTICE``); None at the limits), which a later look may pass back as ``hint``:
    the search then starts there - bounds move a few lattice points from one look to
    the next - and steps along the lattice guided by the mixture's values
    (:func:`_crossing`: about 3 mixtures a bound where doubling and bisecting took 7)
    instead of doubling its way out from ``start`` by grid steps and halving the last
    one four times. Where it starts does not change what it finds: the one lattice
    point that is rejected while its neighbour beyond is not (the mixture is monotone
    in rho0). A young test's mixtures are summed a row at a time
    (:func:`_row_mixture`); an older one's point by point, log L at every point asked
    once per search and memoised across looks."""
    _, log_weights = _mixing_grid(prior_scale)
    threshold = math.log(1.0 / alpha)
    limit = math.ceil(_LOG_LIMIT / GRID_STEP)
    values: dict[int, float] = {}  # log L at the lattice points this search asked
    rows = likelihood.rows()
    strides, weights = _row_constants(log_weights, sign) if rows is not None else (None, None)

    def at_point(n: int) -> float:
        value = values.get(n)
        if value is None:
            value = values[n] = likelihood.at_point(n)
        return value

    def mixture(n0: int) -> float:
        if rows is None:
            return _log_mixture_at_point(at_point, n0, log_weights, sign)
        return rows.mixture(n0, strides, weights)

    def rejected(index: float) -> bool:
        # index is a multiple of 1/16 of a grid step: a lattice point, exactly.
        return mixture(round(index * _LATTICE_PER_STEP)) >= threshold

    # The mixture is monotone in rho0 (log L is concave in log rho): rejected on the
    # far side of the bound (below it for sign +1), not on the near side. From the
    # hint, along the lattice; else find the grid step holding the bound by doubling
    # steps from ``start``, bisect, and halve the last step four times.
    if hint is not None:
        found = _crossing(lambda n: mixture(n) - threshold, hint, sign, (limit - 1) * _LATTICE_PER_STEP)
        if found is not None:
            return math.exp(_LATTICE * found), found
    start = max(-limit, min(limit, start))
    step = 1
    if rejected(start):
        inner, outer = start, start + sign
        while rejected(outer):
            if abs(outer) >= limit:
                return math.exp(GRID_STEP * outer), None
            inner, outer = outer, max(-limit, min(limit, outer + sign * step))
            step *= 2
    else:
        outer, inner = start, start - sign
        while not rejected(inner):
            if abs(inner) >= limit:
                return (0.0 if sign > 0 else math.inf), None
            outer, inner = inner, max(-limit, min(limit, inner - sign * step))
            step *= 2
    inner, outer = _bisect(rejected, inner, outer)
    # Between two grid points: halve the gap a few times more (to 1/16 of a step).
    low, high = float(inner), float(outer)
    for _ in range(_REFINEMENTS):
        middle_point = (low + high) / 2
        if rejected(middle_point):
            low = middle_point
        else:
            high = middle_point
    # Every rho0 beyond ``low`` is rejected too, so the true rho, unless in the
    # alpha event, lies past it: reporting ``low`` rounds outwards.
    return math.exp(GRID_STEP * low), round(low * _LATTICE_PER_STEP)


# The farthest a :func:`_crossing` search trusts the line at first: a young test's
# bounds move up to 10 lattice points a look, its first looks a few hundred.
_LEAP = 64


class _Beyond(Exception):
    """A :func:`_crossing` search left the lattice points it may ask."""


def _crossing(value: Callable[[int], float], hint: int, sign: int, reach: int) -> int | None:
    """The lattice point n where ``value`` (the mixture less the threshold, falling
    ``sign``-wards) is >= 0 while at n + ``sign`` it is < 0, searched from ``hint``;
    None when the search would leave ``-reach .. reach`` (the caller then searches
    from the estimate, which knows what to report at the limits).

    Steps along the lattice guided by the values: the mixture is smooth, nearly a
    straight line over a few points, so the point where the line through the last two
    values crosses 0 is where to look next (beyond a bracket at most ``_LEAP`` points
    or twice the last step away; inside one, strictly inside). A bound that did not move
    costs 2 values, one that moved a few points 3-4. What it finds does not depend on
    the guesses: only on which points are >= 0, as a bisection's would."""
    known: dict[int, float] = {}

    def at(x: int) -> float:
        # x counts lattice points outwards (n = sign * x): ``value`` falls as x grows.
        if abs(x) > reach:
            raise _Beyond
        found = known.get(x)
        if found is None:
            found = known[x] = value(sign * x)
        return found

    def guess(a: int, b: int) -> float | None:
        """Where the line through the values at a and b crosses 0 (None: no line)."""
        va, vb = at(a), at(b)
        if not (math.isfinite(va) and math.isfinite(vb)) or va == vb:
            return None
        crossing = a + va * (b - a) / (va - vb)
        return crossing if math.isfinite(crossing) else None  # values a hair apart

    x = sign * hint
    try:
        if at(x) >= 0:  # the bound lies outwards: step out until a value is < 0
            low, high = x, x + 1
            while at(high) >= 0:
                reach_out = max(_LEAP, 2 * (high - low))
                target = guess(low, high)  # the first point < 0 is expected just past it
                step = reach_out if target is None else min(reach_out, max(1, math.floor(target) + 1 - high))
                low, high = high, high + step
        else:  # inwards, until a value is >= 0
            low, high = x - 1, x
            while at(low) < 0:
                reach_in = max(_LEAP, 2 * (high - low))
                target = guess(low, high)
                step = reach_in if target is None else min(reach_in, max(1, low - math.floor(target)))
                low, high = low - step, low
        # at(low) >= 0 > at(high): close in on the neighbouring pair, by the line
        # twice (its guess and the guess's neighbour), then by halves.
        rounds = 0
        while high - low > 1:
            rounds += 1
            target = guess(low, high) if rounds <= 2 else None
            middle = (low + high) // 2 if target is None else math.floor(target)
            middle = max(low + 1, min(high - 1, middle))
            if at(middle) >= 0:
                low = middle
                if target is not None and high - low > 1:
                    if at(low + 1) < 0:
                        high = low + 1
                    else:
                        low += 1
            else:
                high = middle
                if target is not None and high - low > 1:
                    if at(high - 1) >= 0:
                        low = high - 1
                    else:
                        high -= 1
    except _Beyond:
        return None
    return sign * low


def _bisect(rejected: Callable[[int], bool], inner: int, outer: int) -> tuple[int, int]:
    """Neighbouring grid indices between ``inner`` (rejected) and ``outer`` (not), by
    bisection: the one rejected and its neighbour beyond, not."""
    while abs(outer - inner) > 1:
        middle = (inner + outer) // 2
        if rejected(middle):
            inner = middle
        else:
            outer = middle
    return inner, outer


class RateAccumulator:
    """:func:`compare_rates` kept up to date: ``add`` closed batches in time order,
    ``result`` whenever a look is due.

    Keeps the running sums of the p-value path (one per grid point), the summed
    counts, and the informative batches' (x, k, n/b) - three numbers each, which the
    confidence bounds need (they are found by bound search over rho0, which no fixed set
    of sums can answer) - plus the memo of the last looks' bound searches. ``size`` is
    what it keeps, in 8-byte numbers, for a caller bounding its memory. A result
    after any sequence of ``add`` calls equals ``compare_rates`` of all the batches
    added: ``p_value`` and ``first_crossing`` exactly, the bounds up to the rounding
    of sums added in other chunks (a bound search step could differ only on a tie with
    the threshold to 1e-15)."""

    def __init__(self, *, alpha: float, min_effect: float = 0.0, prior_scale: float = 1.0) -> None:
        _check_parameters(alpha, min_effect, prior_scale)
        self.alpha, self.min_effect, self.prior_scale = alpha, min_effect, prior_scale
        self._path = _PathState(1.0 + min_effect, prior_scale)
        self._likelihood = _Likelihood()
        self._totals = (0.0, 0.0, 0.0, 0.0)  # of the paired batches
        self._unpaired = (0.0, 0.0)  # requests and events after, without a before-window
        self._p_value = 1.0
        self._first_crossing: int | None = None
        self._hints: tuple[int | None, int | None] = (None, None)  # lattice points of the last look's bounds
        self.batches = 0

    @property
    def size(self) -> int:
        """What is kept, in 8-byte numbers: 3 per informative batch, and the bound searches'
        memo (``_MEMO_POINT_NUMBERS`` a point: its bytes, not its one float)."""
        return 3 * len(self._likelihood) + _MEMO_POINT_NUMBERS * self._likelihood.memo_size

    def add(self, batches: Sequence[CountBatch]) -> None:
        """Adds the next batches (in time order, after those already added)."""
        if not batches:
            return
        informative = _informative(batches)
        self._p_value, self._first_crossing = self._walk(self._path, informative)
        self._likelihood.extend([b for _, b in informative])
        self._totals, self._unpaired = _summed(self._totals, self._unpaired, batches)
        self.batches += len(batches)

    def _walk(self, path: _PathState, informative: Sequence[tuple[int, _Batch]]) -> tuple[float, int | None]:
        """Adds the informative batches to ``path``: the p-value after them, and the
        first batch where it fell below alpha."""
        p_value, first = self._p_value, self._first_crossing
        for index, batch in informative:
            p_value = path.add(batch)
            if first is None and p_value < self.alpha:
                first = self.batches + index
        return p_value, first

    def result(self) -> RateComparison:
        return self._comparison(
            self._totals, self._unpaired, self._p_value, self._first_crossing, self._likelihood, self.batches
        )

    def look(self, batches: Sequence[CountBatch]) -> RateComparison:
        """The result as if ``batches`` were added, without adding them: for a caller
        whose newest batches may still change (late scrapes). It equals ``add`` then
        ``result`` on a copy (the p-value exactly, the bounds to the rounding of their
        sums), with one bound search on top of the kept memo instead of a copy of it.
        Marks the memo's points as asked, like a look at the kept batches."""
        if not batches:
            return self.result()
        informative = _informative(batches)
        path = copy.copy(self._path)  # ``_PathState.add`` rebinds its lists, never mutates them
        p_value, first = self._walk(path, informative)
        totals, unpaired = _summed(self._totals, self._unpaired, batches)
        overlay = _Overlay(self._likelihood, [b for _, b in informative])
        return self._comparison(totals, unpaired, p_value, first, overlay, self.batches + len(batches))

    def _comparison(
        self,
        totals: tuple[float, float, float, float],
        unpaired: tuple[float, float],
        p_value: float,
        first_crossing: int | None,
        likelihood: _Likelihood | _Overlay,
        batches: int,
    ) -> RateComparison:
        events_after, total_after, events_before, total_before = totals
        ratio: float | None = None
        if total_after > 0 and total_before > 0:
            share_after, share_before = events_after / total_after, events_before / total_before
            if share_before > 0:
                ratio = share_after / share_before
            elif share_after > 0:
                ratio = math.inf
        if len(likelihood):
            start = 0
            if ratio is not None and 0 < ratio < math.inf:
                start = round(math.log(ratio) / GRID_STEP)
            elif ratio == math.inf:
                start = math.ceil(_LOG_LIMIT / GRID_STEP)
            lower, lower_hint = _bound(likelihood, start, self.prior_scale, self.alpha, +1, self._hints[0])
            upper, upper_hint = _bound(likelihood, start, self.prior_scale, self.alpha, -1, self._hints[1])
            self._hints = (lower_hint, upper_hint)
            likelihood.prune()
        else:
            lower, upper = 0.0, math.inf
        return RateComparison(
            ratio=ratio,
            ratio_lower=lower,
            ratio_upper=upper,
            p_value=p_value,
            events_after=events_after,
            total_after=total_after,
            events_before=events_before,
            total_before=total_before,
            alpha=self.alpha,
            min_effect=self.min_effect,
            batches=batches,
            informative_batches=len(likelihood),
            first_crossing=first_crossing,
            unpaired_after=unpaired[0],
            unpaired_events=unpaired[1],
        )


def _summed(
    totals: tuple[float, float, float, float], unpaired: tuple[float, float], batches: Sequence[CountBatch]
) -> tuple[tuple[float, float, float, float], tuple[float, float]]:
    """The summed counts of the paired batches, and of the after-windows without a
    before-window (requests, events), with ``batches`` added."""
    paired = [b for b in batches if b.total_after > 0 and b.total_before > 0]
    alone = [b for b in batches if b.total_before <= 0]
    return (
        math.fsum([totals[0], *(b.events_after for b in paired)]),
        math.fsum([totals[1], *(b.total_after for b in paired)]),
        math.fsum([totals[2], *(b.events_before for b in paired)]),
        math.fsum([totals[3], *(b.total_before for b in paired)]),
    ), (
        math.fsum([unpaired[0], *(b.total_after for b in alone)]),
        math.fsum([unpaired[1], *(b.events_after for b in alone)]),
    )


def compare_rates(
    batches: Sequence[CountBatch],
    *,
    alpha: float,
    min_effect: float = 0.0,
    prior_scale: float = 1.0,
) -> RateComparison:
    """Compare the event share after the deployment with the share before it.

    ``batches`` are in time order on a grid fixed in advance (the decision must not
    depend on the data: do not drop or merge batches after looking at them).
    ``alpha`` is the false-failure budget of this comparison over all its looks;
    ``min_effect`` the smallest relative rise worth acting on (the p-value tests
    ``rho <= 1 + min_effect``); ``prior_scale`` the spread, in log(rho), of the
    effects the test is tuned to (1: up to about e^2-fold rises find the most power).
    One :class:`RateAccumulator` fed every batch at once."""
    accumulator = RateAccumulator(alpha=alpha, min_effect=min_effect, prior_scale=prior_scale)
    accumulator.add(batches)
    return accumulator.result()


# --- Latency histograms -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HistogramComparison:
    """The share of requests slower than ``boundary`` after vs before the deployment
    (``comparison``, with events = requests above the boundary), and the estimated
    ``quantile`` of latency before and after (None without requests)."""

    comparison: RateComparison
    boundary: float
    quantile: float
    quantile_before: float | None
    quantile_after: float | None

    @property
    def ratio(self) -> float | None:
        return self.comparison.ratio

    @property
    def ratio_lower(self) -> float:
        return self.comparison.ratio_lower

    @property
    def ratio_upper(self) -> float:
        return self.comparison.ratio_upper

    @property
    def p_value(self) -> float:
        return self.comparison.p_value


def _check_buckets(bounds: Sequence[float], counts: Sequence[float], what: str) -> None:
    if len(counts) != len(bounds):
        raise ValueError(f"{what} has {len(counts)} bucket counts for {len(bounds)} bounds")
    previous = 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if not math.isfinite(count) or count < 0:
            raise ValueError(f"{what}: bucket le={bound} has count {count!r}")
        if count < previous - 1e-9 * max(1.0, previous):
            raise ValueError(f"{what}: bucket counts must be cumulative (le={bound} decreases)")
        previous = count


def _check_bounds(bounds: Sequence[float]) -> None:
    if len(bounds) < 2 or bounds[-1] != math.inf:
        raise ValueError("bounds need at least one finite bound and end with +Inf")
    if any(not b < c for b, c in itertools.pairwise(bounds)) or math.isnan(bounds[0]):
        raise ValueError("bounds must be strictly increasing")


def histogram_quantile(quantile: float, bounds: Sequence[float], counts: Sequence[float]) -> float | None:
    """The ``quantile`` of a cumulative histogram, interpolated linearly inside its
    bucket as PromQL's ``histogram_quantile`` does (the lowest bucket from 0, a
    quantile in the +Inf bucket is the highest finite bound). None without counts."""
    total = counts[-1]
    if total <= 0:
        return None
    rank = quantile * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if bound == math.inf:
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def _choose_boundary(quantile: float, bounds: Sequence[float], counts: Sequence[float]) -> float:
    """The finite bound whose share of requests above it is nearest (in log scale) to
    1 - quantile; with no requests, the first bound at or above nothing: the highest."""
    total = counts[-1]
    target = 1.0 - quantile
    best, best_distance = bounds[-2], math.inf
    for bound, count in zip(bounds[:-1], counts[:-1], strict=True):
        above = (total - count) / total if total > 0 else 0.0
        distance = math.inf if above <= 0 else abs(math.log(above / target))
        if distance < best_distance:
            best, best_distance = bound, distance
    return best


def histogram_batches(
    bounds: Sequence[float],
    after: Sequence[Sequence[float]],
    before: Sequence[Sequence[float]],
    boundary: float,
) -> list[CountBatch]:
    """Per batch: requests above ``boundary`` (events) and all requests, after and
    before. ``after[i]`` / ``before[i]`` are batch i's cumulative bucket counts, one per
    bound (the last one, le="+Inf", is all requests)."""
    _check_bounds(bounds)
    if boundary not in bounds[:-1]:
        raise ValueError(f"boundary {boundary} is not a finite bucket bound")
    if len(after) != len(before):
        raise ValueError(f"{len(after)} after-batches but {len(before)} before-batches")
    for i, (a, b) in enumerate(zip(after, before, strict=True)):
        _check_buckets(bounds, a, f"after-batch {i}")
        _check_buckets(bounds, b, f"before-batch {i}")
    return _split_at(list(bounds).index(boundary), after, before)


def _split_at(
    position: int, after: Sequence[Sequence[float]], before: Sequence[Sequence[float]]
) -> list[CountBatch]:
    """``histogram_batches`` of rows already checked, the boundary at ``position``."""
    return [
        CountBatch(
            events_after=max(0.0, a[-1] - a[position]),
            total_after=a[-1],
            events_before=max(0.0, b[-1] - b[position]),
            total_before=b[-1],
        )
        for a, b in zip(after, before, strict=True)
    ]


class BoundaryMoved(Exception):
    """A ``HistogramAccumulator`` that drops its rows (``keep_rows=False``) was asked to
    look with another boundary than its test's: only a recount of every batch answers."""


class HistogramAccumulator:
    """:func:`compare_histograms` kept up to date: ``add`` closed batches' bucket
    counts in time order, ``result`` whenever a look is due.

    The boundary is chosen at each look from everything added so far (the summed
    before-windows, unless ``boundary`` or ``calibration`` fixes it), as a full
    recomputation would; so the batches' bucket counts are kept (``size``: two rows
    of ``len(bounds)`` numbers a batch), and the comparison is rebuilt from them when
    the chosen boundary moves, which the sums of many before-windows seldom make it
    do. Otherwise a look adds only the new batches to a :class:`RateAccumulator`.

    With ``keep_rows=False`` a look drops the rows it added to that test (``size`` is
    then about the test's alone, as for a rate), and a later look whose boundary moved
    raises :class:`BoundaryMoved`: the caller counts every batch afresh (the
    Prometheus provider asks them again). The first look never raises."""

    def __init__(
        self,
        bounds: Sequence[float],
        *,
        alpha: float,
        quantile: float = 0.95,
        min_effect: float = 0.0,
        boundary: float | None = None,
        calibration: Sequence[float] | None = None,
        prior_scale: float = 1.0,
        keep_rows: bool = True,
    ) -> None:
        _check_bounds(bounds)
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {quantile!r}")
        _check_parameters(alpha, min_effect, prior_scale)
        if calibration is not None:
            _check_buckets(bounds, calibration, "calibration")
        if boundary is not None and boundary not in bounds[:-1]:
            raise ValueError(f"boundary {boundary} is not a finite bucket bound")
        self.bounds = tuple(bounds)
        self.alpha, self.quantile, self.min_effect, self.prior_scale = (
            alpha,
            quantile,
            min_effect,
            prior_scale,
        )
        self._boundary, self._calibration = boundary, (list(calibration) if calibration is not None else None)
        self._after = array("d")  # each batch's cumulative counts, one row after another
        self._before = array("d")
        self._summed_after = [0.0] * len(bounds)
        self._summed_before = [0.0] * len(bounds)
        self._rates: RateAccumulator | None = None
        self._rates_boundary: float | None = None
        self._keep_rows = keep_rows
        self._dropped = 0  # rows dropped (keep_rows=False): the flat arrays start after them
        self.batches = 0

    @property
    def size(self) -> int:
        """What is kept that grows with the batches, in 8-byte numbers."""
        return len(self._after) + len(self._before) + (self._rates.size if self._rates else 0)

    def add(self, after: Sequence[Sequence[float]], before: Sequence[Sequence[float]]) -> None:
        """Adds the next batches: ``after[i]`` / ``before[i]`` are a batch's cumulative
        bucket counts, one per bound, after the deployment and in its before-window."""
        self._check_rows(after, before)
        for rows, flat, summed in (
            (after, self._after, self._summed_after),
            (before, self._before, self._summed_before),
        ):
            for row in rows:
                flat.extend(row)
            for j in range(len(self.bounds)):
                summed[j] = math.fsum([summed[j], *(row[j] for row in rows)])
        self.batches += len(after)

    def _check_rows(self, after: Sequence[Sequence[float]], before: Sequence[Sequence[float]]) -> None:
        """ValueError naming the first batch (numbered after those added) whose rows are wrong."""
        if len(after) != len(before):
            raise ValueError(f"{len(after)} after-batches but {len(before)} before-batches")
        for i, (a, b) in enumerate(zip(after, before, strict=True)):
            _check_buckets(self.bounds, a, f"after-batch {self.batches + i}")
            _check_buckets(self.bounds, b, f"before-batch {self.batches + i}")

    def _rows(self, flat: array[float], start: int) -> list[list[float]]:
        width = len(self.bounds)
        first, end = start - self._dropped, self.batches - self._dropped
        return [list(flat[i * width : (i + 1) * width]) for i in range(first, end)]

    def result(self) -> HistogramComparison:
        rates, boundary = self._current(self._choose(self._summed_before))
        return self._comparison(rates.result(), boundary, self._summed_before, self._summed_after)

    def look(
        self, after: Sequence[Sequence[float]], before: Sequence[Sequence[float]]
    ) -> HistogramComparison:
        """The result as if these batches were added, without adding them (see
        :meth:`RateAccumulator.look`): the boundary chosen from everything so far and
        these, the kept batches brought into the test (their rows then dropped, with
        ``keep_rows=False``), these batches looked at on top of it. Raises
        :class:`BoundaryMoved` as ``result`` would."""
        if not after and not before:
            return self.result()
        self._check_rows(after, before)
        summed_after = [math.fsum([s, *(r[j] for r in after)]) for j, s in enumerate(self._summed_after)]
        summed_before = [math.fsum([s, *(r[j] for r in before)]) for j, s in enumerate(self._summed_before)]
        rates, boundary = self._current(self._choose(summed_before))
        extra = _split_at(self.bounds.index(boundary), after, before)
        return self._comparison(rates.look(extra), boundary, summed_before, summed_after)

    def _choose(self, summed_before: Sequence[float]) -> float:
        if self._boundary is not None:
            return self._boundary
        reference = summed_before if self._calibration is None else self._calibration
        return _choose_boundary(self.quantile, self.bounds, reference)

    def _current(self, boundary: float) -> tuple[RateAccumulator, float]:
        """The test at ``boundary`` with every added batch in it (rebuilt from the rows
        when the boundary moved; :class:`BoundaryMoved` when they were dropped)."""
        if self._rates is None or boundary != self._rates_boundary:
            if self._dropped:
                raise BoundaryMoved(
                    f"the boundary moved from le={self._rates_boundary:g} to le={boundary:g}, "
                    f"and the rows of {self._dropped} batches were dropped"
                )
            self._rates = RateAccumulator(
                alpha=self.alpha, min_effect=self.min_effect, prior_scale=self.prior_scale
            )
            self._rates_boundary = boundary
        start = self._rates.batches
        if start < self.batches:
            position = self.bounds.index(boundary)
            rows = self._rows(self._after, start), self._rows(self._before, start)
            self._rates.add(_split_at(position, *rows))
        if not self._keep_rows:
            del self._after[:], self._before[:]
            self._dropped = self.batches
        return self._rates, boundary

    def _comparison(
        self,
        comparison: RateComparison,
        boundary: float,
        summed_before: Sequence[float],
        summed_after: Sequence[float],
    ) -> HistogramComparison:
        return HistogramComparison(
            comparison=comparison,
            boundary=boundary,
            quantile=self.quantile,
            quantile_before=histogram_quantile(self.quantile, self.bounds, summed_before),
            quantile_after=histogram_quantile(self.quantile, self.bounds, summed_after),
        )


def compare_histograms(
    bounds: Sequence[float],
    after: Sequence[Sequence[float]],
    before: Sequence[Sequence[float]],
    *,
    alpha: float,
    quantile: float = 0.95,
    min_effect: float = 0.0,
    boundary: float | None = None,
    calibration: Sequence[float] | None = None,
    prior_scale: float = 1.0,
) -> HistogramComparison:
    """Compare latency after the deployment with before it, from Prometheus buckets.

    ``bounds``: the ``le`` values in increasing order, ending with ``math.inf``.
    ``after[i]`` / ``before[i]``: batch i's cumulative bucket counts (the
    ``increase()`` of each ``_bucket`` series over the batch and over its
    before-window), one per bound. The test compares the share of requests slower
    than ``boundary`` - by default the bound nearest the ``quantile`` of
    ``calibration`` (cumulative counts from a window chosen before the deployment;
    without it, the summed before-windows) - with :func:`compare_rates`: a slower
    tail (a higher p95) raises that share. ``quantile_before``/``quantile_after``
    estimate the quantile from the summed buckets as ``histogram_quantile`` would.
    One :class:`HistogramAccumulator` fed every batch at once."""
    accumulator = HistogramAccumulator(
        bounds,
        alpha=alpha,
        quantile=quantile,
        min_effect=min_effect,
        boundary=boundary,
        calibration=calibration,
        prior_scale=prior_scale,
    )
    accumulator.add(after, before)
    return accumulator.result()


# --- What a check reports ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MeasurementReport:
    """A comparison as a check reports it. ``value`` is the ratio (None when there is
    too little data to decide: the provider then reports no data, an Inconclusive
    run, with ``message``). ``details`` are JSON-ready; their numbers are the names
    ``failWhen`` can use (``ratioLower``, ``pValue``, ``alpha``, ``minEffect``...)."""

    value: float | None
    details: dict[str, Any]
    message: str
    enough_data: bool


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def measurement_details(
    result: RateComparison | HistogramComparison, *, min_requests: float = 100.0
) -> MeasurementReport:
    """The check's value, details and message for a comparison.

    There is enough data to decide once both sides of the paired batches have
    ``min_requests`` requests and at most half of the requests since the deployment
    fall in unpaired batches, or as soon as the test has rejected (``p_value <
    alpha``: evidence is evidence, however little traffic carried it). Otherwise
    ``value`` is None and the message says "not enough traffic yet (N requests ...)":
    never Passed on no evidence - requests after the deployment whose before-window
    holds none are not evidence either way - and never Failed on a quiet service."""
    rates = result.comparison if isinstance(result, HistogramComparison) else result
    significant = rates.p_value < rates.alpha
    # Most of the traffic since the deployment must have been compared before a
    # comparison may pass: errors in batches without a before-window are not evidence
    # of health.
    compared = rates.unpaired_after <= rates.total_after
    enough = significant or (
        rates.total_after >= min_requests and rates.total_before >= min_requests and compared
    )
    details: dict[str, Any] = {
        "ratio": _finite_or_none(rates.ratio),
        "ratioLower": rates.ratio_lower,
        "ratioUpper": _finite_or_none(rates.ratio_upper),
        "pValue": rates.p_value,
        "alpha": rates.alpha,
        "minEffect": rates.min_effect,
        "eventsAfter": rates.events_after,
        "totalAfter": rates.total_after,
        "eventsBefore": rates.events_before,
        "totalBefore": rates.total_before,
        "shareAfter": rates.share_after,
        "shareBefore": rates.share_before,
        "batches": rates.batches,
        "minRequests": min_requests,
        "unpairedAfter": rates.unpaired_after,
    }
    if isinstance(result, HistogramComparison):
        details.update(
            boundary=result.boundary,
            quantile=result.quantile,
            quantileBefore=result.quantile_before,
            quantileAfter=result.quantile_after,
        )
        what = f"requests slower than {result.boundary:g}s"
    else:
        what = "events"
    upper = "inf" if rates.ratio_upper == math.inf else f"{rates.ratio_upper:.3g}"
    unpaired = (
        f"; {rates.unpaired_after:.0f} requests since the deployment ({rates.unpaired_events:.0f} "
        f"{what}) fall in batches whose before-window has no requests and are not compared"
        if rates.unpaired_after > 0
        else ""
    )
    if not enough:
        message = (
            f"not enough traffic yet ({rates.total_after:.0f} requests since the "
            f"deployment, {rates.total_before:.0f} before it; {min_requests:.0f} needed "
            f"on each side){unpaired}"
        )
        return MeasurementReport(None, details, message, False)
    share_after = rates.share_after or 0.0
    share_before = rates.share_before or 0.0
    message = (
        f"{what}: {rates.events_after:.0f}/{rates.total_after:.0f} ({share_after:.3%}) "
        f"after vs {rates.events_before:.0f}/{rates.total_before:.0f} ({share_before:.3%}) "
        f"before; ratio in [{rates.ratio_lower:.3g}, {upper}] at alpha {rates.alpha:g}, "
        f"p={rates.p_value:.3g} for a rise above x{1 + rates.min_effect:g} ({rates.batches} batches)"
    )
    if isinstance(result, HistogramComparison) and result.quantile_before is not None:
        after_q = "n/a" if result.quantile_after is None else f"{result.quantile_after:.3g}s"
        message += f"; p{result.quantile * 100:g} {result.quantile_before:.3g}s before, {after_q} after"
    message += unpaired
    value = rates.ratio if rates.ratio is not None else None
    if value is None:
        # Requests on both sides but no events anywhere: nothing rose.
        value = 1.0 if rates.events_after == 0 else math.inf
    return MeasurementReport(value, details, message, True)
