"""The Mutating/ValidatingWebhookConfiguration that send postdeploy's objects to it.

Called by ``postdeploy.admission.servers`` each time the webhook server (re)starts
with a certificate: ``build`` (pure) writes both configurations in full and ``apply``
creates or patches them, so their ``caBundle`` and URL always match what is served.
kopf's own management (``settings.admission.managed``) is not used: it cannot scope a
webhook to namespaces, nor skip updates that leave a spec alone.

Every webhook has ``failurePolicy: Fail`` (an operator that cannot answer refuses
rather than lets a request through unchecked) and ``namespaceSelector`` naming the
namespaces the operator watches (all when it watches the cluster); the review webhook
also has an ``objectSelector`` from ``--selector``, and a ``matchCondition`` that
skips updates leaving ``spec`` unchanged (status, annotations, finalizers: what the
operator itself and ``kubectl postdeploy`` write), so those never depend on the
webhook being up.

| webhook (``ID.NAME``)   | resource                        | operations     |
|-------------------------|---------------------------------|----------------|
| ``stamp-signer``        | reviewsignoffs (mutating)       | CREATE         |
| ``authorize-signer``    | reviewsignoffs                  | CREATE         |
| ``authorize-review``    | postdeploymentreviews           | CREATE, UPDATE |
| ``authorize-template``  | reviewtemplates                 | CREATE, UPDATE |

The configurations stay when the operator stops: while it is down, reviews,
templates and sign-offs in its namespaces cannot be created or edited (fail
closed). Uninstalling (``helm uninstall``) removes them with the release.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from postdeploy.decisions import selectors
from postdeploy.kit import kube
from postdeploy.models.crds import GROUP, REVIEWS, SIGNOFFS, TEMPLATES, VERSION

__all__ = ["WEBHOOKS", "apply", "build"]

# id -> (mutating, plural, operations)
WEBHOOKS: dict[str, tuple[bool, str, tuple[str, ...]]] = {
    "stamp-signer": (True, SIGNOFFS, ("CREATE",)),
    "authorize-signer": (False, SIGNOFFS, ("CREATE",)),
    "authorize-review": (False, REVIEWS, ("CREATE", "UPDATE")),
    "authorize-template": (False, TEMPLATES, ("CREATE", "UPDATE")),
}
SPEC_CHANGED = "request.operation != 'UPDATE' || !has(oldObject.spec) || object.spec != oldObject.spec"


def _object_selector(selector: selectors.Selector) -> dict[str, Any] | None:
    expressions: list[dict[str, Any]] = []
    expressions += [{"key": k, "operator": "In", "values": [v]} for k, v in selector.equal]
    expressions += [{"key": k, "operator": "NotIn", "values": [v]} for k, v in selector.unequal]
    expressions += [{"key": k, "operator": "Exists"} for k in selector.present]
    expressions += [{"key": k, "operator": "DoesNotExist"} for k in selector.absent]
    return {"matchExpressions": expressions} if expressions else None


def _client_config(base: Mapping[str, Any], webhook: str, ca_bundle: str) -> dict[str, Any]:
    config: dict[str, Any] = {"caBundle": ca_bundle}
    if "url" in base:
        config["url"] = f"{str(base['url']).rstrip('/')}/{webhook}"
    else:
        service = dict(base["service"])
        service["path"] = f"{service.get('path', '').rstrip('/')}/{webhook}"
        config["service"] = service
    return config


def build(
    name: str,
    base: Mapping[str, Any],
    ca_bundle: str,
    namespaces: Sequence[str],
    selector: selectors.Selector,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(mutating, validating) configurations named ``name``.

    ``base`` is where the server is: ``{"url": ...}`` or ``{"service": {namespace,
    name, port}}``; ``ca_bundle`` the base64 PEM of the CA that signed its leaf."""
    watched = {"key": "kubernetes.io/metadata.name", "operator": "In", "values": sorted(namespaces)}
    scope = {"matchExpressions": [watched]} if namespaces else {}
    hooks: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for webhook, (mutating, plural, operations) in WEBHOOKS.items():
        hook: dict[str, Any] = {
            "name": f"{webhook}.{name}",
            "admissionReviewVersions": ["v1"],
            "clientConfig": _client_config(base, webhook, ca_bundle),
            "failurePolicy": "Fail",
            "matchPolicy": "Equivalent",
            "namespaceSelector": scope,
            "rules": [
                {
                    "apiGroups": [GROUP],
                    "apiVersions": [VERSION],
                    "resources": [plural],
                    "operations": list(operations),
                    "scope": "Namespaced",
                }
            ],
            "sideEffects": "None",
            "timeoutSeconds": 10,
        }
        if plural == REVIEWS:
            hook["objectSelector"] = _object_selector(selector) or {}
        if "UPDATE" in operations:
            hook["matchConditions"] = [{"name": "spec-changed", "expression": SPEC_CHANGED}]
        if mutating:
            hook["reinvocationPolicy"] = "Never"
        hooks[mutating].append(hook)
    meta = {"name": name, "labels": {"app.kubernetes.io/part-of": "postdeploy"}}
    return (
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": meta,
            "webhooks": hooks[True],
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": meta,
            "webhooks": hooks[False],
        },
    )


async def apply(api: kube.Client, mutating: Mapping[str, Any], validating: Mapping[str, Any]) -> None:
    """Create both configurations, or patch their webhooks into the existing ones."""
    for body, plural in (
        (mutating, "mutatingwebhookconfigurations"),
        (validating, "validatingwebhookconfigurations"),
    ):
        try:
            await api.create(kube.path("admissionregistration.k8s.io/v1", plural), dict(body))
        except kube.ApiError as error:
            if error.status != 409:
                raise
            await api.patch(
                kube.path("admissionregistration.k8s.io/v1", plural, name=body["metadata"]["name"]),
                {"webhooks": body["webhooks"]},
                content_type=kube.MERGE_PATCH,
            )
