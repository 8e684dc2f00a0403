"""Sign-offs people can trust: the signer is whom the API server authenticated.

Called by the admission handlers in ``postdeploy.handlers.signoffs`` for every
``ReviewSignoff`` being created:

1. *stamp* (mutating): ``spec.signedBy`` becomes the request's ``userInfo``
   (username, uid, groups) and ``spec.signedAt`` the time of admission, whatever the
   request said; a different claimed name is replaced and the client is warned.
2. *authorize* (validating, after every mutation): the stamp still matches
   ``userInfo``; the review exists and requires the role; and the user may sign for
   the role: a SubjectAccessReview for verb ``sign`` on resource ``signoffs`` of
   group ``postdeploy.io``, named after the role, in the review's namespace. RBAC
   grants it (``docs/rbac/signers.yaml``):

       - apiGroups: [postdeploy.io]
         resources: [signoffs]
         verbs: [sign]
         resourceNames: [product-owner]

The spec is immutable afterwards (a CEL rule on the CRD), so the stamp stays true.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from postdeploy.kit import exceptions, kube
from postdeploy.models.crds import API_VERSION, GROUP, REVIEWS
from postdeploy.models.people import DEFAULT_ROLES

__all__ = ["authorize", "required_roles", "resource_attributes", "stamp", "subject_access"]

VERB, RESOURCE = "sign", "signoffs"


def stamp(userinfo: Mapping[str, Any], now: datetime.datetime) -> dict[str, Any]:
    """The fields the webhook writes into ``spec``."""
    signed_by: dict[str, Any] = {"username": str(userinfo.get("username", ""))}
    if userinfo.get("uid"):
        signed_by["uid"] = str(userinfo["uid"])
    signed_by["groups"] = [str(g) for g in userinfo.get("groups") or []]
    return {"signedBy": signed_by, "signedAt": now.isoformat(timespec="seconds")}


def roles_of(review: Mapping[str, Any]) -> Sequence[str]:
    policy = (review.get("spec") or {}).get("signoffs") or {}
    roles = policy.get("roles")
    return list(roles) if roles else list(DEFAULT_ROLES)


async def required_roles(api: kube.Client, namespace: str, review: str) -> Sequence[str] | None:
    """The roles the review asks for; None when there is no such review."""
    body = await api.read(kube.path(API_VERSION, REVIEWS, namespace, review))
    if body is None:
        return None
    return roles_of(body)


def resource_attributes(**attributes: str | None) -> dict[str, str]:
    """A SubjectAccessReview's ``resourceAttributes`` (namespace, verb, group, resource,
    subresource, name): those given, without the ones that are None."""
    return {key: value for key, value in attributes.items() if value is not None}


async def subject_access(
    api: kube.Client, userinfo: Mapping[str, Any], attributes: Mapping[str, str]
) -> tuple[bool, str]:
    """Whether the API server lets the user of an AdmissionReview's ``userInfo`` do
    what ``attributes`` (``resourceAttributes``) say (a SubjectAccessReview), and its reason."""
    spec: dict[str, Any] = {
        "user": userinfo.get("username"),
        "uid": userinfo.get("uid"),
        "groups": list(userinfo.get("groups") or []),
        "extra": {k: list(v) for k, v in (userinfo.get("extra") or {}).items()},
        "resourceAttributes": dict(attributes),
    }
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {key: value for key, value in spec.items() if value is not None},
    }
    result = await api.create(kube.path("authorization.k8s.io/v1", "subjectaccessreviews"), review)
    status = result.get("status") or {}
    return bool(status.get("allowed")), str(status.get("reason") or "")


async def may_sign(
    api: kube.Client, userinfo: Mapping[str, Any], namespace: str, role: str
) -> tuple[bool, str]:
    attributes = resource_attributes(
        group=GROUP, resource=RESOURCE, verb=VERB, name=role, namespace=namespace
    )
    return await subject_access(api, userinfo, attributes)


async def authorize(
    api: kube.Client, spec: Mapping[str, Any], userinfo: Mapping[str, Any], namespace: str
) -> None:
    """Raise ``Refused`` unless this user may make this sign-off."""
    username = str(userinfo.get("username", ""))
    signed_by = (spec.get("signedBy") or {}).get("username")
    if signed_by != username:
        raise exceptions.Refused(
            f"spec.signedBy.username is {signed_by!r} but the request was made by {username!r}; "
            "the signer is set by the API server's authentication, not by the request",
            403,
        )
    review, role = str(spec.get("review", "")), str(spec.get("role", ""))
    try:
        roles = await required_roles(api, namespace, review)
    except kube.ApiError as error:
        raise exceptions.Refused(
            f"cannot read review {namespace}/{review}: {error.status} {error.reason}", 500
        ) from None
    if roles is None:
        raise exceptions.Refused(f"no PostDeploymentReview {namespace}/{review}", 404)
    if role not in roles:
        raise exceptions.Refused(
            f"review {review} does not ask for role {role!r} (it asks for {', '.join(roles)})", 422
        )
    try:
        allowed, reason = await may_sign(api, userinfo, namespace, role)
    except kube.ApiError as error:
        raise exceptions.Refused(
            f"cannot check {username}'s rights: {error.status} {error.reason}", 500
        ) from None
    if not allowed:
        raise exceptions.Refused(
            f"{username} may not sign off as {role} in namespace {namespace} (RBAC: verb {VERB!r} on "
            f"{RESOURCE}.{GROUP} named {role!r} is not granted){': ' + reason if reason else ''}",
            403,
        )
