"""CPU of one run of a comparison check late in a review: recomputed vs kept up to date.

``python -m bench.judge_looks`` (``make bench-judge-looks``). A 72-hour review in
1-minute batches has 4,320 batches at its end. Before the comparison was kept up to
date (``decisions.sequential.RateAccumulator``, ``HistogramAccumulator``, held by the
Prometheus provider), every run recomputed the test over all batches; now a run adds
the batches closed since the last one. This measures, on synthetic counts (20 requests/s
with a daily cycle, a 0.2 % error share, latency buckets of ``prometheus_client``'s
default bounds), the CPU of:

- one run recomputing everything at 1,440 and 4,320 batches (``compare_rates`` /
  ``compare_histograms`` over all batches: what every run did before);
- one run adding 1 batch (a run a minute) and 15 batches (a run every 15 minutes) to a
  test that holds 4,320;
- a whole review's runs, one a minute for 72 hours, kept up to date (4,320 runs);
  recomputed it would be the sum of the first figure over every run, quoted as an
  estimate from the per-batch cost (it takes about half an hour to run).

and the numbers the kept test holds (its ``size``); then a young test: the runs of a
review's first hour on the scale benchmark's fleet traffic (``testbed.fleet``: 10
requests/s, 0.3 % errors, the built-in template's before-window six batches long),
each adding the batch that settled and looking at the 5 newest on top, as the
Prometheus provider does - a review's costliest runs, its bounds wide and its
log-likelihood flat. Figures are CPU seconds of this process (``time.process_time``),
so a loaded machine slows them less than wall time.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from collections.abc import Callable

from postdeploy.decisions import sequential
from testbed import fleet

BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, math.inf)


def _poisson(rng: random.Random, mean: float) -> int:
    return max(0, round(rng.gauss(mean, math.sqrt(mean)))) if mean > 30 else _small_poisson(rng, mean)


def _small_poisson(rng: random.Random, mean: float) -> int:
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def rate_stream(rng: random.Random, count: int) -> list[sequential.CountBatch]:
    batches = []
    for i in range(count):
        rps = 20.0 * (1.0 + 0.8 * math.cos(2 * math.pi * (i / 1440.0)))
        n, b = _poisson(rng, rps * 60), _poisson(rng, rps * 360)
        batches.append(sequential.CountBatch(_poisson(rng, n * 0.002), n, _poisson(rng, b * 0.002), b))
    return batches


def bucket_rows(rng: random.Random, count: int, multiplier: float) -> list[list[float]]:
    # Log-normal latency, median 100 ms, log-sd 0.5: the share below each bound.
    shares = [
        0.5 * (1 + math.erf(math.log(b / 0.1) / (0.5 * math.sqrt(2)))) if b < math.inf else 1.0
        for b in BOUNDS
    ]
    rows = []
    for i in range(count):
        total = _poisson(rng, 20.0 * 60 * multiplier * (1.0 + 0.8 * math.cos(2 * math.pi * (i / 1440.0))))
        rows.append([float(round(total * s)) for s in shares])
    return rows


def _cpu(action: Callable[[], object], repeat: int = 1) -> float:
    started = time.process_time()
    for _ in range(repeat):
        action()
    return (time.process_time() - started) / repeat


def young_looks(minutes: int = 60, newest: int = 5, repeat: int = 5) -> float:
    """CPU seconds per look over a review's first ``minutes`` runs (median of ``repeat``):
    one run a minute adds the batch that settled and looks at the ``newest`` on top."""
    after, before = fleet.RPS * 60, fleet.RPS * 360
    batch = sequential.CountBatch(after * fleet.ERROR_SHARE, after, before * fleet.ERROR_SHARE, before)
    costs = []
    for _ in range(repeat):
        accumulator = sequential.RateAccumulator(alpha=0.005, min_effect=0.2)
        started = time.process_time()
        for run in range(1, minutes + 1):
            settled = max(0, run - newest)
            accumulator.add([batch] * (settled - accumulator.batches))
            accumulator.look([batch] * (run - settled))
        costs.append((time.process_time() - started) / minutes)
    return statistics.median(costs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=4320)
    parser.add_argument("--seed", type=int, default=20261130)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    count = args.batches
    rates = rate_stream(rng, count + 15)
    after, before = bucket_rows(rng, count + 15, 1.0), bucket_rows(rng, count + 15, 6.0)

    def full_rates(n: int) -> Callable[[], object]:
        return lambda: sequential.compare_rates(rates[:n], alpha=0.005, min_effect=0.2)

    def full_histogram(n: int) -> Callable[[], object]:
        return lambda: sequential.compare_histograms(
            BOUNDS, after[:n], before[:n], alpha=0.005, min_effect=0.2
        )

    print(f"{count} one-minute batches; CPU seconds per run (this process)")
    for name, full in (("error share (rates)", full_rates), ("latency (buckets)", full_histogram)):
        print(
            f"{name}: recomputed over all batches: at {count // 3}: {_cpu(full(count // 3)):.3f} s, "
            f"at {count}: {_cpu(full(count)):.3f} s"
        )

    # Kept up to date: a whole review, one run a minute, then the cost of one more run.
    accumulator = sequential.RateAccumulator(alpha=0.005, min_effect=0.2)
    started = time.process_time()
    for i in range(count):
        accumulator.add(rates[i : i + 1])
        accumulator.result()
    review_rates = time.process_time() - started
    histogram = sequential.HistogramAccumulator(BOUNDS, alpha=0.005, min_effect=0.2)
    started = time.process_time()
    for i in range(count):
        histogram.add(after[i : i + 1], before[i : i + 1])
        histogram.result()
    review_histogram = time.process_time() - started

    def one_more(k: int) -> float:
        kept = sequential.RateAccumulator(alpha=0.005, min_effect=0.2)
        kept.add(rates[:count])
        kept.result()
        started = time.process_time()
        kept.add(rates[count : count + k])
        kept.result()
        return time.process_time() - started

    def one_more_histogram(k: int) -> float:
        kept = sequential.HistogramAccumulator(BOUNDS, alpha=0.005, min_effect=0.2)
        kept.add(after[:count], before[:count])
        kept.result()
        started = time.process_time()
        kept.add(after[count : count + k], before[count : count + k])
        kept.result()
        return time.process_time() - started

    for name, more, review, size in (
        ("error share (rates)", one_more, review_rates, accumulator.size),
        ("latency (buckets)", one_more_histogram, review_histogram, histogram.size),
    ):
        one = min(more(1) for _ in range(5))
        fifteen = min(more(15) for _ in range(5))
        print(
            f"{name}: kept up to date, a run adding 1 batch to {count}: {one * 1000:.2f} ms, adding 15: "
            f"{fifteen * 1000:.2f} ms; all {count} runs of a review: {review:.2f} s; numbers kept: {size}"
        )
    print(f"young test, the first hour's looks on the fleet's traffic: {young_looks() * 1000:.2f} ms a look")
    per_batch = _cpu(full_rates(count)) / count
    print(
        f"recomputed, all {count} runs of a review would take about "
        f"{per_batch * count * (count + 1) / 2:.0f} s (rates; runs cost in proportion to their batches)"
    )


if __name__ == "__main__":
    main()
