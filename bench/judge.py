"""The judge benchmark: ``make bench-judge`` (``python -m bench.judge``).

Monte Carlo over synthetic request streams (``bench.judge_streams``), judged by the
decision code the operator runs: the built-in template is loaded from its file and
resolved by ``decisions.templates`` (so its conditions, baselines, failure limits,
phases and intervals are the ones that ship), each simulated check runs at the slots
``decisions.phases`` gives it, and every run goes through ``decisions.checks.record``
(``failWhen`` parsed by ``decisions.conditions``, ``failureLimit``...). Only what the
provider would have measured is simulated: what Prometheus answers about the stream.

Two rules side by side:

- **today's rule** - the template as on main at commit ``LEGACY_COMMIT`` (read with
  ``git show``): its ``error-rate`` and ``latency-p95`` checks, instant ``rate()``
  queries over ``rateWindow`` against the same query at ``deployedAt``;
- **the new default** - the template in the working tree
  (``operator/postdeploy/defaults/checklist.yaml``), or the one ``--template`` names:
  every check whose query the benchmark knows how to answer (see ``simulator_for``);
  the others are listed as not simulated.

For each traffic level (daily mean requests per second) and scenario it draws
releases at random minutes of the day and reports, per rule: the share of releases
judged Failed (with a 95 % Clopper-Pearson interval), the share failed within 10
minutes and within the first phase, the median time to the failing run and the
minute by which 95 % of the releases were caught. A
healthy release keeps its true 5xx share (0.2 %, and 1 %) and its latency; the
regressions multiply the 5xx share (x1.5, x2, x5) or raise p95 latency with the mean
unchanged (``judge_streams.mixture_for_p95``), or halve the request rate (the
``throughput`` check's regression). As a reference for what any test can do, each
regression also gets two fixed-sample, single-look tests at 10 minutes: an *oracle*
that knows the true pre-deployment share exactly (exact binomial test), and a
two-sample test against the 10 minutes before the deployment (conditional binomial
test), both one-sided at ``--alpha``; for the request rate, its known Poisson mean
and the same 10 minutes a week earlier.

Usage::

    python -m bench.judge [--quick] [--releases 1000] [--other-releases 200]
                          [--levels 0.1,1,5,20,100,1000] [--workers 2] [--markdown FILE]
                          [--rules today,new] [--checks throughput,...] [--kinds healthy,traffic]
                          [--template FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import math
import multiprocessing
import os
import pathlib
import platform
import re
import statistics as stats
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import yaml
from scipy import stats as scipy_stats

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from bench import judge_compare  # noqa: E402
from bench import judge_streams as streams  # noqa: E402
from postdeploy import defaults  # noqa: E402
from postdeploy.decisions import checks, phases, templates  # noqa: E402
from postdeploy.kit import durations  # noqa: E402
from postdeploy.models.measurements import Measurement  # noqa: E402
from postdeploy.models.reviews import CheckState  # noqa: E402

__all__ = [
    "LEGACY_COMMIT",
    "Outcome",
    "Rule",
    "Scenario",
    "clopper_pearson",
    "judge_release",
    "load_rule",
    "main",
    "simulator_for",
]

LEGACY_COMMIT = "3563633"
TEMPLATE_PATH = "operator/postdeploy/defaults/checklist.yaml"
LEVELS = (0.1, 1.0, 5.0, 20.0, 100.0, 1000.0)
BASE_SHARE = 0.002
DETECT_WITHIN = 10  # minutes, the target
MINUTE = datetime.timedelta(minutes=1)
WEEK = 7 * 24 * 60  # minutes
EPOCH = datetime.datetime(2026, 1, 5, tzinfo=datetime.UTC)  # a Monday, 00:00 UTC
BASE_LATENCY = streams.Latency(median=0.1, sigma=0.5)
BASE_P95 = BASE_LATENCY.quantile(0.95)


# --- what the provider would measure ----------------------------------------------------


class Simulator(Protocol):
    """Answers one check's runs from a stream, as its provider would."""

    def spans(self, start: int, end: int) -> list[streams.Span]:
        """Minutes of the stream that runs at offsets in [start, end) look at."""
        ...

    def runs(self, stream: streams.Stream, slots: list[int]) -> list[int]:
        """Which of the runs at minutes ``slots`` could fail (indices, ascending)."""
        ...

    def measure(self, stream: streams.Stream, minute: int, memo: Mapping[str, Any]) -> Measurement: ...


