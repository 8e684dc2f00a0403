"""EventPoster: the Event is created without decoding the answer, and a refused one is
logged and not counted (a raw answer does not raise by itself)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from postdeploy.engine import events


class _Answer:
    def __init__(self, status: int) -> None:
        self.status = status
        self.released = False

    async def text(self) -> str:
        return "forbidden: events"

    def release(self) -> None:
        self.released = True


class _Core:
    calls: list[dict[str, Any]] = []
    status = 201
    answers: list[_Answer] = []

    def __init__(self, api: object) -> None:
        pass

    async def create_namespaced_event(self, namespace: str, body: Any, **kwargs: Any) -> _Answer:
        _Core.calls.append({"namespace": namespace, "body": body, **kwargs})
        answer = _Answer(_Core.status)
        _Core.answers.append(answer)
        return answer


REVIEW = {
    "apiVersion": "postdeploy.io/v1alpha1",
    "kind": "PostDeploymentReview",
    "metadata": {"name": "r", "namespace": "shop", "uid": "u"},
}


async def _post(status: int) -> events.EventPoster:
    _Core.calls, _Core.answers, _Core.status = [], [], status
    poster = events.EventPoster(api=object())  # type: ignore[arg-type]
    poster.post([REVIEW], "Normal", "PhaseStarted", "phase immediate started")
    await poster.flush()
    return poster


def test_an_event_is_created_and_its_answer_released_undecoded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events.client, "CoreV1Api", _Core)
    poster = asyncio.run(_post(201))
    assert poster.posted == 1
    (call,) = _Core.calls
    assert call["_preload_content"] is False
    assert call["body"]["reason"] == "PhaseStarted" and call["namespace"] == "shop"
    assert all(answer.released for answer in _Core.answers)


def test_a_refused_event_is_logged_not_counted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(events.client, "CoreV1Api", _Core)
    with caplog.at_level(logging.WARNING):
        poster = asyncio.run(_post(403))
    assert poster.posted == 0
    assert "could not post Event PhaseStarted" in caplog.text and "forbidden" in caplog.text
    assert all(answer.released for answer in _Core.answers)
