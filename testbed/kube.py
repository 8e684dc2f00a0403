"""The Kubernetes part of the local test bed: a real control plane on 127.0.0.1.

``start(workdir)`` brings up, from the binaries that ``testbed/build-binaries.sh``
caches under ``~/.cache/postdeploy/bin`` (``$POSTDEPLOY_CACHE`` overrides it):

- a private PKI made with ``cryptography`` (ECDSA P-256): a cluster CA, the
  kube-apiserver serving certificate (127.0.0.1, localhost and the in-cluster names),
  the service-account signing key pair, and client certificates with a kubeconfig
  each for ``admin`` (``O=system:masters``), ``system:kube-controller-manager``,
  ``system:kube-scheduler``, ``kwok-controller`` and the unprivileged users ``alice``,
  ``bob`` and ``carol`` (no group but ``system:authenticated``, so RBAC decides
  everything they may do);
- etcd on two free loopback ports;
- kube-apiserver on a free loopback port, ``--authorization-mode=RBAC,Node``, the
  default admission plugins plus ``NodeRestriction``, service-account issuer and keys;
- kube-controller-manager (``--controllers=*``, ``--use-service-account-credentials``,
  the service-account private key) and kube-scheduler, each with its own identity;
- the kwok controller, managing only nodes annotated ``kwok.x-k8s.io/node: fake`` with
  its built-in node and pod stages (nodes turn Ready, pods Running and Ready);
- fake Nodes carrying that annotation and the label ``type: kwok``.

It returns once ``/readyz`` answers ok, every fake Node is Ready and the ``default``
ServiceAccount exists in ``default``. Every process logs to ``workdir/logs/NAME.log``
and runs in its own process group; ``stop(state)`` ends those groups (SIGTERM, then
SIGKILL after a timeout) and checks that none of their listening ports remain.

The returned state is JSON-serialisable: ``pids``, ``processes`` (pid, start time),
``ports``, ``server``, ``kubeconfigs``, ``timings`` and ``env`` (``KUBECONFIG`` for
admin, ``KUBECONFIG_ALICE``, ``KUBECONFIG_BOB``, ``KUBECONFIG_CAROL``, and ``PATH``
with the Kubernetes bin dir, where the built kubectl lives, put in front;
``path_prefix`` holds just that prefix).

Command line, for trying it by hand::

    python -m testbed.kube up DIR     # start, write DIR/kube-state.json, print env
    python -m testbed.kube env DIR    # print the env of a running test bed
    python -m testbed.kube down DIR   # stop what DIR/kube-state.json describes
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import functools
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from testbed import processes
from testbed.ports import free_ports

__all__ = [
    "ALICE_USER",
    "FAKE_NODE_ANNOTATION",
    "PEOPLE",
    "STATE_FILE",
    "KubeBinaries",
    "TestbedError",
    "binaries",
    "main",
    "start",
    "stop",
]

K8S_VERSION = os.environ.get("K8S_VERSION", "v1.34.4")
ETCD_VERSION = os.environ.get("ETCD_VERSION", "v3.6.5")
KWOK_VERSION = os.environ.get("KWOK_VERSION", "v0.7.0")

ALICE_USER = "alice"
PEOPLE = ("bob", "carol")
FAKE_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
STATE_FILE = "kube-state.json"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
# Addresses kwok writes into fake pods' status; nothing listens there and nothing of the
# test bed dials them (kubelet-style calls go to the nodes' address, 127.0.0.1).
POD_CIDR = "10.244.0.1/16"
START_ORDER = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")

_STARTUP_TIMEOUT = 90.0
_STOP_TIMEOUT = 15.0


class TestbedError(RuntimeError):
    """A test bed component is missing, did not start, or did not stop."""


def _log(msg: str) -> None:
    print(f"[testbed.kube] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- binaries


class KubeBinaries:
    """Paths of the cached binaries for the pinned versions."""

    def __init__(self, cache: Path | None = None) -> None:
        root = cache or Path(os.environ.get("POSTDEPLOY_CACHE", str(Path.home() / ".cache" / "postdeploy")))
        self.kube_dir = root / "bin" / f"kubernetes-{K8S_VERSION}"
        self.etcd_dir = root / "bin" / f"etcd-{ETCD_VERSION}"
        self.kwok_dir = root / "bin" / f"kwok-{KWOK_VERSION}"
        self.kube_apiserver = self.kube_dir / "kube-apiserver"
        self.kube_controller_manager = self.kube_dir / "kube-controller-manager"
        self.kube_scheduler = self.kube_dir / "kube-scheduler"
        self.kubectl = self.kube_dir / "kubectl"
        self.etcd = self.etcd_dir / "etcd"
        self.kwok = self.kwok_dir / "kwok"

    def all(self) -> list[Path]:
        return [
            self.etcd,
            self.kube_apiserver,
            self.kube_controller_manager,
            self.kube_scheduler,
            self.kubectl,
            self.kwok,
        ]

    def missing(self) -> list[Path]:
        return [p for p in self.all() if not os.access(p, os.X_OK)]


def binaries() -> KubeBinaries:
    """The cached binaries; raises TestbedError naming the build script if any is missing."""
    bins = KubeBinaries()
    missing = bins.missing()
    if missing:
        names = ", ".join(str(p) for p in missing)
        raise TestbedError(f"missing test bed binaries: {names}; run testbed/build-binaries.sh")
    return bins


# --------------------------------------------------------------------------- PKI


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def _name(common_name: str, orgs: Iterable[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _validity() -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(hours=1), now + dt.timedelta(days=365)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """Signing for every certificate; certificate and CRL signing for a CA only."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _new_key()
    name = _name(common_name)
    not_before, not_after = _validity()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common_name: str,
    *,
    orgs: Iterable[str] = (),
    server_names: Iterable[str] = (),
    server_ips: Iterable[str] = (),
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _new_key()
    dns = list(server_names)
    ips = list(server_ips)
    server = bool(dns or ips)
    not_before, not_after = _validity()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, orgs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


