"""Every check of the default template on the test bed: passes when healthy, fails on its fault.

Each check runs as the engine runs it (the template merged and resolved, the provider
picked by ``postdeploy.engine.registry``, the run decided by
``postdeploy.decisions.checks``), but at fixed times of the backfilled history, so the
faults in it are where the docstring of ``testbed.history`` says. The operator-driven
run of the whole template is ``tests/e2e/test_default_template.py``.

Covers:
- phase 1 on healthy history (error rate and p95 latency compared with before the
  deployment, and their threshold rules; throughput a week on, CPU and memory against
  limits) passes, and stays quiet at every second hour of two days; the error spike
  three days ago fails error-rate and latency-p95 (both rules) and nothing else;
- memory-leak fails ``leaky`` (~2 h to 90% of its limit) and not the flat, noisy,
  saw-toothed ``checkout`` at any of eight windows, nor ``creepy``;
- latency-trend fails ``creepy``'s creep and not the others; error-rate-trend stays
  quiet on all three and on a window holding the hour-long spike, and fails a live
  error rate that climbs by five points, not one that holds steady;
- new-error-types finds nothing new in the history, fails a live error type never
  seen before with its count, and is quiet about a type the week before already had;
- slow queries: the first run keeps a snapshot; a statement slower than 1 s that is
  new since, or slower than before, fails; fast ones and one that was already slow do
  not; the phase-2 check reads the phase-1 snapshot;
- business (a copy of ``shop``, so faults stay in the test): engagement and feature
  adoption pass; a named feature under its minimum fails; conversion and revenue stay
  quiet over twelve healthy periods (the seeded rate is flat by construction); a
  halved conversion rate fails both; a 20% drop on few sessions is "larger than the
  tolerance but not significant" and passes; the A/B check names the winner, says
  "not significant yet" for fixed flat counts, and fails a sample-ratio mismatch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from postdeploy import defaults
from postdeploy.decisions import checks as check_decisions
from postdeploy.decisions import templates
from postdeploy.engine.registry import Providers
from postdeploy.engine.settings import Settings
from postdeploy.models.measurements import Measurement, ReviewContext, Target
from postdeploy.models.reviews import CheckStatus
from testbed import history, postgres, sampleapp
from testbed import observability as bed
from tests.e2e.shops import ShopCopy, copy_of_shop

pytestmark = pytest.mark.e2e

SECOND = datetime.timedelta(seconds=1)
HALF_HOUR = datetime.timedelta(minutes=30)
HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)


@dataclasses.dataclass
class Run:
    """One run of one check, decided."""

    name: str
    result: str  # Passed, Failed, Inconclusive, Error, Skipped
    measurement: Measurement
    status: CheckStatus

    @property
    def value(self) -> float | None:
        return self.measurement.value

    def __str__(self) -> str:
        return f"{self.name}: {self.result}, {self.status.message}"


class Checklist:
    """The default template, resolved for one target, run check by check."""

    def __init__(self, providers: Providers, target: str) -> None:
        self.providers = providers
        self.target = target

    async def run(
        self,
        name: str,
        *,
        now: datetime.datetime,
        deployed: datetime.datetime,
        parameters: dict[str, str] | None = None,
        override: dict[str, Any] | None = None,
        memo: dict[str, Any] | None = None,
        memos: dict[str, Any] | None = None,
    ) -> Run:
        phase_name = next(p.name for p in defaults.spec().phases for c in p.checks if c.name == name)
        check_override = {"name": name, "enabled": True, **(override or {})}
        review = templates.resolve(
            templates.merge(
                defaults.manifest()["spec"],
                {
                    "target": {"name": self.target, "namespace": "shop"},
                    "parameters": parameters or {},
                    "phases": [{"name": phase_name, "checks": [check_override]}],
                },
            )
        )
        phase = next(p for p in review.phases if p.name == phase_name)
        check = next(c for c in phase.checks if c.name == name)
        ctx = ReviewContext(
            review_name="e2e",
            review_namespace="shop",
            review_uid="0b8a2f4e-0000-4000-8000-00000000e2e0",
            target=Target("Deployment", self.target, "shop"),
            version="1.0.0",
            deployed_at=deployed,
            now=now,
            phase_name=phase.name,
            phase_start=deployed + phase.start,
            phase_end=deployed + phase.end,
            check_name=name,
            interval=check.interval,  # the provider aligns evaluation times to a quarter of it
            memo=memo or {},
            parameters=review.spec.parameters,
            memos=memos or {},
        )
        measurement = await self.providers.measure(check.spec, ctx)
        status, result = check_decisions.record(check, check_decisions.initial(check), measurement, now, 0)
        return Run(name, result, measurement, status)


@pytest.fixture
async def providers(observability: dict[str, Any], postgres_db: dict[str, Any]) -> AsyncIterator[Providers]:
    settings = Settings(
        prometheus_url=observability["env"]["PROMETHEUS_URL"],
        alertmanager_url=observability["env"]["ALERTMANAGER_URL"],
        postgres_dsn=postgres_db["env"]["POSTGRES_DSN"],
        measure_timeout_seconds=60,
    )
    async with httpx.AsyncClient() as client:
        registry = Providers(None, client, settings)  # type: ignore[arg-type]  # no Kubernetes here
        yield registry
        await registry.close()


@pytest.fixture
def timeline(observability: dict[str, Any]) -> dict[str, datetime.datetime]:
    raw = observability["history"]["timeline"]
    return {
        key: datetime.datetime.fromtimestamp(raw[key], datetime.UTC)
        for key in ("start", "end", "spike_start", "spike_end", "leak_start", "creep_start")
    }


def _results(runs: list[Run]) -> dict[str, str]:
    return {run.name: run.result for run in runs}


# --- phase 1 on the history ---------------------------------------------------------------

PHASE_ONE_METRICS = ("error-rate", "latency-p95", "throughput", "cpu-usage", "memory-usage")
THRESHOLDS = ("error-rate-threshold", "latency-p95-threshold")


async def test_phase_one_passes_on_healthy_history(
    providers: Providers, timeline: dict[str, datetime.datetime]
) -> None:
    now = timeline["end"] - HOUR
    checklist = Checklist(providers, "checkout")
    names = (*PHASE_ONE_METRICS, *THRESHOLDS)
    runs = [await checklist.run(n, now=now, deployed=now - HALF_HOUR) for n in names]
    assert _results(runs) == dict.fromkeys(names, "Passed"), [str(r) for r in runs]
    values = {r.name: r.value for r in runs}
    details = {r.name: r.measurement.details for r in runs}
    # The comparisons: one-minute batches, each against 6 minutes before deployedAt; of
    # 30 minutes the last one is not settled yet.
    assert details["error-rate"]["batches"] == 29
    assert 0.002 < details["error-rate"]["shareBefore"] < 0.006  # 0.3% 500s and 0.1% 503s
    assert details["error-rate"]["ratioLower"] < 1 < details["error-rate"]["ratioUpper"]
    assert 0.1 < details["latency-p95"]["quantileBefore"] < 0.35
    assert details["latency-p95"]["pValue"] > details["latency-p95"]["alpha"]
    assert 0.002 < (values["error-rate-threshold"] or 0) < 0.006
    assert 0.1 < (values["latency-p95-threshold"] or 0) < 0.35
    # The pods' CPU follows the daily cycle (0.047-0.113 core of a 1-core limit).
    cpu = history.checkout_cpu(now.timestamp())
    assert 0.7 * cpu < (values["cpu-usage"] or 0) < 1.4 * cpu, (values["cpu-usage"], cpu)
    assert 0.35 < (values["memory-usage"] or 0) < 0.46  # 180-230 MiB of 512 MiB
    throughput = runs[2]
    assert throughput.measurement.baseline is not None and throughput.value is not None
    assert abs(throughput.value / throughput.measurement.baseline - 1) < 0.1


async def test_the_error_spike_fails_error_rate_and_latency_only(
    providers: Providers, timeline: dict[str, datetime.datetime]
) -> None:
    deployed = timeline["spike_start"] - 60 * SECOND  # the baseline's 5 minutes end before it
    checklist = Checklist(providers, "checkout")
    names = (*PHASE_ONE_METRICS, *THRESHOLDS)
    runs = [await checklist.run(n, now=deployed + HALF_HOUR, deployed=deployed) for n in names]
    results = _results(runs)
    assert results["error-rate"] == "Failed" and results["latency-p95"] == "Failed", [str(r) for r in runs]
    assert results["error-rate-threshold"] == results["latency-p95-threshold"] == "Failed"
    errors, latency = runs[0].measurement.details, runs[1].measurement.details
    assert errors["shareBefore"] < 0.01 and errors["shareAfter"] > 0.1 and errors["ratioLower"] > 10
    assert latency["quantileAfter"] > 1.5 * latency["quantileBefore"] and latency["ratioLower"] > 2
    assert (runs[5].value or 0) > 0.1 and (runs[5].measurement.baseline or 1) < 0.01
    assert results["cpu-usage"] == results["memory-usage"] == "Passed"
    # Eleven days ago is before the history began: no baseline, so no verdict either way.
    assert results["throughput"] == "Inconclusive"


async def test_phase_one_is_quiet_on_two_days_of_noise(
    providers: Providers, timeline: dict[str, datetime.datetime]
) -> None:
    checklist = Checklist(providers, "checkout")
    failed, runs = [], 0
    for hours in range(2, 50, 2):
        now = timeline["end"] - hours * HOUR
        names = ["error-rate", "latency-p95", "error-rate-threshold", "latency-p95-threshold"]
        if now - datetime.timedelta(weeks=1) > timeline["start"] + HOUR:  # a week back is history
            names.append("throughput")
        for name in names:
            run = await checklist.run(name, now=now, deployed=now - HOUR)
            runs += 1
            if run.result != "Passed":
                failed.append(f"{now:%d %H:%M} {run}")
    assert not failed
    assert runs >= 55


# --- phase 2 on the history ---------------------------------------------------------------


async def test_memory_leak_fails_the_leaking_pod_only(
    providers: Providers, timeline: dict[str, datetime.datetime]
) -> None:
    end = timeline["end"]
    deployed = end - 24 * HOUR  # the extended phase: the last 22 hours
    leaky = await Checklist(providers, "leaky").run("memory-leak", now=end, deployed=deployed)
    assert leaky.result == "Failed", leaky
    assert leaky.value is not None and 0.5 < leaky.value < 4  # ~440 MiB + 10 MiB/h, 461 MiB limit
    assert leaky.measurement.details["growing"] is True
    assert abs(leaky.measurement.details["slopePerHour"] / (10 * 2**20) - 1) < 0.1
    creepy = await Checklist(providers, "creepy").run("memory-leak", now=end, deployed=deployed)
    assert creepy.result == "Passed" and (creepy.value or 0) > 24 * 30, creepy  # a month or never
    checkout = Checklist(providers, "checkout")
    for hours in range(0, 24, 3):  # the 30-minute GC sawtooth, cut anywhere, is no leak
        run = await checkout.run(
            "memory-leak", now=end - hours * HOUR, deployed=end - hours * HOUR - 24 * HOUR
        )
        assert run.result == "Passed" and (run.value or 0) > 24 * 30, (hours, str(run))
        assert run.measurement.details["seriesCount"] == 3


async def test_latency_trend_fails_the_creep_only(
    providers: Providers, timeline: dict[str, datetime.datetime]
) -> None:
    end = timeline["end"]
    deployed = end - 24 * HOUR
    creepy = await Checklist(providers, "creepy").run("latency-trend", now=end, deployed=deployed)
    assert creepy.result == "Failed", creepy
    assert creepy.value is not None and creepy.value > 2  # p95 ~0.11 s -> ~0.9 s
    assert creepy.measurement.details["pValue"] < 1e-10
    assert creepy.measurement.details["trend"] == "increasing"
    for target in ("checkout", "leaky"):
        run = await Checklist(providers, target).run("latency-trend", now=end, deployed=deployed)
        assert run.result == "Passed", run
        assert abs(run.value or 0) < 0.05


async def test_error_rate_trend_is_quiet_on_history_and_on_a_spike(
    providers: Providers, timeline: dict[str, datetime.datetime]
) -> None:
    end = timeline["end"]
    for target in ("checkout", "leaky", "creepy"):
        run = await Checklist(providers, target).run("error-rate-trend", now=end, deployed=end - 24 * HOUR)
        assert run.result == "Passed", run
    # The phase window holds the hour of 15% errors: a spike, not a gradual rise.
    spike = timeline["spike_start"]
    run = await Checklist(providers, "checkout").run(
        "error-rate-trend", now=spike + 10 * HOUR, deployed=spike - 12 * HOUR
    )
    assert run.result == "Passed", run
    assert run.measurement.details["absoluteChange"] < 0.005


@pytest.fixture
def steer(observability: dict[str, Any]) -> Iterator[Any]:
    url = observability["env"]["SAMPLEAPP_CONTROL_URL"]
    original = sampleapp.settings(url)

    def apply(**changes: Any) -> None:
        sampleapp.steer(url, changes)

    yield apply
    sampleapp.steer(url, {k: original[k] for k in ("error_rate", "rps", "latency_seconds", "error_types")})


# Live checks run every few seconds, so their evaluation times are aligned to a second.
LIVE = {"interval": "4s"}


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


async def test_error_rate_trend_fails_a_live_climb_and_not_a_steady_rate(
    providers: Providers, steer: Any
) -> None:
    checklist = Checklist(providers, "checkout")
    live = {"trendWindow": "4s"}
    faster = {"prometheus": {"step": "4s"}, "interval": "4s"}
    steer(rps=400, error_rate=0.02)
    began = _now() + 6 * SECOND  # the phase starts once 4 s windows are all at 2%
    await _until(lambda: _now() > began + 30 * SECOND)
    steady = await checklist.run(
        "error-rate-trend", now=_now(), deployed=began - 2 * HOUR, parameters=live, override=faster
    )
    assert steady.result == "Passed", steady
    assert abs(steady.measurement.details["absoluteChange"]) < 0.02
    climb_start = _now()
    for step in range(1, 7):  # 2% -> 8% in steps of one point every 6 s
        steer(error_rate=0.02 + 0.01 * step)
        await _until(lambda s=step: _now() > climb_start + s * 6 * SECOND)
    climb = await checklist.run(
        "error-rate-trend", now=_now(), deployed=climb_start - 2 * HOUR, parameters=live, override=faster
    )
    assert climb.result == "Failed", climb
    assert climb.measurement.details["absoluteChange"] > 0.03
    assert climb.measurement.details["pValue"] < 0.01


async def _until(condition: Any, timeout: float = 120) -> None:
    """Wait until ``condition()`` holds, checking ten times a second."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_new_error_types(
    providers: Providers, steer: Any, timeline: dict[str, datetime.datetime], observability: dict[str, Any]
) -> None:
    end = timeline["end"]
    for target in ("checkout", "leaky", "creepy"):  # the same types the whole history long
        run = await Checklist(providers, target).run("new-error-types", now=end, deployed=end - 6 * HOUR)
        assert run.result == "Passed" and run.value == 0, run
    checklist = Checklist(providers, "checkout")
    deployed = _now()
    new_type = f"PaymentDeclined{uuid.uuid4().hex[:6]}Error"
    steer(error_types={new_type: 0.5})
    found: Run | None = None
    deadline = time.monotonic() + 60
    while found is None or found.value == 0:
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.5)
        found = await checklist.run("new-error-types", now=_now(), deployed=deployed, override=LIVE)
    assert found.result == "Failed", found
    series = found.measurement.details["series"]
    assert [s["labels"]["type"] for s in series] == [new_type]
    assert series[0]["value"] >= 1  # its count since the deployment
    # A type the week before the deployment already had is not new, however frequent.
    deployed = _now()
    steer(error_types={"TimeoutError": 0.5})
    recent = 'increase(app_errors_total{namespace="shop", job="checkout", type="TimeoutError"}[5s]) > 0'
    prometheus = observability["env"]["PROMETHEUS_URL"]
    await _until(lambda: bool(bed.query(prometheus, recent)) and _now() > deployed + 5 * SECOND)
    quiet = await checklist.run("new-error-types", now=_now(), deployed=deployed, override=LIVE)
    assert quiet.result == "Passed" and quiet.value == 0, quiet


