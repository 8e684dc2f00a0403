"""Log-in, start-up and clean-up: build the shared clients once, close them at the end.

kopf's watches and the engine's Kubernetes client (``postdeploy.kit.kube``) log in with
the same credentials (``kit.kube.login``: the in-cluster service account, or
``KUBECONFIG`` when run outside the cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import httpx
import kopf

from postdeploy.actions import notifications
from postdeploy.decisions import selectors
from postdeploy.engine import events, executions, leadership, registry, schedulers, settings, ticks
from postdeploy.kit import kube, metrics

__all__ = ["cleanup", "configured", "login", "startup"]


def configured(memo: kopf.Memo) -> settings.Settings:
    """The Settings ``postdeploy run`` passed in kopf's memo; run another way (``kopf run``),
    the environment's alone."""
    given: settings.Settings | None = memo.get("settings")
    return given if given is not None else settings.Settings.from_env()


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf's credentials for its watches: the engine's own (``kube.login``)."""
    return kube.login()


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
    api = kube.Client(kube.login, connections=configuration.api_connections)
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