# The client identities: file stem -> (user name, groups).
_CLIENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "admin": ("admin", ("system:masters",)),
    "kube-controller-manager": ("system:kube-controller-manager", ()),
    "kube-scheduler": ("system:kube-scheduler", ()),
    "kwok": ("kwok-controller", ()),
    ALICE_USER: (ALICE_USER, ()),
    # More people without privileges, for tests where several sign off a review.
    **{user: (user, ()) for user in PEOPLE},
}


def _make_pki(pki: Path) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _make_ca("postdeploy-testbed-ca")
    (pki / "ca.crt").write_bytes(_cert_pem(ca_cert))
    _write_private(pki / "ca.key", _key_pem(ca_key))

    # The aggregation layer's own CA: kube-apiserver authenticates to extension API
    # servers with front-proxy-client, and KCM/scheduler read this CA (through the
    # extension-apiserver-authentication ConfigMap) for their delegated authentication.
    fp_key, fp_cert = _make_ca("postdeploy-testbed-front-proxy-ca")
    (pki / "front-proxy-ca.crt").write_bytes(_cert_pem(fp_cert))
    key, cert = _issue(fp_key, fp_cert, "front-proxy-client")
    (pki / "front-proxy-client.crt").write_bytes(_cert_pem(cert))
    _write_private(pki / "front-proxy-client.key", _key_pem(key))

    key, cert = _issue(
        ca_key,
        ca_cert,
        "kube-apiserver",
        server_names=(
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        server_ips=("127.0.0.1", SERVICE_IP),
    )
    (pki / "apiserver.crt").write_bytes(_cert_pem(cert))
    _write_private(pki / "apiserver.key", _key_pem(key))

    sa_key = _new_key()
    _write_private(pki / "sa.key", _key_pem(sa_key))
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

    for stem, (user, groups) in _CLIENTS.items():
        key, cert = _issue(ca_key, ca_cert, user, orgs=groups)
        (pki / f"{stem}.crt").write_bytes(_cert_pem(cert))
        _write_private(pki / f"{stem}.key", _key_pem(key))


def _write_kubeconfig(path: Path, server: str, pki: Path, stem: str) -> None:
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    user = _CLIENTS[stem][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "postdeploy-testbed",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": b64(pki / "ca.crt"),
                },
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(pki / f"{stem}.crt"),
                    "client-key-data": b64(pki / f"{stem}.key"),
                },
            }
        ],
        "contexts": [
            {
                "name": f"{user}@postdeploy-testbed",
                "context": {"cluster": "postdeploy-testbed", "user": user},
            }
        ],
        "current-context": f"{user}@postdeploy-testbed",
    }
    _write_private(path, yaml.safe_dump(config, sort_keys=False).encode())


# --------------------------------------------------------------------------- processes


class _Spawned:
    def __init__(self, name: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.proc = proc
        self.log = log

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise TestbedError(
                f"{self.name} exited with code {self.proc.returncode}; "
                f"last lines of {self.log}:\n{processes.log_tail(self.log)}"
            )


def _child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("KUBECONFIG",) and not k.lower().endswith("_proxy")
    }
    env.update(extra or {})
    return env


