"""Start-up and clean-up: build the shared clients once, close them at the end.

The Kubernetes client follows the operator's own credentials (in-cluster service
account, or ``KUBECONFIG`` when run outside the cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp
import httpx
import kopf
from kubernetes_asyncio import client, config

from postdeploy.actions import notifications
from postdeploy.decisions import selectors
from postdeploy.engine import events, executions, leadership, registry, schedulers, settings, ticks
from postdeploy.kit import metrics

__all__ = ["cleanup", "configured", "startup"]


def configured(memo: kopf.Memo) -> settings.Settings:
    """The Settings ``postdeploy run`` passed in kopf's memo; run another way (``kopf run``),
    the environment's alone."""
    given: settings.Settings | None = memo.get("settings")
    return given if given is not None else settings.Settings.from_env()


async def _api_client(connections: int) -> client.ApiClient:
    """The engine's Kubernetes client, at most ``connections`` connections to the API
    server (``Settings.api_connections``; kubernetes_asyncio's own bound is 100)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = connections
    api = client.ApiClient(configuration)
    _without_environment_lookups(api)
    return api


def _without_environment_lookups(api: client.ApiClient) -> None:
    """The same connection pool, in a session that does not read ~/.netrc and the proxy
    variables on every request.

    kubernetes_asyncio opens its aiohttp session with ``trust_env=True``, and aiohttp
    then looks both up in a worker thread for each request: a tenth of the operator's
    CPU at 2,000 reviews (docs/benchmarks.md). A proxy for the API server still works
    as kubeconfig's ``proxy-url``, which the client passes with every request.
    """
    rest = api.rest_client
    session: aiohttp.ClientSession = rest.pool_manager
    connector = session.connector
    session.detach()  # closes the session, not the pool
    rest.pool_manager = aiohttp.ClientSession(connector=connector, trust_env=False, read_bufsize=2**21)


def _leadership_changed(scheduler: schedulers.Scheduler) -> Callable[[bool], None]:
    def changed(leader: bool) -> None:
        metrics.set_leader(leader)
        scheduler.leadership_changed(leader)

    return changed


class NoDiffBase(kopf.DiffBaseStorage):
    """No "last handled" state: only raw event handlers are registered, and nothing
    compares an object with an earlier one. kopf builds the essence for every event
    anyway, by deep-copying the whole body, status included: a few per cent of the
    operator's CPU at thousands of reviews, for nothing."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    configuration = configured(memo)
    memo.settings = configuration
    memo.shard = selectors.parse(configuration.selector)  # read by postdeploy.handlers.reviews
    settings.posting.level = 20  # post Events of INFO and above
    settings.watching.server_timeout = 300
    # Only raw event handlers are registered: kopf stores nothing on the objects, but
    # should a handler ever need it, its marks carry our prefix, not kopf's.
    settings.persistence.finalizer = "postdeploy.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="postdeploy.io")
    settings.persistence.diffbase_storage = NoDiffBase()
    api = await _api_client(configuration.api_connections)
    http_client = httpx.AsyncClient(timeout=httpx.Timeout(configuration.measure_timeout_seconds))
    providers = registry.Providers(api, http_client, configuration)
    memo.api = api
    memo.http = http_client
    memo.providers = providers
    memo.engine = ticks.Engine(api, providers, configuration)
    # Webhooks get a client of their own: a receiver's timeouts are not a data source's.
    memo.webhooks = httpx.AsyncClient(timeout=httpx.Timeout(configuration.notify_timeout_seconds))
    memo.notifier = notifications.Notifier(
        memo.webhooks,
        memo.engine.read_secret,
        attempts=configuration.notify_attempts,
        backoff=configuration.notify_backoff_seconds,
        max_backoff=configuration.notify_max_backoff_seconds,
        timeout=configuration.notify_timeout_seconds,
        egress=configuration.egress_allowlist,
    )
    memo.executor = executions.Executor(
        memo.notifier, memo.engine.clock, cross_namespace=configuration.cross_namespace
    )
    memo.events = events.EventPoster(api)
    memo.scheduler = schedulers.Scheduler(
        memo.engine, memo.executor, memo.events.post, concurrency=configuration.concurrent_reviews
    )
    memo.scheduler_task = asyncio.create_task(memo.scheduler.run(), name="postdeploy-scheduler")
    if configuration.leader_lease:
        lease_namespace, _sep, lease_name = configuration.leader_lease.rpartition("/")
        election = leadership.Leadership(
            api,
            lease_namespace or "default",
            lease_name,
            configuration.identity,
            duration=configuration.lease_seconds,
            renew_every=configuration.lease_seconds / 5,
            renew_deadline=configuration.lease_seconds * 2 / 3,
            on_change=_leadership_changed(memo.scheduler),
        )
        memo.scheduler.is_leader = lambda: election.is_leader
        memo.election_task = asyncio.create_task(election.run(), name="postdeploy-leader-election")
    logger.info(
        "postdeploy started: prometheus=%s alertmanager=%s cross-namespace=%s egress=%s",
        configuration.prometheus_url or "-",
        configuration.alertmanager_url or "-",
        ",".join(sorted(f"{a}={b}" for a, b in configuration.cross_namespace)) or "-",
        ",".join(str(p) for p in configuration.egress_allowlist) or "any",
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for name in ("scheduler_task", "election_task"):
        task = getattr(memo, name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    poster = getattr(memo, "events", None)
    if poster is not None:
        await poster.flush()
    notifier = getattr(memo, "notifier", None)
    if notifier is not None:
        await notifier.close()  # undelivered messages stay Pending in status, sent after restart
    providers = getattr(memo, "providers", None)
    if providers is not None:
        await providers.close()
    for name in ("http", "webhooks"):
        http_client = getattr(memo, name, None)
        if http_client is not None:
            await http_client.aclose()
    api = getattr(memo, "api", None)
    if api is not None:
        await api.close()