# --- slow statements ------------------------------------------------------------------------


def _execute(dsn: str, text: str, *args: Any) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL(text), args)  # type: ignore[arg-type]  # fixed test statements


async def test_slow_statements_new_or_slower_since_the_deployment(
    providers: Providers, postgres_db: dict[str, Any]
) -> None:
    admin = postgres_db["env"]["POSTGRES_ADMIN_DSN"]
    tag = uuid.uuid4().hex[:8]
    already_slow = f"SELECT /* e2e-{tag}-already-slow */ pg_sleep(%s)"
    gets_slower = f"SELECT /* e2e-{tag}-gets-slower */ pg_sleep(%s), count(*) FROM users"
    fast = f"SELECT /* e2e-{tag}-fast */ count(*) FROM orders WHERE amount_cents > %s"
    brand_new = f"SELECT /* e2e-{tag}-new */ pg_sleep(%s), 1"
    _execute(admin, already_slow, 1.2)
    for _ in range(3):
        _execute(admin, gets_slower, 0.01)
        _execute(admin, fast, 1000)
    checklist = Checklist(providers, "checkout")
    deployed = _now()
    snapshot = await checklist.run("slow-queries-immediate", now=deployed, deployed=deployed)
    assert snapshot.result == "Passed" and snapshot.value == 0, snapshot
    memo = dict(snapshot.status.memo or {})
    assert memo["snapshot"]["complete"] is True

    _execute(admin, already_slow, 1.2)  # as slow as before: not flagged
    _execute(admin, fast, 2000)
    quiet = await checklist.run("slow-queries-immediate", now=_now(), deployed=deployed, memo=memo)
    assert quiet.result == "Passed" and quiet.value == 0, quiet

    _execute(admin, gets_slower, 1.3)
    _execute(admin, brand_new, 1.1)
    later = await checklist.run("slow-queries-immediate", now=_now(), deployed=deployed, memo=memo)
    assert later.result == "Failed", later
    flagged = {s["query"].split("*/")[0]: s for s in later.measurement.details["statements"]}
    assert set(flagged) == {f"SELECT /* e2e-{tag}-gets-slower ", f"SELECT /* e2e-{tag}-new "}, flagged
    slower = flagged[f"SELECT /* e2e-{tag}-gets-slower "]
    assert slower["why"] == "slower since the deployment" and slower["calls"] == 1
    assert 1290 < slower["meanMs"] < 1600 and slower["meanMsBefore"] < 100
    new = flagged[f"SELECT /* e2e-{tag}-new "]
    assert new["why"] == "new since the deployment" and new["meanMsBefore"] is None
    assert "slower than 1s on average since the deployment" in later.status.message

    # The extended phase's check builds on the snapshot the immediate phase kept.
    extended = await checklist.run(
        "slow-queries", now=_now(), deployed=deployed, memos={"slow-queries-immediate": memo}
    )
    assert extended.result == "Failed" and extended.value == 2, extended
    assert extended.measurement.details["snapshotFrom"] == "slow-queries-immediate"