def _spawn(name: str, argv: list[str], logs: Path, env: Mapping[str, str] | None = None) -> _Spawned:
    log = logs / f"{name}.log"
    return _Spawned(name, processes.spawn(argv, log, cwd=logs.parent, env=_child_env(env)), log)


# --------------------------------------------------------------------------- HTTP


class _Api:
    """A tiny HTTPS client for the API server, with a client certificate."""

    def __init__(self, server: str, pki: Path, stem: str) -> None:
        self.server = server
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / f"{stem}.crt"), str(pki / f"{stem}.key"))
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx)
        )

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(req, timeout=10) as resp:
                return int(resp.status), _decode(resp.read())
        except urllib.error.HTTPError as err:
            return int(err.code), _decode(err.read())

    def read(self, path: str, timeout: float = 10) -> bytes:
        """The raw body of a GET (raises ``urllib.error.HTTPError`` on an error status)."""
        with self._opener.open(self.server + path, timeout=timeout) as resp:
            body: bytes = resp.read()
        return body

    def create(self, path: str, body: dict[str, Any]) -> None:
        code, out = self.request("POST", path, body)
        if code not in (200, 201, 409):
            raise TestbedError(f"POST {path} -> {code}: {out}")


def pprof_cpu(state: Mapping[str, Any], seconds: float, output: Path) -> Path:
    """kube-apiserver's CPU profile over the next ``seconds`` (Go's pprof format), as
    the admin; the server must have been started with ``profiling``."""
    api = _Api(state["server"], Path(state["workdir"]) / "pki", "admin")
    output.write_bytes(api.read(f"/debug/pprof/profile?seconds={round(seconds)}", timeout=seconds + 30))
    return output


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _http_get_json(url: str) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as resp:
        return json.loads(resp.read())


