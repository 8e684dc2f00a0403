"""Helpers for tests that install postdeploy the way SREs do (the Helm chart, its
ServiceAccount as the operator's identity): a ``helm`` runner, the restricted
namespace, CRDs applied and established, a kubeconfig for a bare token.

The fixtures built on these are in ``tests/e2e/conftest_install.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from tests.e2e.harness import Kubectl

__all__ = [
    "CHART",
    "KUBE_VERSION",
    "RESTRICTED",
    "Helm",
    "Release",
    "apply_crds",
    "create_restricted_namespace",
    "helm_binary",
    "kubeconfig_for_token",
    "whoami",
]

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "postdeploy"
HELM_VERSION = "v3.19.0"
KUBE_VERSION = "v1.34.4"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


class Helm:
    def __init__(self, binary: str) -> None:
        self.binary = binary

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, *args], capture_output=True, text=True, timeout=120, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)}: {result.stderr.strip()}")
        return result

    def template(
        self,
        values: Mapping[str, Any] | None = None,
        release: str = "pd",
        namespace: str = "postdeploy",
        extra: Sequence[str] = (),
    ) -> str:
        """``helm template``; VALUES maps dotted keys to JSON values (``--set-json``)."""
        flags = [f"--set-json={key}={json.dumps(value)}" for key, value in (values or {}).items()]
        args = ["template", release, str(CHART), "-n", namespace, "--kube-version", KUBE_VERSION]
        return self(*args, *flags, *extra).stdout

    def render(
        self, values: Mapping[str, Any] | None = None, release: str = "pd", namespace: str = "postdeploy"
    ) -> list[dict[str, Any]]:
        """The chart's objects (no CRDs), as dicts."""
        return [d for d in yaml.safe_load_all(self.template(values, release, namespace)) if d]


def helm_binary() -> str:
    """``$HELM``, else the binary ``testbed/build-binaries.sh`` builds."""
    cache = pathlib.Path(os.environ.get("POSTDEPLOY_CACHE", pathlib.Path.home() / ".cache" / "postdeploy"))
    return os.environ.get("HELM") or str(cache / "bin" / f"helm-{HELM_VERSION}" / "helm")


@dataclasses.dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    fullname: str
    service_account: str
    objects: Sequence[dict[str, Any]]
    apply_output: str


def apply_crds(kubectl: Kubectl, directory: pathlib.Path) -> None:
    kubectl("apply", "-f", str(directory))
    for document in (d for p in sorted(directory.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())):
        name = document["metadata"]["name"]
        kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


def create_restricted_namespace(kubectl: Kubectl, name: str) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": RESTRICTED},
    }
    kubectl("apply", "-f", "-", input_text=yaml.safe_dump(manifest))


def kubeconfig_for_token(kube_cluster: Mapping[str, Any], token: str, path: pathlib.Path) -> pathlib.Path:
    """A kubeconfig that authenticates with TOKEN alone, to the test bed's API server."""
    ca = pathlib.Path(kube_cluster["pki"]) / "ca.crt"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "testbed",
                "cluster": {"server": kube_cluster["server"], "certificate-authority": str(ca)},
            }
        ],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "testbed", "user": "operator"}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def whoami(kubectl: Kubectl, kubeconfig: pathlib.Path) -> str:
    """The user name the API server sees for KUBECONFIG."""
    out = kubectl("--kubeconfig", str(kubeconfig), "auth", "whoami", "-o", "json", check=False)
    try:
        return str(json.loads(out)["status"]["userInfo"]["username"])
    except (ValueError, KeyError):
        return ""
