"""The webhook server's configuration, from the environment, for kopf's admission settings.

Called at start-up by ``postdeploy.handlers.signoffs``. ``POSTDEPLOY_WEBHOOK`` picks
the mode:

- unset or ``off``: no webhook. Sign-offs cannot be verified and are reported as
  unverified; the review keeps awaiting them.
- ``local``: listen on ``POSTDEPLOY_WEBHOOK_ADDR`` (127.0.0.1) port
  ``POSTDEPLOY_WEBHOOK_PORT`` with a self-signed certificate made at start-up (the
  API server is told to trust exactly it); for an operator run beside the API
  server (development, the test bed).
- ``service``: in a cluster. Listen on all interfaces with the certificate in
  ``POSTDEPLOY_WEBHOOK_CERT_DIR`` (``tls.crt``, ``tls.key``, ``ca.crt``: a
  cert-manager Secret), reached through the Service ``POSTDEPLOY_WEBHOOK_SERVICE``
  (``namespace/name``).

kopf writes the webhook configurations (``settings.admission.managed``).
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
import pathlib
import tempfile
from collections.abc import AsyncIterator, Mapping
from typing import Any

import kopf

__all__ = ["ServiceWebhookServer", "WebhookSettings", "self_signed", "server_for"]


@dataclasses.dataclass(frozen=True)
class WebhookSettings:
    mode: str = "off"  # off | local | service
    addr: str = "127.0.0.1"
    port: int = 9443
    host: str | None = None
    cert_dir: str | None = None
    service: str | None = None  # namespace/name
    managed: str = "postdeploy.io"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WebhookSettings:
        env = os.environ if env is None else env
        mode = env.get("POSTDEPLOY_WEBHOOK", "off").strip().lower() or "off"
        if mode not in ("off", "local", "service"):
            raise ValueError(f"POSTDEPLOY_WEBHOOK={mode!r}: use off, local or service")
        return cls(
            mode=mode,
            addr=env.get("POSTDEPLOY_WEBHOOK_ADDR", "127.0.0.1" if mode == "local" else "0.0.0.0"),
            port=int(env.get("POSTDEPLOY_WEBHOOK_PORT", "9443")),
            host=env.get("POSTDEPLOY_WEBHOOK_HOST") or None,
            cert_dir=env.get("POSTDEPLOY_WEBHOOK_CERT_DIR") or None,
            service=env.get("POSTDEPLOY_WEBHOOK_SERVICE") or None,
            managed=env.get("POSTDEPLOY_WEBHOOK_CONFIGURATION", "postdeploy.io"),
        )


def self_signed(directory: pathlib.Path, hosts: list[str]) -> tuple[pathlib.Path, pathlib.Path]:
    """A self-signed serving certificate for ``hosts`` (IPs or DNS names): (cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "postdeploy-webhook")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class ServiceWebhookServer(kopf.WebhookServer):
    """kopf's server, announced to the API server as a Service instead of a URL."""

    def __init__(self, *, service: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service_namespace, _, self.service_name = service.partition("/")

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async for config in super().__call__(fn):
            announced: dict[str, Any] = {
                "service": {
                    "namespace": self.service_namespace,
                    "name": self.service_name,
                    "port": self.port,
                }
            }
            if "caBundle" in config:
                announced["caBundle"] = config["caBundle"]
            yield announced


def server_for(settings: WebhookSettings) -> Any:
    """The kopf webhook server for ``settings``; None when the webhook is off."""
    if settings.mode == "off":
        return None
    if settings.mode == "local":
        host = settings.host or settings.addr
        directory = pathlib.Path(tempfile.mkdtemp(prefix="postdeploy-webhook-"))
        cert, key = self_signed(directory, [host, settings.addr, "localhost"])
        return kopf.WebhookServer(
            addr=settings.addr, port=settings.port, host=host, certfile=cert, pkeyfile=key, cafile=cert
        )
    if not settings.cert_dir or not settings.service:
        raise ValueError(
            "POSTDEPLOY_WEBHOOK=service needs POSTDEPLOY_WEBHOOK_CERT_DIR and POSTDEPLOY_WEBHOOK_SERVICE"
        )
    certs = pathlib.Path(settings.cert_dir)
    ca = certs / "ca.crt"
    return ServiceWebhookServer(
        service=settings.service,
        addr=settings.addr,
        port=settings.port,
        certfile=certs / "tls.crt",
        pkeyfile=certs / "tls.key",
        cafile=ca if ca.exists() else certs / "tls.crt",
    )