@dataclasses.dataclass(frozen=True)
class WindowRatio:
    """An instant PromQL query over ``rate(...[window])`` with an optional baseline.

    ``kind`` is ``errors`` (sum of 5xx rates / sum of request rates), ``quantile``
    (``histogram_quantile(q, sum by (le) (rate(..._bucket[window])))``), ``requests``
    (``sum(rate(http_requests_total[window]))``: requests per second) or
    ``request-count`` (``sum(increase(...))``: requests in the window). The baseline is
    the same query at the deployment (``preDeploy``) or ``offset`` earlier, as the
    Prometheus provider does. No requests in the window is NaN (NoData) for a share or
    a quantile, and 0 for the request kinds (the counters exist).
    """

    kind: str
    window: int  # minutes
    quantile: float = 0.95
    baseline_at: Callable[[int], int] | None = None  # minute of the baseline, from the run's minute
    bounds: tuple[float, ...] = streams.DEFAULT_BOUNDS

    def spans(self, start: int, end: int) -> list[streams.Span]:
        needed: list[streams.Span] = [(start - self.window, end)]
        if self.baseline_at is not None:
            first, last = self.baseline_at(start), self.baseline_at(max(start, end - 1))
            needed.append((min(first, last) - self.window, max(first, last)))
        return needed

    def runs(self, stream: streams.Stream, slots: list[int]) -> list[int]:
        return list(range(len(slots)))

    def _value(self, stream: streams.Stream, minute: int) -> float:
        counts = stream.counts(minute - self.window, minute)
        if self.kind == "requests":
            return counts.requests / (self.window * 60)
        if self.kind == "request-count":
            return float(counts.requests)
        if counts.requests == 0:
            return math.nan
        if self.kind == "errors":
            return counts.errors / counts.requests
        return streams.histogram_quantile(self.quantile, self.bounds, counts.buckets)

    def measure(self, stream: streams.Stream, minute: int, memo: Mapping[str, Any]) -> Measurement:
        value = self._value(stream, minute)
        if math.isnan(value):
            return Measurement.no_data("all 1 series are NaN or infinite")
        if self.baseline_at is None:
            return Measurement.ok(value)
        baseline = self._value(stream, self.baseline_at(minute))
        if math.isnan(baseline):
            return Measurement.ok(value, details={"baselineNote": "no baseline: NaN"})
        return Measurement.ok(value, baseline=baseline)


_WINDOW = re.compile(r"\[(\d+[smhdw])\]")
# All requests, as the built-in throughput check asks: the sum of the rates (or of the
# increases) of ``http_requests_total`` under the selector, which has no ``code`` matcher.
_ALL_REQUESTS = re.compile(
    r"\s*sum\s*\(\s*(rate|increase)\s*\(\s*http_requests_total\s*\{(.*?)\}\s*\[\w+\]\s*\)\s*\)\s*"
)


def _rendered(query: str, parameters: Mapping[str, str]) -> str:
    for name, value in parameters.items():
        query = query.replace("{{" + name + "}}", value)
    return query


