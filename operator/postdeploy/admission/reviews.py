"""Admitting a review only when its author may do what it makes the operator do.

Called by the validating webhook in ``postdeploy.handlers.admissions`` for every
``PostDeploymentReview`` created or whose spec changes, and every ``ReviewTemplate``
created or changed:

1. the review's spec is merged with its template, as the engine will merge it
   (``postdeploy.decisions.templates``: the named ReviewTemplate or
   ClusterReviewTemplate, else the built-in ``POSTDEPLOY_DEFAULT_TEMPLATE``);
2. what the engine would refuse anyway is refused now, in the engine's words
   (``postdeploy.decisions.confinement.review_refusal``: a target in another
   namespace without an allowed pair, a URL outside the egress allowlist);
3. ``postdeploy.admission.rights`` turns the merged review into the permissions its
   author needs;
4. one SubjectAccessReview per permission asks the API server whether the requesting
   user (the AdmissionReview's ``userInfo``: username, uid, groups, extra) holds it.

Any missing permission refuses the request (403) with one line per permission, e.g.
``alice may not patch deployments.apps "prod" in namespace team-a (check error-rate
may roll back the target)``. A SubjectAccessReview or template read that fails
refuses too (fail closed). A spec that does not resolve is admitted: the engine
reports it Invalid and runs none of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import pydantic

from postdeploy.admission import rights, signoffs
from postdeploy.decisions import confinement, templates
from postdeploy.kit import exceptions, kube
from postdeploy.models.crds import API_VERSION, CLUSTER_TEMPLATES, TEMPLATES

__all__ = [
    "authorize_review",
    "authorize_template",
    "refusal",
    "template_of",
]



async def template_of(
    api: kube.Client, spec: Mapping[str, Any], namespace: str, default_template: str
) -> dict[str, Any] | None:
    """The spec of the template the review starts from; None when there is none (yet)."""
    ref = spec.get("templateRef")
    if ref:
        if ref.get("kind", "ClusterReviewTemplate") == "ReviewTemplate":
            url_path = kube.path(API_VERSION, TEMPLATES, namespace, ref.get("name", ""))
        else:
            url_path = kube.path(API_VERSION, CLUSTER_TEMPLATES, name=ref.get("name", ""))
    elif spec.get("useDefaultTemplate", True):
        url_path = kube.path(API_VERSION, CLUSTER_TEMPLATES, name=default_template)
    else:
        return None
    obj = await api.read(url_path)
    if obj is None:
        return None
    return dict(obj.get("spec") or {})


def refusal(username: str, missing: Sequence[rights.Access]) -> str:
    return "; ".join(f"{username} may not {access.describe()} ({access.why})" for access in missing)


async def _allowed(api: kube.Client, userinfo: Mapping[str, Any], access: rights.Access) -> bool:
    attributes = signoffs.resource_attributes(
        verb=access.verb,
        group=access.group,
        resource=access.resource,
        namespace=access.namespace,
        name=access.name,
    )
    allowed, _ = await signoffs.subject_access(api, userinfo, attributes)
    return allowed


async def missing(
    api: kube.Client, userinfo: Mapping[str, Any], accesses: Sequence[rights.Access]
) -> list[rights.Access]:
    """The accesses the user lacks; raises Refused (500) when the API server cannot say."""
    try:
        answers = await asyncio.gather(*(_allowed(api, userinfo, a) for a in accesses))
    except kube.ApiError as error:
        raise exceptions.Refused(
            f"cannot check the rights of {userinfo.get('username')!r}: {error.status} {error.reason}", 500
        ) from None
    return [access for access, allowed in zip(accesses, answers, strict=True) if not allowed]


async def authorize_review(
    api: kube.Client,
    body: Mapping[str, Any],
    userinfo: Mapping[str, Any],
    default_template: str,
    cross_namespace: Collection[tuple[str, str]] = (),
    egress_allowlist: Collection[confinement.UrlPrefix] = (),
) -> list[rights.Access]:
    """Raise Refused unless the review stays where the operator confines reviews and the
    user may do what it makes the operator do.

    Returns the accesses that were checked (for tests and logs)."""
    metadata = body.get("metadata") or {}
    namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
    spec = dict(body.get("spec") or {})
    try:
        template = await template_of(api, spec, namespace, default_template)
    except kube.ApiError as error:
        raise exceptions.Refused(
            f"cannot read the review's template: {error.status} {error.reason}", 500
        ) from None
    try:
        review = templates.resolve(templates.merge(template, spec))
    except (exceptions.InvalidSpec, ValueError, OverflowError):
        return []  # runs nothing: the engine reports the review Invalid
    confined = confinement.review_refusal(namespace, review.spec, cross_namespace, egress_allowlist)
    if confined:
        raise exceptions.Refused(confined, 403)
    accesses = rights.for_review(review, namespace, name)
    lacking = await missing(api, userinfo, accesses)
    if lacking:
        raise exceptions.Refused(refusal(str(userinfo.get("username", "")), lacking), 403)
    return accesses


async def authorize_template(
    api: kube.Client, body: Mapping[str, Any], userinfo: Mapping[str, Any]
) -> list[rights.Access]:
    """Raise Refused unless the editor of a ReviewTemplate may do what its checks do."""
    namespace = str((body.get("metadata") or {}).get("namespace") or "")
    try:
        accesses = rights.for_template(body.get("spec") or {}, namespace)
    except pydantic.ValidationError:
        return []  # the API server's schema refuses it, or reviews using it are Invalid
    lacking = await missing(api, userinfo, accesses)
    if lacking:
        raise exceptions.Refused(refusal(str(userinfo.get("username", "")), lacking), 403)
    return accesses
