"""Review and template admission: the operator does for an author only what they may do.

Validating webhooks (kopf ``on.validate``, served by the server that
``postdeploy.handlers.signoffs`` starts) for ``PostDeploymentReview`` and
``ReviewTemplate`` creations and spec changes; the checks themselves are in
``postdeploy.admission.reviews``. An update that leaves the spec alone (status,
annotations, finalizers) never reaches them: the webhook configuration's
matchCondition skips it, and a handler called anyway admits it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from postdeploy.admission import reviews, servers
from postdeploy.handlers import lifecycle
from postdeploy.kit import exceptions
from postdeploy.models.crds import GROUP, REVIEWS, TEMPLATES, VERSION

__all__ = ["authorize_review", "authorize_template"]



def _unchanged(operation: str | None, body: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    return operation == "UPDATE" and old is not None and old.get("spec") == body.get("spec")


async def authorize_review(body: kopf.Body, userinfo: kopf.UserInfo, memo: Any, **kwargs: Any) -> None:
    if _unchanged(kwargs.get("operation"), body, kwargs.get("old")):
        return
    # The operator's settings: its default template and the confinement it was started with.
    configuration = lifecycle.configured(memo)
    try:
        await reviews.authorize_review(
            memo.api,
            dict(body),
            userinfo,
            configuration.default_template,
            configuration.cross_namespace,
            configuration.egress_allowlist,
        )
    except exceptions.Refused as refused:
        raise kopf.AdmissionError(str(refused), code=refused.code) from None


async def authorize_template(body: kopf.Body, userinfo: kopf.UserInfo, memo: Any, **kwargs: Any) -> None:
    if _unchanged(kwargs.get("operation"), body, kwargs.get("old")):
        return
    try:
        await reviews.authorize_template(memo.api, dict(body), userinfo)
    except exceptions.Refused as refused:
        raise kopf.AdmissionError(str(refused), code=refused.code) from None


if servers.WebhookSettings.from_env().mode != "off":
    kopf.on.validate(
        GROUP,
        VERSION,
        REVIEWS,
        operations=["CREATE", "UPDATE"],
        persistent=True,
        id="authorize-review",
    )(authorize_review)
    kopf.on.validate(
        GROUP,
        VERSION,
        TEMPLATES,
        operations=["CREATE", "UPDATE"],
        persistent=True,
        id="authorize-template",
    )(authorize_template)
