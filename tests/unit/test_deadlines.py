"""A measurement's deadline does not count the wait for the process's own request slots.

Covers ``kit.deadlines`` alone (queued time not counted, the rest counted, waits that
overlap, a queue left after the measurement ended), the coalescer (a request's own
wait for a slot, and a caller sharing a request that waits for one), and the registry
with the Prometheus provider against a slow server on loopback: ten checks that
queue behind one request slot all measure, where the deadline counting the queue
turned most of them into Errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from postdeploy.engine.registry import Providers
from postdeploy.engine.settings import Settings
from postdeploy.kit import deadlines
from postdeploy.models.checks import Check
from postdeploy.models.measurements import MeasurementState
from postdeploy.providers.coalescing import Coalescer
from tests import loopback
from tests.contexts import make_context


async def test_queued_time_does_not_count_and_the_rest_does() -> None:
    async with deadlines.measuring(0.2):
        with deadlines.queued():
            await asyncio.sleep(0.4)
        await asyncio.sleep(0.1)
    with pytest.raises(TimeoutError):
        async with deadlines.measuring(0.2):
            with deadlines.queued():
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.15)  # 0.15 of 0.2 left: the queue returned none of it
            await asyncio.sleep(0.15)


async def test_the_deadline_stops_while_any_request_waits() -> None:
    async def request(wait: float, work: float) -> None:
        with deadlines.queued():
            await asyncio.sleep(wait)
        await asyncio.sleep(work)

    # Two requests queued together, one sent while the other still waits: the
    # deadline runs only once neither waits (0.35 s), then 0.1 s of the 0.2 s pass.
    async with deadlines.measuring(0.2):
        await asyncio.gather(request(0.1, 0.05), request(0.35, 0.1))


async def test_a_queue_outliving_its_measurement_is_harmless() -> None:
    release = asyncio.Event()

    async def left_behind() -> None:
        with deadlines.queued():
            await release.wait()

    async with deadlines.measuring(5):
        task = asyncio.create_task(left_behind())
        await asyncio.sleep(0)
    release.set()
    await task  # resumes a finished timeout: must neither raise nor re-arm it
    with deadlines.queued():  # outside any measurement: a plain wait
        await asyncio.sleep(0)


async def test_waits_for_the_coalescers_slots_are_not_counted() -> None:
    coalescer: Coalescer[str] = Coalescer(ttl=0.0, concurrency=1)

    async def slow(value: str) -> str:
        await asyncio.sleep(0.15)
        return value

    async def measured(key: str) -> str:
        async with deadlines.measuring(0.25):
            return await coalescer.run(key, lambda: slow(key))

    # One slot, four distinct requests of 0.15 s: the last is answered 0.6 s after it
    # asked, each within 0.15 s of being sent; a fifth caller shares the third's
    # request while that waits for its slot, and is not blamed for that wait either.
    answers = await asyncio.gather(*(measured(k) for k in ("a", "b", "c", "d", "c")))
    assert answers == ["a", "b", "c", "d", "c"]
    assert coalescer.requests == 4 and coalescer.shared == 1
    with pytest.raises(TimeoutError):  # a request slower than the deadline still fails it
        async with deadlines.measuring(0.05):
            await coalescer.run("e", lambda: slow("e"))


@pytest.fixture
async def slow_prometheus() -> AsyncIterator[str]:
    async def answer(request: web.Request) -> web.Response:
        await asyncio.sleep(0.25)
        result = {"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "1"]}]}
        return web.json_response({"status": "success", "data": result})

    async with loopback.serve(answer) as url:
        yield url


async def test_checks_queued_behind_the_providers_slot_are_not_errors(slow_prometheus: str) -> None:
    settings = Settings(
        prometheus_url=slow_prometheus, measure_timeout_seconds=1.0, concurrency_per_provider=1
    )
    checks = [Check.model_validate({"name": f"c{i}", "prometheus": {"query": f"up+{i}"}}) for i in range(10)]
    async with httpx.AsyncClient() as client:
        registry = Providers(None, client, settings)  # type: ignore[arg-type]  # no Kubernetes here
        try:
            # Ten queries through one slot, 0.25 s each: the last waits 2.25 s, each is
            # answered 0.25 s after it is sent, well inside the 1 s deadline.
            measurements = await asyncio.gather(*(registry.measure(c, make_context()) for c in checks))
        finally:
            await registry.close()
    assert [m.state for m in measurements] == [MeasurementState.OK] * 10, [m.message for m in measurements]
    assert [m.value for m in measurements] == [1.0] * 10
