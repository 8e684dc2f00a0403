"""The one interface every check provider satisfies: ``Provider``.

Called by ``postdeploy.engine.registry`` once per due check, with the check's own
provider block (a pydantic model from ``postdeploy.models``), the ``ReviewContext``
and the check's ``baseline`` block; the provider returns a ``Measurement``
(``postdeploy.models.measurements``). The registry's table of providers is typed
``dict[str, Provider[Any]]``, so mypy checks that each one satisfies it; a provider
with no history to compare with (kubernetes, job, manual, http, alertmanager,
postgres, statistics) takes ``baseline`` and says in its docstring that it ignores it.

Rules every provider keeps:

- never raise for a data-source failure (down, timeout, HTTP 5xx, bad query): return
  ``Measurement.error(...)``; return ``Measurement.no_data(...)`` when the source
  answered but had nothing to say (an empty PromQL vector, zero rows), and
  ``Measurement.not_applicable(...)`` when what the check looks at does not exist for
  this target (no HorizontalPodAutoscaler to check): the check ends Skipped;
- put the *resolved* query (templated, as sent) into ``Measurement.query`` so that
  status and ``kubectl describe`` show exactly what was asked;
- never put secret values (passwords, tokens, DSNs) into any field;
- keep cross-run state (a Job's name, a ``pg_stat_statements`` snapshot) in
  ``Measurement.memo``: the engine stores it in the check's status and hands it back
  as ``ReviewContext.memo`` on the next run, so a restarted operator resumes;
- measure, never act: a check that changes the cluster (cleanup) or writes something
  (the report) is an acting check, run by the registry from ``postdeploy.actions`` or
  ``postdeploy.reports``, not a provider.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from postdeploy.models.checks import Baseline
from postdeploy.models.measurements import Measurement, ReviewContext

__all__ = ["Provider"]

SpecT = TypeVar("SpecT", contravariant=True)


class Provider(Protocol[SpecT]):
    """One data source; ``SpecT`` is the check block it reads (``PrometheusCheck``, ...)."""

    # True when the provider bounds the requests its data source gets at once itself
    # (its reads are shared between checks); else the registry bounds its measurements.
    limits_itself: bool

    async def measure(self, spec: SpecT, ctx: ReviewContext, baseline: Baseline | None = None) -> Measurement:
        """Measure once for this check; an Error measurement, never an exception, when the
        data source fails."""
        ...
