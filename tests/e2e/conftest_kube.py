"""The ``kube_cluster`` fixture: one local Kubernetes test bed per test session.

Load it as a plugin (``pytest_plugins = ["tests.e2e.conftest_kube"]``) or import it.
The fixture starts ``testbed.kube`` under a pytest temporary directory and stops it
at the end of the session; ``stop`` raises if a process or listening port survives.
Should the fixture be registered twice (say, by a conftest and by a test module),
both registrations share the one cluster, which stops after the last user is done.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from testbed import kube

__all__ = ["kube_cluster"]

_SHARED: dict[str, Any] = {"state": None, "users": 0}


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The running test bed's state: ``env`` (KUBECONFIG, KUBECONFIG_ALICE, PATH), ports, pids."""
    if _SHARED["state"] is None:
        try:
            _SHARED["state"] = kube.start(tmp_path_factory.mktemp("kube"))
        except kube.TestbedError as err:
            pytest.fail(f"the Kubernetes test bed did not start: {err}", pytrace=False)
    _SHARED["users"] += 1
    try:
        yield _SHARED["state"]
    finally:
        _SHARED["users"] -= 1
        if _SHARED["users"] == 0:
            state, _SHARED["state"] = _SHARED["state"], None
            kube.stop(state)
