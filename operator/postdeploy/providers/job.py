"""The job provider: runs a Kubernetes Job from a pod template and reports its outcome.

Called by ``postdeploy.engine`` for checks with a ``job`` block (user journeys,
security scans, hooks). The first run creates the Job in the review's namespace,
owned by the review and labelled with it, with the review's context in the
environment of every container (``POSTDEPLOY_VERSION``, ``POSTDEPLOY_DEPLOYED_AT``,
``POSTDEPLOY_TARGET``, ``POSTDEPLOY_NAMESPACE``, ``POSTDEPLOY_REVIEW``). Later runs poll
it: Pending while it runs, 1 when it succeeded, 0 when it failed, with the tail of
its pod's log. The Job's name is kept in the check's memo, so a restarted operator
polls the same Job instead of starting another.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

from postdeploy.kit import durations, kube, times
from postdeploy.models.checks import Baseline, JobCheck
from postdeploy.models.crds import API_VERSION
from postdeploy.models.measurements import Measurement, ReviewContext

__all__ = ["JobProvider", "job_name"]



def job_name(review: str, check: str, uid: str) -> str:
    digest = hashlib.sha256(f"{uid}/{check}".encode()).hexdigest()[:6]
    base = f"pdr-{review}-{check}"[:56].rstrip("-")
    return f"{base}-{digest}"


class JobProvider:
    limits_itself = False

    def __init__(self, api: kube.Client) -> None:
        self.api = api

    def _manifest(self, spec: JobCheck, ctx: ReviewContext, name: str) -> dict[str, Any]:
        template = copy.deepcopy(spec.template)
        pod_spec = template.setdefault("spec", {})
        pod_spec.setdefault("restartPolicy", "Never")
        context = {
            "POSTDEPLOY_REVIEW": ctx.review_name,
            "POSTDEPLOY_VERSION": ctx.version,
            "POSTDEPLOY_DEPLOYED_AT": ctx.deployed_at.isoformat(),
            "POSTDEPLOY_TARGET": ctx.target.name,
            "POSTDEPLOY_NAMESPACE": ctx.target.namespace,
            "POSTDEPLOY_CHECK": ctx.check_name,
        }
        for container in pod_spec.get("containers") or []:
            env = container.setdefault("env", [])
            present = {e.get("name") for e in env}
            env.extend({"name": k, "value": v} for k, v in context.items() if k not in present)
        labels = {"postdeploy.io/review": ctx.review_name, "postdeploy.io/check": ctx.check_name}
        template.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "namespace": ctx.review_namespace,
                "labels": labels,
                "ownerReferences": [
                    {
                        "apiVersion": API_VERSION,
                        "kind": "PostDeploymentReview",
                        "name": ctx.review_name,
                        "uid": ctx.review_uid,
                        "controller": True,
                        "blockOwnerDeletion": False,
                    }
                ],
            },
            "spec": {
                "backoffLimit": spec.backoff_limit,
                "activeDeadlineSeconds": int(durations.parse_duration(spec.active_deadline).total_seconds()),
                "ttlSecondsAfterFinished": 86400,
                "template": template,
            },
        }

    async def _log_tail(self, namespace: str, name: str, lines: int) -> str:
        if lines == 0:
            return ""
        try:
            pods = await self.api.get(kube.path("v1", "pods", namespace), labelSelector=f"job-name={name}")
            items = pods.get("items") or []
            if not items:
                return ""
            newest = max(items, key=lambda p: times.parse(p["metadata"]["creationTimestamp"]))
            log_path = kube.path("v1", "pods", namespace, newest["metadata"]["name"], "log")
            log = await self.api.text(log_path, tailLines=lines)
            return log[-4000:]
        except kube.ApiError as error:
            if error.status == 0:  # unreachable: ``measure`` reports it as for any request
                raise
            return f"(log unavailable: {error.status} {error.reason})"

    async def measure(
        self, spec: JobCheck, ctx: ReviewContext, baseline: Baseline | None = None
    ) -> Measurement:
        """Start or follow the Job. ``baseline`` is ignored: a Job passes or fails."""
        name = str(ctx.memo.get("job") or job_name(ctx.review_name, ctx.check_name, ctx.review_uid))
        namespace = ctx.review_namespace
        query = f"Job {namespace}/{name}"
        memo = {"job": name}
        try:
            job = await self.api.read(kube.path("batch/v1", "jobs", namespace, name))
            if job is None:
                if ctx.memo.get("job"):
                    return Measurement.error(
                        f"Job {name} disappeared before it finished", query=query, memo=memo
                    )
                manifest = self._manifest(spec, ctx, name)
                await self.api.create(kube.path("batch/v1", "jobs", namespace), manifest)
                return Measurement.pending(f"Job {name} created", query=query, memo=memo)
            status = job.get("status") or {}
            conditions = {c["type"]: c for c in status.get("conditions") or [] if c.get("status") == "True"}
            if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
                tail = await self._log_tail(namespace, name, spec.log_lines)
                return Measurement.ok(
                    1.0, message=f"Job {name} succeeded", query=query, memo=memo, details={"log": tail}
                )
            if "Failed" in conditions:
                tail = await self._log_tail(namespace, name, spec.log_lines)
                reason = conditions["Failed"].get("reason") or "Failed"
                return Measurement.ok(
                    0.0,
                    message=f"Job {name} failed ({reason})",
                    query=query,
                    memo=memo,
                    details={"log": tail},
                )
            active = status.get("active") or 0
            return Measurement.pending(f"Job {name} running ({active} active pod(s))", query=query, memo=memo)
        except kube.ApiError as error:
            if error.status == 0:  # not answered
                message = f"Kubernetes API unreachable: {error.message}"
                return Measurement.error(message, query=query, memo=memo)
            return Measurement.error(f"Kubernetes API: {error.status} {error.reason}", query=query, memo=memo)
        except (OSError, TimeoutError) as error:
            return Measurement.error(f"Kubernetes API unreachable: {error}", query=query, memo=memo)
