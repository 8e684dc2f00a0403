"""Backtests without a test bed: a synthetic Prometheus behind the real provider.

Covers:
- batching: a check's slots in arithmetic progression become one range query, lone
  seconds stay instant, windows on one grid merge unless the cover would evaluate
  far more than they need, and never past Prometheus's 11,000 points;
- a replay through the real Prometheus provider and decision code: the release whose
  immediate phase holds an error spike fails error-rate, at the slot of its third
  failed run (failureLimit 2), with value and baseline; the release whose extended
  phase holds a growth fails the trend check; the others pass; batched and unbatched
  replays agree exactly while the batched one sends under a hundredth of the requests;
  the replay starts while the covering range queries are asked: requests wait for
  their cover, and that wait is no provider timeout (same outcomes as unbatched);
- the Prometheus provider's compare mode (anytime-valid before/after counts) is
  replayed through the provider: it fails the spiked release only, batched or not;
- a comparison whose before-windows reach before the history's start for most of the
  requests is Inconclusive, saying they were not compared, never Passed;
- optional postgres and statistics checks without a DSN are Skipped (a required one is
  an Error), release after release;
- a release still running at ``until`` is Passing or Failing, not complete;
- checks that cannot be replayed (kubernetes, manual, job, http, pg_stat_statements)
  are listed with why, never run; an alertmanager check becomes a count over the
  alerting rules' queries (rule labels decided statically, other labels filtered,
  ``for`` as a subquery), or is listed when a matcher cannot be written in PromQL;
- releases: placed every N hours, from a Deployment's ReplicaSets (owned ones only,
  with revision and image tag, ordered by revision within a second), from a PromQL
  matrix (a version label, ``changes()``);
- the summary groups, the JSON, the HTML section (escaped, with the verdict strip);
- read-only by construction: the backtest imports nothing from ``postdeploy.actions``
  or the engine, and the plugin command calls only the session's reads.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import datetime
import io
import json
import pathlib
import re
import subprocess
import sys
from typing import Any

import pytest

from postdeploy.backtests import alerts, batches, releases, replays, summaries
from postdeploy.decisions import templates
from postdeploy.models.measurements import MeasurementState, Target
from postdeploy.plugin import backtest_pages as backtest_pages
from postdeploy.providers.prometheus_api import PrometheusApi
from tests.promql import PART, parts

HOUR = 3600
T0 = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)
SPIKE = T0 + datetime.timedelta(hours=30, minutes=30)  # inside the immediate phase of the 30 h release
GROWTH = T0 + datetime.timedelta(hours=50)  # inside the extended phase of the 48 h release


def _value(query: str, t: float) -> float | None:
    moment = datetime.datetime.fromtimestamp(t, datetime.UTC)
    if query == "error_ratio":
        spike = SPIKE <= moment < SPIKE + datetime.timedelta(minutes=20)
        return 0.15 if spike else 0.003
    if query == "memory":
        grown = max(0.0, (t - GROWTH.timestamp()) / HOUR)
        return 100.0 + 10.0 * min(grown, 6.0) + (t % 7) * 0.01
    if query == "vector(0) > 1":  # no alerting rule matches the alerts check
        return None
    counted = re.fullmatch(r"sum\(increase\((errs|reqs)\[(\d+)s\]\)\)", query)
    if counted:  # the compare mode's counts: 10 requests a second, 0.3% errors, 15% in the spike
        window = int(counted.group(2))
        requests = 10.0 * window
        spiked = SPIKE.timestamp() < t and t - window < SPIKE.timestamp() + 20 * 60
        return requests if counted.group(1) == "reqs" else requests * (0.15 if spiked else 0.003)
    raise AssertionError(f"unexpected query {query}")


class SyntheticPrometheus(PrometheusApi):
    """Answers two made-up series as Prometheus would: instant vectors, range matrices."""

    def __init__(self, timeout_seconds: float = 10, connections: int = 8) -> None:
        super().__init__(timeout_seconds, connections)
        self.asked: list[tuple[str, ...]] = []

    async def query(self, url: str, query: str, time: float) -> Any:
        self.asked.append(("instant", query))
        value = _value(query, time)
        return [] if value is None else [{"metric": {"job": "shop"}, "value": [time, str(value)]}]

    async def query_range(self, url: str, query: str, start: float, end: float, step: float) -> Any:
        self.asked.append(("range", query))
        times = [start + i * step for i in range(int((end - start) // step) + 1)]
        together = parts(query)
        if together is not None:  # a rate comparison's events and requests in one query
            return [
                {"metric": {"job": "shop", PART: part}, "values": [[t, str(_value(asked, t))] for t in times]}
                for part, asked in zip(("events", "total"), together, strict=True)
            ]
        if _value(query, start) is None:
            return []
        return [{"metric": {"job": "shop"}, "values": [[t, str(_value(query, t))] for t in times]}]


class SyntheticReplayApi(batches.ReplayApi, SyntheticPrometheus):
    """The backtest's batching in front of the synthetic Prometheus."""


