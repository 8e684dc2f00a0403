"""``Engine.tick`` on fakes: no cluster, no data source.

The engine reads its inputs through ``postdeploy.engine.inputs`` and measures through
its providers; here both are fakes that answer what each test scripts, and the clock
is set by hand. Covers: the first tick runs the due slot and starts the phase; a
tick fed the status it just wrote (a restart) runs nothing and posts nothing again; a
failed run fails the check once, with its Warning Events and an action record; a data
source that is down is an Error, never a Failed; a phase completes after its end; an
invalid spec, a refused target namespace and a missing target become conditions
without a measurement; version and ``deployedAt`` come from the target when the spec
names none; a check's Secret is read from the review's namespace.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from typing import Any, cast

import pytest

from postdeploy.engine import ticks
from postdeploy.engine.registry import Providers
from postdeploy.engine.settings import Settings
from postdeploy.kit import metrics
from postdeploy.models.checks import Check
from postdeploy.models.measurements import Measurement, ReviewContext

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


class FakeInputs:
    def __init__(self) -> None:
        self.templates: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str, str], str] = {}
        self.workloads: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.reads: list[str] = []

    async def template(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(f"template {kind} {namespace}/{name}")
        return self.templates.get((kind, namespace, name))

    async def secret(self, namespace: str, name: str, key: str) -> str:
        self.reads.append(f"secret {namespace}/{name}/{key}")
        if (namespace, name, key) not in self.secrets:
            raise LookupError(f"Secret {namespace}/{name} not found")
        return self.secrets[(namespace, name, key)]

    async def workload(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(f"workload {kind} {namespace}/{name}")
        return self.workloads.get((kind, namespace, name))

    async def rollout_time(self, workload: dict[str, Any]) -> datetime.datetime | None:
        return T0 - datetime.timedelta(minutes=1)

    async def target_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(f"target {kind} {namespace}/{name}")
        return {"metadata": {"name": name, "namespace": namespace}}


class FakeProviders:
    """Answers each check by name from a script; records every measurement asked for."""

    def __init__(self) -> None:
        self.answers: dict[str, Measurement] = {}
        self.asked: list[tuple[str, datetime.datetime, Mapping[str, str]]] = []
        self.http = None

    async def measure(self, check: Check, ctx: ReviewContext) -> Measurement:
        self.asked.append((ctx.check_name, ctx.now, dict(ctx.secrets)))
        return self.answers.get(ctx.check_name, Measurement.ok(0.0))


class FakeFinals:
    async def conclude(self, *args: Any) -> None:
        return None


class World:
    def __init__(self, settings: Settings | None = None) -> None:
        self.now = T0
        self.inputs = FakeInputs()
        self.providers = FakeProviders()
        self.engine = ticks.Engine(
            cast(Any, None),
            cast(Providers, self.providers),
            settings or Settings(),
            clock=lambda: self.now,
            inputs=self.inputs,
            final_reviews=cast(Any, FakeFinals()),
        )
        self.status: dict[str, Any] = {}
        self.events: list[ticks.Event] = []

    def at(self, seconds: float) -> World:
        self.now = T0 + datetime.timedelta(seconds=seconds)
        return self

    async def tick(self, spec: Mapping[str, Any], namespace: str = "shop") -> ticks.TickResult:
        body = {
            "metadata": {"name": "r", "namespace": namespace, "uid": "u1", "generation": 1},
            "spec": spec,
            "status": self.status,
        }
        result = await self.engine.tick(body)
        if result.status is not None:
            self.status = result.status
        self.events.extend(result.events)
        return result


def review(on_failure: str = "none", **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "target": {"name": "app"},
        "version": "v2",
        "deployedAt": T0.isoformat(),
        "useDefaultTemplate": False,
        "phases": [
            {
                "name": "immediate",
                "start": "0s",
                "end": "3m",
                "interval": "1m",
                "checks": [
                    {
                        "name": "error-rate",
                        "prometheus": {"query": "rate(errors[1m])"},
                        "failWhen": "value > 0.05",
                        "onFailure": on_failure,
                    },
                    {"name": "restarts", "kubernetes": {"measure": "restarts"}},
                ],
            }
        ],
    }
    spec.update(extra)
    return spec


def check(status: Mapping[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in status["checks"] if c["name"] == name)


async def test_the_first_tick_runs_the_due_slot_and_starts_the_phase() -> None:
    world = World().at(5)
    result = await world.tick(review())
    assert sorted(name for name, _, _ in world.providers.asked) == ["error-rate", "restarts"]
    assert world.status["phase"] == "immediate"
    assert world.status["verdict"] == "Passing"
    assert check(world.status, "error-rate")["lastSlot"] == 0
    assert check(world.status, "error-rate")["runs"] == 1
    # Beginning Passing is no verdict change worth an Event: PhaseStarted says it.
    assert [e.reason for e in result.events] == ["PhaseStarted"]
    assert result.wake_at == T0 + datetime.timedelta(minutes=1)
    assert not result.done


async def test_each_run_reports_how_late_it_began_in_the_lag_histogram(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def observed() -> tuple[float, float]:
        count = metrics.REGISTRY.get_sample_value("postdeploy_run_delay_seconds_count") or 0.0
        total = metrics.REGISTRY.get_sample_value("postdeploy_run_delay_seconds_sum") or 0.0
        return count, total

    count, total = observed()
    with caplog.at_level(logging.DEBUG, logger="postdeploy.engine.ticks"):
        await World().at(67.5).tick(review())  # slot 1 began at 60 s: both runs 7.5 s late
    after_count, after_total = observed()
    assert after_count == count + 2
    assert after_total == pytest.approx(total + 15.0)
    lines = [r for r in caplog.records if r.getMessage().startswith("run ")]
    assert sorted(r.getMessage() for r in lines) == [
        "run error-rate slot 1, 7.500s after its run time",
        "run restarts slot 1, 7.500s after its run time",
    ]
    assert {r.__dict__["review"] for r in lines} == {"shop/r"}


async def test_a_restart_inside_the_slot_runs_nothing_and_posts_nothing() -> None:
    world = World().at(5)
    await world.tick(review())
    asked = len(world.providers.asked)
    again = await world.at(20).tick(review())  # the status it wrote, as a restart reads it
    assert len(world.providers.asked) == asked
    assert again.status is None
    assert again.events == ()


async def test_a_failed_run_fails_the_check_once_with_events_and_an_action() -> None:
    world = World().at(5)
    world.providers.answers["error-rate"] = Measurement.ok(0.2)
    result = await world.tick(review(on_failure="annotate"))
    assert check(world.status, "error-rate")["state"] == "Failed"
    assert world.status["verdict"] == "Failing"
    reasons = [(e.type, e.reason) for e in result.events]
    assert ("Warning", "CheckFailed") in reasons
    assert ("Warning", "VerdictFailing") in reasons
    actions = world.status["actions"]
    assert [(a["action"], a["check"], a["state"]) for a in actions] == [("annotate", "error-rate", "Pending")]
    assert "target Deployment shop/app" in world.inputs.reads
    # The next slot neither decides again nor repeats an Event.
    later = await world.at(65).tick(review(on_failure="annotate"))
    assert len(world.status["actions"]) == 1
    assert not [e for e in later.events if e.reason in ("CheckFailed", "VerdictFailing")]


async def test_a_source_that_is_down_is_an_error_never_a_failure() -> None:
    world = World().at(5)
    world.providers.answers["error-rate"] = Measurement.error("connection refused")
    await world.tick(review(on_failure="rollback"))
    error_rate = check(world.status, "error-rate")
    assert error_rate["lastResult"] == "Error"
    assert error_rate["state"] != "Failed"
    assert error_rate["failures"] == 0
    assert world.status.get("actions", []) == []


async def test_the_phase_completes_after_its_end() -> None:
    world = World()
    for second in (5, 65, 125):
        await world.at(second).tick(review())
    assert world.status["phase"] == "immediate"
    result = await world.at(185).tick(review())
    assert world.status["phase"] == "Completed"
    assert world.status["verdict"] == "Passed"
    assert {c["state"] for c in world.status["checks"]} == {"Passed"}
    assert "PhaseCompleted" in [e.reason for e in result.events]
    assert result.done
    # A completed review is left alone.
    asked = len(world.providers.asked)
    final = await world.at(600).tick(review())
    assert (final.status, final.events, final.done) == (None, (), True)
    assert len(world.providers.asked) == asked


async def test_an_invalid_spec_is_a_condition_without_a_measurement() -> None:
    world = World().at(5)
    spec = review()
    spec["phases"][0]["checks"][0]["failWhen"] = "value >"
    result = await world.tick(spec)
    assert world.providers.asked == []
    assert world.status["verdict"] == "Invalid"
    condition = next(c for c in world.status["conditions"] if c["type"] == "InvalidSpec")
    assert condition["status"] == "True"
    assert "failWhen" in condition["message"]
    assert [e.reason for e in result.events] == ["InvalidSpec"]


async def test_another_namespace_is_refused_before_anything_is_read() -> None:
    world = World().at(5)
    spec = review()
    spec["target"] = {"name": "app", "namespace": "payments"}
    await world.tick(spec, namespace="shop")
    assert world.providers.asked == []
    assert world.status["verdict"] == "Invalid"
    assert any(c["type"] == "Refused" and c["status"] == "True" for c in world.status["conditions"])
    assert not [r for r in world.inputs.reads if not r.startswith("template")]


async def test_a_missing_target_holds_the_review_and_retries() -> None:
    world = World().at(5)
    spec = review()
    del spec["version"]
    result = await world.tick(spec)
    assert world.providers.asked == []
    found = next(c for c in world.status["conditions"] if c["type"] == "TargetFound")
    assert (found["status"], found["reason"]) == ("False", "TargetNotFound")
    assert result.wake_at == world.now + datetime.timedelta(seconds=15)


async def test_version_and_deployment_time_come_from_the_target() -> None:
    world = World().at(5)
    world.inputs.workloads[("Deployment", "shop", "app")] = {
        "metadata": {"labels": {}},
        "spec": {"template": {"metadata": {"labels": {"app.kubernetes.io/version": "v7"}}}},
    }
    spec = review()
    del spec["version"], spec["deployedAt"]
    await world.tick(spec)
    assert world.status["version"] == "v7"
    assert world.status["deployedAt"] == (T0 - datetime.timedelta(minutes=1)).isoformat()
    # Recorded once, they are not read again.
    reads = len(world.inputs.reads)
    await world.at(30).tick(spec)
    assert not [r for r in world.inputs.reads[reads:] if r.startswith("workload")]


@pytest.mark.parametrize("present", [True, False])
async def test_a_checks_secret_comes_from_the_reviews_namespace(present: bool) -> None:
    world = World().at(5)
    if present:
        world.inputs.secrets[("shop", "db", "dsn")] = "postgresql://u:p@127.0.0.1/db"
    spec = review()
    spec["phases"][0]["checks"] = [
        {
            "name": "slow-queries",
            "postgres": {"query": "select 1", "dsnSecretRef": {"name": "db", "key": "dsn"}},
            "failWhen": "value > 1",
        }
    ]
    await world.tick(spec)
    slow = check(world.status, "slow-queries")
    if present:
        assert world.providers.asked[0][2] == {"dsn": "postgresql://u:p@127.0.0.1/db"}
        assert slow["lastResult"] == "Passed"
    else:
        assert world.providers.asked == []
        assert slow["lastResult"] == "Error"
        assert "Secret shop/db not found" in slow["message"]
    assert "postgresql://" not in str(world.status)


async def test_a_review_completes_only_after_the_action_its_last_run_decided() -> None:
    world = World()
    for second in (5, 65):
        await world.at(second).tick(review(on_failure="rollback"))
    # A late tick (a loaded machine) runs the last slot after the phase's end: the run
    # fails and decides a rollback in the same tick that would complete the review.
    world.providers.answers["error-rate"] = Measurement.ok(0.2)
    late = await world.at(185).tick(review(on_failure="rollback"))
    actions = world.status["actions"]
    assert ("rollback", "Pending") in [(a["action"], a["state"]) for a in actions]
    assert world.status["phase"] == "immediate"
    assert world.status["verdict"] == "Failing"
    assert not late.done
    assert late.wake_at is not None and late.wake_at <= world.now + datetime.timedelta(seconds=15)
    assert not any(c["type"] == "Complete" and c["status"] == "True" for c in world.status["conditions"])
    # Once postdeploy.engine.executions has carried it out, the review completes and
    # says what was done.
    for action in world.status["actions"]:
        action.update(state="Done", fromRevision="2", toRevision="1")
    done = await world.at(190).tick(review(on_failure="rollback"))
    assert world.status["phase"] == "Completed"
    assert world.status["verdict"] == "RolledBack"
    assert done.done


async def test_reviews_of_one_template_share_its_resolved_phases(monkeypatch: pytest.MonkeyPatch) -> None:
    from postdeploy.decisions import templates

    calls: list[int] = []
    real = templates.resolve

    def counting(merged: Any) -> templates.ResolvedReview:
        calls.append(1)
        return real(merged)

    monkeypatch.setattr(templates, "resolve", counting)
    world = World().at(5)
    await world.tick(review())
    first = world.engine._resolver._phases
    await world.at(65).tick(review())
    await world.at(125).tick(review(version="v3"))  # another review of the same phases
    assert len(calls) == 1 and len(first) == 1
    await world.at(185).tick(review(on_failure="annotate"))  # another check: resolved anew
    assert len(calls) == 2 and len(first) == 2


async def test_a_tick_never_changes_the_status_it_compares_with(monkeypatch: pytest.MonkeyPatch) -> None:
    """``previous`` is a shallow copy of the status the tick changes: every list and model
    the tick replaces must be a new one, or the Events and the urgency would compare the
    new status with itself. Over runs, a failure that decides actions, a rerun, a
    finished phase, a refused and a held tick, it dumps the same after the tick as before."""
    taken: list[tuple[Any, dict[str, Any]]] = []
    original = ticks._before

    def recording(status: Any) -> Any:
        before = original(status)
        taken.append((before, before.dump()))
        return before

    monkeypatch.setattr(ticks, "_before", recording)
    world = World()
    spec = review(on_failure="rollback")
    await world.at(5).tick(spec)
    world.providers.answers["error-rate"] = Measurement.ok(0.2)
    failed = await world.at(65).tick(spec)
    assert "CheckFailed" in [e.reason for e in failed.events]
    assert "rollback" in [a["action"] for a in world.status["actions"]]
    world.providers.answers["restarts"] = Measurement.error("connection refused")
    await world.at(125).tick({**spec, "target": {"name": "app", "namespace": "elsewhere"}})
    await world.at(126).tick(spec)
    world.inputs.templates.clear()
    await world.at(185).tick(spec)
    for action in world.status["actions"]:
        action.update(state="Done", fromRevision="2", toRevision="1")
    await world.at(190).tick(spec)
    assert world.status["phase"] == "Completed"
    assert len(taken) >= 5
    for before, dumped in taken:
        assert before.dump() == dumped
