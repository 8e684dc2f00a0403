"""The plugin's view of the cluster: the user's client, namespace and identity.

Called by ``postdeploy.plugin.commands``. Built from the user's kubeconfig (and
``--context``), never from the operator's credentials. Every API failure leaves as a
``PluginError`` with a meaningful exit code.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from postdeploy.models.crds import (
    API_VERSION,
    CLUSTER_TEMPLATES,
    GROUP,
    REVIEWS,
    SIGNOFFS,
    TEMPLATES,
    VERSION,
)
from postdeploy.plugin import errors

__all__ = ["Session", "signoff_name"]

_MERGE = "application/merge-patch+json"


def signoff_name(review: str, role: str) -> str:
    """One ReviewSignoff per review and role: a second one is a 409 Conflict."""
    name = f"{review}-{role}"
    if len(name) <= 253:
        return name
    return f"{review[:200]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"


class Session:
    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
        try:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig or os.environ.get("KUBECONFIG"), context=context
            )
            _, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                config_file=kubeconfig or os.environ.get("KUBECONFIG")
            )
        except (config.ConfigException, OSError, TypeError) as error:
            raise errors.PluginError(f"cannot load kubeconfig: {error}", errors.USAGE) from None
        if context:
            contexts, _ = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                config_file=kubeconfig or os.environ.get("KUBECONFIG")
            )
            active = next((c for c in contexts if c["name"] == context), active)
        self.namespace = namespace or (active or {}).get("context", {}).get("namespace") or "default"
        self.context_user = str((active or {}).get("context", {}).get("user", ""))
        self.api = client.ApiClient()
        self.objects = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ApiException as error:
            raise errors.from_api(error, what) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise errors.PluginError(f"{what}: cannot reach the API server: {error}", errors.API) from None

    # --- reviews ------------------------------------------------------------------

    def review(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call(
            f"review {self.namespace}/{name}",
            self.objects.get_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            REVIEWS,
            name,
        )
        return result

    def reviews(self, all_namespaces: bool) -> list[dict[str, Any]]:
        if all_namespaces:
            listed = self.call(
                "list reviews", self.objects.list_cluster_custom_object, GROUP, VERSION, REVIEWS
            )
        else:
            listed = self.call(
                f"list reviews in {self.namespace}",
                self.objects.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                REVIEWS,
            )
        return list(listed.get("items", []))

    def annotate(self, name: str, annotations: dict[str, str | None]) -> dict[str, Any]:
        result: dict[str, Any] = self.call(
            f"annotate review {self.namespace}/{name}",
            self.objects.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            REVIEWS,
            name,
            {"metadata": {"annotations": annotations}},
            _content_type=_MERGE,
        )
        return result

    # --- reads for a backtest (GET and LIST only) ------------------------------------

    def template(self, kind: str, name: str) -> dict[str, Any] | None:
        """A ReviewTemplate (in the namespace) or ClusterReviewTemplate; None if absent."""
        obj: Any
        try:
            if kind == "ClusterReviewTemplate":
                obj = self.objects.get_cluster_custom_object(GROUP, VERSION, CLUSTER_TEMPLATES, name)
            else:
                obj = self.objects.get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, TEMPLATES, name
                )
        except ApiException as error:
            if error.status == 404:
                return None
            raise errors.from_api(error, f"read {kind} {name}") from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise errors.PluginError(f"cannot reach the API server: {error}", errors.API) from None
        return dict(obj)

    def workload(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        """A Deployment, StatefulSet or DaemonSet as a dict."""
        apps = client.AppsV1Api(self.api)
        reads = {
            "Deployment": apps.read_namespaced_deployment,
            "StatefulSet": apps.read_namespaced_stateful_set,
            "DaemonSet": apps.read_namespaced_daemon_set,
        }
        if kind not in reads:
            raise errors.PluginError(f"the history of a {kind} is not read (only Deployment, StatefulSet, "
                                     "DaemonSet): give the release times", errors.USAGE)
        obj = self.call(f"{kind} {namespace}/{name}", reads[kind], name, namespace)
        result: dict[str, Any] = self.api.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
        return result

    def workload_revisions(self, workload: dict[str, Any], kind: str) -> list[dict[str, Any]]:
        """A Deployment's ReplicaSets, or a StatefulSet's/DaemonSet's ControllerRevisions,
        selected by the workload's selector (ownership is checked by the caller)."""
        metadata = workload["metadata"]
        labels = ((workload.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        apps = client.AppsV1Api(self.api)
        if kind == "Deployment":
            listed = self.call(
                "list ReplicaSets", apps.list_namespaced_replica_set, metadata["namespace"],
                label_selector=selector,
            )
        else:
            listed = self.call(
                "list ControllerRevisions", apps.list_namespaced_controller_revision, metadata["namespace"],
                label_selector=selector,
            )
        items = self.api.sanitize_for_serialization(listed).get("items") or []  # type: ignore[no-untyped-call]
        kind_name = "ReplicaSet" if kind == "Deployment" else "ControllerRevision"
        return [{**item, "kind": kind_name} for item in items]

    # --- sign-offs and the report -------------------------------------------------

    def create_signoff(self, review: str, role: str, notes: str) -> dict[str, Any]:
        body = {
            "apiVersion": API_VERSION,
            "kind": "ReviewSignoff",
            "metadata": {"name": signoff_name(review, role), "labels": {"postdeploy.io/review": review[:63]}},
            "spec": {"review": review, "role": role, "notes": notes},
        }
        try:
            created: Any = self.objects.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, SIGNOFFS, body
            )
            return dict(created)
        except ApiException as error:
            if error.status == 409:
                existing = self.call(
                    "read the existing sign-off",
                    self.objects.get_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    SIGNOFFS,
                    signoff_name(review, role),
                )
                spec = existing.get("spec") or {}
                who = (spec.get("signedBy") or {}).get("username", "?")
                raise errors.PluginError(
                    f"{role} has already signed off {review} ({who} at {spec.get('signedAt', '?')}); "
                    "an administrator may delete the ReviewSignoff to allow a new one",
                    errors.CONFLICT,
                ) from None
            raise errors.from_api(error, f"sign off {self.namespace}/{review} as {role}") from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise errors.PluginError(f"cannot reach the API server: {error}", errors.API) from None

    def report_configmap(self, name: str) -> dict[str, str] | None:
        try:
            cm = self.core.read_namespaced_config_map(f"{name[:246]}-report", self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise errors.from_api(error, f"read the report of {name}") from None
        return dict(cm.data or {})

    def whoami(self) -> str:
        """The user as the API server authenticates them; the kubeconfig's user if it cannot say."""
        try:
            review = client.AuthenticationV1Api(self.api).create_self_subject_review(
                client.V1SelfSubjectReview()
            )
            return str(review.status.user_info.username)  # type: ignore[union-attr]
        except (ApiException, AttributeError, urllib3.exceptions.HTTPError, OSError):
            return self.context_user

    @staticmethod
    def now() -> str:
        return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
