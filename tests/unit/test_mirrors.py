"""Mirrors (``postdeploy.kit.mirrors``) and ``kube.Client.watch`` against a loopback
HTTP server that lists and watches one collection as the API server does: resource
versions, bookmarks, the end of a watch's ``timeoutSeconds``, an expired version (an
ERROR event with a 410 Status), a broken connection, 403 and too many objects. The
same against the real kube-apiserver: tests/e2e/test_cluster.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import kopf
import pytest
from aiohttp import web

from postdeploy.kit import kube, mirrors, workloads

PODS = kube.path("v1", "pods", "team")


class FakeCollection:
    """One namespace's pods behind list and watch; ``events`` feeds open watches."""

    def __init__(self) -> None:
        self.version = 10
        self.objects: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, str]] = []
        self.watchers: list[asyncio.Queue[dict[str, Any] | None]] = []
        self.refuse: int | None = None  # answer every request with this status
        self.oldest = 0  # watches from an older version get an ERROR 410 event

    def pod(self, name: str, labels: dict[str, str] | None = None, **metadata: Any) -> dict[str, Any]:
        self.version += 1
        return {
            "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": labels or {},
                "resourceVersion": str(self.version),
                **metadata,
            },
        }

    def put(self, obj: dict[str, Any], kind: str = "MODIFIED") -> None:
        self.objects[obj["metadata"]["name"]] = obj
        self.send({"type": kind, "object": obj})

    def delete(self, name: str) -> None:
        obj = self.objects.pop(name)
        self.version += 1
        self.send(
            {
                "type": "DELETED",
                "object": {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.version)}},
            }
        )

    def send(self, event: dict[str, Any] | None) -> None:
        for queue in self.watchers:
            queue.put_nowait(event)

    async def answer(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(dict(request.query))
        if self.refuse:
            status = {"kind": "Status", "code": self.refuse, "message": "pods is forbidden"}
            return web.json_response(status, status=self.refuse)
        if request.query.get("watch") != "true":
            listing = {"kind": "PodList", "metadata": {"resourceVersion": str(self.version)}}
            items = [{k: v for k, v in o.items() if k != "kind"} for o in self.objects.values()]
            limit = int(request.query.get("limit", "0")) or len(items)
            if len(items) > limit:
                listing["metadata"]["continue"] = "more"
            return web.json_response({**listing, "items": items[:limit]})
        response = web.StreamResponse()
        await response.prepare(request)
        if int(request.query["resourceVersion"]) < self.oldest:
            gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version"}
            await response.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
            return response
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.watchers.append(queue)
        try:
            while (event := await queue.get()) is not None:
                if event.get("type") == "BREAK":
                    assert request.transport is not None
                    request.transport.close()
                    return response
                await response.write(json.dumps(event).encode() + b"\n")
        finally:
            self.watchers.remove(queue)
        return response  # the end of the watch's timeoutSeconds


@pytest.fixture
async def served() -> AsyncIterator[tuple[FakeCollection, kube.Client]]:
    collection = FakeCollection()
    app = web.Application()
    app.router.add_get(PODS, collection.answer)
    runner = web.AppRunner(app, handler_cancellation=True)  # a closed watch ends its handler
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    client = kube.Client(lambda: kopf.ConnectionInfo(server=url, token="t"))
    yield collection, client
    collection.send(None)
    await client.close()
    await runner.cleanup()


async def until(what: str, probe: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := probe()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
    return value


def names(view: Any) -> list[str]:
    return sorted(view) if view is not None else []


async def test_the_first_read_starts_a_mirror_that_then_answers_every_change(
    served: tuple[FakeCollection, kube.Client],
) -> None:
    fake, client = served
    fake.put(fake.pod("web-1", {"app": "web"}, managedFields=[{"manager": "kubectl"}]))
    kept = mirrors.Mirrors(client)
    assert kept.collection(PODS, "Pod") is None  # not listed yet: the caller reads itself
    view = await until("the list", lambda: kept.collection(PODS, "Pod"))
    assert names(view) == ["web-1"]
    assert view["web-1"]["kind"] == "Pod" and "managedFields" not in view["web-1"]["metadata"]
    await until("the watch", lambda: fake.watchers)
    assert fake.requests[1]["resourceVersion"] == "11" and fake.requests[1]["allowWatchBookmarks"] == "true"

    fake.put(fake.pod("web-2", {"app": "web"}), "ADDED")
    await until("ADDED", lambda: "web-2" in (kept.collection(PODS, "Pod") or {}))
    fake.put(fake.pod("web-1", {"app": "web", "v": "2"}))
    await until(
        "MODIFIED", lambda: (kept.collection(PODS, "Pod") or {})["web-1"]["metadata"]["labels"].get("v")
    )
    fake.delete("web-2")
    await until("DELETED", lambda: "web-2" not in (kept.collection(PODS, "Pod") or {"web-2": 1}))
    mirror = kept.mirrored()[PODS]
    assert (mirror.lists, mirror.watches, mirror.events) == (1, 1, 3)
    await kept.close()
    assert kept.mirrored() == {}


async def test_a_watch_the_server_ends_resumes_from_the_last_version_without_a_list(
    served: tuple[FakeCollection, kube.Client],
) -> None:
    fake, client = served
    kept = mirrors.Mirrors(client)
    kept.collection(PODS, "Pod")
    await until("the watch", lambda: fake.watchers)
    fake.send({"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "42"}}})
    fake.send(None)  # timeoutSeconds passed
    await until("the second watch", lambda: len(fake.requests) == 3)
    assert fake.requests[2]["resourceVersion"] == "42" and fake.requests[2]["watch"] == "true"
    assert kept.collection(PODS, "Pod") == {}
    assert kept.mirrored()[PODS].lists == 1
    await kept.close()


async def test_an_expired_version_lists_afresh(served: tuple[FakeCollection, kube.Client]) -> None:
    fake, client = served
    kept = mirrors.Mirrors(client)
    kept.collection(PODS, "Pod")
    await until("the watch", lambda: fake.watchers)
    fake.oldest = fake.version = 1000  # the next watch from "10" has expired...
    fake.objects["late"] = fake.pod("late")  # ...and this change is not sent to it
    fake.send(None)
    await until("the list after the ERROR 410", lambda: kept.mirrored()[PODS].lists == 2)
    await until("the watch after it", lambda: fake.watchers)
    assert names(kept.collection(PODS, "Pod")) == ["late"]
    await kept.close()


async def test_a_broken_watch_is_not_live_until_listed_again(
    served: tuple[FakeCollection, kube.Client],
) -> None:
    fake, client = served
    fake.put(fake.pod("web-1"))
    kept = mirrors.Mirrors(client)
    kept.collection(PODS, "Pod")
    await until("the watch", lambda: fake.watchers)
    fake.refuse = 503  # the API server answers nothing useful for a while
    fake.send({"type": "BREAK"})
    await until("not live", lambda: kept.collection(PODS, "Pod") is None)
    await asyncio.sleep(0.2)
    assert kept.collection(PODS, "Pod") is None  # still failing: the caller reads itself
    fake.refuse = None
    fake.put(fake.pod("web-2"))
    view = await until("live again (retried after 1 s)", lambda: kept.collection(PODS, "Pod"), timeout=10)
    assert names(view) == ["web-1", "web-2"]
    await kept.close()


async def test_a_refused_or_too_large_collection_is_read_directly_for_a_while(
    served: tuple[FakeCollection, kube.Client],
) -> None:
    fake, client = served
    fake.refuse = 403
    now = [0.0]
    kept = mirrors.Mirrors(client, clock=lambda: now[0])
    kept.collection(PODS, "Pod")
    await until("the refusal", lambda: not kept.mirrored())
    assert kept.collection(PODS, "Pod") is None and not kept.mirrored()  # not tried again
    now[0] += mirrors.REFUSED_SECONDS + 1
    fake.refuse = None
    for i in range(3):
        fake.put(fake.pod(f"p{i}"))
    small = mirrors.Mirrors(client, max_objects=2, clock=lambda: now[0])
    small.collection(PODS, "Pod")
    await until("too many", lambda: not small.mirrored())
    assert fake.requests[-1]["limit"] == "3"
    assert kept.collection(PODS, "Pod") is None  # tried again: now listed
    assert names(await until("listed", lambda: kept.collection(PODS, "Pod"))) == ["p0", "p1", "p2"]
    await kept.close()


async def test_an_unread_mirror_stops_and_none_is_kept_with_max_objects_zero(
    served: tuple[FakeCollection, kube.Client],
) -> None:
    fake, client = served
    now = [0.0]
    kept = mirrors.Mirrors(client, idle_seconds=600, clock=lambda: now[0])
    kept.collection(PODS, "Pod")
    await until("the watch", lambda: fake.watchers)
    now[0] += 601
    assert kept.collection("/api/v1/namespaces/other/pods", "Pod") is None  # sweeps
    assert PODS not in kept.mirrored()
    await until("the watch closed", lambda: not fake.watchers)
    await kept.close()
    requests = len(fake.requests)
    off = mirrors.Mirrors(client, max_objects=0)
    assert off.collection(PODS, "Pod") is None and not off.mirrored()
    await asyncio.sleep(0.05)
    assert len(fake.requests) == requests


def test_a_pod_selector_matches_as_the_api_server_selects() -> None:
    workload = {
        "spec": {
            "selector": {
                "matchLabels": {"app": "web"},
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["a", "b"]},
                    {"key": "canary", "operator": "DoesNotExist"},
                    {"key": "zone", "operator": "NotIn", "values": ["x"]},
                    {"key": "team", "operator": "Exists"},
                ],
            }
        }
    }
    assert workloads.label_selector(workload) == "app=web,tier in (a,b),!canary,zone notin (x),team"
    good = {"app": "web", "tier": "a", "team": "t"}
    assert workloads.matches(workload, good)
    assert workloads.matches(workload, {**good, "zone": "y"})
    for bad in (
        {**good, "app": "api"},
        {**good, "tier": "c"},
        {**good, "canary": "1"},
        {**good, "zone": "x"},
        {k: v for k, v in good.items() if k != "team"},
        None,
    ):
        assert not workloads.matches(workload, bad), bad
    with pytest.raises(ValueError, match="empty pod selector"):
        workloads.matches({"spec": {"selector": {}}}, good)


async def test_a_derived_value_is_kept_until_the_collection_changes(
    served: tuple[FakeCollection, kube.Client],
) -> None:
    fake, client = served
    fake.put(fake.pod("web-1", {"app": "web"}))
    fake.put(fake.pod("api-1", {"app": "api"}))
    kept = mirrors.Mirrors(client)
    derived: list[str] = []

    def web(objects: Any) -> list[str]:
        derived.append("web")
        return sorted(n for n, o in objects.items() if o["metadata"]["labels"].get("app") == "web")

    assert kept.derived(PODS, "Pod", "app=web", web) is None  # not live yet: the caller reads
    await until("the watch", lambda: fake.watchers)
    assert kept.derived(PODS, "Pod", "app=web", web) == ["web-1"]
    assert kept.derived(PODS, "Pod", "app=web", web) == ["web-1"]
    assert derived == ["web"]  # once for both reads
    fake.put(fake.pod("web-2", {"app": "web"}), "ADDED")
    await until("web-2", lambda: "web-2" in (kept.collection(PODS, "Pod") or {}))
    assert kept.derived(PODS, "Pod", "app=web", web) == ["web-1", "web-2"]
    assert derived == ["web", "web"]
    await kept.close()
