"""Default conditions for checks that state none, by provider and measure.

Called by ``postdeploy.decisions.templates.resolve``. A check that sets ``failWhen``
or ``passWhen`` keeps exactly what it set; one that sets neither gets the default
below (and the default is shown in status like any other condition). Providers
with no natural threshold (prometheus, postgres, http, alertmanager...) get none:
such a check records values and passes unless its data source fails.
"""

from __future__ import annotations

from postdeploy.models import checks

__all__ = ["default_conditions"]

_KUBERNETES: dict[checks.KubernetesMeasure, tuple[str | None, str | None]] = {
    # rolloutComplete is 1 when complete, 0 in progress, -1 past its progress deadline.
    checks.KubernetesMeasure.ROLLOUT_COMPLETE: ("value < 0", "value == 1"),
    checks.KubernetesMeasure.READY_RATIO: (None, "value >= 1"),
    checks.KubernetesMeasure.AVAILABLE_RATIO: (None, "value >= 1"),
    checks.KubernetesMeasure.RESTARTS: ("value > 3", None),
    checks.KubernetesMeasure.CRASH_LOOPS: ("value > 0", None),
    checks.KubernetesMeasure.IMAGE_PULL_ERRORS: ("value > 0", None),
    checks.KubernetesMeasure.UNHEALTHY_WORKLOADS: ("value > 0", None),
    checks.KubernetesMeasure.HPA_HEALTHY: ("value < 1", None),
    checks.KubernetesMeasure.NODE_PRESSURE: ("value > 0", None),
}


def default_conditions(check: checks.Check) -> tuple[str | None, str | None]:
    """(failWhen, passWhen) for a check that gave neither."""
    if check.fail_when is not None or check.pass_when is not None:
        return check.fail_when, check.pass_when
    if check.kubernetes is not None:
        return _KUBERNETES[check.kubernetes.measure]
    if check.job is not None:
        return "value < 1", None  # the Job failed
    if check.manual is not None:
        return "value < 1", None  # a person rejected it
    if check.alertmanager is not None:
        return "value > 0", None  # any matching alert firing
    if check.cleanup is not None:
        return "failed > 0", None  # a deletion failed (the details count them)
    return None, None
