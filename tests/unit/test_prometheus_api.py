"""What ``PrometheusApi`` sends: a form-encoded POST that asks for an uncompressed answer
(Prometheus gzips whatever a client accepts, at about 1 ms of its CPU a query), served
here by a small aiohttp server on loopback that answers like Prometheus's query API."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from postdeploy.providers.prometheus_api import PrometheusApi, _form
from tests import loopback


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    async def answer(request: web.Request) -> web.Response:
        form = await request.post()
        seen.append({"path": request.path, "headers": dict(request.headers), "form": dict(form)})
        result = {"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "2"]}]}
        # enable_compression: the server compresses whenever the request accepts it.
        response = web.json_response({"status": "success", "data": result})
        response.enable_compression()
        return response

    async with loopback.serve(answer) as url:
        yield url, seen


async def test_queries_ask_for_uncompressed_answers(server: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = server
    api = PrometheusApi(timeout_seconds=5)
    try:
        instant = await api.query(url, "up", 1000.0)
        ranged = await api.query_range(url, "up", 940.0, 1000.0, 60)
    finally:
        await api.close()
    assert instant == ranged == [{"metric": {}, "value": [1.0, "2"]}]
    assert [s["path"] for s in seen] == ["/api/v1/query", "/api/v1/query_range"]
    for request in seen:
        assert request["headers"]["Accept-Encoding"] == "identity"
        assert request["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert seen[0]["form"] == {"query": "up", "time": "1000.000", "timeout": "5s"}
    ranged_form = {"query": "up", "start": "940.000", "end": "1000.000", "step": "60", "timeout": "5s"}
    assert seen[1]["form"] == ranged_form


def test_the_form_is_urlencoded() -> None:
    for query in ['sum(rate(x{a="b", c=~"5.."}[5m])) + 1', "a & b = c", "métrique{é=\"ü\"}", ""]:
        data = {"query": query, "start": "1.000", "step": "1e+06", "timeout": "10s"}
        assert _form(data) == urllib.parse.urlencode(data).encode()
        assert _form(data) == _form(data)  # the second time from the cache
