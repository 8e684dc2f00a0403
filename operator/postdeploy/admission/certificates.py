"""The webhook's serving certificate: a private CA of the operator's own, and a leaf
it renews before it expires.

Called by ``postdeploy.admission.servers`` at start-up and then every
``POSTDEPLOY_WEBHOOK_CERT_CHECK`` seconds. ``renewed`` is pure (a bundle and the time
in, the bundle to serve out): it makes a CA when there is none (valid ten years), and
a leaf for the webhook's hosts when there is none, when the hosts changed, or when
two thirds of the leaf's lifetime (``POSTDEPLOY_WEBHOOK_CERT_DAYS``, default 30
days) have passed. The CA stays, so the caBundle the API server trusts stays valid
across renewals; a new leaf is picked up by kopf's server when the files change.

In a cluster the bundle is kept in a Secret (``load``/``store``) so that every
replica serves the same certificate and one caBundle fits them all; a replica that
loses a race to store re-reads the winner's bundle.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import ipaddress
import pathlib
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from postdeploy.kit import kube

__all__ = ["Bundle", "load", "renewed", "store", "write"]

CA_LIFETIME = datetime.timedelta(days=3650)
# Certificates are valid from a little before they are made: clocks differ.
BACKDATE = datetime.timedelta(minutes=5)
_KEYS = ("ca.crt", "ca.key", "tls.crt", "tls.key")


@dataclasses.dataclass(frozen=True)
class Bundle:
    ca_cert: bytes
    ca_key: bytes
    cert: bytes = b""
    key: bytes = b""

    def data(self) -> dict[str, str]:
        values = (self.ca_cert, self.ca_key, self.cert, self.key)
        return {k: base64.b64encode(v).decode() for k, v in zip(_KEYS, values, strict=True)}

    @classmethod
    def from_data(cls, data: dict[str, str]) -> Bundle | None:
        if not all(k in data for k in ("ca.crt", "ca.key")):
            return None
        raw = {k: base64.b64decode(data.get(k) or "") for k in _KEYS}
        return cls(raw["ca.crt"], raw["ca.key"], raw["tls.crt"], raw["tls.key"])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _new_ca(now: datetime.datetime) -> Bundle:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "postdeploy-webhook-ca")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Bundle(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _issue(ca: Bundle, hosts: Sequence[str], now: datetime.datetime, lifetime: datetime.timedelta) -> Bundle:
    ca_cert = x509.load_pem_x509_certificate(ca.ca_cert)
    ca_key = serialization.load_pem_private_key(ca.ca_key, None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "postdeploy-webhook")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.SubjectAlternativeName(_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return dataclasses.replace(ca, cert=cert.public_bytes(serialization.Encoding.PEM), key=_key_pem(key))


def _due(bundle: Bundle, hosts: Sequence[str], now: datetime.datetime) -> bool:
    if not bundle.cert or not bundle.key:
        return True
    cert = x509.load_pem_x509_certificate(bundle.cert)
    issued, end = cert.not_valid_before_utc + BACKDATE, cert.not_valid_after_utc
    if now >= issued + (end - issued) * 2 / 3:
        return True
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return True
    return set(_names(hosts)) != set(names)


def renewed(
    bundle: Bundle | None, hosts: Sequence[str], now: datetime.datetime, lifetime: datetime.timedelta
) -> Bundle:
    """The bundle to serve: ``bundle`` itself while its leaf is good, else a renewed one."""
    if bundle is None:
        bundle = _new_ca(now)
    if x509.load_pem_x509_certificate(bundle.ca_cert).not_valid_after_utc <= now + lifetime:
        bundle = _new_ca(now)  # the CA itself is near its end: a new one (a new caBundle)
    return _issue(bundle, hosts, now, lifetime) if _due(bundle, hosts, now) else bundle


def write(bundle: Bundle, directory: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    """tls.crt, tls.key and ca.crt in ``directory``; files are rewritten only when changed."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "tls.crt", directory / "tls.key", directory / "ca.crt"
    for path, content in zip(paths, (bundle.cert, bundle.key, bundle.ca_cert), strict=True):
        if not path.exists() or path.read_bytes() != content:
            path.touch(mode=0o600)
            path.write_bytes(content)
    return paths


async def load(api: kube.Client, namespace: str, name: str) -> tuple[Bundle | None, str | None]:
    """The bundle in Secret ``namespace/name`` and its resourceVersion; (None, None) if absent."""
    secret = await api.read(kube.path("v1", "secrets", namespace, name))
    if secret is None:
        return None, None
    metadata = secret.get("metadata") or {}
    return Bundle.from_data(dict(secret.get("data") or {})), metadata.get("resourceVersion")


async def store(
    api: kube.Client, namespace: str, name: str, bundle: Bundle, resource_version: str | None
) -> bool:
    """Write the bundle; False when another replica wrote first (409), so re-read."""
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {"app.kubernetes.io/part-of": "postdeploy"},
    }
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "data": bundle.data(),
    }
    try:
        if resource_version is None:
            await api.create(kube.path("v1", "secrets", namespace), body)
        else:
            await api.replace(kube.path("v1", "secrets", namespace, name), body)
    except kube.ApiError as error:
        if error.status == 409:
            return False
        raise
    return True