# --- business metrics, on a copy of the shop database ---------------------------------------


@pytest.fixture
def shop_copy(postgres_db: dict[str, Any]) -> Iterator[ShopCopy]:
    with copy_of_shop(postgres_db) as copy:
        yield copy


@pytest.fixture
async def business(shop_copy: ShopCopy, observability: dict[str, Any]) -> AsyncIterator[Providers]:
    settings = Settings(
        prometheus_url=observability["env"]["PROMETHEUS_URL"],
        postgres_dsn=shop_copy.read_only,
        measure_timeout_seconds=60,
    )
    async with httpx.AsyncClient() as client:
        registry = Providers(None, client, settings)  # type: ignore[arg-type]
        yield registry
        await registry.close()


async def test_engagement_and_feature_adoption(business: Providers, shop_copy: ShopCopy) -> None:
    now = shop_copy.seeded_at
    deployed = now - 30 * HOUR
    checklist = Checklist(business, "checkout")
    engagement = await checklist.run("engagement", now=now, deployed=deployed)
    assert engagement.result == "Passed", engagement
    details = engagement.measurement.details
    assert 0.8 < details["dau_ratio"] < 1.25 and 0.8 < details["requests_ratio"] < 1.25
    assert details["daily_active_users"] > 4000 and details["total_requests"] > 25000

    adoption = await checklist.run("feature-adoption", now=now, deployed=deployed)
    assert adoption.result == "Passed" and adoption.value == 0, adoption
    rows = {row[1]: row for row in adoption.measurement.details["rows"]}
    assert {"search", "playlists", "smart_shuffle"} <= set(rows)
    assert rows["smart_shuffle"][2] > 500  # unique users of the feature launched 36 h ago
    met = await checklist.run(
        "feature-adoption",
        now=now,
        deployed=deployed,
        parameters={"featureMinimums": "smart_shuffle=500, lyrics=50"},
    )
    assert met.result == "Passed", met
    missed = await checklist.run(
        "feature-adoption",
        now=now,
        deployed=deployed,
        parameters={"featureMinimums": "smart_shuffle=500000, karaoke=1"},
    )
    assert missed.result == "Failed" and missed.value == 2, missed


