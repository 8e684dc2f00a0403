"""The webhook server: where it listens, the certificate it serves, and keeping the
API server's webhook configurations pointing at it.

Called at start-up by ``postdeploy.handlers.signoffs``. ``POSTDEPLOY_WEBHOOK`` picks
the mode:

- ``local`` (the default): listen on ``POSTDEPLOY_WEBHOOK_ADDR`` (127.0.0.1) port
  ``POSTDEPLOY_WEBHOOK_PORT`` (default: any free port) and announce the URL
  ``https://ADDR:PORT``; for an operator beside the API server (development, the
  test bed).
- ``service``: in a cluster. Listen on all interfaces, port 9443, reached through the
  Service ``POSTDEPLOY_WEBHOOK_SERVICE`` (``namespace/name``).
- ``off``: no webhook. Reviews are not checked against their authors' rights and
  sign-offs are unverified; the operator says so in its log at start-up.

The certificate: with ``POSTDEPLOY_WEBHOOK_CERT_DIR`` (``tls.crt``, ``tls.key``,
``ca.crt``, e.g. a cert-manager Secret mounted there), those files, re-read when they
change. Otherwise the operator makes its own (``postdeploy.admission.certificates``):
a CA and a leaf for the Service's DNS names (or the local address), kept in the
Secret ``POSTDEPLOY_WEBHOOK_SECRET`` (``namespace/name``) when set so that replicas
share it, checked every ``POSTDEPLOY_WEBHOOK_CERT_CHECK`` seconds (3600) and renewed
two thirds into its ``POSTDEPLOY_WEBHOOK_CERT_DAYS`` (30) lifetime.

Each time kopf's server starts or restarts with new certificate files, the
configurations named ``POSTDEPLOY_WEBHOOK_CONFIGURATION`` are rewritten
(``postdeploy.admission.configurations``) with its URL or Service and the CA as
``caBundle``, scoped to the namespaces the operator watches
(``postdeploy run --namespace``, given through ``scoped``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime
import logging
import os
import pathlib
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import kopf

from postdeploy.admission import configurations
from postdeploy.decisions import selectors
from postdeploy.kit import kube

if TYPE_CHECKING:
    from postdeploy.admission import certificates

__all__ = ["ManagedWebhookServer", "WebhookSettings", "server_for"]

logger = logging.getLogger("postdeploy.webhook")


@dataclasses.dataclass(frozen=True)
class WebhookSettings:
    mode: str = "local"  # off | local | service
    addr: str = "127.0.0.1"
    port: int = 0  # 0: any free port (local mode)
    host: str | None = None
    cert_dir: str | None = None
    secret: str | None = None  # namespace/name of the self-made certificate's Secret
    service: str | None = None  # namespace/name
    managed: str = "postdeploy.io"
    cert_days: float = 30.0
    cert_check_seconds: float = 3600.0
    namespaces: tuple[str, ...] = ()
    selector: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WebhookSettings:
        env = os.environ if env is None else env
        mode = env.get("POSTDEPLOY_WEBHOOK", "local").strip().lower() or "local"
        if mode not in ("off", "local", "service"):
            raise ValueError(f"POSTDEPLOY_WEBHOOK={mode!r}: use local, service or off")
        return cls(
            mode=mode,
            addr=env.get("POSTDEPLOY_WEBHOOK_ADDR", "127.0.0.1" if mode == "local" else "0.0.0.0"),
            port=int(env.get("POSTDEPLOY_WEBHOOK_PORT") or ("0" if mode == "local" else "9443")),
            host=env.get("POSTDEPLOY_WEBHOOK_HOST") or None,
            cert_dir=env.get("POSTDEPLOY_WEBHOOK_CERT_DIR") or None,
            secret=env.get("POSTDEPLOY_WEBHOOK_SECRET") or None,
            service=env.get("POSTDEPLOY_WEBHOOK_SERVICE") or None,
            managed=env.get("POSTDEPLOY_WEBHOOK_CONFIGURATION", "postdeploy.io"),
            cert_days=float(env.get("POSTDEPLOY_WEBHOOK_CERT_DAYS", "30")),
            cert_check_seconds=float(env.get("POSTDEPLOY_WEBHOOK_CERT_CHECK", "3600")),
        )

    def scoped(self, namespaces: Sequence[str], selector: str) -> WebhookSettings:
        """These settings for an operator watching ``namespaces`` (none: all) and the
        reviews matching ``selector`` (``postdeploy run --namespace``, ``--selector``)."""
        return dataclasses.replace(self, namespaces=tuple(namespaces), selector=selector)

    def hosts(self) -> list[str]:
        """The names the certificate is for."""
        if self.mode == "service" and self.service:
            namespace, _, name = self.service.partition("/")
            return [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]
        return [self.host or self.addr, "localhost"]


class ManagedWebhookServer:
    """kopf's webhook server, with a certificate it renews and configurations it keeps current."""

    def __init__(self, settings: WebhookSettings, api: Callable[[], kube.Client]) -> None:
        self.settings = settings
        self.api = api
        self.directory = pathlib.Path(tempfile.mkdtemp(prefix="postdeploy-webhook-"))
        self.bundle: certificates.Bundle | None = None

    # --- the certificate ------------------------------------------------------------

    def _lifetime(self) -> datetime.timedelta:
        return datetime.timedelta(days=self.settings.cert_days)

    async def renew(self, now: datetime.datetime | None = None) -> bool:
        """Make or renew the certificate and write its files; True when they changed."""
        # Imported here: cryptography is about 7 MB of resident memory that an operator
        # without webhooks, or with cert-manager's certificate, never needs.
        from postdeploy.admission import certificates

        now = now or datetime.datetime.now(datetime.UTC)
        hosts = self.settings.hosts()
        if not self.settings.secret:
            bundle = certificates.renewed(self.bundle, hosts, now, self._lifetime())
        else:
            namespace, _, name = self.settings.secret.partition("/")
            while True:
                stored, version = await certificates.load(self.api(), namespace, name)
                bundle = certificates.renewed(stored, hosts, now, self._lifetime())
                if bundle == stored or await certificates.store(self.api(), namespace, name, bundle, version):
                    break
        changed = bundle != self.bundle
        self.bundle = bundle
        certificates.write(bundle, self.directory)
        return changed

    async def _keep_renewing(self) -> None:
        while True:
            await asyncio.sleep(self.settings.cert_check_seconds)
            try:
                if await self.renew():
                    logger.info("webhook certificate renewed")
            except Exception as error:  # a failed renewal is retried; the old certificate serves
                logger.error("webhook certificate renewal failed: %s", error)

    def _files(self) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
        if self.settings.cert_dir:
            certs = pathlib.Path(self.settings.cert_dir)
            ca = certs / "ca.crt"
            return certs / "tls.crt", certs / "tls.key", ca if ca.exists() else certs / "tls.crt"
        return self.directory / "tls.crt", self.directory / "tls.key", self.directory / "ca.crt"

    # --- serving ------------------------------------------------------------------------

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        renewing: asyncio.Task[None] | None = None
        if not self.settings.cert_dir:
            await self.renew()
            renewing = asyncio.create_task(self._keep_renewing(), name="postdeploy-webhook-certificate")
        cert, key, ca = self._files()
        server = kopf.WebhookServer(
            addr=self.settings.addr,
            port=self.settings.port or None,
            host=self.settings.host or self.settings.addr,
            certfile=cert,
            pkeyfile=key,
            cafile=ca,
            file_check_interval=10.0,
        )
        try:
            async for config in server(fn):
                base: dict[str, Any]
                if self.settings.mode == "service" and self.settings.service:
                    namespace, _, name = self.settings.service.partition("/")
                    base = {"service": {"namespace": namespace, "name": name, "port": self.settings.port}}
                else:
                    base = {"url": config["url"]}
                ca_bundle = config.get("caBundle") or base64.b64encode(ca.read_bytes()).decode()
                mutating, validating = configurations.build(
                    self.settings.managed,
                    base,
                    ca_bundle,
                    self.settings.namespaces,
                    selectors.parse(self.settings.selector),
                )
                await configurations.apply(self.api(), mutating, validating)
                logger.info(
                    "webhooks %s registered at %s",
                    self.settings.managed,
                    base.get("url") or "service {namespace}/{name}:{port}".format(**base["service"]),
                )
                yield config
        finally:
            if renewing is not None:
                renewing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewing


def server_for(settings: WebhookSettings, api: Callable[[], kube.Client]) -> ManagedWebhookServer | None:
    """The webhook server for ``settings``; None when the webhook is off."""
    if settings.mode == "off":
        return None
    if settings.mode == "service" and not settings.service:
        raise ValueError("POSTDEPLOY_WEBHOOK=service needs POSTDEPLOY_WEBHOOK_SERVICE (namespace/name)")
    return ManagedWebhookServer(settings, api)
