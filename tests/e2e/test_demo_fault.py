"""``make demo DEMO_ARGS=--fault=error-spike`` on the session's test bed: a breach acted on.

Runs ``testbed.demo.run`` with the error-spike fault (half the requests fail 15 s into
the review) against the session's test bed, as ``tests/e2e/test_demo.py`` runs the
healthy demo, and reads what it printed and what the cluster holds. Covers:
- the before/after comparison ``error-rate`` fails on the spike (compared with traffic
  before the release, not Passed for want of it) and its ``onFailure: rollback`` rolls
  ``shop/checkout`` back to 1.0.0: the rollback record is Done, the verdict RolledBack;
- the demo prints the breach annotations on the Deployment and postdeploy's
  ``RolledBack`` Event on it.
"""

from __future__ import annotations

import io
import re
from typing import Any

import pytest

from testbed import demo
from tests.e2e.harness import ROOT, Kubectl
from tests.e2e.test_demo import demo_env  # noqa: F401  (the fixture)

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(1500)  # the demo takes 4-5 minutes, three times that on a loaded machine
def test_the_error_spike_fails_error_rate_and_rolls_checkout_back(
    demo_env: dict[str, str],  # noqa: F811
    kubectl: Kubectl,
    default_template: dict[str, Any],
) -> None:
    out = io.StringIO()
    code = demo.run(demo_env, fault="error-spike", out=out, output=ROOT / "artifacts" / "demo-fault-test")
    text = out.getvalue()
    (ROOT / "artifacts" / "demo-fault-test.txt").write_text(text)
    assert code == 0, text[-4000:]

    status = kubectl.get("shop", "pdr", demo.REVIEW)["status"]
    checks = {c["name"]: c for c in status["checks"]}
    error_rate = checks["error-rate"]
    assert error_rate["state"] == "Failed", error_rate
    details = error_rate.get("details") or {}
    assert details["ratioLower"] > 1 + details["minEffect"] and details["pValue"] < details["alpha"], details
    rollbacks = [a for a in status.get("actions") or [] if a["action"] == "rollback"]
    assert [(a["check"], a["state"]) for a in rollbacks] == [("error-rate", "Done")], rollbacks
    assert status["verdict"] == "RolledBack", status["verdict"]

    deployment = kubectl.get("shop", "deployment", "checkout")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == demo.IMAGE.format("1.0.0")
    annotations = deployment["metadata"].get("annotations") or {}
    assert annotations.get("postdeploy.io/breach-review") == f"shop/{demo.REVIEW}", annotations
    assert re.search(r"^\s+postdeploy\.io/breach-check: ", text, re.M), text[-3000:]
    assert re.search(r"^\s+Warning\s+RolledBack\s", text, re.M), text[-3000:]
