"""The comparisons kept up to date batch by batch equal the full recomputation.

``sequential.RateAccumulator`` and ``HistogramAccumulator`` add each closed batch once;
the provider and the backtest look at them again and again. These tests feed random
streams in random chunks and compare every look with ``compare_rates`` /
``compare_histograms`` over all the batches so far, and with an independent
recomputation written out here from the module's building blocks as the comparison
was computed before it was made incremental (the running p-value path over every
informative batch, fresh bounds by bisection):

- p-values and the batch of first crossing exactly, bounds and counts to 1e-9;
- streams with quiet stretches (batches without requests or events), rises, a
  fall, an offset (no before-requests for the first batches);
- histograms whose boundary moves as before-windows add up (the comparison is
  rebuilt from the kept counts), an explicit boundary;
- memory: what grows with the batches is three numbers per informative batch (two
  rows of bucket counts per batch for histograms that keep their rows); the bisection
  memo is bounded;
- a histogram that drops its rows (``keep_rows=False``, the provider's) looks the same
  while the boundary stays, and raises ``BoundaryMoved`` when it moves;
- ``look`` (the newest batches on top of the kept test, not added: the provider's
  unsettled batches) equals the full recomputation of the kept batches and those, and
  leaves the kept test as if it had not been asked;
- the bound search's shortcuts find what a plain bisection finds: a search started
  from the last look's bound (a hint, anywhere); a young test's mixtures summed a row
  at a time with numpy equal the point-by-point sums, and give the same bounds.
"""

from __future__ import annotations

import math
import random
import tracemalloc
from collections.abc import Callable

import pytest

from postdeploy.decisions import sequential
from postdeploy.decisions.sequential import CountBatch


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    if math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _same(incremental: sequential.RateComparison, full: sequential.RateComparison) -> None:
    assert incremental.p_value == full.p_value
    assert incremental.first_crossing == full.first_crossing
    assert incremental.batches == full.batches
    assert incremental.informative_batches == full.informative_batches
    for name in (
        "ratio",
        "ratio_lower",
        "ratio_upper",
        "events_after",
        "total_after",
        "events_before",
        "total_before",
    ):
        assert _close(getattr(incremental, name), getattr(full, name)), name


def _reference(batches: list[CountBatch], alpha: float, min_effect: float) -> tuple[float, float, float]:
    """p-value and bounds recomputed from scratch, as before the accumulators."""
    informative = [b for _, b in sequential._informative(batches)]
    path = sequential._running_p_values(informative, 1.0 + min_effect, 1.0)
    p_value = path[-1] if path else 1.0
    if not informative:
        return p_value, 0.0, math.inf
    paired = [b for b in batches if b.total_after > 0 and b.total_before > 0]
    x = sum(b.events_after for b in paired) / sum(b.total_after for b in paired)
    y = sum(b.events_before for b in paired) / sum(b.total_before for b in paired)
    start = round(math.log(x / y) / sequential.GRID_STEP) if x > 0 and y > 0 else 0
    if x > 0 and y == 0:
        start = math.ceil(sequential._LOG_LIMIT / sequential.GRID_STEP)
    lower = _plain_bound(sequential._Likelihood(informative), start, alpha, +1)
    upper = _plain_bound(sequential._Likelihood(informative), start, alpha, -1)
    return p_value, lower, upper


def _plain_bound(likelihood: sequential._Likelihood, start: int, alpha: float, sign: int) -> float:
    """The bound by bisection as the module first computed it: every point by the exact
    mixture, the grid step found by doubling from ``start`` (no hint, no shortcut
    between grid points)."""
    _, log_weights = sequential._mixing_grid(1.0)
    threshold = math.log(1.0 / alpha)
    limit = math.ceil(sequential._LOG_LIMIT / sequential.GRID_STEP)

    def rejected(index: float) -> bool:
        point = round(index * sequential._LATTICE_PER_STEP)
        return likelihood.log_mixture_at_point(point, log_weights, sign) >= threshold

    start, step = max(-limit, min(limit, start)), 1
    if rejected(start):
        inner, outer = start, start + sign
        while rejected(outer):
            if abs(outer) >= limit:
                return math.exp(sequential.GRID_STEP * outer)
            inner, outer = outer, max(-limit, min(limit, outer + sign * step))
            step *= 2
    else:
        outer, inner = start, start - sign
        while not rejected(inner):
            if abs(inner) >= limit:
                return 0.0 if sign > 0 else math.inf
            outer, inner = inner, max(-limit, min(limit, inner - sign * step))
            step *= 2
    while abs(outer - inner) > 1:
        middle = (inner + outer) // 2
        inner, outer = (middle, outer) if rejected(middle) else (inner, middle)
    low, high = float(inner), float(outer)
    for _ in range(sequential._REFINEMENTS):
        middle_point = (low + high) / 2
        low, high = (middle_point, high) if rejected(middle_point) else (low, middle_point)
    return math.exp(sequential.GRID_STEP * low)