def _insecure_get(url: str) -> int:
    """GET an endpoint served with a self-signed certificate (KCM/scheduler /healthz)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx)
    )
    try:
        with opener.open(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def _wait(what: str, ok: Callable[[], bool], spawned: Iterable[_Spawned], deadline: float) -> None:
    watched = list(spawned)
    while True:
        for sp in watched:
            sp.check()
        try:
            if ok():
                return
        except (OSError, urllib.error.URLError, ValueError, KeyError, TypeError):
            pass
        if time.monotonic() > deadline:
            raise TestbedError(f"timed out waiting for {what}")
        time.sleep(0.2)


# --------------------------------------------------------------------------- cluster


def _fake_node(name: str) -> dict[str, Any]:
    key, value = FAKE_NODE_ANNOTATION
    resources = {"cpu": "32", "memory": "128Gi", "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {key: value, "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/role": "agent",
                "node-role.kubernetes.io/agent": "",
            },
        },
        "spec": {},
        "status": {
            "allocatable": resources,
            "capacity": resources,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        },
    }


def _node_ready(api: _Api, name: str) -> bool:
    code, node = api.request("GET", f"/api/v1/nodes/{name}")
    if code != 200:
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in node.get("status", {}).get("conditions", [])
    )


def start(workdir: Path, *, nodes: int = 2, profiling: bool = False) -> dict[str, Any]:
    """Start etcd, the control plane and kwok under WORKDIR; return the state dict.
    With ``profiling`` kube-apiserver serves /debug/pprof (``pprof_cpu``)."""
    t0 = time.monotonic()
    deadline = t0 + _STARTUP_TIMEOUT
    bins = binaries()
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    logs, pki, etcd_data = workdir / "logs", workdir / "pki", workdir / "etcd"
    logs.mkdir(exist_ok=True)
    if etcd_data.exists() and any(etcd_data.iterdir()):
        raise TestbedError(f"{etcd_data} is not empty: use a fresh work directory")
    etcd_data.mkdir(mode=0o700, exist_ok=True)
    kwok_home = workdir / "kwok-home"
    kwok_home.mkdir(exist_ok=True)

    timings: dict[str, float] = {}
    _make_pki(pki)
    timings["pki"] = time.monotonic() - t0

    etcd_client, etcd_peer, api_port, kcm_port, sched_port = free_ports(5)
    server = f"https://127.0.0.1:{api_port}"
    kubeconfigs = {stem: workdir / f"{stem}.kubeconfig" for stem in _CLIENTS}
    for stem, path in kubeconfigs.items():
        _write_kubeconfig(path, server, pki, stem)

    ports = {
        "etcd_client": etcd_client,
        "etcd_peer": etcd_peer,
        "kube_apiserver": api_port,
        "kube_controller_manager": kcm_port,
        "kube_scheduler": sched_port,
    }
    spawned: list[_Spawned] = []
    state: dict[str, Any] = {
        "workdir": str(workdir),
        "processes": {},
        "pids": {},
        "ports": ports,
        "server": server,
    }

    def launch(name: str, argv: list[str], env: Mapping[str, str] | None = None) -> _Spawned:
        sp = _spawn(name, argv, logs, env)
        spawned.append(sp)
        state["pids"][name] = sp.proc.pid
        state["processes"][name] = {"pid": sp.proc.pid, "start_time": processes.start_time(sp.proc.pid)}
        return sp

    try:
        etcd_url = f"http://127.0.0.1:{etcd_client}"
        peer_url = f"http://127.0.0.1:{etcd_peer}"
        launch(
            "etcd",
            [
                str(bins.etcd),
                "--name=testbed",
                f"--data-dir={etcd_data}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=testbed={peer_url}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        _wait(
            "etcd /health",
            lambda: _http_get_json(f"{etcd_url}/health").get("health") == "true",
            spawned,
            deadline,
        )
        launch(
            "kube-apiserver",
            [
                str(bins.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--authorization-mode=RBAC,Node",
                # Added to the default plugin set (which stays enabled).
                "--enable-admission-plugins=NodeRestriction",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--kubelet-preferred-address-types=InternalIP",
                # The "kubernetes" Service's endpoints would be 127.0.0.1, which the
                # Endpoints/EndpointSlice validation refuses: publish none.
                "--endpoint-reconciler-type=none",
                f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
                "--allow-privileged=true",
                f"--profiling={'true' if profiling else 'false'}",
            ],
        )
        api = _Api(server, pki, "admin")

        def readyz() -> bool:
            code, body = api.request("GET", "/readyz")
            return code == 200 and body == "ok"

        _wait("kube-apiserver /readyz", readyz, spawned, deadline)
        timings["apiserver_ready"] = time.monotonic() - t0
        _log(f"kube-apiserver ready at {server} after {timings['apiserver_ready']:.1f}s")

        for name, port, stem, extra in (
            (
                "kube-controller-manager",
                kcm_port,
                "kube-controller-manager",
                [
                    "--controllers=*",
                    "--use-service-account-credentials=true",
                    f"--service-account-private-key-file={pki / 'sa.key'}",
                    f"--root-ca-file={pki / 'ca.crt'}",
                    f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                    f"--cluster-signing-key-file={pki / 'ca.key'}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                ],
            ),
            ("kube-scheduler", sched_port, "kube-scheduler", []),
        ):
            kc = kubeconfigs[stem]
            launch(
                name,
                [
                    str(bins.kube_dir / name),
                    f"--kubeconfig={kc}",
                    f"--authentication-kubeconfig={kc}",
                    f"--authorization-kubeconfig={kc}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={port}",
                    "--leader-elect=false",
                    *extra,
                ],
            )

        # kwok acts as the "kubelet" of its fake nodes: it needs nodes, leases, pod status
        # and pod deletion across the cluster.
        api.create(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "postdeploy-testbed:kwok-controller"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [
                    {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "User",
                        "name": _CLIENTS["kwok"][0],
                    }
                ],
            },
        )
        kwok_config = workdir / "kwok.yaml"
        kwok_config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
                    "kind": "KwokConfiguration",
                    "options": {},
                }
            )
        )
        key, value = FAKE_NODE_ANNOTATION
        launch(
            "kwok",
            [
                str(bins.kwok),
                f"--config={kwok_config}",
                f"--kubeconfig={kubeconfigs['kwok']}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={key}={value}",
                "--node-ip=127.0.0.1",
                f"--cidr={POD_CIDR}",
                "--node-lease-duration-seconds=40",
            ],
            # kwok also reads ~/.kwok/kwok.yaml when it exists: keep a user's out.
            env={"HOME": str(kwok_home)},
        )
        node_names = [f"kwok-node-{i}" for i in range(nodes)]
        for name in node_names:
            api.create("/api/v1/nodes", _fake_node(name))

        _wait(
            "kube-controller-manager /healthz",
            lambda: _insecure_get(f"https://127.0.0.1:{kcm_port}/healthz") == 200,
            spawned,
            deadline,
        )
        _wait(
            "kube-scheduler /healthz",
            lambda: _insecure_get(f"https://127.0.0.1:{sched_port}/healthz") == 200,
            spawned,
            deadline,
        )
        for name in node_names:
            _wait(f"node {name} Ready", functools.partial(_node_ready, api, name), spawned, deadline)
        _wait(
            "ServiceAccount default/default",
            lambda: api.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
            spawned,
            deadline,
        )
    except BaseException:
        _log(f"start failed; stopping what was started (logs in {logs})")
        stop(state)
        raise

    timings["ready"] = time.monotonic() - t0
    _log(f"cluster ready in {timings['ready']:.1f}s ({nodes} kwok nodes)")
    path_prefix = str(bins.kube_dir)
    state.update(
        {
            "nodes": node_names,
            "kubeconfigs": {k: str(v) for k, v in kubeconfigs.items()},
            "pki": str(pki),
            "logs": str(logs),
            "timings": {k: round(v, 2) for k, v in timings.items()},
            "path_prefix": [path_prefix],
            "env": {
                "KUBECONFIG": str(kubeconfigs["admin"]),
                "KUBECONFIG_ALICE": str(kubeconfigs[ALICE_USER]),
                **{f"KUBECONFIG_{user.upper()}": str(kubeconfigs[user]) for user in PEOPLE},
                "PATH": path_prefix + os.pathsep + os.environ.get("PATH", ""),
            },
        }
    )
    return state


def _stop_group(name: str, pgid: int, timeout: float) -> None:
    def say() -> None:
        _log(f"{name} did not stop within {timeout:.0f}s of SIGTERM; sending SIGKILL")

    processes.stop_group(pgid, timeout, on_kill=say)


def stop(state: dict[str, Any], timeout: float = _STOP_TIMEOUT) -> None:
    """Stop every process group of STATE, last started first: SIGTERM, SIGKILL after TIMEOUT s.

    Clients go first (kwok, scheduler, controller-manager), then kube-apiserver while
    etcd still answers, then etcd, so each shuts down cleanly and quickly. Raises
    TestbedError if a process of the test bed or one of its listening ports remains.
    """
    procs: dict[str, dict[str, Any]] = state.get("processes", {})
    groups: dict[str, int] = {}
    for name in reversed(START_ORDER):
        info = procs.get(name)
        if not info:
            continue
        pid = int(info["pid"])
        processes.reap(pid)
        known = info.get("start_time")
        now = processes.start_time(pid)
        leader_is_ours = now is not None and (known is None or now == known)
        # Each process leads its own group (start_new_session), so pgid == pid; the
        # group may outlive its leader, and a reused pid is not ours.
        if leader_is_ours or (now is None and processes.group_members(pid)):
            groups[name] = pid

    for name, pgid in groups.items():
        _stop_group(name, pgid, timeout)

    left = {n: processes.group_members(g) for n, g in groups.items() if processes.group_members(g)}
    if left:
        raise TestbedError(f"processes still running after stop: {left}")
    ports = [int(p) for p in state.get("ports", {}).values()]
    end = time.monotonic() + 5
    while processes.listening_ports(ports) and time.monotonic() < end:
        time.sleep(0.1)
    busy = processes.listening_ports(ports)
    if busy:
        raise TestbedError(f"ports still listening after stop: {busy}")


# --------------------------------------------------------------------------- CLI


def _print_env(state: Mapping[str, Any]) -> None:
    for key, value in state["env"].items():
        if key == "PATH":
            prefix = os.pathsep.join(state["path_prefix"])
            print(f'export PATH="{prefix}{os.pathsep}$PATH"')
        else:
            print(f"export {key}={value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.kube", description=__doc__)
    parser.add_argument("command", choices=("up", "down", "env"))
    parser.add_argument("dir", type=Path, help="work directory (state, logs, certificates)")
    parser.add_argument("--nodes", type=int, default=2, help="fake kwok nodes to create")
    args = parser.parse_args(argv)
    state_file: Path = args.dir / STATE_FILE
    if args.command == "up":
        if state_file.exists():
            parser.error(f"{state_file} exists: run 'down' first or use another directory")
        try:
            state = start(args.dir, nodes=args.nodes)
        except TestbedError as err:
            _log(f"error: {err}")
            return 1
        state_file.write_text(json.dumps(state, indent=2) + "\n")
        _print_env(state)
        return 0
    if not state_file.exists():
        parser.error(f"no {state_file}")
    state = json.loads(state_file.read_text())
    if args.command == "env":
        _print_env(state)
        return 0
    stop(state)
    state_file.unlink()
    _log("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
