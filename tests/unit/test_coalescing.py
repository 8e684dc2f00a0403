"""The coalescer: identical reads in flight or within the TTL share one request.

Covers sharing while in flight, sharing within the TTL and a fresh request after it,
failures shared with waiters but never cached, distinct keys kept apart, and the bound
on requests in flight (which shared answers never wait for).
"""

from __future__ import annotations

import asyncio

import pytest

from postdeploy.providers.coalescing import Coalescer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_concurrent_identical_reads_share_one_request() -> None:
    calls = 0
    gate = asyncio.Event()

    async def fetch() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return 42

    coalescer: Coalescer[int] = Coalescer(ttl=1.0)
    tasks = [asyncio.create_task(coalescer.run("k", fetch)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*tasks) == [42] * 5
    assert calls == 1 and coalescer.requests == 1 and coalescer.shared == 4


async def test_results_live_for_the_ttl_only() -> None:
    clock = Clock()
    calls = 0

    async def fetch() -> int:
        nonlocal calls
        calls += 1
        return calls

    coalescer: Coalescer[int] = Coalescer(ttl=1.0, clock=clock)
    assert await coalescer.run("k", fetch) == 1
    clock.now = 0.9
    assert await coalescer.run("k", fetch) == 1
    clock.now = 1.5
    assert await coalescer.run("k", fetch) == 2
    assert await coalescer.run("other", fetch) == 3


async def test_failures_are_shared_but_not_cached() -> None:
    attempts = 0
    gate = asyncio.Event()

    async def fetch() -> int:
        nonlocal attempts
        attempts += 1
        await gate.wait()
        if attempts == 1:
            raise ConnectionError("down")
        return 7

    coalescer: Coalescer[int] = Coalescer(ttl=10.0)
    first = asyncio.create_task(coalescer.run("k", fetch))
    second = asyncio.create_task(coalescer.run("k", fetch))
    await asyncio.sleep(0)
    gate.set()
    for task in (first, second):
        with pytest.raises(ConnectionError):
            await task
    assert await coalescer.run("k", fetch) == 7
    assert attempts == 2


async def test_concurrency_bounds_requests_but_not_shared_answers() -> None:
    gate = asyncio.Event()
    flying = 0
    most = 0

    async def fetch(value: str) -> str:
        nonlocal flying, most
        flying += 1
        most = max(most, flying)
        await gate.wait()
        flying -= 1
        return value

    coalescer: Coalescer[str] = Coalescer(ttl=1.0, concurrency=2)
    distinct = [asyncio.create_task(coalescer.run(k, lambda k=k: fetch(k))) for k in "abcde"]
    await asyncio.sleep(0)
    assert flying == 2  # three of the five wait for a slot
    # A caller of a key already in flight, or waiting for a slot, takes no slot of its own.
    same = [asyncio.create_task(coalescer.run(k, lambda: fetch("never"))) for k in "ae"]
    await asyncio.sleep(0)
    assert flying == 2
    gate.set()
    assert await asyncio.gather(*distinct) == list("abcde")
    assert await asyncio.gather(*same) == ["a", "e"]
    assert most == 2 and coalescer.requests == 5 and coalescer.shared == 2
