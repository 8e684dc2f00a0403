"""Sign-off admission webhooks, and waking a review when one of its sign-offs changes.

Start-up reads the webhook mode (``postdeploy.admission.servers``) and hands kopf
its server, which keeps the Mutating/ValidatingWebhookConfiguration
(``POSTDEPLOY_WEBHOOK_CONFIGURATION``, default ``postdeploy.io``) pointing at it
(``postdeploy.admission.configurations``). They stay registered when the operator
stops, with failurePolicy Fail: while it is down a sign-off cannot be created at
all, rather than be created unverified. The review and template webhooks are in
``postdeploy.handlers.admissions``.

``signoff_changed`` touches the review's annotation ``postdeploy.io/signoffs-seen``
so that the watch (``postdeploy.handlers.reviews``) sees an annotation change, the
scheduler makes the review due at once, and the final review sees the sign-off.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import kopf

from postdeploy.admission import servers, signoffs
from postdeploy.handlers import lifecycle
from postdeploy.kit import exceptions, kube
from postdeploy.models.crds import API_VERSION, GROUP, REVIEWS, SIGNOFFS, VERSION

__all__ = ["authorize_signer", "signoff_changed", "stamp_signer", "webhook_startup"]

SEEN_ANNOTATION = "postdeploy.io/signoffs-seen"


@kopf.on.startup()
async def webhook_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    # Scoped to what this operator watches (postdeploy run --namespace, --selector).
    configuration = lifecycle.configured(memo)
    config = servers.WebhookSettings.from_env().scoped(configuration.namespaces, configuration.selector)
    server = servers.server_for(config, lambda: memo.api)
    memo.signoff_webhook = server is not None
    if server is None:
        logger.warning(
            "admission webhooks off (POSTDEPLOY_WEBHOOK=off): reviews are not checked against "
            "their authors' rights and sign-offs are unverified"
        )
        return
    settings.admission.server = server
    settings.admission.managed = None  # postdeploy.admission.configurations keeps them
    logger.info("admission webhooks: %s on %s:%s", config.mode, config.addr, config.port or "any port")


async def stamp_signer(
    spec: kopf.Spec, patch: kopf.Patch, userinfo: Mapping[str, Any], warnings: list[str], **_: Any
) -> None:
    claimed = (spec.get("signedBy") or {}).get("username")
    username = userinfo.get("username")
    if claimed and claimed != username:
        warnings.append(f"signedBy {claimed!r} ignored: signed by the authenticated user {username!r}")
    for key, value in signoffs.stamp(userinfo, datetime.datetime.now(datetime.UTC)).items():
        patch.spec[key] = value


async def authorize_signer(
    spec: kopf.Spec, userinfo: Mapping[str, Any], namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    try:
        await signoffs.authorize(memo.api, dict(spec), userinfo, namespace or "")
    except exceptions.Refused as refused:
        raise kopf.AdmissionError(str(refused), code=refused.code) from None


async def signoff_changed(
    type: str, spec: kopf.Spec, namespace: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    if not type or not namespace or not spec.get("review"):
        return  # the initial listing: a review's first tick reads its sign-offs anyway
    stamp = f"{type}:{body.metadata.name}:{body.metadata.get('resourceVersion', '')}"
    try:
        await memo.api.patch(
            kube.path(API_VERSION, REVIEWS, namespace, spec["review"]),
            {"metadata": {"annotations": {SEEN_ANNOTATION: stamp}}},
            kube.MERGE_PATCH,
        )
    except kube.ApiError as error:
        if error.status != 404:
            raise


# kopf refuses to run with admission handlers and no server: register them only when
# the webhook is on (the environment is read once, when the handlers are imported).
# Without the webhook no sign-off is verified, so none needs watching either.
if servers.WebhookSettings.from_env().mode != "off":
    kopf.on.mutate(GROUP, VERSION, SIGNOFFS, operations=["CREATE"], persistent=True, id="stamp-signer")(
        stamp_signer
    )
    kopf.on.validate(GROUP, VERSION, SIGNOFFS, operations=["CREATE"], persistent=True, id="authorize-signer")(
        authorize_signer
    )
    kopf.on.event(GROUP, VERSION, SIGNOFFS)(signoff_changed)