async def test_conversion_and_revenue_stay_quiet_on_healthy_periods(
    business: Providers, shop_copy: ShopCopy
) -> None:
    checklist = Checklist(business, "checkout")
    seeded = shop_copy.seeded_at
    failed: dict[str, list[str]] = {"conversion": [], "revenue": []}
    for half_days in range(4, 16):  # deployed 2 to 7.5 days before seeding, 30 hours on
        deployed = seeded - half_days * DAY / 2
        for name in failed:
            run = await checklist.run(name, now=deployed + 30 * HOUR, deployed=deployed)
            assert run.result in ("Passed", "Failed"), run
            if run.result == "Failed":
                failed[name].append(f"{half_days / 2} days: {run}")
    # The seeded conversion rate is 3.5% in every period by construction (a
    # low-discrepancy sequence, testbed.business_data), so no look may fail; revenue
    # varies with order amounts (about 3% over 30 hours) and weekends (12% fewer
    # sessions), far from its 30% tolerance.
    assert failed == {"conversion": [], "revenue": []}, failed


async def test_a_halved_conversion_rate_fails_conversion_and_revenue(
    business: Providers, shop_copy: ShopCopy
) -> None:
    checklist = Checklist(business, "checkout")
    seeded = shop_copy.seeded_at
    deployed = seeded - 30 * HOUR
    removed = postgres.inject_conversion_drop(shop_copy.admin, deployed, 0.5)
    assert removed > 50
    conversion = await checklist.run("conversion", now=seeded, deployed=deployed)
    assert conversion.result == "Failed", conversion
    assert conversion.value is not None and -0.7 < conversion.value < -0.3
    assert conversion.measurement.details["pValue"] < 1e-4
    assert "a drop larger than the 10% tolerance and significant" in conversion.status.message
    revenue = await checklist.run("revenue", now=seeded, deployed=deployed)
    assert revenue.result == "Failed", revenue
    assert revenue.value is not None and revenue.value < -0.3


