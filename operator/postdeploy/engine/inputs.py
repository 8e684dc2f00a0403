"""What a tick reads from the cluster besides the review: templates, Secrets, the target.

Used by ``postdeploy.engine.ticks``: the engine asks an ``Inputs`` for everything it
reads outside the review itself and its providers, so its decisions can be tested
with a fake ``Inputs`` and no cluster (tests/unit/test_engine_ticks.py).
``ClusterInputs`` is the real one, made by ``Engine`` from the API client:

- ``template``: a ReviewTemplate or ClusterReviewTemplate's spec, cached for 30 s;
  None when it does not exist (any other API error is raised);
- ``secret``: one key of a Secret in the review's namespace, added to the log mask;
  raises LookupError naming what is missing;
- ``workload`` / ``rollout_time``: the target (for version and ``deployedAt`` when
  the spec and status name none);
- ``target_object``: the target as the actions read it (for its GitOps owner).

``template_of`` and ``secrets_for`` are the two uses of these reads that hold logic
of their own (which template, which Secret slot).
"""

from __future__ import annotations

import base64
import datetime
import time
from collections.abc import Mapping
from typing import Any, Protocol

from postdeploy.actions import targets
from postdeploy.decisions import templates
from postdeploy.kit import exceptions, kube, logs, workloads
from postdeploy.models.crds import API_VERSION, CLUSTER_TEMPLATES, TEMPLATES

__all__ = ["ClusterInputs", "Inputs", "secrets_for", "template_of"]

_TEMPLATE_TTL = 30.0
Obj = dict[str, Any]


class Inputs(Protocol):
    async def template(self, kind: str, namespace: str, name: str) -> Obj | None: ...

    async def secret(self, namespace: str, name: str, key: str) -> str: ...

    async def workload(self, kind: str, namespace: str, name: str) -> Obj | None: ...

    async def rollout_time(self, workload: Obj) -> datetime.datetime | None: ...

    async def target_object(self, kind: str, namespace: str, name: str) -> Obj | None: ...


class ClusterInputs:
    def __init__(self, api: kube.Client) -> None:
        self.api = api
        self._templates: dict[tuple[str, str, str], tuple[float, Obj | None]] = {}

    async def template(self, kind: str, namespace: str, name: str) -> Obj | None:
        """A template's spec, cached briefly; None when it does not exist."""
        key = (kind, namespace, name)
        cached = self._templates.get(key)
        if cached and time.monotonic() - cached[0] < _TEMPLATE_TTL:
            return cached[1]
        if kind == "ClusterReviewTemplate":
            obj = await self.api.read(kube.path(API_VERSION, CLUSTER_TEMPLATES, name=name))
        else:
            obj = await self.api.read(kube.path(API_VERSION, TEMPLATES, namespace, name))
        spec: Obj | None = dict(obj.get("spec") or {}) if obj is not None else None
        self._templates[key] = (time.monotonic(), spec)
        return spec

    async def secret(self, namespace: str, name: str, key: str) -> str:
        """A Secret's value; raises LookupError naming what is missing."""
        try:
            secret = await self.api.get(kube.path("v1", "secrets", namespace, name))
        except kube.ApiError as error:
            if error.status == 404:
                raise LookupError(f"Secret {namespace}/{name} not found") from None
            raise LookupError(f"Secret {namespace}/{name}: {error.status} {error.reason}") from None
        data = secret.get("data") or {}
        if key not in data:
            raise LookupError(f"Secret {namespace}/{name} has no key {key!r}")
        value = base64.b64decode(data[key]).decode()
        logs.add_secret(value)  # masked in every log line from now on
        return value

    async def workload(self, kind: str, namespace: str, name: str) -> Obj | None:
        return await workloads.read(self.api, kind, namespace, name)

    async def rollout_time(self, workload: Obj) -> datetime.datetime | None:
        return await workloads.rollout_time(self.api, workload)

    async def target_object(self, kind: str, namespace: str, name: str) -> Obj | None:
        return await targets.read(self.api, kind, namespace, name)


async def template_of(
    inputs: Inputs, spec: Mapping[str, Any], namespace: str, default_template: str
) -> Obj | None:
    """The template a review's spec is merged with: the named one, the built-in default,
    or None (``useDefaultTemplate: false``, or the default missing while the review has
    phases of its own). Raises InvalidSpec when the review cannot be merged at all."""
    ref = spec.get("templateRef")
    template: Obj | None = None
    if ref:
        kind = ref.get("kind", "ClusterReviewTemplate")
        template = await inputs.template(kind, namespace, ref["name"])
        if template is None:
            raise exceptions.InvalidSpec(f"spec.templateRef: {kind} {ref['name']!r} not found")
    elif spec.get("useDefaultTemplate", True):
        template = await inputs.template("ClusterReviewTemplate", "", default_template)
        if template is None and not spec.get("phases"):
            raise exceptions.InvalidSpec(
                "spec.phases: the review names no template and no phases, and the built-in "
                f"ClusterReviewTemplate {default_template!r} is not installed"
            )
    return template


async def secrets_for(
    inputs: Inputs, check: templates.ResolvedCheck, review: templates.ResolvedReview, namespace: str
) -> dict[str, str]:
    """The Secret values a check's provider needs (``dsn`` or ``token``), by its spec."""
    spec = check.spec
    ref = None
    slot = "dsn"
    if spec.postgres is not None:
        ref = spec.postgres.dsn_secret_ref
    elif spec.statistics is not None:
        ref = spec.statistics.dsn_secret_ref
    elif spec.http is not None:
        ref, slot = spec.http.auth_secret_ref, "token"
    if ref is None and (spec.postgres is not None or spec.statistics is not None):
        providers = review.spec.providers
        ref = providers.postgres_dsn_secret_ref if providers else None
    if ref is None:
        return {}
    return {slot: await inputs.secret(namespace, ref.name, ref.key)}