SPEC: dict[str, Any] = {
    "target": {"kind": "Deployment", "name": "shop", "namespace": "shop"},
    "phases": [
        {
            "name": "immediate",
            "start": "0s",
            "end": "2h",
            "interval": "1m",
            "checks": [
                {
                    "name": "error-rate",
                    "prometheus": {"query": "error_ratio"},
                    "baseline": {"preDeploy": True, "tolerance": 1},
                    "failWhen": "value > 0.01",
                    "failureLimit": 2,
                },
                {"name": "rollout", "kubernetes": {"measure": "rolloutComplete"}},
                {"name": "tickets", "manual": {"description": "tickets checked"}},
                {"name": "alerts", "alertmanager": {"matchers": ['severity="critical"']}},
                {"name": "slow", "postgres": {"slowStatements": {"threshold": "1s"}}},
            ],
        },
        {
            "name": "extended",
            "start": "2h",
            "end": "12h",
            "interval": "30m",
            "checks": [
                {
                    "name": "growth",
                    "prometheus": {"query": "memory", "range": "phase", "step": "10m", "trend": "slope"},
                    "failWhen": "value > 5",
                },
            ],
        },
    ],
}


async def _backtest(
    batch: bool, until: datetime.datetime | None = None
) -> tuple[replays.Backtest, SyntheticReplayApi]:
    review = templates.resolve(templates.merge(None, SPEC))
    api = SyntheticReplayApi()
    replayer = replays.Replayer(
        review,
        Target("Deployment", "shop", "shop"),
        prometheus_url="http://prometheus.invalid",
        until=until or T0 + datetime.timedelta(days=4),
        batch=batch,
        api=api,
        template="synthetic",
        rules=[alerts.Rule("Paging", "error_ratio > 0.1", {"severity": "page"}, 0, 60)],
    )
    placed = releases.every(datetime.timedelta(hours=6), T0, T0 + datetime.timedelta(hours=66))
    try:
        return await replayer.run(placed), api
    finally:
        await replayer.close()


# --- batching ---------------------------------------------------------------------------


def test_slots_in_progression_become_one_range_query_and_lone_seconds_stay() -> None:
    covers = batches.plan_covers(
        [("u", "q", 1000 + 60 * k) for k in range(120)] + [("u", "q", 99_999), ("u", "lone", 5)], []
    )
    assert covers == [batches.Cover("u", "q", 1000, 1000 + 60 * 119, 60)]


