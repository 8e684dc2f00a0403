"""Operator-wide configuration: the environment's defaults and ``postdeploy run``'s flags.

A review's own ``spec.providers`` wins over these defaults. Values that hold
secrets (``POSTDEPLOY_POSTGRES_DSN``) are kept out of ``repr``. ``postdeploy run``
(``postdeploy.__main__``) builds the one ``Settings`` of the process: ``from_env``,
then its flags — what confines reviews (``confined``: ``--allow-cross-namespace``,
``--egress-allow``) and what the operator watches (``watching``: ``--namespace``,
``--selector``) — and hands it to the kopf handlers in kopf's memo
(``memo.settings``), which give it to the engine and the webhooks. No module reads
these flags from the environment or keeps them in a global.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Iterable, Mapping

from postdeploy.decisions import confinement, selectors
from postdeploy.kit import durations

__all__ = ["Settings"]


@dataclasses.dataclass(frozen=True)
class Settings:
    prometheus_url: str | None = None
    alertmanager_url: str | None = None
    postgres_dsn: str | None = dataclasses.field(default=None, repr=False)
    # Name of the built-in template used when a review names none.
    default_template: str = "postdeploy-default"
    # Upper bound on one measurement; a slower data source is an Error.
    measure_timeout_seconds: float = 30.0
    # Requests in flight per data source across all reviews (Prometheus, Alertmanager,
    # API-server reads; checks sharing one answer take one slot), and measurements in
    # flight per provider for the other providers.
    concurrency_per_provider: int = 16
    # Connections the operator's Kubernetes client keeps open to the API server (its
    # reads, status writes and Events; kopf's watches have their own). Each TLS
    # connection takes about 0.4 MB (asyncio's read buffer, OpenSSL's state), and the
    # memory stays with the process after it closes: with a pool of 100 (the bound of the
    # client the operator used before ``kit.kube``), the first ticks of 100 reviews opened
    # 78 and left the operator about 20 MB larger (docs/benchmarks.md, "Beside Argo
    # Rollouts"). Requests beyond it wait for one.
    api_connections: int = 16
    # The kubernetes provider keeps the collections it reads (a namespace's workloads,
    # pods, HPAs) by list and watch (``postdeploy.kit.mirrors``); this is the most
    # objects one such collection may hold before it is read directly instead
    # (``POSTDEPLOY_MIRROR_OBJECTS``; 0: every read goes to the API server).
    mirror_objects: int = 5000
    # Measurements kept per check in status (the report's charts read them); caps a
    # review's size, and so every status write, however long the review runs.
    history_limit: int = 12
    # "<namespace>/<name>" of the Lease replicas elect a leader with; unset: no election.
    leader_lease: str | None = None
    # Seconds a leader's Lease lasts without renewal: the takeover time after a crash.
    lease_seconds: float = 15.0
    # This replica's name in the Lease.
    identity: str = dataclasses.field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    # Reviews ticking at the same time (each tick runs its due checks concurrently).
    # A tick holds its slot while its queries wait for the data sources' own limits, so
    # too few slots make due ticks start late: at 2,000 reviews in their first hour, 64
    # gave a lag p99 of 1.4-3.2 s, 256 0.10 s (docs/benchmarks.md). A tick's evaluation
    # time is fixed when it starts.
    concurrent_reviews: int = 256
    # How long a review with nothing due may sleep before re-reading its inputs.
    max_sleep_seconds: float = 300.0
    # The step of a review's refresh grid: a status that changed only in re-measurements
    # is written at the first grid point half a step or more after the last write, so
    # after 0.5-1.5 steps (docs/engine.md, "When the status is written").
    status_refresh_seconds: float = 300.0
    # Webhook deliveries: attempts per message and receiver, the first retry's delay
    # (doubling after each failure, up to the maximum), and one request's timeout.
    notify_attempts: int = 6
    notify_backoff_seconds: float = 1.0
    notify_max_backoff_seconds: float = 60.0
    notify_timeout_seconds: float = 10.0
    # A tick that raises is retried after this delay, doubling after each failure in a
    # row up to the maximum; other reviews keep their schedule meanwhile.
    tick_backoff_seconds: float = 10.0
    tick_max_backoff_seconds: float = 600.0
    # (FROM, TO): reviews in namespace FROM may target workloads in TO
    # (``--allow-cross-namespace``); a review's own namespace is always allowed.
    cross_namespace: frozenset[tuple[str, str]] = frozenset()
    # URL prefixes reviews may send requests to (``--egress-allow``); empty: any URL.
    egress_allowlist: tuple[confinement.UrlPrefix, ...] = ()
    # Zero-touch: a workload version rolled out longer ago than this when the operator
    # first sees it gets no review (``POSTDEPLOY_ZEROTOUCH_MAX_AGE``, a duration).
    zerotouch_max_age_seconds: float = 3600.0
    # The namespaces watched (``--namespace``); empty: the whole cluster.
    namespaces: tuple[str, ...] = ()
    # Only reviews whose labels match are handled (``--selector``, e.g. ``shard=a``).
    selector: str = ""

    def confined(
        self, cross_namespace: Iterable[tuple[str, str]], egress_allowlist: Iterable[confinement.UrlPrefix]
    ) -> Settings:
        """These settings with the confinement rules given to ``postdeploy run``."""
        return dataclasses.replace(
            self, cross_namespace=frozenset(cross_namespace), egress_allowlist=tuple(egress_allowlist)
        )

    def watching(self, namespaces: Iterable[str], selector: str) -> Settings:
        """These settings watching only ``namespaces`` (none: all) and reviews matching
        ``selector``, as given to ``postdeploy run``; raises ValueError for a bad selector."""
        selectors.parse(selector)
        return dataclasses.replace(self, namespaces=tuple(namespaces), selector=selector)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            prometheus_url=env.get("POSTDEPLOY_PROMETHEUS_URL") or env.get("PROMETHEUS_URL"),
            alertmanager_url=env.get("POSTDEPLOY_ALERTMANAGER_URL") or env.get("ALERTMANAGER_URL"),
            postgres_dsn=env.get("POSTDEPLOY_POSTGRES_DSN") or None,
            default_template=env.get("POSTDEPLOY_DEFAULT_TEMPLATE", "postdeploy-default"),
            measure_timeout_seconds=float(env.get("POSTDEPLOY_MEASURE_TIMEOUT", "30")),
            concurrency_per_provider=int(env.get("POSTDEPLOY_CONCURRENCY", "16")),
            api_connections=max(1, int(env.get("POSTDEPLOY_API_CONNECTIONS", "16"))),
            mirror_objects=max(0, int(env.get("POSTDEPLOY_MIRROR_OBJECTS", "5000"))),
            max_sleep_seconds=float(env.get("POSTDEPLOY_MAX_SLEEP", "300")),
            status_refresh_seconds=float(env.get("POSTDEPLOY_STATUS_REFRESH", "300")),
            concurrent_reviews=int(env.get("POSTDEPLOY_CONCURRENT_REVIEWS", "256")),
            history_limit=max(1, int(env.get("POSTDEPLOY_HISTORY_LIMIT", "12"))),
            leader_lease=env.get("POSTDEPLOY_LEADER_LEASE") or None,
            lease_seconds=float(env.get("POSTDEPLOY_LEASE_SECONDS", "15")),
            identity=env.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}",
            notify_attempts=int(env.get("POSTDEPLOY_NOTIFY_ATTEMPTS", "6")),
            notify_backoff_seconds=float(env.get("POSTDEPLOY_NOTIFY_BACKOFF", "1")),
            notify_max_backoff_seconds=float(env.get("POSTDEPLOY_NOTIFY_MAX_BACKOFF", "60")),
            notify_timeout_seconds=float(env.get("POSTDEPLOY_NOTIFY_TIMEOUT", "10")),
            tick_backoff_seconds=float(env.get("POSTDEPLOY_TICK_BACKOFF", "10")),
            tick_max_backoff_seconds=float(env.get("POSTDEPLOY_TICK_MAX_BACKOFF", "600")),
            zerotouch_max_age_seconds=durations.parse_duration(
                env.get("POSTDEPLOY_ZEROTOUCH_MAX_AGE", "1h")
            ).total_seconds(),
        )
