"""Two operator replicas with leader election on a Lease.

Covers: exactly one replica holds the Lease and ticks; the standby follows the
leader's status; when the leader is SIGKILLed mid-review the standby takes the Lease
once it expires and finishes the review with the verdict a single replica gives,
running no slot twice and posting no Event twice.
"""

from __future__ import annotations

import collections
import datetime
import json
from collections.abc import Callable
from typing import Any

from tests.e2e.harness import Kubectl, OperatorProcess, wait_for
from tests.e2e.test_reviews import healthy_phases, review, slots_of, status_of, steer, wait_verdict

__all__ = ["steer"]
LEASE_SECONDS = "6"


def _holder(kubectl: Kubectl, namespace: str) -> str | None:
    out = kubectl("-n", namespace, "get", "lease", "postdeploy-leader", "-o", "json", check=False)
    try:
        lease: dict[str, Any] = json.loads(out)
    except ValueError:
        return None
    holder = lease.get("spec", {}).get("holderIdentity")
    return str(holder) if holder else None


def test_standby_takes_over_after_the_leader_dies(
    kubectl: Kubectl, namespace: str, run_operator: Callable[..., OperatorProcess], steer: Callable[..., None]
) -> None:
    steer(error_rate=0.0)
    env = {
        "POSTDEPLOY_LEADER_LEASE": f"{namespace}/postdeploy-leader",
        "POSTDEPLOY_LEASE_SECONDS": LEASE_SECONDS,
    }
    first = run_operator(**env, POD_NAME="replica-a")
    holder = wait_for("a leader", lambda: _holder(kubectl, namespace), 30)
    assert holder == "replica-a"
    second = run_operator(**env, POD_NAME="replica-b")
    # The phases count from now, not from the Deployment's rollout: starting two
    # operators on a loaded machine can take longer than the first phase.
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    kubectl.apply(namespace, review("ha", healthy_phases(end="15s"), deployedAt=now))
    wait_for(
        "a few runs",
        lambda: any(c.get("runs", 0) >= 2 for c in status_of(kubectl, namespace, "ha").get("checks", [])),
        60,
    )
    assert _holder(kubectl, namespace) == "replica-a"  # the standby did not take over
    first.kill()
    wait_for("the standby to lead", lambda: _holder(kubectl, namespace) == "replica-b", 40)
    status = wait_verdict(kubectl, namespace, "ha")
    assert status["verdict"] == "Passed", json.dumps(status, indent=1)
    for check in status["checks"]:
        assert check["runs"] <= slots_of(status, check), check
    counts = collections.Counter((e["reason"], e["message"]) for e in kubectl.events(namespace, "ha"))
    assert not {k: n for k, n in counts.items() if n > 1}
    assert "leadership acquired (replica-b)" in second.output()
    assert "leadership acquired" not in second.output().split("leadership acquired (replica-b)")[0]