def _stream(rng: random.Random, count: int, rho: float) -> list[CountBatch]:
    batches = []
    for i in range(count):
        if rng.random() < 0.1:  # a quiet batch: no requests after, or none before
            batches.append(CountBatch(0, 0, 0, rng.choice([0, 600])))
            continue
        rps = rng.choice([0.05, 1.0, 20.0]) * (1.0 + 0.8 * math.sin(i / 40.0))
        n = max(0, round(rng.gauss(rps * 60, math.sqrt(rps * 60 + 1))))
        b = max(0, round(rng.gauss(rps * 360, math.sqrt(rps * 360 + 1))))
        share = 0.01
        x = min(n, sum(rng.random() < share * rho for _ in range(min(n, 2000))))
        y = min(b, sum(rng.random() < share for _ in range(min(b, 4000))))
        batches.append(CountBatch(x, n, y, b))
    return batches


def _chunks(rng: random.Random, total: int) -> list[int]:
    sizes, left = [], total
    while left > 0:
        size = min(left, rng.choice([1, 1, 1, 2, 5, 15, 40]))
        sizes.append(size)
        left -= size
    return sizes


@pytest.mark.parametrize(
    ("seed", "rho", "min_effect"), [(1, 1.0, 0.2), (2, 2.5, 0.2), (3, 0.5, 0.0), (4, 1.3, 0.0)]
)
def test_looks_after_each_chunk_equal_the_full_recomputation(
    seed: int, rho: float, min_effect: float
) -> None:
    rng = random.Random(seed)
    stream = _stream(rng, 300, rho)
    accumulator = sequential.RateAccumulator(alpha=0.005, min_effect=min_effect)
    seen = 0
    for size in _chunks(rng, len(stream)):
        accumulator.add(stream[seen : seen + size])
        seen += size
        incremental = accumulator.result()
        full = sequential.compare_rates(stream[:seen], alpha=0.005, min_effect=min_effect)
        _same(incremental, full)
        p_value, lower, upper = _reference(stream[:seen], 0.005, min_effect)
        assert incremental.p_value == p_value
        assert _close(incremental.ratio_lower, lower) and _close(incremental.ratio_upper, upper)
    likelihood = accumulator._likelihood
    informative = accumulator.result().informative_batches
    assert accumulator.size == 3 * informative + sequential._MEMO_POINT_NUMBERS * likelihood.memo_size
    # The memo holds the last looks' bisections, not every rho0 ever asked.
    assert likelihood.memo_size <= sequential._MEMO_POINTS


def test_a_rise_crosses_at_the_same_batch_however_it_is_fed() -> None:
    rng = random.Random(7)
    stream = _stream(rng, 200, 3.0)
    full = sequential.compare_rates(stream, alpha=0.005, min_effect=0.2)
    assert full.first_crossing is not None
    one_by_one = sequential.RateAccumulator(alpha=0.005, min_effect=0.2)
    for batch in stream:
        one_by_one.add([batch])
    _same(one_by_one.result(), full)
    assert full.p_value == sequential.p_value_path(stream, min_effect=0.2)[-1]


def test_nothing_added_is_no_evidence() -> None:
    accumulator = sequential.RateAccumulator(alpha=0.01)
    accumulator.add([])
    result = accumulator.result()
    assert (result.p_value, result.ratio_lower, result.ratio_upper, result.batches) == (1.0, 0.0, math.inf, 0)
    _same(result, sequential.compare_rates([], alpha=0.01))


BOUNDS = (0.05, 0.1, 0.25, 0.5, 1.0, math.inf)


def _rows(
    rng: random.Random, count: int, slow: float, requests: int, drift: float = 0.0
) -> list[list[float]]:
    """Cumulative bucket counts of batches whose slow tail moves from batch to batch
    (and grows by ``drift`` of itself a batch)."""
    rows = []
    for i in range(count):
        total = rng.randint(0, requests)
        tail = min(0.35, slow * (1.0 + drift * i) * (1.0 + 0.5 * math.sin(i / 7.0)))
        shares = [0.3, 0.6, 1.0 - tail, 1.0 - tail / 3, 1.0 - tail / 10, 1.0]
        rows.append([float(round(total * s)) for s in shares])
    return rows