async def test_a_small_drop_on_few_sessions_is_reported_but_not_failed(
    business: Providers, shop_copy: ShopCopy
) -> None:
    # 400 sessions in the six hours before a deployment two days after seeding, 20 of
    # them converted; 400 in the six hours after it, 16 converted: 20% fewer.
    deployed = shop_copy.seeded_at + 2 * DAY
    with psycopg.connect(shop_copy.admin) as conn:
        conn.execute(
            """
            INSERT INTO sessions (user_id, started_at, channel, converted)
            SELECT g, %(at)s - interval '6 hours' + g * interval '53 seconds', 'organic', g %% 20 = 0
            FROM generate_series(1, 400) AS g
            UNION ALL
            SELECT g, %(at)s + g * interval '53 seconds', 'organic', g %% 25 = 0
            FROM generate_series(1, 400) AS g
            """,
            {"at": deployed},
        )
    run = await Checklist(business, "checkout").run("conversion", now=deployed + 6 * HOUR, deployed=deployed)
    assert run.result == "Passed", run
    assert run.value is not None and abs(run.value + 0.2) < 1e-12
    assert run.measurement.details["pValue"] > 0.3
    assert run.measurement.message.startswith(
        "a drop larger than the 10% tolerance but not significant (p >= 0.01): since deployment 4.00% "
        "vs previous period 5.00% (-20.0%"
    ), run.measurement.message


