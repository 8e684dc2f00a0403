"""Zero-touch reviews: a workload annotated ``postdeploy.io/template`` gets a review
for each new version it rolls out.

The annotation's value names the template: ``NAME`` for a ClusterReviewTemplate,
``ReviewTemplate/NAME`` for one in the workload's namespace. The review's name is
derived from the workload and its version, so it is created at most once per
version (a second create is a 409 Conflict, which is the success case here), by
however many operator replicas or restarts. A version that rolled out longer ago
than ``POSTDEPLOY_ZEROTOUCH_MAX_AGE`` (default 1h; ``Settings.zerotouch_max_age_seconds``,
read at start-up) — a workload that was already running when the annotation or the
operator appeared — gets no review.

Whose rights such a review acts with (docs/security.md): it is created by the operator,
so the admission webhook checks the operator's own rights. It is safe because its
content is only a template, a ClusterReviewTemplate (an administrator's) or a
ReviewTemplate of the workload's namespace (whose editor the webhook checked), and
its target is the annotated workload itself, which whoever annotated it could patch.
``review_for`` adds nothing else; an annotation naming anything but those two kinds is
ignored with a warning.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from typing import Any

import kopf

from postdeploy.handlers import lifecycle
from postdeploy.kit import kube, workloads
from postdeploy.models.crds import API_VERSION, REVIEWS

__all__ = [
    "ANNOTATION",
    "daemonset_event",
    "review_for",
    "review_name",
    "statefulset_event",
    "template_ref",
    "workload_event",
]

ANNOTATION = "postdeploy.io/template"


def review_name(workload: str, version: str) -> str:
    """A DNS-1123 name unique per (workload, version)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", version.lower()).strip("-") or "v"
    digest = hashlib.sha256(f"{workload}\n{version}".encode()).hexdigest()[:6]
    return f"{workload[:30]}-{slug[:24]}".rstrip("-") + f"-{digest}"


def template_ref(annotation: str) -> dict[str, str] | None:
    """``NAME``, ``ClusterReviewTemplate/NAME`` or ``ReviewTemplate/NAME`` as a templateRef."""
    kind, _, name = annotation.strip().rpartition("/")
    if kind not in ("", "ClusterReviewTemplate", "ReviewTemplate") or not name:
        return None
    return {"kind": kind or "ClusterReviewTemplate", "name": name}


def review_for(workload: dict[str, Any], kind: str, template: str, version: str) -> dict[str, Any]:
    """The review: the workload as target, in its namespace, and the template; nothing else."""
    metadata = workload["metadata"]
    ref = template_ref(template) or {"kind": "ClusterReviewTemplate", "name": template}
    return {
        "apiVersion": API_VERSION,
        "kind": "PostDeploymentReview",
        "metadata": {
            "name": review_name(metadata["name"], version),
            "namespace": metadata["namespace"],
            "labels": {
                "postdeploy.io/target": metadata["name"][:63],
                "postdeploy.io/created-by": "zero-touch",
            },
            "annotations": {"postdeploy.io/version": version},
            "ownerReferences": [
                {
                    "apiVersion": workload.get("apiVersion", "apps/v1"),
                    "kind": kind,
                    "name": metadata["name"],
                    "uid": metadata["uid"],
                }
            ],
        },
        "spec": {"target": {"kind": kind, "name": metadata["name"]}, "version": version, "templateRef": ref},
    }


async def _on_workload(kind: str, body: kopf.Body, memo: kopf.Memo, logger: Any) -> None:
    template = (body.metadata.annotations or {}).get(ANNOTATION, "").strip()
    if not template:
        return
    if template_ref(template) is None:
        warned: set[tuple[str, str, str]] = memo.setdefault("zero_touch_warned", set())
        key = (body.metadata.namespace or "", body.metadata.name or "", template)
        if key in warned:
            return
        warned.add(key)
        logger.warning(
            "%s %s: annotation %s=%r names no template (NAME, ClusterReviewTemplate/NAME or "
            "ReviewTemplate/NAME); no review created",
            kind,
            body.metadata.name,
            ANNOTATION,
            template,
        )
        return
    workload = dict(body)
    workload["kind"] = kind
    version = workloads.version_of(workload)
    if not version:
        return
    name = review_name(body.metadata.name or "", version)
    seen: set[str] = memo.setdefault("zero_touch_seen", set())
    if name in seen:
        return
    api: kube.Client = memo.api
    rolled_out = await workloads.rollout_time(api, workload)
    now = datetime.datetime.now(datetime.UTC)
    max_age = datetime.timedelta(seconds=lifecycle.configured(memo).zerotouch_max_age_seconds)
    if rolled_out is not None and now - rolled_out > max_age:
        seen.add(name)
        return
    manifest = review_for(workload, kind, template, version)
    try:
        await api.create(kube.path(API_VERSION, REVIEWS, body.metadata.namespace or ""), manifest)
        logger.info("created review %s for %s %s", name, kind, version)
    except kube.ApiError as error:
        if error.status != 409:
            raise
    seen.add(name)


_FILTER = {ANNOTATION: kopf.PRESENT}


@kopf.on.event("apps", "v1", "deployments", annotations=_FILTER)
async def workload_event(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    await _on_workload("Deployment", body, memo, logger)


@kopf.on.event("apps", "v1", "statefulsets", annotations=_FILTER)
async def statefulset_event(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    await _on_workload("StatefulSet", body, memo, logger)


@kopf.on.event("apps", "v1", "daemonsets", annotations=_FILTER)
async def daemonset_event(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    await _on_workload("DaemonSet", body, memo, logger)
