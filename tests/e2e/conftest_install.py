"""Fixtures that install postdeploy on the test bed as SREs do.

Load it as a plugin in a test module (``pytest_plugins = ["tests.e2e.conftest_install"]``):

- ``helm`` (session): a ``Helm`` runner (``tests/e2e/installs.py``) for the binary
  ``testbed/build-binaries.sh`` builds (``$HELM`` overrides it).
- ``chart_release`` (session): the default chart rendered as release ``pd-e2e`` in the
  namespace ``pd-e2e-system`` (labelled Pod Security ``restricted``) and applied to the
  test bed, CRDs first, with warnings as errors, but without the built-in template
  (other tests expect a cluster without it) and without the webhook configurations
  (nothing on the test bed answers at the chart's Service); its value says what was
  installed.
- ``service_account_kubeconfig`` (session): a kubeconfig for that ServiceAccount, with
  a token from ``kubectl create token --duration``: no client certificate, no admin.
- ``ha_release``, ``ha_kubeconfig`` (session): the same for the chart with two
  replicas (leader election on a Lease), release ``pd-ha`` in ``pd-ha-system``.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
from typing import Any

import pytest
import yaml

from tests.e2e.harness import Kubectl, wait_for
from tests.e2e.installs import (
    CHART,
    Helm,
    Release,
    apply_crds,
    create_restricted_namespace,
    helm_binary,
    kubeconfig_for_token,
    whoami,
)

__all__ = ["chart_release", "ha_kubeconfig", "ha_release", "helm", "install", "service_account_kubeconfig"]


@pytest.fixture(scope="session")
def helm() -> Helm:
    binary = helm_binary()
    if not os.access(binary, os.X_OK):
        pytest.fail(f"no helm at {binary}: run testbed/build-binaries.sh", pytrace=False)
    return Helm(binary)


def install(kubectl: Kubectl, helm: Helm, release: str, namespace: str, values: dict[str, Any]) -> Release:
    """Render the chart with VALUES and apply it in NAMESPACE (Pod Security restricted)."""
    create_restricted_namespace(kubectl, namespace)
    apply_crds(kubectl, CHART / "crds")
    rendered = helm.template(values, release, namespace)
    # Without the webhook configurations: they call the operator through its Service, and
    # the test bed has no Service network (no kube-proxy), so with failurePolicy Fail they
    # would refuse every review. Tests run the operator as a process whose webhooks are on
    # loopback (POSTDEPLOY_WEBHOOK=local), which writes its own configurations.
    kept = [
        d
        for d in yaml.safe_load_all(rendered)
        if d and d["kind"] not in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
    ]
    rendered = yaml.safe_dump_all(kept)
    # --warnings-as-errors: a Pod Security "would violate" warning fails the apply.
    result = subprocess.run(
        ["kubectl", "apply", "--warnings-as-errors", "-f", "-"],
        env=kubectl.env,
        input=rendered,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    objects = [d for d in yaml.safe_load_all(rendered) if d]
    account = next(o for o in objects if o["kind"] == "ServiceAccount")
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    return Release(
        name=release,
        namespace=namespace,
        fullname=deployment["metadata"]["name"],
        service_account=account["metadata"]["name"],
        objects=objects,
        apply_output=result.stdout + result.stderr,
    )


def token_kubeconfig(
    kube_cluster: dict[str, Any], kubectl: Kubectl, release: Release, path: pathlib.Path
) -> pathlib.Path:
    """A kubeconfig for RELEASE's ServiceAccount: a token from ``kubectl create token``."""
    token = kubectl(
        "-n", release.namespace, "create", "token", release.service_account, "--duration=2h"
    ).strip()
    kubeconfig_for_token(kube_cluster, token, path)
    wait_for(
        "the API server to accept the token",
        lambda: whoami(kubectl, path).endswith(f":{release.service_account}"),
        30,
    )
    return path


@pytest.fixture(scope="session")
def chart_release(kubectl: Kubectl, helm: Helm) -> Release:
    # Without the built-in ClusterReviewTemplate: the other e2e tests expect a cluster
    # without it (tests that need it install it); test_install dry-runs it.
    return install(kubectl, helm, "pd-e2e", "pd-e2e-system", {"defaultTemplate.install": False})


@pytest.fixture(scope="session")
def service_account_kubeconfig(
    kube_cluster: dict[str, Any],
    kubectl: Kubectl,
    chart_release: Release,
    tmp_path_factory: pytest.TempPathFactory,
) -> pathlib.Path:
    path = tmp_path_factory.mktemp("service-account") / "operator.kubeconfig"
    return token_kubeconfig(kube_cluster, kubectl, chart_release, path)


@pytest.fixture(scope="session")
def ha_release(kubectl: Kubectl, helm: Helm) -> Release:
    """The chart with two replicas (leader election), as release ``pd-ha`` in ``pd-ha-system``."""
    return install(kubectl, helm, "pd-ha", "pd-ha-system", {"replicas": 2, "defaultTemplate.install": False})


@pytest.fixture(scope="session")
def ha_kubeconfig(
    kube_cluster: dict[str, Any],
    kubectl: Kubectl,
    ha_release: Release,
    tmp_path_factory: pytest.TempPathFactory,
) -> pathlib.Path:
    path = tmp_path_factory.mktemp("ha-service-account") / "operator.kubeconfig"
    return token_kubeconfig(kube_cluster, kubectl, ha_release, path)
