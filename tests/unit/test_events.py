"""EventPoster: the Event is created by one POST of a plain dict to its namespace's
events, and a refused one is logged and not counted (never raised)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from postdeploy.engine import events
from postdeploy.kit import kube

REVIEW = {
    "apiVersion": "postdeploy.io/v1alpha1",
    "kind": "PostDeploymentReview",
    "metadata": {"name": "r", "namespace": "shop", "uid": "u"},
}


class _Api(kube.Client):
    """A client whose requests are recorded and answered here, not sent."""

    def __init__(self, status: int) -> None:
        super().__init__(lambda: pytest.fail("no credentials are needed"))
        self.status = status
        self.calls: list[dict[str, Any]] = []

    async def request(
        self,
        method: str,
        url_path: str,
        *,
        params: kube.Params | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        self.calls.append({"method": method, "path": url_path, "params": params, "body": body})
        if not 200 <= self.status <= 299:
            message = 'events is forbidden: User "postdeploy" cannot create resource "events"'
            raise kube.ApiError(self.status, "Forbidden", message)
        return dict(body)


async def _post(api: _Api) -> events.EventPoster:
    poster = events.EventPoster(api=api)
    poster.post([REVIEW], "Normal", "PhaseStarted", "phase immediate started")
    await poster.flush()
    return poster


def test_an_event_is_created_in_the_objects_namespace() -> None:
    api = _Api(201)
    poster = asyncio.run(_post(api))
    assert poster.posted == 1
    (call,) = api.calls
    assert call["method"] == "POST" and call["path"] == "/api/v1/namespaces/shop/events"
    assert isinstance(call["body"], dict)
    assert call["body"]["reason"] == "PhaseStarted" and call["body"]["metadata"]["namespace"] == "shop"
    assert call["body"]["involvedObject"]["uid"] == "u"


def test_a_refused_event_is_logged_not_counted(caplog: pytest.LogCaptureFixture) -> None:
    api = _Api(403)
    with caplog.at_level(logging.WARNING):
        poster = asyncio.run(_post(api))
    assert poster.posted == 0
    assert len(api.calls) == 1
    assert "could not post Event PhaseStarted" in caplog.text and "forbidden" in caplog.text