@pytest.mark.parametrize(("seed", "boundary"), [(11, None), (12, None), (13, 0.25)])
def test_histogram_looks_equal_the_full_recomputation_when_the_boundary_moves(
    seed: int, boundary: float | None
) -> None:
    rng = random.Random(seed)
    after = _rows(rng, 160, 0.08, 300)
    before = _rows(rng, 160, 0.05, 1800, drift=0.08)
    accumulator = sequential.HistogramAccumulator(BOUNDS, alpha=0.005, min_effect=0.2, boundary=boundary)
    boundaries, seen = set(), 0
    for size in _chunks(rng, len(after)):
        accumulator.add(after[seen : seen + size], before[seen : seen + size])
        seen += size
        incremental = accumulator.result()
        full = sequential.compare_histograms(
            BOUNDS, after[:seen], before[:seen], alpha=0.005, min_effect=0.2, boundary=boundary
        )
        assert incremental.boundary == full.boundary
        assert (incremental.quantile_before, incremental.quantile_after) == (
            full.quantile_before,
            full.quantile_after,
        )
        _same(incremental.comparison, full.comparison)
        boundaries.add(incremental.boundary)
    if boundary is None:
        assert len(boundaries) > 1, "the stream should move the boundary at least once"
    assert accumulator.size == 2 * len(BOUNDS) * 160 + accumulator._rates.size  # type: ignore[union-attr]


@pytest.mark.parametrize("seed", [11, 12])
def test_a_histogram_without_its_rows_looks_the_same_until_the_boundary_moves(seed: int) -> None:
    rng = random.Random(seed)
    after = _rows(rng, 160, 0.08, 300)
    before = _rows(rng, 160, 0.05, 1800, drift=0.08)
    accumulator = sequential.HistogramAccumulator(BOUNDS, alpha=0.005, min_effect=0.2, keep_rows=False)
    seen, looks = 0, 0
    for size in _chunks(rng, len(after)):
        accumulator.add(after[seen : seen + size], before[seen : seen + size])
        seen += size
        full = sequential.compare_histograms(BOUNDS, after[:seen], before[:seen], alpha=0.005, min_effect=0.2)
        try:
            incremental = accumulator.result()
        except sequential.BoundaryMoved as exc:
            assert f"to le={full.boundary:g}" in str(exc)
            break
        looks += 1
        assert incremental.boundary == full.boundary
        _same(incremental.comparison, full.comparison)
        assert accumulator.size == accumulator._rates.size  # type: ignore[union-attr]  # no rows held
    else:
        pytest.fail("the stream should move the boundary")
    assert looks >= 1


def test_histogram_rows_are_checked_as_they_are_added() -> None:
    accumulator = sequential.HistogramAccumulator(BOUNDS, alpha=0.005)
    accumulator.add([[1, 2, 3, 4, 5, 6]], [[1, 2, 3, 4, 5, 6]])
    with pytest.raises(ValueError, match="after-batch 1: bucket counts must be cumulative"):
        accumulator.add([[5, 2, 3, 4, 5, 6]], [[1, 2, 3, 4, 5, 6]])
    with pytest.raises(ValueError, match="1 after-batches but 0 before-batches"):
        accumulator.add([[1, 2, 3, 4, 5, 6]], [])


@pytest.mark.parametrize(("seed", "rho"), [(21, 1.0), (22, 2.5), (23, 0.6)])
def test_a_look_on_top_equals_the_recomputation_and_leaves_the_kept_test(seed: int, rho: float) -> None:
    rng = random.Random(seed)
    stream = _stream(rng, 240, rho)
    kept = sequential.RateAccumulator(alpha=0.005, min_effect=0.2)
    twin = sequential.RateAccumulator(alpha=0.005, min_effect=0.2)  # never looked at on top
    seen = 0
    for size in _chunks(rng, len(stream)):
        kept.add(stream[seen : seen + size])
        twin.add(stream[seen : seen + size])
        seen += size
        newest = stream[seen : seen + rng.choice([0, 1, 3, 6])]
        looked = kept.look(newest)
        _same(looked, sequential.compare_rates(stream[: seen + len(newest)], alpha=0.005, min_effect=0.2))
        _same(kept.result(), twin.result())
    memo = sequential._MEMO_POINT_NUMBERS * sequential._MEMO_POINTS
    assert kept.size <= 3 * kept.result().informative_batches + memo


