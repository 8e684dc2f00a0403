"""Where past releases come from: given times, a target's history, or a PromQL expression.

Called by ``kubectl postdeploy backtest`` (``postdeploy.plugin.backtesting``). Pure:
the plugin reads the cluster and Prometheus (GET/LIST and a query only) and hands the
objects and the matrix to these functions.

- ``every``: releases placed every ``interval`` back from ``until`` (to tune a template on
  what a release at any hour would have seen).
- ``from_workload_history``: a Deployment's ReplicaSets, a StatefulSet's or
  DaemonSet's ControllerRevisions owned by the target, one release per revision at its
  creation time (only the revisions the cluster still keeps: ``revisionHistoryLimit``).
- ``from_matrix``: a range query's answer for an expression that changes at each release
  (a version label such as ``max by (version) (app_build_info{...})``, a generation,
  ``changes()``): a release whenever the set of series and values differs from the
  step before, the first step excepted.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from postdeploy.backtests.replays import Release
from postdeploy.kit import times

__all__ = ["every", "from_matrix", "from_workload_history"]


def every(interval: datetime.timedelta, since: datetime.datetime, until: datetime.datetime) -> list[Release]:
    """Releases at ``until - k * interval`` (k >= 1) back to ``since``, oldest first."""
    if interval <= datetime.timedelta(0):
        raise ValueError("the interval between releases must be positive")
    out = []
    at = until - interval
    while at >= since:
        out.append(Release(at, source="placed"))
        at -= interval
    return out[::-1]


def _version(template: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    version = labels.get("app.kubernetes.io/version")
    if version:
        return version
    containers = (template.get("spec") or {}).get("containers") or []
    image = containers[0].get("image", "") if containers else ""
    return image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else "unknown"


def from_workload_history(
    workload: Mapping[str, Any], revisions: Iterable[Mapping[str, Any]]
) -> list[Release]:
    """One release per ReplicaSet / ControllerRevision owned by ``workload``, oldest first."""
    uid = (workload.get("metadata") or {}).get("uid")
    out: list[tuple[datetime.datetime, int, Release]] = []
    for item in revisions:
        metadata = item.get("metadata") or {}
        owners = metadata.get("ownerReferences") or []
        if uid is not None and not any(o.get("uid") == uid for o in owners):
            continue
        created = metadata.get("creationTimestamp")
        if not created:
            continue
        if item.get("kind") == "ControllerRevision":
            template = ((item.get("data") or {}).get("spec") or {}).get("template") or {}
            number = str(item.get("revision", "?"))
        else:
            template = (item.get("spec") or {}).get("template") or {}
            number = (metadata.get("annotations") or {}).get("deployment.kubernetes.io/revision", "?")
        labels = (template.get("metadata") or {}).get("labels") or {}
        at = created if isinstance(created, datetime.datetime) else times.parse(str(created))
        if at.tzinfo is None:
            at = at.replace(tzinfo=datetime.UTC)
        release = Release(at, _version(template, labels), f"revision {number} ({metadata.get('name', '?')})")
        out.append((at, int(number) if number.isdigit() else 0, release))
    # Creation times have whole seconds: revisions of the same second by their number.
    return [release for _, _, release in sorted(out, key=lambda item: item[:2])]


def from_matrix(matrix: Sequence[Mapping[str, Any]], start: float, end: float, step: float) -> list[Release]:
    """Releases at the steps (of the range query ``start``..``end`` every ``step``) whose
    answer is not empty and differs from the step before; the first step is the state
    the window opened in, not a release. A version label (``version``) names the release."""
    by_time: dict[int, set[tuple[tuple[tuple[str, str], ...], str]]] = {}
    for series in matrix:
        labels = tuple(sorted((str(k), str(v)) for k, v in (series.get("metric") or {}).items()))
        for t, value in series.get("values") or []:
            by_time.setdefault(round(float(t)), set()).add((labels, str(value)))
    out = []
    previous: set[tuple[tuple[tuple[str, str], ...], str]] | None = None
    count = int((end - start) // step) + 1 if step > 0 else 0
    for i in range(count):
        t = round(start + i * step)
        current = by_time.get(t, set())
        if previous is not None and current and current != previous:
            version = next(
                (v for labels, _ in sorted(current) for k, v in labels if k == "version"), "unknown"
            )
            out.append(Release(datetime.datetime.fromtimestamp(t, datetime.UTC), version, "PromQL"))
        previous = current
    return out
