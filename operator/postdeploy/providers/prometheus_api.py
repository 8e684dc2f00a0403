"""Prometheus's HTTP query API, asked from the event loop.

Used by ``postdeploy.providers.prometheus`` (one ``PrometheusApi`` per operator,
closed at clean-up). Two endpoints are all a check needs: ``/api/v1/query`` and
``/api/v1/query_range``, sent as form-encoded POSTs (no URL length limit for long
queries) and answered with ``data.result``.

Why not prometheus-api-client: it is synchronous (requests), so every query took a
thread; at 2,000 reviews that was a fifth of the operator's samples in thread
hand-over and held the event loop back on the GIL (docs/benchmarks.md). aiohttp is
already installed as the transport of the operator's own Kubernetes client
(``postdeploy.kit.kube``) and is the cheapest asyncio HTTP client per request. Every
failure becomes ``QueryFailed`` with a message safe to show: the URL's credentials are
redacted and no body is echoed beyond Prometheus's own error text.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import urllib.parse
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from postdeploy.kit import details as details_
from postdeploy.kit import exceptions

__all__ = ["PrometheusApi"]

_RETRY_STATUSES = frozenset({502, 503, 504})
_RETRY_DELAY = 0.2
# Answers are asked uncompressed. aiohttp offers gzip by default and Prometheus takes
# it, which on loopback cost Prometheus about 1.1 ms of CPU per query (an instant query
# 1.6-1.8 ms gzipped, 0.6-0.7 ms plain; a one-hour range 2.3-2.4 against 1.2) and the
# operator about 0.2 ms to inflate (0.58-0.70 against 0.41-0.49 ms): runs of 2,000
# queries, 16 in flight, on the 2-core bench machine. A check's answer is a few series,
# a few kB; a Prometheus across a slow link sends its rare large answers slower.
_FORM = {"Content-Type": "application/x-www-form-urlencoded", "Accept-Encoding": "identity"}


@functools.lru_cache(maxsize=4096)
def _quoted_query(query: str) -> str:
    """A query, form-encoded: a review asks the same queries every run, and a form
    with a built-in template's query took 64 us to encode here (``urlencode``), 16 us
    with the query's encoding remembered."""
    return urllib.parse.quote_plus(query)


def _form(data: Mapping[str, str]) -> bytes:
    """``urllib.parse.urlencode(data)``, the query's encoding remembered (aiohttp's
    FormData for a dict costs more per request still)."""
    quote = urllib.parse.quote_plus
    pairs = [f"{k}={_quoted_query(v) if k == 'query' else quote(v)}" for k, v in data.items()]
    return "&".join(pairs).encode()


class PrometheusApi:
    """Queries any number of Prometheus servers over one pooled aiohttp session."""

    def __init__(self, timeout_seconds: float = 10, connections: int = 32) -> None:
        self.timeout = timeout_seconds
        self.connections = connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.connections),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                # No ~/.netrc or proxy lookups from the environment: as with every
                # other data source, the address given is the address asked.
                trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def query(self, url: str, query: str, time: float) -> Any:
        """``data.result`` of an instant query at ``time`` (Unix seconds)."""
        return await self._ask(url, "/api/v1/query", {"query": query, "time": f"{time:.3f}"})

    async def query_range(self, url: str, query: str, start: float, end: float, step: float) -> Any:
        """``data.result`` of a range query from ``start`` to ``end`` every ``step`` seconds."""
        form = {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        return await self._ask(url, "/api/v1/query_range", form)

    async def _ask(self, url: str, path: str, form: Mapping[str, str]) -> Any:
        # Prometheus stops evaluating at its own timeout as well, sparing it the work.
        data = {**form, "timeout": f"{self.timeout:g}s"}
        # One quick retry for a dropped pooled connection or a restarting Prometheus;
        # the engine's consecutiveErrorLimit handles longer outages. A slow answer is
        # not retried: asking again would only double the wait.
        try:
            return await self._post(url, path, data)
        except _Retryable:
            await asyncio.sleep(_RETRY_DELAY)
        try:
            return await self._post(url, path, data)
        except _Retryable as error:
            raise exceptions.QueryFailed(str(error)) from None

    async def _post(self, url: str, path: str, data: Mapping[str, str]) -> Any:
        where = details_.redact_url(url)
        try:
            form = _form(data)
            async with self._client().post(f"{url}{path}", data=form, headers=_FORM) as response:
                body = await response.read()
                status = response.status
        except TimeoutError:
            raise exceptions.QueryFailed(
                f"Prometheus at {where} did not answer within {self.timeout:g}s"
            ) from None
        except aiohttp.ClientConnectorError as error:
            raise _Retryable(f"Prometheus at {where} is unreachable: {_reason(error.os_error)}") from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as error:
            reason = _reason(error) if isinstance(error, OSError) else "connection closed"
            raise _Retryable(f"Prometheus at {where} is unreachable: {reason}") from None
        except aiohttp.ClientError as error:
            raise exceptions.QueryFailed(
                f"request to Prometheus at {where} failed: {type(error).__name__}"
            ) from None
        try:
            answer = orjson.loads(body)
        except ValueError:  # orjson.JSONDecodeError, also for bytes that are not UTF-8
            answer = None
        if status != 200:
            message = f"Prometheus refused the query: HTTP {status}: {_api_error(answer, body)}"
            if status in _RETRY_STATUSES:
                raise _Retryable(message)
            raise exceptions.QueryFailed(message)
        if not isinstance(answer, dict) or not isinstance(answer.get("data"), dict):
            raise exceptions.QueryFailed(f"{where} did not answer like a Prometheus API (not a query result)")
        if answer.get("status") != "success":
            raise exceptions.QueryFailed(f"Prometheus refused the query: {_api_error(answer, body)}")
        return answer["data"].get("result")


class _Retryable(exceptions.QueryFailed):
    """A failure worth one more attempt: a dropped connection or a 502/503/504."""


def _reason(error: BaseException) -> str:
    """'Connection refused', 'Connection reset by peer', 'name not resolved'."""
    if isinstance(error, socket.gaierror):
        return "name not resolved"
    errno = getattr(error, "errno", None)
    if isinstance(errno, int) and errno > 0:
        return os.strerror(errno)
    return "connection failed"


def _api_error(answer: Any, body: bytes) -> str:
    """'bad_data: parse error ...' from Prometheus's error answer, else the body's start."""
    if isinstance(answer, dict) and "error" in answer:
        return f"{answer.get('errorType', 'error')}: {answer['error']}"[:300]
    return body[:300].decode(errors="replace").strip() or "no answer"