@pytest.mark.parametrize(("seed", "boundary"), [(11, None), (13, 0.25)])
def test_a_histogram_look_on_top_equals_the_recomputation(seed: int, boundary: float | None) -> None:
    rng = random.Random(seed)
    after = _rows(rng, 160, 0.08, 300)
    before = _rows(rng, 160, 0.05, 1800, drift=0.08)
    accumulator = sequential.HistogramAccumulator(
        BOUNDS, alpha=0.005, min_effect=0.2, boundary=boundary, keep_rows=False
    )
    seen, looks = 0, 0
    for size in _chunks(rng, len(after)):
        accumulator.add(after[seen : seen + size], before[seen : seen + size])
        seen += size
        end = min(len(after), seen + rng.choice([0, 2, 5]))
        full = sequential.compare_histograms(
            BOUNDS, after[:end], before[:end], alpha=0.005, min_effect=0.2, boundary=boundary
        )
        try:
            looked = accumulator.look(after[seen:end], before[seen:end])
        except sequential.BoundaryMoved as exc:
            assert boundary is None and f"to le={full.boundary:g}" in str(exc)
            break
        looks += 1
        assert looked.boundary == full.boundary
        assert (looked.quantile_before, looked.quantile_after) == (full.quantile_before, full.quantile_after)
        _same(looked.comparison, full.comparison)
        # The kept batches went into the test and their rows were dropped; the newest were not added.
        assert accumulator.batches == seen and accumulator._rates.batches == seen  # type: ignore[union-attr]
        assert accumulator.size == accumulator._rates.size  # type: ignore[union-attr]
    else:
        assert boundary is not None, "the stream should move the boundary"
    assert looks >= 2


def test_a_young_test_memoises_nothing_and_looks_the_same() -> None:
    rng = random.Random(31)
    stream = _stream(rng, 2 * sequential._MEMO_MIN_BATCHES, 1.2)
    accumulator = sequential.RateAccumulator(alpha=0.005)
    for end in range(1, len(stream) + 1):
        accumulator.add(stream[end - 1 : end])
        _same(accumulator.result(), sequential.compare_rates(stream[:end], alpha=0.005))
        informative = accumulator.result().informative_batches
        if informative < sequential._MEMO_MIN_BATCHES:
            assert accumulator._likelihood.memo_size == 0
    assert accumulator.result().informative_batches >= sequential._MEMO_MIN_BATCHES
    assert accumulator._likelihood.memo_size > 0


# --- the bound search's shortcuts ----------------------------------------------------


def _likelihoods() -> list[sequential._Likelihood]:
    """Young and old tests, of rare and frequent events, with and without a rise."""
    rng = random.Random(41)
    found = []
    for count, rho in ((3, 1.0), (12, 1.0), (12, 3.0), (60, 0.7), (300, 1.3), (300, 1.0)):
        informative = [b for _, b in sequential._informative(_stream(rng, count, rho))]
        found.append(sequential._Likelihood(informative))
    found.append(sequential._Likelihood([sequential._Batch(1.8, 3.6, 1.0)] * 8))  # the bench fleet, young
    found.append(sequential._Likelihood([sequential._Batch(1.0, 1.0, 0.2)]))  # one event
    return found


def test_a_search_from_a_hint_anywhere_finds_the_same_bound() -> None:
    limit = math.ceil(sequential._LOG_LIMIT / sequential.GRID_STEP)
    for likelihood in _likelihoods():
        for sign in (1, -1):
            plain = _plain_bound(likelihood, 0, 0.005, sign)
            found, index = sequential._bound(likelihood, 0, 1.0, 0.005, sign)
            assert found == plain
            if index is None:
                assert plain in (0.0, math.inf) or abs(math.log(plain)) >= sequential._LOG_LIMIT
                continue
            assert plain == math.exp(sequential._LATTICE * index)  # the bound's lattice point
            fine = sequential._LATTICE_PER_STEP
            edge = limit * fine
            for hint in (
                *(index + d for d in (0, 1, -1, 2, -3, 9, -9, 40, -40, 16 * 9, -16 * 40, 5000, -5000)),
                0,
                edge - fine,
                -edge,
                edge + 3,
            ):
                assert sequential._bound(likelihood, 0, 1.0, 0.005, sign, hint) == (plain, index), hint


