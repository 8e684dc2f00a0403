"""A tick that raises is contained to its review (engine/schedulers.py).

Covers: the review gets condition TickFailed=True naming the error and a Warning
Event per failure; it is retried after the base delay, doubling up to the cap
(never a tight loop); the first failure is logged with its traceback, repeats in
one line; an API error backs off the same way; a review that was deleted is
forgotten; the next successful tick sets TickFailed=False and resets the delay; a
status that cannot be written does not stop the retry.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Mapping
from typing import Any

import pytest

from postdeploy.engine import schedulers, settings, ticks
from postdeploy.kit import kube

NOW = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)


class FakeLedger:
    def __init__(self, fail: bool = False) -> None:
        self.view: dict[str, Any] = {}
        self.writes: list[dict[str, Any]] = []
        self.fail = fail

    async def write(self, status: dict[str, Any], *, urgent: bool = True) -> None:
        if self.fail:
            raise kube.ApiError(422, "Unprocessable Entity")
        self.writes.append(status)
        self.view = status

    async def flush(self, *, force: bool = False) -> bool:
        return False

    def flush_at(self) -> float | None:
        return None


class FakeEngine:
    def __init__(self, base: float = 10.0, cap: float = 600.0) -> None:
        self.settings = settings.Settings(tick_backoff_seconds=base, tick_max_backoff_seconds=cap)
        self.api = None
        self.error: Exception | None = RuntimeError("boom")
        self.ticks = 0

    def clock(self) -> datetime.datetime:
        return NOW

    async def tick(self, snapshot: Mapping[str, Any]) -> ticks.TickResult:
        self.ticks += 1
        if self.error is not None:
            raise self.error
        return ticks.TickResult(None, (), NOW + datetime.timedelta(seconds=30))


class FakeExecutor:
    async def run(self, *args: Any) -> bool:
        return False


@dataclasses.dataclass
class World:
    scheduler: schedulers.Scheduler
    engine: FakeEngine
    ledger: FakeLedger
    events: list[tuple[str, str, str]]
    now: list[float]

    @property
    def entry(self) -> Any:
        return self.scheduler._entries[("team-a", "review")]

    async def step(self) -> float:
        """One tick of the review at the current time; the delay until the next."""
        await self.scheduler._slots.acquire()  # as the loop does: taken, then woken
        self.entry.wake_at = None
        await self.scheduler._step(("team-a", "review"), self.entry)
        assert self.entry.wake_at is not None
        return float(self.entry.wake_at - self.now[0])


def make_world(ledger: FakeLedger | None = None, base: float = 10.0, cap: float = 600.0) -> World:
    engine = FakeEngine(base, cap)
    events: list[tuple[str, str, str]] = []
    now = [1000.0]
    scheduler = schedulers.Scheduler(
        engine,  # type: ignore[arg-type]
        FakeExecutor(),  # type: ignore[arg-type]
        lambda objs, type_, reason, message: events.append((type_, reason, message)),
        clock=lambda: now[0],
    )
    scheduler.observe({"metadata": {"namespace": "team-a", "name": "review", "generation": 1}, "spec": {}})
    world = World(scheduler, engine, ledger or FakeLedger(), events, now)
    world.entry.ledger = world.ledger
    return world


def tick_failed(ledger: FakeLedger) -> dict[str, Any]:
    return next(c for c in ledger.view["conditions"] if c["type"] == "TickFailed")


async def test_failures_back_off_exponentially_up_to_the_cap() -> None:
    world = make_world()
    delays = []
    for _ in range(9):
        delays.append(await world.step())
        world.now[0] += delays[-1]
    assert delays == [10, 20, 40, 80, 160, 320, 600, 600, 600]
    assert world.engine.ticks == 9


async def test_each_failure_is_a_condition_and_an_event() -> None:
    world = make_world()
    await world.step()
    condition = tick_failed(world.ledger)
    assert condition["status"] == "True" and condition["reason"] == "TickFailed"
    assert condition["message"] == "tick failed (1 in a row): RuntimeError: boom; next try in 10s"
    await world.step()
    assert [e[:2] for e in world.events] == [("Warning", "TickFailed")] * 2
    assert "2 in a row" in world.events[1][2] and "next try in 20s" in world.events[1][2]


async def test_the_first_failure_has_a_traceback_repeats_one_line(caplog: pytest.LogCaptureFixture) -> None:
    world = make_world()
    with caplog.at_level(logging.WARNING, logger="postdeploy.engine.schedulers"):
        for _ in range(3):
            await world.step()
    with_trace = [r for r in caplog.records if r.exc_info]
    assert len(with_trace) == 1 and "1 in a row" in with_trace[0].getMessage()
    assert len(caplog.records) == 3


async def test_an_api_error_backs_off_too_and_a_deleted_review_is_forgotten() -> None:
    world = make_world()
    world.engine.error = kube.ApiError(500, "Internal Server Error")
    assert await world.step() == 10
    assert "API error 500" in tick_failed(world.ledger)["message"]
    world.engine.error = kube.ApiError(404, "Not Found")
    await world.scheduler._slots.acquire()
    world.entry.wake_at = None
    await world.scheduler._step(("team-a", "review"), world.entry)
    assert ("team-a", "review") not in world.scheduler._entries


async def test_success_clears_the_condition_and_resets_the_delay() -> None:
    world = make_world()
    await world.step()
    await world.step()
    world.engine.error = None
    delay = await world.step()
    assert 30 <= delay <= 30.1  # the review's own schedule again
    condition = tick_failed(world.ledger)
    assert condition["status"] == "False" and condition["reason"] == "TickSucceeded"
    world.engine.error = RuntimeError("again")
    assert await world.step() == 10


async def test_a_status_that_cannot_be_written_does_not_stop_the_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = make_world(FakeLedger(fail=True))
    assert await world.step() == 10
    assert await world.step() == 20
    assert any("cannot record TickFailed=True" in r.getMessage() for r in caplog.records)
    assert len(world.events) == 2


def test_the_delay_settings_come_from_the_environment() -> None:
    configured = settings.Settings.from_env(
        {"POSTDEPLOY_TICK_BACKOFF": "2", "POSTDEPLOY_TICK_MAX_BACKOFF": "30"}
    )
    assert (configured.tick_backoff_seconds, configured.tick_max_backoff_seconds) == (2.0, 30.0)
    defaults = settings.Settings.from_env({})
    assert (defaults.tick_backoff_seconds, defaults.tick_max_backoff_seconds) == (10.0, 600.0)