def test_windows_on_one_grid_merge_unless_the_cover_would_mostly_waste() -> None:
    near = [("u", "q", 0, 3000, 600), ("u", "q", 600, 6000, 600)]  # overlapping: one cover
    assert batches.plan_covers([], near) == [batches.Cover("u", "q", 0, 6000, 600)]
    far = [("u", "q", 0, 600, 600), ("u", "q", 600_000, 600_600, 600)]  # mostly a gap: two
    assert len(batches.plan_covers([], far)) == 2
    off_grid = [("u", "q", 0, 3000, 600), ("u", "q", 30, 3030, 600)]  # different grids: two
    assert len(batches.plan_covers([], off_grid)) == 2
    huge = [("u", "q", 0, 20_000, 1)]  # more points than Prometheus allows: not batched
    assert batches.plan_covers([], huge) == []


# --- replays ------------------------------------------------------------------------------


async def test_a_replay_flags_the_spike_and_the_growth_and_passes_the_rest() -> None:
    backtest, _ = await _backtest(batch=True)
    by_hour = {int((o.release.at - T0).total_seconds() // HOUR): o for o in backtest.releases}
    assert sorted(by_hour) == list(range(0, 61, 6))
    spiked, grown = by_hour[30], by_hour[48]
    assert spiked.verdict == "Failed" and spiked.first_failure is not None
    assert spiked.first_failure.name == "error-rate"
    # Slots at 30:30, 30:31 and 30:32 fail; the third exceeds failureLimit 2.
    assert spiked.first_failure.failed_at == SPIKE + datetime.timedelta(minutes=2)
    assert spiked.first_failure.value == pytest.approx(0.15)
    assert spiked.first_failure.baseline == pytest.approx(0.003)
    assert grown.verdict == "Failed" and grown.first_failure is not None
    assert grown.first_failure.name == "growth" and (grown.first_failure.value or 0) > 5
    # 24 h and 42 h: their extended phases end before the growth starts or at it.
    for hour, outcome in by_hour.items():
        if hour not in (30, 48):
            assert outcome.verdict == "Passed", (hour, outcome)
            assert outcome.complete
    counts = summaries.summary(backtest)
    assert counts["releases"] == {"Failed": 2, "Inconclusive": 0, "Passed": 9, "Incomplete": 0}
    assert counts["checks"]["error-rate"] == {"Failed": 1, "Passed": 10}
    assert counts["checks"]["growth"]["Failed"] >= 1


async def test_batched_and_unbatched_replays_agree_and_batching_sends_far_fewer() -> None:
    batched, batched_api = await _backtest(batch=True)
    unbatched, unbatched_api = await _backtest(batch=False)
    assert [summaries.as_dict(batched)["releases"]] == [summaries.as_dict(unbatched)["releases"]]
    sent_batched = batched.queries["instant"] + batched.queries["range"]
    sent_unbatched = unbatched.queries["instant"] + unbatched.queries["range"]
    assert sent_batched == len(batched_api.asked)
    assert sent_unbatched == len(unbatched_api.asked) > 1000
    assert sent_batched * 100 < sent_unbatched
    assert batched.queries["answeredFromBatches"] > 1000


class SlowCovers(SyntheticReplayApi):
    """Each covering range query takes half a second to answer."""

    async def _send_range(self, url: str, query: str, start: float, end: float, step: float) -> Any:
        await asyncio.sleep(0.5)
        return await super()._send_range(url, query, start, end, step)


class ErrorsNoted(replays.Replayer):
    """Notes every measurement that is an Error (a single one need not change a verdict)."""

    errors: list[str]

    async def _measure(self, check: templates.ResolvedCheck, ctx: Any) -> Any:
        measurement = await super()._measure(check, ctx)
        if measurement.state is MeasurementState.ERROR:
            self.errors.append(f"{check.name}: {measurement.message}")
        return measurement


async def test_the_replay_runs_while_covers_are_asked_and_waiting_for_one_is_no_timeout() -> None:
    """Requests made before their cover is answered wait for it, and are answered from
    it; that wait does not count against ``measure_timeout`` (here far shorter than
    asking every cover takes), so the outcomes are those of the unbatched replay."""
    review = templates.resolve(templates.merge(None, SPEC))
    api = SlowCovers()
    replayer = ErrorsNoted(
        review,
        Target("Deployment", "shop", "shop"),
        prometheus_url="http://prometheus.invalid",
        until=T0 + datetime.timedelta(days=4),
        measure_timeout=1.0,
        api=api,
        rules=[alerts.Rule("Paging", "error_ratio > 0.1", {"severity": "page"}, 0, 60)],
    )
    placed = releases.every(datetime.timedelta(hours=6), T0, T0 + datetime.timedelta(hours=66))
    replayer.errors = []
    try:
        slow = await replayer.run(placed)
    finally:
        await replayer.close()
    assert not replayer.errors
    unbatched, _ = await _backtest(batch=False)
    assert summaries.as_dict(slow)["releases"] == summaries.as_dict(unbatched)["releases"]
    assert slow.queries["range"] >= 3 and slow.queries["instant"] == 0, slow.queries


async def test_a_release_still_running_at_until_is_not_complete() -> None:
    until = T0 + datetime.timedelta(hours=31)
    backtest, _ = await _backtest(batch=True, until=until)
    by_hour = {int((o.release.at - T0).total_seconds() // HOUR): o for o in backtest.releases}
    assert by_hour[30].verdict == "Failing" and not by_hour[30].complete
    assert summaries.group(by_hour[30]) == "Failed"
    assert by_hour[24].verdict == "Passing" and not by_hour[24].complete
    assert summaries.group(by_hour[24]) == "Incomplete"
    assert by_hour[24].replayed_until <= until
    assert by_hour[36].verdict == "Pending"  # after until: nothing replayed


async def test_checks_that_cannot_be_replayed_are_listed_never_run() -> None:
    backtest, api = await _backtest(batch=True)
    listed = {n.check: (n.provider, n.reason) for n in backtest.not_replayed}
    assert set(listed) == {"rollout", "tickets", "slow"}
    assert "past state" in listed["rollout"][1]
    assert "pg_stat_statements" in listed["slow"][1]
    assert backtest.replayed == ("error-rate", "alerts", "growth")
    assert all(c.name in backtest.replayed for o in backtest.releases for c in o.checks)
    assert {query for _, query in api.asked} == {"error_ratio", "memory", "vector(0) > 1"}
    # The one rule pages, the check asks for critical alerts: none could fire.
    assert {c.state for o in backtest.releases for c in o.checks if c.name == "alerts"} == {"Passed"}


def test_alert_checks_become_counts_over_the_rules_queries() -> None:
    review = templates.resolve(templates.merge(None, SPEC))
    check = review.check("alerts")
    assert check is not None
    check = dataclasses.replace(
        check,
        spec=check.spec.model_copy(
            update={
                "alertmanager": check.spec.alertmanager.model_copy(  # type: ignore[union-attr]
                    update={"matchers": ['severity="critical"', 'namespace="{{namespace}}"']}
                )
            }
        ),
    )
    critical = alerts.Rule("HighErrors", 'rate(x{code="500"}[5m]) > 1', {"severity": "critical"}, 120, 30)
    paging = alerts.Rule("Paging", "y > 1", {"severity": "page"}, 0, 30)
    replayed = alerts.translate(check, [critical, paging], {"namespace": 'sh"op'})
    assert isinstance(replayed, templates.ResolvedCheck)
    block = replayed.spec.prometheus
    assert block is not None and block.aggregate == "count" and replayed.spec.alertmanager is None
    assert block.query == (
        'label_replace(((count_over_time((rate(x{code="500"}[5m]) > 1)[120s:30s]) >= 4) '
        'and on (namespace) label_replace(vector(1), "namespace", "sh\\"op", "", "")), '
        '"alertname", "HighErrors", "", "")'
    )
    assert replayed.fail_when is check.fail_when
    regex = dataclasses.replace(
        check,
        spec=check.spec.model_copy(
            update={"alertmanager": check.spec.alertmanager.model_copy(update={"matchers": ['pod=~"a.*"']})}  # type: ignore[union-attr]
        ),
    )
    reason = alerts.translate(regex, [critical], {})
    assert isinstance(reason, str) and "only = can be replayed" in reason


async def test_the_compare_mode_is_replayed_through_the_provider() -> None:
    spec = {
        "target": SPEC["target"],
        "phases": [
            {
                "name": "immediate",
                "start": "0s",
                "end": "2h",
                "interval": "5m",
                "checks": [
                    {
                        "name": "error-share",
                        "prometheus": {
                            "query": "sum(increase(errs[{{window}}]))",
                            "step": "5m",
                            "compare": {"total": "sum(increase(reqs[{{window}}]))"},
                        },
                        "failWhen": "pValue < alpha",
                    }
                ],
            }
        ],
    }
    review = templates.resolve(templates.merge(None, spec))
    outcomes = []
    for batch in (True, False):
        replayer = replays.Replayer(
            review,
            Target("Deployment", "shop", "shop"),
            prometheus_url="http://prometheus.invalid",
            until=T0 + datetime.timedelta(days=4),
            batch=batch,
            api=SyntheticReplayApi(),
        )
        placed = releases.every(datetime.timedelta(hours=6), T0, T0 + datetime.timedelta(hours=66))
        outcomes.append(await replayer.run(placed))
        await replayer.close()
    batched, unbatched = outcomes
    assert summaries.as_dict(batched)["releases"] == summaries.as_dict(unbatched)["releases"]
    failed = [o for o in batched.releases if o.verdict == "Failed"]
    assert [o.release.at for o in failed] == [T0 + datetime.timedelta(hours=30)]
    first = failed[0].first_failure
    assert first is not None and first.failed_at is not None
    assert SPIKE < first.failed_at < SPIKE + datetime.timedelta(hours=1)
    assert {o.verdict for o in batched.releases if o not in failed} == {"Passed"}
    assert batched.queries["range"] + batched.queries["instant"] < unbatched.queries["range"] / 5


class ShortHistory(SyntheticReplayApi):
    """The synthetic Prometheus with no samples before ``HISTORY_START`` (and no
    ``increase`` whose window reaches before it), as a TSDB whose history begins then."""

    def _kept(self, query: str, t: float) -> bool:
        counted = re.fullmatch(r"sum\(increase\((errs|reqs)\[(\d+)s\]\)\)", query)
        window = int(counted.group(2)) if counted else 0
        return t - window >= HISTORY_START.timestamp()

    async def query(self, url: str, query: str, time: float) -> Any:
        if not self._kept(query, time):
            self.asked.append(("instant", query))
            return []
        return await super().query(url, query, time)

    async def query_range(self, url: str, query: str, start: float, end: float, step: float) -> Any:
        matrix = await super().query_range(url, query, start, end, step)
        kept = []
        for series in matrix:
            values = [v for v in series["values"] if self._kept(query, v[0])]
            if values:
                kept.append({**series, "values": values})
        return kept


HISTORY_START = T0 - datetime.timedelta(hours=1)


async def test_a_comparison_without_history_before_the_release_is_inconclusive_never_passed() -> None:
    """The before-windows of a 2 h phase mirrored 6 times reach 12 h back. The release
    at T0 has 1 h of history before it: most of its requests are in batches with no
    before-window, so it is Inconclusive (the message says so), never Passed; the one
    at T0 + 6 h has 7 h (most requests compared): judged as usual; the spiked one fails."""
    spec = {
        "target": SPEC["target"],
        "phases": [
            {
                "name": "immediate",
                "start": "0s",
                "end": "2h",
                "interval": "5m",
                "checks": [
                    {
                        "name": "error-share",
                        "prometheus": {
                            "query": "sum(increase(errs[{{window}}]))",
                            "step": "5m",
                            "compare": {"total": "sum(increase(reqs[{{window}}]))"},
                        },
                        "failWhen": "pValue < alpha",
                    }
                ],
            }
        ],
    }
    review = templates.resolve(templates.merge(None, spec))
    verdicts = []
    for batch in (True, False):
        replayer = replays.Replayer(
            review,
            Target("Deployment", "shop", "shop"),
            prometheus_url="http://prometheus.invalid",
            until=T0 + datetime.timedelta(days=4),
            batch=batch,
            api=ShortHistory(),
        )
        placed = releases.every(datetime.timedelta(hours=6), T0, T0 + datetime.timedelta(hours=36))
        backtest = await replayer.run(placed)
        await replayer.close()
        by_hour = {int((o.release.at - T0).total_seconds() // HOUR): o for o in backtest.releases}
        verdicts.append({hour: o.verdict for hour, o in by_hour.items()})
        first = by_hour[0].checks[0]
        assert first.state == "Inconclusive", first
        assert "before-window has no requests and are not compared" in (first.message or ""), first
    assert verdicts[0] == verdicts[1]
    assert verdicts[0] == {
        0: "Inconclusive",
        6: "Passed",
        12: "Passed",
        18: "Passed",
        24: "Passed",
        30: "Failed",
    }


async def test_optional_business_checks_without_a_dsn_replay_as_skipped() -> None:
    """An optional postgres or statistics check with no DSN anywhere is not applicable
    (Skipped) in a replay, release after release, never Inconclusive or an Error."""
    spec = {
        "target": SPEC["target"],
        "phases": [
            {
                "name": "business",
                "start": "0s",
                "end": "3h",
                "interval": "1h",
                "checks": [
                    {"name": "orders", "postgres": {"optional": True, "query": "SELECT 1"}},
                    {
                        "name": "ab",
                        "statistics": {
                            "optional": True,
                            "test": "twoProportion",
                            "query": "SELECT 'a', 1, 1",
                        },
                    },
                    {"name": "required", "postgres": {"query": "SELECT 1"}},
                ],
            }
        ],
    }
    review = templates.resolve(templates.merge(None, spec))
    replayer = replays.Replayer(
        review,
        Target("Deployment", "shop", "shop"),
        prometheus_url=None,
        postgres_dsn=None,
        until=T0 + datetime.timedelta(days=1),
        api=SyntheticReplayApi(),
    )
    backtest = await replayer.run(
        releases.every(datetime.timedelta(hours=6), T0, T0 + datetime.timedelta(hours=18))
    )
    await replayer.close()
    assert len(backtest.releases) == 3
    for outcome in backtest.releases:
        states = {c.name: c for c in outcome.checks}
        for name in ("orders", "ab"):
            assert states[name].state == "Skipped" and states[name].runs == 3, states[name]
            assert "no PostgreSQL DSN" in (states[name].message or "")
        # Not optional: the missing DSN is an Error, as in the operator.
        assert states["required"].state == "Error", states["required"]
        # A check in Error makes the verdict Inconclusive (never Failed), as in the operator.
        assert outcome.verdict == "Inconclusive", outcome.verdict


# --- releases -----------------------------------------------------------------------------


def test_releases_placed_every_interval_back_from_until() -> None:
    placed = releases.every(datetime.timedelta(hours=6), T0, T0 + datetime.timedelta(days=7))
    assert len(placed) == 28
    assert placed[0].at == T0 and placed[-1].at == T0 + datetime.timedelta(days=7, hours=-6)
    with pytest.raises(ValueError):
        releases.every(datetime.timedelta(0), T0, T0)


def test_releases_from_a_deployments_replica_sets() -> None:
    deployment = {"metadata": {"uid": "d-1", "name": "checkout"}}

    def replica_set(name: str, uid: str, created: str, revision: str, image: str) -> dict[str, Any]:
        return {
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "creationTimestamp": created,
                "ownerReferences": [{"uid": uid}],
                "annotations": {"deployment.kubernetes.io/revision": revision},
            },
            "spec": {"template": {"spec": {"containers": [{"image": image}]}}},
        }

    found = releases.from_workload_history(
        deployment,
        [
            replica_set("checkout-b", "d-1", "2026-11-02T10:00:00Z", "2", "registry:5000/checkout:1.1.0"),
            replica_set("checkout-a", "d-1", "2026-11-01T10:00:00Z", "1", "checkout:1.0.0"),
            replica_set("other-a", "other", "2026-11-01T12:00:00Z", "1", "other:9"),
        ],
    )
    assert [(r.at.day, r.version) for r in found] == [(1, "1.0.0"), (2, "1.1.0")]
    assert found[1].source == "revision 2 (checkout-b)"
    same_second = releases.from_workload_history(
        deployment,
        [
            replica_set("checkout-d", "d-1", "2026-11-03T10:00:00Z", "10", "checkout:1.10"),
            replica_set("checkout-c", "d-1", "2026-11-03T10:00:00Z", "9", "checkout:1.9"),
        ],
    )
    assert [r.version for r in same_second] == ["1.9", "1.10"]  # by revision within a second


def test_releases_from_a_promql_matrix() -> None:
    start, step = 1000, 60
    versions = [
        {"metric": {"version": "1.0"}, "values": [[start + i * step, "1"] for i in range(0, 5)]},
        {"metric": {"version": "1.1"}, "values": [[start + i * step, "1"] for i in range(5, 10)]},
    ]
    found = releases.from_matrix(versions, start, start + 9 * step, step)
    assert [(r.at.timestamp(), r.version) for r in found] == [(start + 5 * step, "1.1")]
    changes = [{"metric": {}, "values": [[start + 3 * step, "1"], [start + 7 * step, "1"]]}]
    found = releases.from_matrix(changes, start, start + 9 * step, step)
    assert [r.at.timestamp() for r in found] == [start + 3 * step, start + 7 * step]


# --- output -------------------------------------------------------------------------------


async def test_json_table_and_html_section() -> None:
    backtest, _ = await _backtest(batch=True)
    data = json.loads(json.dumps(summaries.as_dict(backtest)))
    assert data["summary"]["releases"]["Failed"] == 2
    failed = [r for r in data["releases"] if r["verdict"] == "Failed"]
    assert {r["firstFailure"]["name"] for r in failed} == {"error-rate", "growth"}
    assert {n["check"] for n in data["notReplayed"]} == {"rollout", "tickets", "slow"}
    out = io.StringIO()
    summaries.write_table(backtest, out)
    text = out.getvalue()
    assert "error-rate" in text and "+0h32m" in text and "Releases: 2 Failed" in text
    html = backtest_pages.page(backtest)
    assert html.count("<rect") == 11 and "<h2>Backtest</h2>" in html and "<script" not in html
    evil = replays.Backtest(Target("Deployment", "<b>x</b>", "shop"), "<i>t</i>", T0, (), (), (), {}, 0.0)
    assert "<b>x</b>" not in backtest_pages.section(evil) and "&lt;b&gt;" in backtest_pages.section(evil)


# --- read-only ----------------------------------------------------------------------------


def test_the_backtest_imports_no_actions_and_no_engine() -> None:
    code = (
        "import sys, postdeploy.plugin.backtesting;"
        "print([m for m in sys.modules if m.startswith(('postdeploy.actions', 'postdeploy.engine'))])"
    )
    root = pathlib.Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(root / "operator")},
    )
    assert done.stdout.strip() == "[]", done.stdout


def test_the_plugin_command_calls_only_the_sessions_reads() -> None:
    root = pathlib.Path(__file__).resolve().parents[2]
    tree = ast.parse((root / "operator/postdeploy/plugin/backtesting.py").read_text())
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "session"
    }
    assert used <= {"review", "template", "workload", "workload_revisions", "namespace"}, used