def simulator_for(
    check: templates.ResolvedCheck, phase: templates.ResolvedPhase, parameters: Mapping[str, str]
) -> Simulator | None:
    """The simulator of a check whose query the benchmark can answer, else None.

    Known: comparisons (``prometheus.compare``) of the 5xx share of
    ``http_requests_total`` or of ``http_request_duration_seconds_bucket``
    (``bench.judge_compare``), and instant queries of the 5xx share of ``http_requests_total`` and of
    ``histogram_quantile`` over ``http_request_duration_seconds_bucket``, and of all
    requests per second or in the window (``sum(rate(http_requests_total{...}[w]))``,
    ``sum(increase(...))``, without a ``code`` matcher), each over one window, with a
    ``preDeploy`` or ``offset`` baseline or none.
    """
    spec = check.spec.prometheus
    if spec is not None and spec.compare is not None:
        return judge_compare.compare_simulator(check, phase, parameters)
    if spec is None or spec.range is not None:
        return None
    query = _rendered(spec.query, parameters)
    windows = {durations.parse_duration(w) for w in _WINDOW.findall(query)}
    if len(windows) != 1:
        return None
    window = windows.pop() / MINUTE
    if window != int(window):
        raise ValueError(f"check {check.name}: rate window of {window} minutes is not whole minutes")
    baseline_at: Callable[[int], int] | None = None
    if check.spec.baseline is not None and check.spec.baseline.pre_deploy:
        baseline_at = _at_deployment
    elif check.spec.baseline is not None and check.spec.baseline.offset:
        back = int(durations.parse_duration(check.spec.baseline.offset) / MINUTE)
        baseline_at = _Back(back)
    quantile = re.search(r"histogram_quantile\(\s*([0-9.]+)\s*,", query)
    if quantile and "http_request_duration_seconds_bucket" in query:
        return WindowRatio("quantile", int(window), float(quantile.group(1)), baseline_at)
    if "http_requests_total" in query and 'code=~"5.."' in query and "histogram_quantile" not in query:
        return WindowRatio("errors", int(window), baseline_at=baseline_at)
    every = _ALL_REQUESTS.fullmatch(query)
    if every and "code" not in every.group(2):
        kind = "requests" if every.group(1) == "rate" else "request-count"
        return WindowRatio(kind, int(window), baseline_at=baseline_at)
    return None


def _at_deployment(minute: int) -> int:
    return 0


@dataclasses.dataclass(frozen=True)
class _Back:
    minutes: int

    def __call__(self, minute: int) -> int:
        return minute - self.minutes


# --- rules: a template, resolved, and the checks simulated -------------------------------


@dataclasses.dataclass(frozen=True)
class Rule:
    name: str
    review: templates.ResolvedReview
    simulators: Mapping[str, Simulator]
    skipped: tuple[str, ...]  # enabled checks on request metrics the benchmark cannot answer

    def spans(self) -> list[streams.Span]:
        needed: list[streams.Span] = []
        for phase in self.review.phases:
            for check in phase.checks:
                simulator = self.simulators.get(check.name)
                if simulator is not None:
                    start = int(phase.start / MINUTE)
                    end = int((phase.start + phases.last_slot(phase, check) * check.interval) / MINUTE) + 1
                    needed.extend(simulator.spans(start, end))
        return needed


def load_rule(name: str, manifest: Mapping[str, Any], only: Iterable[str] | None = None) -> Rule:
    """Resolve a ClusterReviewTemplate as a review without overrides would, and pick
    the checks to simulate (``only``: just these names)."""
    spec = dict(manifest["spec"])
    review = templates.resolve(templates.merge(spec, {"target": {"kind": "Deployment", "name": "svc"}}))
    parameters = dict(review.spec.parameters)
    wanted = set(only) if only is not None else None
    simulators: dict[str, Simulator] = {}
    skipped: list[str] = []
    for phase in review.phases:
        for check in phase.checks:
            if wanted is not None and check.name not in wanted:
                continue
            if check.interval % MINUTE:
                raise ValueError(f"check {check.name}: interval {check.interval} is not whole minutes")
            simulator = simulator_for(check, phase, parameters)
            if simulator is None:
                prometheus = check.spec.prometheus
                if prometheus is not None and "http_request" in prometheus.query:
                    skipped.append(check.name)  # about requests, but not answerable here
            else:
                simulators[check.name] = simulator
    judge_compare.share_grids(
        [s for s in simulators.values() if isinstance(s, judge_compare.CompareSimulator)]
    )
    if wanted is not None and not wanted <= simulators.keys():
        raise ValueError(f"{name}: cannot simulate {sorted(wanted - simulators.keys())}")
    return Rule(name, review, simulators, tuple(skipped))


