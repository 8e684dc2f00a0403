"""The ``observability`` fixture: one Prometheus/Alertmanager/sample-app bed per session.

Used by ``tests/e2e/test_observability.py`` (as ``pytest_plugins``) and by any e2e
test that needs metrics or alerts; the shared ``tests/conftest.py`` may import it or
list this module in ``pytest_plugins``. The fixture starts ``testbed.observability``
under a session temporary directory and always stops it, also when a test fails; its
value is the component's state (``env["PROMETHEUS_URL"]``, ``env["ALERTMANAGER_URL"]``,
``env["SAMPLEAPP_CONTROL_URL"]``, ``env["SAMPLEAPP_METRICS_URL"]``, ``pods``,
``history``). Should it be registered twice (a conftest import and a plugin), both
registrations share the one bed, which stops after its last user is done.

Tests that steer the sample application must put its settings back (see
``testbed.sampleapp.steer``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from testbed import observability as bed

__all__ = ["observability"]

_SHARED: dict[str, Any] = {"state": None, "users": 0}


@pytest.fixture(scope="session")
def observability(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The running observability bed's state (see ``testbed.observability``)."""
    binaries = (
        bed.PROMETHEUS_BIN,
        bed.PROMTOOL_BIN,
        bed.ALERTMANAGER_BIN,
    )
    missing = [b for b in binaries if not os.access(b, os.X_OK)]
    if missing:
        pytest.skip(f"missing binaries: {', '.join(missing)}")
    if _SHARED["state"] is None:
        try:
            _SHARED["state"] = bed.start(tmp_path_factory.mktemp("observability"))
        except RuntimeError as err:
            pytest.fail(f"the observability test bed did not start: {err}", pytrace=False)
    _SHARED["users"] += 1
    try:
        yield _SHARED["state"]
    finally:
        _SHARED["users"] -= 1
        if _SHARED["users"] == 0:
            state, _SHARED["state"] = _SHARED["state"], None
            bed.stop(state)
