"""Whether a GitOps tool manages the target, from its labels and annotations.

Called by the engine before ``decide``: a target that Argo CD or Flux reconciles
from Git would be synced back over an in-cluster rollback, so by default such a
target is annotated and notified instead (``spec.rollback.allowGitOps`` overrides).

What counts as evidence (documented by each tool):

- Argo CD: the ``argocd.argoproj.io/tracking-id`` annotation (tracking methods
  ``annotation`` and ``annotation+label``) or the ``argocd.argoproj.io/instance``
  label (the custom tracking label the Argo CD docs use as their example);
- Flux: the ``kustomize.toolkit.fluxcd.io/name`` label (kustomize-controller) or
  the ``helm.toolkit.fluxcd.io/name`` label (helm-controller), each with a
  ``.../namespace`` companion.

The ``app.kubernetes.io/instance`` label alone is not evidence: Helm charts set it
too, so it would mark every chart-installed workload as GitOps-managed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

__all__ = [
    "ARGOCD_INSTANCE_LABEL",
    "ARGOCD_TRACKING_ANNOTATION",
    "FLUX_HELM_LABEL",
    "FLUX_KUSTOMIZE_LABEL",
    "Owner",
    "owner",
]

ARGOCD_TRACKING_ANNOTATION = "argocd.argoproj.io/tracking-id"
ARGOCD_INSTANCE_LABEL = "argocd.argoproj.io/instance"
FLUX_KUSTOMIZE_LABEL = "kustomize.toolkit.fluxcd.io/name"
FLUX_HELM_LABEL = "helm.toolkit.fluxcd.io/name"


@dataclasses.dataclass(frozen=True)
class Owner:
    tool: Literal["Argo CD", "Flux"]
    name: str  # the Argo CD Application, or the Flux Kustomization / HelmRelease
    evidence: str  # the label or annotation that said so

    def describe(self) -> str:
        return f"managed by {self.tool} ({self.name}; {self.evidence})"


def owner(metadata: Mapping[str, Any]) -> Owner | None:
    """The GitOps tool managing an object with this metadata, or None."""
    labels: Mapping[str, str] = metadata.get("labels") or {}
    annotations: Mapping[str, str] = metadata.get("annotations") or {}
    tracking = annotations.get(ARGOCD_TRACKING_ANNOTATION)
    if tracking:
        # <application>:<group>/<kind>:<namespace>/<name>
        return Owner("Argo CD", tracking.split(":", 1)[0], f"annotation {ARGOCD_TRACKING_ANNOTATION}")
    if labels.get(ARGOCD_INSTANCE_LABEL):
        return Owner("Argo CD", labels[ARGOCD_INSTANCE_LABEL], f"label {ARGOCD_INSTANCE_LABEL}")
    for label, kind in ((FLUX_KUSTOMIZE_LABEL, "Kustomization"), (FLUX_HELM_LABEL, "HelmRelease")):
        name = labels.get(label)
        if name:
            namespace = labels.get(label.replace("/name", "/namespace"))
            where = f"{namespace}/{name}" if namespace else name
            return Owner("Flux", f"{kind} {where}", f"label {label}")
    return None
