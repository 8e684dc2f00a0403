"""Runs a check: picks what serves it by which block is set, and calls it safely.

Built once at start-up by the kopf handlers with the shared clients, and closed at
clean-up. Two kinds of thing serve checks, each behind one typed interface that mypy
checks on the tables below:

- providers (``postdeploy.providers``, ``providers.base.Provider``) measure a data
  source; every one takes the check's ``baseline`` block (those with no history
  ignore it), so nothing here decides by name who gets it;
- acts (``Act``) change or write something in a check's slot: cleanup
  (``postdeploy.actions.cleanup_checks``) and the report
  (``postdeploy.reports.publishing``). Their outcome is recorded and decided like a
  measurement, but they are actions, not measurements.

``measure`` never raises: a provider or act that raises anyway, or exceeds the
measurement timeout, yields an Error measurement that names it; a concurrency limit
per provider keeps one data source from being flooded. The timeout counts neither the
wait for that limit nor a self-limiting provider's wait for its request slots
(``kit.deadlines``): an operator behind its schedule queues, it does not blame the
data source.

The providers whose reads are shared between checks and reviews (kubernetes,
prometheus, alertmanager) declare ``limits_itself`` and apply that limit themselves, to
the requests they actually send: a limit on measurements made the many checks answered
by one shared request queue behind each other (at 2,000 reviews, 16 slots for 7
kubernetes checks a tick held the scheduler to 36 ticks a second with the machine a
quarter idle).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from typing import Any, Protocol, TypeVar

import httpx

from postdeploy.actions import cleanup_checks
from postdeploy.engine.settings import Settings
from postdeploy.kit import deadlines, kube, metrics
from postdeploy.models.checks import Check
from postdeploy.models.measurements import Measurement, MeasurementState, ReviewContext
from postdeploy.providers import alertmanager, http, job, kubernetes, manual, postgres, prometheus, statistics
from postdeploy.providers.base import Provider
from postdeploy.reports import publishing

__all__ = ["Act", "Providers"]

SpecT = TypeVar("SpecT", contravariant=True)


class Act(Protocol[SpecT]):
    """A check that acts (deletes, writes) rather than measures; ``SpecT`` is its block."""

    async def act(self, spec: SpecT, ctx: ReviewContext) -> Measurement:
        """Act once for this check; the Measurement says what was done."""
        ...


class Providers:
    def __init__(self, api: kube.Client, http_client: httpx.AsyncClient, settings: Settings) -> None:
        self.settings = settings
        self.http = http_client  # shared with the final review (postdeploy.engine.finals)
        self._postgres = postgres.PostgresProvider(default_dsn=settings.postgres_dsn)
        self._providers: dict[str, Provider[Any]] = {
            "kubernetes": kubernetes.KubernetesProvider(
                api, concurrency=settings.concurrency_per_provider, max_objects=settings.mirror_objects
            ),
            "prometheus": prometheus.PrometheusProvider(
                settings.prometheus_url, concurrency=settings.concurrency_per_provider
            ),
            "alertmanager": alertmanager.AlertmanagerProvider(
                http_client, settings.alertmanager_url, concurrency=settings.concurrency_per_provider
            ),
            "postgres": self._postgres,
            "http": http.HttpProvider(http_client, settings.egress_allowlist),
            "job": job.JobProvider(api),
            "manual": manual.ManualProvider(),
            "statistics": statistics.StatisticsProvider(self._postgres),
        }
        self._acts: dict[str, Act[Any]] = {
            "cleanup": cleanup_checks.CleanupAct(api),
            "report": publishing.ReportAct(api, http_client, settings.prometheus_url),
        }
        self._limits: collections.defaultdict[str, asyncio.Semaphore] = collections.defaultdict(
            lambda: asyncio.Semaphore(settings.concurrency_per_provider)
        )
        self.calls: collections.Counter[str] = collections.Counter()

    async def measure(self, check: Check, ctx: ReviewContext) -> Measurement:
        name = check.provider_name
        provider = self._providers.get(name)
        spec = check.provider_spec
        started = time.monotonic()
        try:
            limits_itself = provider is not None and provider.limits_itself
            limit = contextlib.nullcontext() if limits_itself else self._limits[name]
            async with limit:
                self.calls[name] += 1
                # Less the time its requests wait for the process's own slots (kit.deadlines).
                async with deadlines.measuring(self.settings.measure_timeout_seconds):
                    if provider is not None:
                        result = await provider.measure(spec, ctx, baseline=check.baseline)
                    else:
                        result = await self._acts[name].act(spec, ctx)
        except TimeoutError:
            result = Measurement.error(
                f"{name} provider took longer than {self.settings.measure_timeout_seconds:g}s"
            )
        except Exception as error:  # a provider bug must not stop the review
            result = Measurement.error(f"{name} provider failed: {type(error).__name__}: {error}")
        metrics.record_check(
            name,
            result.state.value,
            time.monotonic() - started,
            provider_error=result.state is MeasurementState.ERROR,
        )
        return result

    async def close(self) -> None:
        for provider in self._providers.values():
            closer = getattr(provider, "close", None)
            if closer is not None:
                await closer()
