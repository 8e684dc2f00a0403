"""A small aiohttp server on loopback for unit tests of the operator's HTTP clients.

``serve(handler)`` answers every request (any method, any path) with ``handler`` and
yields its base URL; the server is stopped when the block ends. Used by the tests of
the Kubernetes client, the Prometheus API and the measurement deadline.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

__all__ = ["serve"]


@contextlib.asynccontextmanager
async def serve(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
