"""The http provider against ``httpx.MockTransport`` endpoints.

Covers:
- the JSONPath picks the value; numbers, numeric strings, booleans (1/0);
- a path that matches nothing, or ``null``, is NoData; several matches, objects and
  words are Errors;
- an unexpected status is an Error naming the status; a non-JSON body is an Error;
- connection failures and timeouts are Error measurements, not exceptions;
- the URL is templated with percent-encoding, headers are templated, and the resolved
  request is the measurement's query;
- the bearer token from the Secret is sent but appears in no field of the result;
- an unknown template name or a bad JSONPath is an Error naming the problem.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from postdeploy.models.checks import HttpCheck
from postdeploy.models.measurements import Measurement, MeasurementState
from postdeploy.providers.http import HttpProvider
from tests.contexts import make_context

Handler = Callable[[httpx.Request], httpx.Response]
TOKEN = "tok-3f9c1d-very-secret"


async def _measure(handler: Handler, secrets: dict[str, str] | None = None, **spec: object) -> Measurement:
    spec.setdefault("url", "http://api.test/stats")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        provider = HttpProvider(client)
        return await provider.measure(HttpCheck.model_validate(spec), make_context(secrets=secrets))


def _json(body: object, status: int = 200) -> Handler:
    return lambda request: httpx.Response(status, json=body)


async def test_json_path_picks_the_value() -> None:
    m = await _measure(_json({"data": {"errors": 3, "total": 120}}), jsonPath="$.data.errors")
    assert m.state is MeasurementState.OK
    assert m.value == 3.0
    assert m.details["status"] == 200
    assert m.query == "GET http://api.test/stats"


async def test_filter_expressions_work() -> None:
    body = {"queues": [{"name": "mail", "depth": 4}, {"name": "billing", "depth": 17}]}
    m = await _measure(_json(body), jsonPath='$.queues[?(@.name == "billing")].depth')
    assert m.value == 17.0


@pytest.mark.parametrize(("raw", "value"), [(True, 1.0), (False, 0.0), ("2.5", 2.5), (7, 7.0)])
async def test_booleans_and_numeric_strings_become_numbers(raw: object, value: float) -> None:
    m = await _measure(_json({"v": raw}), jsonPath="$.v")
    assert m.state is MeasurementState.OK
    assert m.value == value


@pytest.mark.parametrize("body", [{"other": 1}, {"v": None}])
async def test_nothing_at_the_path_is_no_data(body: object) -> None:
    m = await _measure(_json(body), jsonPath="$.v")
    assert m.state is MeasurementState.NO_DATA
    assert "$.v" in m.message


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"v": "healthy"}, "a string, not a number"),
        ({"v": {"a": 1}}, "an object, not a number"),
        ({"v": [1, 2]}, "a list, not a number"),
    ],
)
async def test_values_that_are_not_numbers_are_errors(body: object, words: str) -> None:
    m = await _measure(_json(body), jsonPath="$.v")
    assert m.state is MeasurementState.ERROR
    assert words in m.message


async def test_several_matches_are_an_error() -> None:
    m = await _measure(_json({"items": [{"n": 1}, {"n": 2}]}), jsonPath="$.items[*].n")
    assert m.state is MeasurementState.ERROR
    assert "matched 2 values" in m.message


async def test_unexpected_status_is_an_error_naming_it() -> None:
    m = await _measure(_json({"v": 1}, status=503), jsonPath="$.v")
    assert m.state is MeasurementState.ERROR
    assert m.message == "expected HTTP 200, got 503 Service Unavailable"


async def test_expected_status_other_than_200() -> None:
    m = await _measure(_json({"v": 1}, status=202), jsonPath="$.v", expectStatus=202)
    assert m.state is MeasurementState.OK


async def test_a_body_that_is_not_json_is_an_error() -> None:
    m = await _measure(lambda r: httpx.Response(200, text="<html>ok</html>",
                                                headers={"content-type": "text/html"}))
    assert m.state is MeasurementState.ERROR
    assert "not JSON (text/html)" in m.message


async def test_connection_refused_is_an_error_not_an_exception() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    m = await _measure(refuse)
    assert m.state is MeasurementState.ERROR
    assert "Connection refused" in m.message


async def test_timeout_is_an_error_naming_the_timeout() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        assert request.extensions["timeout"]["read"] == 2.5
        raise httpx.ReadTimeout("timed out", request=request)

    m = await _measure(slow, timeout="2500ms")
    assert m.state is MeasurementState.ERROR
    assert m.message == "http://api.test/stats did not answer within 2.5s"


async def test_url_and_headers_are_templated() -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"v": 1})

    m = await _measure(
        record,
        url="http://api.test/services/{{target}}/versions/{{ version }}",
        headers={"X-Review": "{{review}}"},
        method="POST",
        jsonPath="$.v",
    )
    assert m.state is MeasurementState.OK
    (request,) = seen
    assert request.method == "POST"
    assert request.url.raw_path == b"/services/shop/versions/1.4.2"
    assert request.headers["X-Review"] == "shop-review"
    assert m.query == "POST http://api.test/services/shop/versions/1.4.2"


async def test_bearer_token_is_sent_and_never_reported() -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise httpx.ConnectError(f"refused while sending {request.headers['Authorization']}")

    m = await _measure(record, secrets={"token": TOKEN})
    assert seen[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert m.state is MeasurementState.ERROR
    assert TOKEN not in json.dumps([m.message, m.query, dict(m.details)], default=str)
    assert "***" in m.message


async def test_unknown_template_name_is_an_error() -> None:
    m = await _measure(_json({}), url="http://api.test/{{service}}")
    assert m.state is MeasurementState.ERROR
    assert "{{service}}" in m.message


async def test_bad_json_path_is_an_error() -> None:
    m = await _measure(_json({}), jsonPath="$[[[")
    assert m.state is MeasurementState.ERROR
    assert "invalid jsonPath" in m.message