def test_a_young_tests_rows_give_the_point_by_point_mixture() -> None:
    """A likelihood that memoises nothing has its mixtures computed a whole row at a
    time with numpy; they equal the point-by-point loop's (same terms, same cut) to
    the rounding of their sums, and so do the bounds found with them."""
    rng = random.Random(53)
    _, log_weights = sequential._mixing_grid(1.0)
    young = [item for item in _likelihoods() if item.rows() is not None]
    assert len(young) >= 4
    for likelihood in young:
        rows = likelihood.rows()
        assert rows is not None
        for _ in range(60):
            sign = rng.choice([1, -1])
            n0 = rng.randrange(-250 * 16, 250 * 16)
            by_row = sequential._row_mixture(rows, n0, log_weights, sign)
            by_point = sequential._log_mixture_at_point(likelihood.at_point, n0, log_weights, sign)
            assert math.isclose(by_row, by_point, rel_tol=1e-9, abs_tol=1e-9), (n0, sign)
        for sign in (1, -1):
            found, _ = sequential._bound(likelihood, 0, 1.0, 0.005, sign)
            scalar = sequential._Likelihood.__new__(sequential._Likelihood)
            scalar.__dict__.update(likelihood.__dict__)
            scalar.rows = lambda: None  # type: ignore[method-assign]
            assert found == sequential._bound(scalar, 0, 1.0, 0.005, sign)[0]
    # An overlay over a young test: the kept batches and the newest ones together.
    base, extra = young[1], [sequential._Batch(2.0, 9.0, 0.3), sequential._Batch(0.0, 4.0, 0.2)]
    overlay = sequential._Overlay(base, extra)
    whole = sequential._Likelihood(
        [*(sequential._Batch(x, k, a) for x, k, a in zip(base._x, base._k, base._a, strict=True)), *extra]
    )
    overlay_rows = overlay.rows()
    assert overlay_rows is not None
    for n0 in (-300, 0, 17, 800):
        for sign in (1, -1):
            assert math.isclose(
                sequential._row_mixture(overlay_rows, n0, log_weights, sign),
                sequential._log_mixture_at_point(whole.at_point, n0, log_weights, sign),
                rel_tol=1e-9,
                abs_tol=1e-9,
            )


def test_a_memo_point_costs_no_more_bytes_than_size_counts() -> None:
    """``size`` bounds memory in 8-byte numbers: a memo point, two dict entries with a
    float and an int, counts as ``_MEMO_POINT_NUMBERS`` of them, whatever the dicts'
    growth has reached."""
    rng = random.Random(47)
    batches = [
        sequential._Batch(rng.randint(1, 5), rng.randint(5, 20), 0.2)
        for _ in range(sequential._MEMO_MIN_BATCHES + 8)
    ]
    for points in (10, 100, 700, 1500, sequential._MEMO_POINTS):
        likelihood = sequential._Likelihood(batches)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for n in range(points):
                likelihood.penalty_point(100_000 + 7 * n)
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert likelihood.memo_size == points
        assert grown <= 8 * sequential._MEMO_POINT_NUMBERS * points, (points, grown / points)


def test_a_search_from_a_near_hint_asks_few_mixtures() -> None:
    """From the bound's own lattice point a search asks 2 mixtures (the point and its
    neighbour beyond); from a few points off, at most 5 (the line through two values
    lands next to the bound). The values are those asked through ``_crossing``."""
    _, log_weights = sequential._mixing_grid(1.0)
    threshold = math.log(1.0 / 0.005)
    reach = (math.ceil(sequential._LOG_LIMIT / sequential.GRID_STEP) - 1) * sequential._LATTICE_PER_STEP
    asked: list[int] = []

    def values(likelihood: sequential._Likelihood, sign: int) -> Callable[[int], float]:
        def value(n: int) -> float:
            asked.append(n)
            return likelihood.log_mixture_at_point(n, log_weights, sign) - threshold

        return value

    for likelihood in _likelihoods():
        for sign in (1, -1):
            _, index = sequential._bound(likelihood, 0, 1.0, 0.005, sign)
            if index is None or abs(index) + 16 > reach:
                continue
            asked.clear()
            assert sequential._crossing(values(likelihood, sign), index, sign, reach) == index
            assert len(asked) == 2
            for off in (3, -3, 8, -8):
                asked.clear()
                assert sequential._crossing(values(likelihood, sign), index + off, sign, reach) == index
                assert len(asked) <= 5, (off, asked)


def test_a_search_survives_a_line_beyond_any_float() -> None:
    """Values so large that the line through two of them crosses 0 beyond any float
    (9e307 * 64 overflows): the search halves instead of failing."""

    def value(n: int) -> float:
        return 1e308 if n < 40 else (9e307 if n < 90 else -1.0)

    assert sequential._crossing(value, 50, 1, 10_000) == 89
    assert sequential._crossing(value, 120, 1, 10_000) == 89