async def test_ab_test_verdicts(business: Providers, shop_copy: ShopCopy) -> None:
    checklist = Checklist(business, "checkout")
    now = shop_copy.seeded_at

    async def ab(experiment: str) -> Run:
        return await checklist.run(
            "ab-test", now=now, deployed=now - 30 * HOUR, parameters={"experiment": experiment}
        )

    lift = await ab("checkout_redesign")
    assert lift.result == "Passed" and lift.measurement.details["winner"] == "B", lift
    assert lift.measurement.message.startswith("winner B:")
    group_b = lift.measurement.details["groups"][1]
    assert group_b["lift"] > 0.1 and group_b["ci"][0] > 0 and group_b["pValue"] < 0.01
    # A flat experiment of fixed counts: A 100 of 1000 converted, B 104 of 1000.
    with psycopg.connect(shop_copy.admin) as conn:
        conn.execute(
            """
            INSERT INTO experiments (name, description, version, started_at, variants, planned_split)
            VALUES ('e2e_flat', 'no effect', '1.0.0', now(), '{A,B}', '{0.5,0.5}');
            """
        )
        conn.execute(
            """
            INSERT INTO experiment_assignments (experiment, variant, user_id, assigned_at)
            SELECT 'e2e_flat', CASE WHEN id <= 1000 THEN 'A' ELSE 'B' END, id, now()
            FROM generate_series(1, 2000) AS id
            """
        )
        conn.execute(
            """
            INSERT INTO experiment_conversions (experiment, user_id, converted_at, value_cents)
            SELECT 'e2e_flat', id, now(), 100 FROM generate_series(1, 2000) AS id
            WHERE id % 10 = 0 OR id BETWEEN 1001 AND 1004
            """
        )
    flat = await ab("e2e_flat")
    assert flat.result == "Passed" and flat.measurement.details["winner"] == "not significant yet", flat
    assert flat.measurement.message.startswith("not significant yet: B 10.40% vs A 10.00%, lift +4.0%")
    broken = await ab("onboarding_tips")
    assert broken.result == "Failed", broken
    assert broken.measurement.details["srmPValue"] < 1e-6
    assert 0.53 < broken.measurement.details["shares"][0] < 0.57  # 55/45 where 50/50 was planned
    assert broken.measurement.message.startswith("sample-ratio mismatch: split 5")
    assert "where 50.0%/50.0% was planned" in broken.measurement.message
