"""Reading and patching the reviewed workload, whatever its kind.

Used by the other action modules and by ``postdeploy.engine.executions``. Objects are
plain dicts in their wire form; ``read`` fills in ``apiVersion`` and ``kind`` so the
result can be handed to ``kopf.event`` as the Event's involved object.

API use (for RBAC): get and patch on deployments, statefulsets and daemonsets
(apps/v1) and on rollouts (argoproj.io/v1alpha1), patch on rollouts/status.
"""

from __future__ import annotations

from typing import Any, Literal

from postdeploy.kit import kube, workloads

__all__ = [
    "API_VERSIONS",
    "JSON_PATCH",
    "MERGE_PATCH",
    "STRATEGIC_MERGE_PATCH",
    "ContentType",
    "Obj",
    "images",
    "patch",
    "read",
    "reference",
]

Obj = dict[str, Any]
API_VERSIONS = {
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "Rollout": "argoproj.io/v1alpha1",
}
# The patch content types, defined once by the client that sends them.
ContentType = kube.ContentType
JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH = kube.JSON_PATCH, kube.MERGE_PATCH, kube.STRATEGIC_MERGE_PATCH


async def read(api: kube.Client, kind: str, namespace: str, name: str) -> Obj | None:
    """The target, or None when it does not exist."""
    obj = await workloads.read(api, kind, namespace, name)
    if obj is not None:
        obj.setdefault("kind", kind)
        obj.setdefault("apiVersion", API_VERSIONS[kind])
    return obj


def reference(obj: Obj) -> Obj:
    """What ``kopf.event`` needs to post an Event about the object."""
    metadata = obj.get("metadata") or {}
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {k: metadata.get(k) for k in ("name", "namespace", "uid")},
    }


def images(template: Obj | None) -> str | None:
    """The pod template's container images, comma-separated, in container order."""
    containers = ((template or {}).get("spec") or {}).get("containers") or []
    found = [str(c.get("image")) for c in containers if c.get("image")]
    return ",".join(found) or None


async def patch(
    api: kube.Client,
    kind: str,
    namespace: str,
    name: str,
    body: Any,
    content_type: ContentType,
    *,
    subresource: Literal["status"] | None = None,
) -> Obj:
    """Patch the target (or its status subresource) and return the result as a dict."""
    if kind == "Rollout":
        group, version, plural = workloads.ROLLOUT_GROUP
        url_path = kube.path(f"{group}/{version}", plural, namespace, name, subresource)
        return await api.patch(url_path, body, content_type)
    if subresource is not None:
        raise ValueError(f"{kind}: only a Rollout's status is patched")
    if kind not in workloads.PLURALS:
        raise ValueError(f"unsupported target kind {kind!r}")
    return await api.patch(kube.path("apps/v1", workloads.PLURALS[kind], namespace, name), body, content_type)