def legacy_manifest() -> dict[str, Any]:
    """The built-in template as on main at ``LEGACY_COMMIT``."""
    text = subprocess.run(
        ["git", "show", f"{LEGACY_COMMIT}:{TEMPLATE_PATH}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    document: dict[str, Any] = yaml.safe_load(text)
    return document


# --- judging one release ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Outcome:
    failed_at: int | None  # minutes after the deployment of the run that made a check Failed
    check: str | None  # that check


def judge_release(rule: Rule, stream: streams.Stream) -> Outcome:
    """Run each simulated check at its slots through ``decisions.checks``; the first Failed.

    A simulator may say that some runs cannot fail (``runs``, see
    ``bench.judge_compare``): they are not run, as they would not change the count
    of failed runs that ``failureLimit`` is compared with.
    """
    deployed_at = EPOCH + stream.deploy_minute_of_day * MINUTE
    first: int | None = None
    culprit: str | None = None
    for phase in rule.review.phases:
        for check in phase.checks:
            simulator = rule.simulators.get(check.name)
            if simulator is None:
                continue
            status = checks.initial(check)
            offsets = [
                phase.start + slot * check.interval for slot in range(phases.last_slot(phase, check) + 1)
            ]
            for slot in simulator.runs(stream, [int(offset / MINUTE) for offset in offsets]):
                offset = offsets[slot]
                minute = int(offset / MINUTE)
                if first is not None and minute >= first:
                    break  # another check failed the release earlier
                measurement = simulator.measure(stream, minute, status.memo or {})
                status, _ = checks.record(check, status, measurement, deployed_at + offset, slot)
                if status.state is CheckState.FAILED:
                    first, culprit = minute, check.name
                    break
    return Outcome(first, culprit)


# --- scenarios, references, statistics ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # healthy, errors, latency, traffic
    share_before: float = BASE_SHARE
    share_after: float = BASE_SHARE
    latency_after: streams.Latency = BASE_LATENCY
    traffic_after: float = 1.0  # the request rate from the deployment on, times the cycle's


@functools.cache
def scenarios() -> tuple[Scenario, ...]:
    return (
        Scenario("healthy, 5xx 0.2 %", "healthy"),
        Scenario("healthy, 5xx 1 %", "healthy", 0.01, 0.01),
        Scenario("5xx x1.5", "errors", share_after=1.5 * BASE_SHARE),
        Scenario("5xx x2", "errors", share_after=2 * BASE_SHARE),
        Scenario("5xx x5", "errors", share_after=5 * BASE_SHARE),
        Scenario("p95 +25 %", "latency", latency_after=streams.mixture_for_p95(BASE_LATENCY, 0.25)),
        Scenario("p95 +50 %", "latency", latency_after=streams.mixture_for_p95(BASE_LATENCY, 0.5)),
        Scenario("p95 +100 %", "latency", latency_after=streams.mixture_for_p95(BASE_LATENCY, 1.0)),
        Scenario("requests -50 %", "traffic", traffic_after=0.5),
    )


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial confidence interval of a proportion."""
    if trials == 0:
        return 0.0, 1.0
    tail = (1 - confidence) / 2
    low = 0.0 if successes == 0 else float(scipy_stats.beta.ppf(tail, successes, trials - successes + 1))
    high = (
        1.0
        if successes == trials
        else float(scipy_stats.beta.ppf(1 - tail, successes + 1, trials - successes))
    )
    return low, high


def oracle_detects(
    scenario: Scenario, stream: streams.Stream, alpha: float, within: int, traffic: streams.Traffic
) -> tuple[bool, bool]:
    """Single-look fixed-sample tests at ``within`` minutes: (known baseline, 2-sample).

    For a change of traffic: the requests since the deployment against their known
    Poisson mean, and against the same minutes a week earlier (conditional binomial
    test, half each under no change), both for a fall."""
    after = stream.counts(0, within)
    if scenario.kind == "traffic":
        of_day = (stream.deploy_minute_of_day + np.arange(within)) % streams.MINUTES_PER_DAY
        expected = float(traffic.per_minute(of_day.astype(np.float64)).sum())
        week = stream.counts(-WEEK, -WEEK + within)
        p_known = float(scipy_stats.poisson.cdf(after.requests, expected))
        together = after.requests + week.requests
        p_two = float(scipy_stats.binom.cdf(after.requests, together, 0.5)) if together else 1.0
        return p_known < alpha, p_two < alpha
    before = stream.counts(-within, 0)
    if scenario.kind == "latency":
        # Requests above the first bucket bound at or above the healthy p95.
        cut = next(i for i, b in enumerate(streams.DEFAULT_BOUNDS) if b >= BASE_P95)
        slow_after, slow_before = int(after.buckets[cut + 1 :].sum()), int(before.buckets[cut + 1 :].sum())
        known = 1 - BASE_LATENCY.cdf(streams.DEFAULT_BOUNDS[cut])
    else:
        slow_after, slow_before = after.errors, before.errors
        known = scenario.share_before
    p_known = float(scipy_stats.binom.sf(slow_after - 1, after.requests, known))
    together = slow_after + slow_before
    share = after.requests / max(1, after.requests + before.requests)
    p_two = float(scipy_stats.binom.sf(slow_after - 1, together, share)) if together else 1.0
    return p_known < alpha, p_two < alpha


@dataclasses.dataclass
class Tally:
    releases: int = 0
    failed: list[int] = dataclasses.field(default_factory=list)  # minutes to the failing run
    checks: dict[str, int] = dataclasses.field(default_factory=dict)
    oracle_known: int = 0
    oracle_two_sample: int = 0

    def add(self, outcome: Outcome) -> None:
        self.releases += 1
        if outcome.failed_at is not None and outcome.check is not None:
            self.failed.append(outcome.failed_at)
            self.checks[outcome.check] = self.checks.get(outcome.check, 0) + 1

    def merge(self, other: Tally) -> None:
        self.releases += other.releases
        self.failed.extend(other.failed)
        for name, count in other.checks.items():
            self.checks[name] = self.checks.get(name, 0) + count
        self.oracle_known += other.oracle_known
        self.oracle_two_sample += other.oracle_two_sample


@dataclasses.dataclass(frozen=True)
class Task:
    level_index: int
    rps: float
    scenario_index: int
    first: int
    count: int
    seed: int
    alpha: float
    night_share: float = 0.2


_RULES: list[Rule] = []


def _run_task(task: Task) -> tuple[Task, list[Tally]]:
    scenario = scenarios()[task.scenario_index]
    traffic = streams.Traffic(task.rps, task.night_share)
    spans = [span for rule in _RULES for span in rule.spans()]
    if scenario.kind == "traffic":
        spans += [(-WEEK, -WEEK + DETECT_WITHIN), (0, DETECT_WITHIN)]
    elif scenario.kind != "healthy":
        spans += [(-DETECT_WITHIN, DETECT_WITHIN)]
    tallies = [Tally() for _ in _RULES]
    oracle = Tally()
    for index in range(task.first, task.first + task.count):
        rng = np.random.default_rng([task.seed, task.level_index, task.scenario_index, index])
        stream = streams.draw_stream(
            rng,
            traffic,
            int(rng.integers(streams.MINUTES_PER_DAY)),
            spans,
            share_before=scenario.share_before,
            share_after=scenario.share_after,
            latency_before=BASE_LATENCY,
            latency_after=scenario.latency_after,
            traffic_after=scenario.traffic_after,
        )
        for rule, tally in zip(_RULES, tallies, strict=True):
            tally.add(judge_release(rule, stream))
        if scenario.kind != "healthy":
            known, two = oracle_detects(scenario, stream, task.alpha, DETECT_WITHIN, traffic)
            oracle.oracle_known += known
            oracle.oracle_two_sample += two
    tallies[0].oracle_known, tallies[0].oracle_two_sample = oracle.oracle_known, oracle.oracle_two_sample
    return task, tallies


def _init_worker(rules: list[Rule]) -> None:
    _RULES[:] = rules


# --- reporting ------------------------------------------------------------------------------


def _percent(value: float) -> str:
    if value == 0:
        return "0 %"
    if value < 0.001:
        return f"{value * 100:.2f} %"
    return f"{value * 100:.1f} %"


def _rate_cell(failed: int, releases: int) -> str:
    low, high = clopper_pearson(failed, releases)
    return f"{_percent(failed / releases)} ({_percent(low)}-{_percent(high)})"


def _median(values: Sequence[int]) -> str:
    return f"{stats.median(values):g} min" if values else "-"


def _caught_by(failed: Sequence[int], releases: int) -> str:
    """The minute by which 95 % of all releases were judged Failed ("-": never)."""
    needed = math.ceil(0.95 * releases)
    return f"{sorted(failed)[needed - 1]:g} min" if len(failed) >= needed else "-"


def _level(rps: float) -> str:
    return f"{rps:,g} rps"


def _by_check(tally: Tally) -> str:
    """Which checks failed the releases judged Failed: "throughput 157, error-rate 2"."""
    ranked = sorted(tally.checks.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{name} {count}" for name, count in ranked) or "-"


def tables(
    rules: Sequence[Rule], levels: Sequence[float], results: Mapping[tuple[int, int], list[Tally]]
) -> str:
    """The markdown tables: false failures, then detection."""
    all_scenarios = scenarios()
    first_phase = {rule.name: int(rule.review.phases[0].end / MINUTE) for rule in rules}
    lines = ["### Healthy releases judged Failed (95 % Clopper-Pearson interval)", ""]
    names = " | ".join(f"{r.name} | {r.name}: failed by" for r in rules)
    lines.append(f"| traffic (daily mean) | scenario | releases | {names} |")
    lines.append("|---|---|---|" + "---|---|" * len(rules))
    for s_index, scenario in enumerate(all_scenarios):
        if scenario.kind != "healthy":
            continue
        for l_index, rps in enumerate(levels):
            tallies = results.get((l_index, s_index))
            if not tallies:
                continue
            cells = [f"{_rate_cell(len(t.failed), t.releases)} | {_by_check(t)}" for t in tallies]
            lines.append(
                f"| {_level(rps)} | {scenario.name} | {tallies[0].releases} | " + " | ".join(cells) + " |"
            )
    lines += ["", "### Regressions: detected releases and median time to the failing run", ""]
    header = "| traffic | regression | releases |"
    for rule in rules:
        header += (
            f" {rule.name}: within {DETECT_WITHIN} min | in the first phase | in the review | median time"
            " | 95 % caught by | failed by |"
        )
    header += f" oracle at {DETECT_WITHIN} min, known baseline | 2-sample at {DETECT_WITHIN} min |"
    lines.append(header)
    lines.append("|---|---|---|" + "---|" * (6 * len(rules) + 2))
    for s_index, scenario in enumerate(all_scenarios):
        if scenario.kind == "healthy":
            continue
        for l_index, rps in enumerate(levels):
            tallies = results.get((l_index, s_index))
            if not tallies:
                continue
            n = tallies[0].releases
            row = f"| {_level(rps)} | {scenario.name} | {n} |"
            for rule, tally in zip(rules, tallies, strict=True):
                within = sum(1 for m in tally.failed if m <= DETECT_WITHIN)
                phase_one = sum(1 for m in tally.failed if m < first_phase[rule.name])
                row += (
                    f" {_percent(within / n)} | {_percent(phase_one / n)} | {_percent(len(tally.failed) / n)}"
                    f" | {_median(tally.failed)} | {_caught_by(tally.failed, n)} | {_by_check(tally)} |"
                )
            row += (
                f" {_percent(tallies[0].oracle_known / n)} | {_percent(tallies[0].oracle_two_sample / n)} |"
            )
            lines.append(row)
    return "\n".join(lines) + "\n"


def _describe(rules: Sequence[Rule]) -> str:
    lines = []
    for rule in rules:
        simulated = []
        for phase in rule.review.phases:
            for check in phase.checks:
                if check.name in rule.simulators:
                    simulated.append(
                        f"{check.name} ({phase.name}, every {durations.promql_duration(check.interval)}, "
                        f"failWhen {check.spec.fail_when!r}, failureLimit {check.spec.failure_limit})"
                    )
        lines.append(f"- {rule.name}: " + "; ".join(simulated))
    return "\n".join(lines)


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True
        ).stdout
        return out + (" (with uncommitted changes)" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.judge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--releases", type=int, default=1000, help="healthy releases per traffic level")
    parser.add_argument(
        "--other-releases",
        type=int,
        default=200,
        help="releases per level of each regression and of the healthy release at a 1 %% share",
    )
    parser.add_argument("--levels", default=",".join(f"{x:g}" for x in LEVELS), help="daily mean rps")
    parser.add_argument("--alpha", type=float, default=0.01, help="level of the 10-minute reference tests")
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument(
        "--night-share", type=float, default=0.2, help="traffic at 04:00 / at 16:00 (1: no daily cycle)"
    )
    parser.add_argument("--workers", type=int, default=2, help="processes (2 cores, shared)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 60 healthy, 30 others")
    parser.add_argument("--rules", default="today,new", help="today, new or both (comma-separated)")
    parser.add_argument("--checks", default="", help="simulate only these checks of the new default")
    parser.add_argument(
        "--template", type=pathlib.Path, help="a ClusterReviewTemplate (YAML) judged instead of the built-in"
    )
    parser.add_argument(
        "--kinds", default="", help="only scenarios of these kinds: healthy, errors, latency, traffic"
    )
    parser.add_argument(
        "--exact", action="store_true", help="run every comparison run exactly (very slow; a spot check)"
    )
    parser.add_argument("--markdown", type=pathlib.Path, help="also write the tables to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.releases, args.other_releases = 60, 30
    levels = [float(x) for x in args.levels.split(",")]
    kinds = {kind for kind in args.kinds.split(",") if kind}
    if unknown := kinds - {scenario.kind for scenario in scenarios()}:
        parser.error(f"--kinds: unknown {sorted(unknown)}")

    rules = []
    wanted = set(args.rules.split(","))
    if wanted - {"today", "new"}:
        parser.error(f"--rules: unknown {sorted(wanted - {'today', 'new'})}")
    if "today" in wanted:
        legacy = legacy_manifest()
        rules.append(load_rule(f"today ({LEGACY_COMMIT})", legacy, only=("error-rate", "latency-p95")))
    if "new" in wanted:
        only = [name for name in args.checks.split(",") if name] or None
        if args.template is None:
            rules.append(load_rule("new default", defaults.manifest(), only=only))
        else:
            manifest = yaml.safe_load(args.template.read_text())
            rules.append(load_rule(f"template {args.template.name}", manifest, only=only))
    for rule in rules:
        for simulator in rule.simulators.values():
            if isinstance(simulator, judge_compare.CompareSimulator):
                simulator.exact = args.exact
    started = time.monotonic()
    tasks: list[Task] = []
    chunk = 50
    for l_index, rps in enumerate(levels):
        for s_index, scenario in enumerate(scenarios()):
            if kinds and scenario.kind not in kinds:
                continue
            total = args.releases if s_index == 0 else args.other_releases
            for first in range(0, total, chunk):
                count = min(chunk, total - first)
                task = Task(l_index, rps, s_index, first, count, args.seed, args.alpha, args.night_share)
                tasks.append(task)
    results: dict[tuple[int, int], list[Tally]] = {}
    done = 0
    left = [sum(1 for t in tasks if t.level_index == index) for index in range(len(levels))]

    def collect(task: Task, tallies: list[Tally]) -> None:
        nonlocal done
        key = (task.level_index, task.scenario_index)
        if key not in results:
            results[key] = [Tally() for _ in rules]
        for total, part in zip(results[key], tallies, strict=True):
            total.merge(part)
        done += 1
        left[task.level_index] -= 1
        if left[task.level_index] == 0 and args.markdown:  # a level is complete: keep what is known
            finished = {k: v for k, v in results.items() if left[k[0]] == 0}
            args.markdown.write_text("(levels finished so far)\n\n" + tables(rules, levels, finished))
        if done % 10 == 0 or done == len(tasks):
            print(
                f"[bench-judge] {done}/{len(tasks)} batches, {time.monotonic() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    if args.workers > 1:
        with multiprocessing.get_context("fork").Pool(args.workers, _init_worker, (rules,)) as pool:
            for task, tallies in pool.imap_unordered(_run_task, tasks):
                collect(task, tallies)
    else:
        _init_worker(rules)
        for task in tasks:
            collect(*_run_task(task))
    elapsed = time.monotonic() - started

    header = (
        f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC at commit {_commit()}: "
        f"`python -m bench.judge {' '.join(argv if argv is not None else sys.argv[1:])}`, "
        f"{elapsed / 60:.1f} min on {os.cpu_count()} cores ({args.workers} worker(s)), "
        f"Python {platform.python_version()}, numpy {np.__version__}, seed {args.seed}, "
        f"night traffic {args.night_share:g} of the peak.\n\n"
        f"Checks simulated:\n{_describe(rules)}\n\n"
    )
    for rule in rules:
        if rule.skipped:
            header += f"Not simulated in {rule.name}: {', '.join(rule.skipped)}.\n"
    text = header + "\n" + tables(rules, levels, results)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
