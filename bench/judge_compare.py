"""The comparison mode of the Prometheus provider, answered from a synthetic stream.

Used by ``bench.judge`` for checks with ``prometheus.compare`` (``models.checks.Comparison``).
What the real provider (``providers.prometheus_compare.measure``) asks Prometheus -
the ``increase()`` of errors and requests, or of latency buckets, over each batch
and its before-window - is read from the stream; everything else is the operator's
own code: the batch grid (``prometheus_compare.grid``), the comparison
(``decisions.sequential.compare_rates`` / ``compare_histograms``), the value and
details (``sequential.measurement_details``), wrapped into a ``Measurement`` as
``prometheus_compare.measure`` does, decided by ``decisions.checks.record``.

Speed. The real comparison recomputes its confidence bounds from every batch at
every run: tens of milliseconds early in a review, a quarter of a second a day in;
over thousands of releases of hundreds of runs each that is days of CPU. So when the
check's ``failWhen`` is a top-level ``and`` of clauses among which ``pValue < X``
(and possibly ``ratioLower > Y``), as in the built-in template (``screen_for``), the
benchmark first computes, for all batches at once in numpy, the log of the mixture
martingale that ``sequential`` sums in a loop (``log_mixture_path``; the unit tests
hold the p-values to ``sequential.p_value_path``'s to 1e-9), and measures only the
runs that could fail:

- ``pValue`` is 1 / the running maximum of the mixture against ``1 + minEffect``: a
  run whose p-value is not below X (times 1 + 1e-6, against rounding) cannot fail;
- ``ratioLower`` is the smallest ratio rho0 the *current* mixture against rho0 does
  not reject at ``alpha``, and that mixture falls as rho0 grows; so a run whose
  mixture against Y is below log(1 / alpha) (less 1e-6) has ``ratioLower <= Y`` and
  cannot fail (``sequential`` stops summing terms 50 below the largest, which only
  lowers its value).

A run that cannot fail is not a failed run, so leaving it out leaves the count that
``decisions.checks`` compares with ``failureLimit`` unchanged; every other run is
measured by the real comparison and recorded by ``checks.record``. Any other
``failWhen``, ``treatMissingAsFailure`` or ``--exact`` measures every run.
``tests/unit/test_judge_bench.py`` judges releases both ways and gets the same
outcomes.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from bench import judge_streams as streams
from postdeploy.decisions import phases, sequential, templates
from postdeploy.models.checks import Comparison, PrometheusCheck
from postdeploy.models.measurements import Measurement, ReviewContext, Target
from postdeploy.providers import prometheus_compare

__all__ = [
    "CompareSimulator",
    "Screen",
    "Shared",
    "compare_simulator",
    "log_mixture_path",
    "p_value_path",
    "screen_for",
    "share_grids",
]

MINUTE = datetime.timedelta(minutes=1)
EPOCH = datetime.datetime(2026, 1, 5, tzinfo=datetime.UTC)
NUDGE = 1e-6
FloatArray = npt.NDArray[np.float64]


def log_mixture_path(
    events_after: FloatArray,
    total_after: FloatArray,
    events_before: FloatArray,
    total_before: FloatArray,
    *,
    rho0: float,
    prior_scale: float = 1.0,
) -> FloatArray:
    """After each batch, the log of ``sequential``'s one-sided mixture martingale against
    ``rho <= rho0`` (mixing over ``rho0 * e^u``, u > 0), all batches at once in numpy;
    0 before any informative batch. ``sequential`` adds the same terms in a loop."""
    offsets, log_weights = sequential._mixing_grid(prior_scale)
    k = events_after + events_before
    informative = (k > 0) & (total_after > 0) & (total_before > 0)
    result: FloatArray = np.zeros(len(events_after))
    if not informative.any():
        return result
    x, kk = events_after[informative], k[informative]
    a = total_after[informative] / total_before[informative]
    u = np.asarray(offsets)
    rhos = rho0 * np.exp(u)
    steps = x[:, None] * u[None, :] - kk[:, None] * np.log1p(rhos[None, :] * a[:, None])
    steps += (kk * np.log1p(rho0 * a))[:, None]
    sums = np.asarray(log_weights)[None, :] + np.cumsum(steps, axis=0)
    top = sums.max(axis=1)
    result[informative] = top + np.log(np.exp(sums - top[:, None]).sum(axis=1))
    # An uninformative batch leaves the martingale where it was (at 1 before any).
    last = np.maximum.accumulate(np.where(informative, np.arange(len(result)), -1))
    filled: FloatArray = np.where(last >= 0, result[np.maximum(last, 0)], 0.0)
    return filled


def p_value_path(
    events_after: FloatArray,
    total_after: FloatArray,
    events_before: FloatArray,
    total_before: FloatArray,
    *,
    min_effect: float,
    prior_scale: float = 1.0,
) -> FloatArray:
    """``sequential.p_value_path`` in numpy: the anytime-valid p-value after each batch."""
    log_mixture = log_mixture_path(
        events_after, total_after, events_before, total_before, rho0=1.0 + min_effect, prior_scale=prior_scale
    )
    path: FloatArray = np.exp(-np.maximum.accumulate(np.maximum(log_mixture, 0.0)))
    return path


_OPERATOR = re.compile(r"(?<![\w.])(?:and|or)(?![\w.])|&&|\|\|")
_NUMBER = r"\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"
_P_CLAUSE = re.compile(rf"pValue\s*<\s*(alpha|{_NUMBER})")
_LOWER_CLAUSE = re.compile(rf"ratioLower\s*>\s*(?:1\s*\+\s*(minEffect|{_NUMBER})|({_NUMBER}))")


@dataclasses.dataclass(frozen=True)
class Screen:
    """What a run's ``failWhen`` needs before it can be true: ``pValue < p_below``, and
    ``ratioLower > lower_above`` when that is one of its clauses too."""

    p_below: float
    lower_above: float | None


def _clauses(text: str) -> list[str] | None:
    """The clauses of ``text`` joined by top-level ``and``; None with a top-level ``or``."""
    clauses, start, depth, index = [], 0, 0, 0
    while index < len(text):
        char = text[index]
        if char in "()":
            depth += 1 if char == "(" else -1
        elif depth == 0:
            match = _OPERATOR.match(text, index)
            if match:
                if match.group() in ("or", "||"):
                    return None
                clauses.append(text[start:index].strip())
                start = index = match.end()
                continue
        index += 1
    return [*clauses, text[start:].strip()]


def screen_for(fail_when: str | None, alpha: float, min_effect: float) -> Screen | None:
    """The screen of a ``failWhen`` of the form ``... and pValue < X [and ratioLower > Y] ...``
    (top-level ``and``s; X is ``alpha`` or a number, Y ``1 + minEffect``, ``1 + n`` or n);
    None for any other form: then every run is measured."""
    clauses = _clauses(fail_when.strip()) if fail_when else None
    if not clauses:
        return None
    p_below: float | None = None
    lower_above: float | None = None
    for clause in clauses:
        match = _P_CLAUSE.fullmatch(clause)
        if match:
            p_below = alpha if match.group(1) == "alpha" else float(match.group(1))
        match = _LOWER_CLAUSE.fullmatch(clause)
        if match:
            plus, plain = match.group(1), match.group(2)
            if plain is not None:
                lower_above = float(plain)
            else:
                lower_above = 1 + (min_effect if plus == "minEffect" else float(plus))
    return None if p_below is None else Screen(p_below, lower_above)


@dataclasses.dataclass
class Shared:
    """Counts and p-value paths of one stream, shared by the checks of one grid.

    Checks with the same query kind, step, before-windows and test (``error-rate`` and
    ``error-rate-extended``) compare the same batches: a run compares the first N of
    them, so the counts and paths up to the last run of the group serve every check.
    """

    horizon: int = 0  # the minute of the group's last run
    stream: streams.Stream | None = None
    after: FloatArray | None = None  # errors: (batches, 2) events, total; buckets: cumulative
    before: FloatArray | None = None
    paths: dict[tuple[float | None, float, bool], FloatArray] = dataclasses.field(default_factory=dict)
    boundaries: dict[int, float] = dataclasses.field(default_factory=dict)  # per batch count
    summed_before: FloatArray | None = None  # running sums of the before-windows' buckets


@dataclasses.dataclass
class CompareSimulator:
    """One comparison check, measured as ``prometheus_compare.measure`` would."""

    check: templates.ResolvedCheck
    phase: templates.ResolvedPhase
    spec: PrometheusCheck
    compare: Comparison
    exact: bool = False
    bounds: tuple[float, ...] = (*streams.DEFAULT_BOUNDS, math.inf)
    exact_runs: int = 0
    shared: Shared = dataclasses.field(default_factory=Shared)
    _batches_at: dict[int, int] = dataclasses.field(default_factory=dict)

    # --- the grid ----------------------------------------------------------------------

    def _grid(self, minute: int, deployed_at: datetime.datetime = EPOCH) -> prometheus_compare.Grid:
        now = phases.aligned(deployed_at + minute * MINUTE)
        ctx = ReviewContext(
            review_name="bench",
            review_namespace="bench",
            review_uid="bench",
            target=Target("Deployment", "svc", "bench"),
            version="2",
            deployed_at=deployed_at,
            now=now,
            phase_name=self.check.phase,
            phase_start=deployed_at + self.phase.start,
            phase_end=deployed_at + self.phase.end,
            check_name=self.check.name,
            interval=self.check.interval,
        )
        return prometheus_compare.grid(self.spec, self.compare, ctx)

    def batches_at(self, minute: int) -> int:
        """Batches a run at this minute compares (the grid depends on offsets only)."""
        if minute not in self._batches_at:
            self._batches_at[minute] = self._grid(minute).batches
        return self._batches_at[minute]

    def _minutes(self, grid: prometheus_compare.Grid) -> tuple[int, int | None, int]:
        """Batch length, offset (None: mirrored) and before-window length, in minutes."""
        step = grid.step / 60
        before = grid.before_window() / 60
        offset = None if grid.offset is None else grid.offset / 60
        for name, value in (("step", step), ("before-window", before), ("offset", offset)):
            if value is not None and value != int(value):
                raise ValueError(f"check {self.check.name}: {name} of {value} minutes is not whole minutes")
        return int(step), None if offset is None else int(offset), int(before)

    def last_minute(self) -> int:
        """The minute of the check's last slot."""
        last = phases.last_slot(self.phase, self.check)
        return int((self.phase.start + last * self.check.interval) / MINUTE)

    def spans(self, start: int, end: int) -> list[streams.Span]:
        grid = self._grid(max(start, end - 1))
        step, offset, before = self._minutes(grid)
        batches = grid.batches
        if batches == 0:
            return []
        needed: list[streams.Span] = [(0, batches * step, step)]
        if offset is None:
            needed.append((-before * batches, 0, before))
        elif batches * step - offset > -offset:
            needed.append((-offset, min(batches * step - offset, 0), step))
        return needed

    # --- counts per batch ------------------------------------------------------------------

    def group(self) -> tuple[Any, ...]:
        """Checks with equal groups compare the same batches the same way."""
        c = self.compare
        return (self.spec.step, c.total is None, c.multiplier, c.offset, c.min_effect, c.quantile, c.boundary)

    def _data(self, stream: streams.Stream) -> tuple[FloatArray, FloatArray]:
        shared = self.shared
        if shared.stream is stream and shared.after is not None and shared.before is not None:
            return shared.after, shared.before
        grid = self._grid(max(shared.horizon, self.last_minute()))
        step, _, before_length = self._minutes(grid)
        index = np.arange(grid.batches, dtype=np.int64)
        after = self._rows(stream.counts_many(index * step, (index + 1) * step))
        before = np.zeros_like(after)
        ends = grid.before_times()
        present = np.array([end is not None for end in ends], dtype=bool)
        if present.any():
            stops = np.array(
                [round((end - grid.deployed) / 60) for end in ends if end is not None], dtype=np.int64
            )
            before[present] = self._rows(stream.counts_many(stops - before_length, stops))
        shared.stream, shared.after, shared.before = stream, after, before
        shared.paths, shared.boundaries, shared.summed_before = {}, {}, None
        return after, before

    def _rows(self, counts: tuple[streams.IntArray, streams.IntArray, streams.IntArray]) -> FloatArray:
        """Per window: (events capped at requests, requests), or cumulative bucket counts."""
        requests, errors, buckets = counts
        if self.compare.total is not None:
            rows: FloatArray = np.stack([np.minimum(errors, requests), requests], axis=1).astype(np.float64)
            return rows
        cumulative: FloatArray = np.cumsum(buckets, axis=1).astype(np.float64)
        return cumulative

    def _path(
        self, stream: streams.Stream, boundary: float | None, rho0: float, running: bool, length: int
    ) -> FloatArray:
        """The log mixture against ``rho <= rho0`` after each of the first ``length``
        batches or more (``running``: its running maximum, floored at 0)."""
        after, before = self._data(stream)
        key = (boundary, rho0, running)
        path = self.shared.paths.get(key)
        if path is None or len(path) < length:
            events = [column[:length] for column in self._events(after, before, boundary)]
            path = log_mixture_path(*events, rho0=rho0)
            if running:
                path = np.maximum.accumulate(np.maximum(path, 0.0))
            self.shared.paths[key] = path
        return path

    def _boundary(self, stream: streams.Stream, count: int) -> float | None:
        """The boundary ``compare_histograms`` picks for a run of ``count`` batches."""
        if self.compare.total is not None:
            return None
        if self.compare.boundary is not None:
            return self.compare.boundary
        boundary = self.shared.boundaries.get(count)
        if boundary is None:
            if self.shared.summed_before is None:
                self.shared.summed_before = np.cumsum(self._data(stream)[1], axis=0)
            summed = self.shared.summed_before[count - 1].tolist()
            boundary = sequential._choose_boundary(self.compare.quantile, list(self.bounds), summed)
            self.shared.boundaries[count] = boundary
        return boundary

    def runs(self, stream: streams.Stream, slots: list[int]) -> list[int]:
        """The slots (indices into ``slots``, run minutes) whose run could fail."""
        screen = screen_for(self.check.spec.fail_when, self.compare.alpha, self.compare.min_effect)
        if self.exact or screen is None or self.check.spec.treat_missing_as_failure:
            return list(range(len(slots)))
        counts = [self.batches_at(minute) for minute in slots]
        boundaries = [self._boundary(stream, count) if count else None for count in counts]
        longest: dict[float | None, int] = {}
        for count, boundary in zip(counts, boundaries, strict=True):
            longest[boundary] = max(longest.get(boundary, 0), count)
        # p < X  <=>  running log mixture at 1 + minEffect > log(1 / X).
        p_needed = math.log(1 / (screen.p_below * (1 + NUDGE)))
        # ratioLower > Y needs rho0 = Y rejected: log mixture at Y >= log(1 / alpha).
        lower_needed = math.log(1 / self.compare.alpha) - 1e-6
        could = []
        for index, (count, boundary) in enumerate(zip(counts, boundaries, strict=True)):
            if count == 0:
                continue
            length = longest[boundary]
            p_path = self._path(stream, boundary, 1 + self.compare.min_effect, True, length)
            if p_path[count - 1] <= p_needed:
                continue
            if screen.lower_above is not None:
                lower_path = self._path(stream, boundary, screen.lower_above, False, length)
                if lower_path[count - 1] < lower_needed:
                    continue
            could.append(index)
        return could

    def _events(
        self, after: FloatArray, before: FloatArray, boundary: float | None
    ) -> tuple[FloatArray, ...]:
        if boundary is None:
            return after[:, 0], after[:, 1], before[:, 0], before[:, 1]
        position = self.bounds.index(boundary)
        return (
            np.maximum(0.0, after[:, -1] - after[:, position]),
            after[:, -1],
            np.maximum(0.0, before[:, -1] - before[:, position]),
            before[:, -1],
        )

    def measure(self, stream: streams.Stream, minute: int, memo: Mapping[str, Any]) -> Measurement:
        count = self.batches_at(minute)
        if count == 0:
            return Measurement.no_data("not enough traffic yet (0 requests: the first batch has not ended)")
        after, before = self._data(stream)
        self.exact_runs += 1
        result = self._compare(after[:count], before[:count])
        report = sequential.measurement_details(result, min_requests=self.compare.min_requests)
        return self._wrap(report, self._grid(minute))

    def _compare(
        self, after: FloatArray, before: FloatArray
    ) -> sequential.RateComparison | sequential.HistogramComparison:
        if self.compare.total is not None:
            batches = [
                sequential.CountBatch(float(a[0]), float(a[1]), float(b[0]), float(b[1]))
                for a, b in zip(after, before, strict=True)
            ]
            return sequential.compare_rates(
                batches, alpha=self.compare.alpha, min_effect=self.compare.min_effect
            )
        return sequential.compare_histograms(
            list(self.bounds),
            after.tolist(),
            before.tolist(),
            alpha=self.compare.alpha,
            quantile=self.compare.quantile,
            min_effect=self.compare.min_effect,
            boundary=self.compare.boundary,
        )

    def _wrap(self, report: sequential.MeasurementReport, grid: prometheus_compare.Grid) -> Measurement:
        """``prometheus_compare.measure``'s last lines: the report as a Measurement."""
        details = {
            **report.details,
            "step": self.spec.step,
            "beforeWindow": f"{round(grid.before_window())}s",
            "multiplier": self.compare.multiplier if self.compare.offset is None else None,
            "offset": self.compare.offset,
        }
        if report.value is None:
            return Measurement.no_data(report.message, details=details)
        return Measurement.ok(report.value, details=details, message=report.message)


def compare_simulator(
    check: templates.ResolvedCheck, phase: templates.ResolvedPhase, parameters: Mapping[str, str]
) -> CompareSimulator | None:
    """The simulator of a comparison check on the request metrics, else None."""
    spec = check.spec.prometheus
    if spec is None or spec.compare is None:
        return None
    query = spec.query
    for name, value in parameters.items():
        query = query.replace("{{" + name + "}}", value)
    compare = spec.compare
    if compare.total is not None:
        errors = "http_requests_total" in query and 'code=~"5.."' in query
        if not (errors and "http_requests_total" in compare.total and "code" not in compare.total):
            return None
    elif "http_request_duration_seconds_bucket" not in query:
        return None
    return CompareSimulator(check, phase, spec, compare)


def share_grids(simulators: list[CompareSimulator]) -> None:
    """Let the checks of one grid (see ``CompareSimulator.group``) share counts and paths."""
    groups: dict[tuple[Any, ...], Shared] = {}
    for simulator in simulators:
        shared = groups.setdefault(simulator.group(), Shared())
        shared.horizon = max(shared.horizon, simulator.last_minute())
        simulator.shared = shared
