"""Health and high availability: kopf's liveness endpoint and kopf peering.

Covers, with the operator as real processes on the test bed:
- the liveness endpoint the chart probes (``--liveness``) answers 200 once the
  operator runs, also on a standby peer;
- two operators in one peering (a KopfPeering in the watched namespace, the CRD from
  the chart) with different priorities: both announce themselves in it, the higher one
  resumes (kopf starts every peer paused), the lower one stays paused;
  a review is created, the active one is SIGKILLed mid-review (as when its node dies),
  the standby resumes once the dead peer's lifetime has passed and finishes the review
  with verdict Passed; no slot ran twice, no Event was posted twice, nothing was lost;
- replicas started without ``--priority`` get distinct random priorities (kopf would
  pause every peer if the highest priority were shared).
"""

from __future__ import annotations

import collections
import json
import pathlib
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import httpx
import pytest

from testbed.ports import free_port
from tests.e2e import test_reviews
from tests.e2e.harness import ROOT, Kubectl, OperatorProcess, wait_for
from tests.e2e.installs import CHART, apply_crds

PEERING = "postdeploy-ha"
LIFETIME = 5  # seconds a silent peer still counts as alive: the takeover time
steer = test_reviews.steer


class PeeredOperator(OperatorProcess):
    """An operator process with extra ``postdeploy run`` arguments (peering, liveness)."""

    def __init__(
        self, env: Mapping[str, str], namespace: str, log: pathlib.Path, args: Sequence[str]
    ) -> None:
        self.log = log
        self.handle = open(log, "ab")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "postdeploy", "run", "--namespace", namespace, *args],
            env=dict(env),
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )


@pytest.fixture
def peers(
    operator_env: dict[str, str], namespace: str, kubectl: Kubectl, tmp_path: pathlib.Path
) -> Iterator[Callable[..., tuple[PeeredOperator, str]]]:
    """Start operators in the peering PEERING of the test's namespace; returns (process, health URL)."""
    apply_crds(kubectl, CHART / "crds")
    kubectl.apply(
        namespace, {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}}
    )
    started: list[PeeredOperator] = []

    def start(*args: str) -> tuple[PeeredOperator, str]:
        health = f"http://127.0.0.1:{free_port()}/healthz"
        process = PeeredOperator(
            operator_env,
            namespace,
            tmp_path / f"peer-{len(started)}.log",
            ["--peering", PEERING, "--peering-lifetime", str(LIFETIME), "--liveness", health, *args],
        )
        started.append(process)
        return process, health

    yield start
    for process in started:
        process.stop()


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def active(process: OperatorProcess) -> bool:
    """Whether kopf's last word on peering in PROCESS's log is that it resumed.

    kopf starts paused in a peering; it logs "Resuming operations" once it sees no live
    peer with a higher priority, and "Pausing operations" when one shows up later.
    """
    said = re.findall(r"(Resuming|Pausing) operations", process.output())
    return bool(said) and said[-1] == "Resuming"


def peers_in(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    status: dict[str, Any] = kubectl.get(namespace, "kopfpeering", PEERING).get("status") or {}
    return status


def test_standby_takes_over_a_review_when_the_active_operator_dies(
    kubectl: Kubectl,
    namespace: str,
    peers: Callable[..., tuple[PeeredOperator, str]],
    steer: Callable[..., None],
) -> None:
    steer(error_rate=0.0)
    first, first_health = peers("--priority", "200")
    wait_for("the first operator to resume as the only peer", lambda: active(first), 60)
    wait_for("its liveness endpoint", lambda: healthy(first_health), 30)
    standby, standby_health = peers("--priority", "100")
    wait_for("both peers in the KopfPeering", lambda: len(peers_in(kubectl, namespace)) == 2, 60)
    wait_for("the standby's liveness endpoint", lambda: healthy(standby_health), 30)
    assert active(first) and not active(standby)

    kubectl.apply(namespace, test_reviews.review("ha", test_reviews.healthy_phases(end="15s")))
    wait_for(
        "a few runs by the active operator",
        lambda: any(
            c.get("runs", 0) >= 2 for c in test_reviews.status_of(kubectl, namespace, "ha").get("checks", [])
        ),
        60,
    )
    first.kill()
    before = test_reviews.status_of(kubectl, namespace, "ha")
    assert "completed: verdict" not in standby.output()

    status = test_reviews.wait_verdict(kubectl, namespace, "ha", timeout=120)
    assert status["verdict"] == "Passed", json.dumps(status, indent=1)
    assert active(standby)
    assert "completed: verdict Passed" in standby.output(), "the standby finished it"
    for check in status["checks"]:
        old = next(c for c in before["checks"] if c["name"] == check["name"])
        assert check["runs"] >= old["runs"]
        assert check["runs"] <= check["lastSlot"] + 1, check
    events = kubectl.events(namespace, "ha")
    counts = collections.Counter((e["reason"], e["message"]) for e in events)
    assert not {k: n for k, n in counts.items() if n > 1}
    assert all(e.get("count", 1) == 1 for e in events)


def test_replicas_without_a_priority_get_distinct_ones(
    kubectl: Kubectl, namespace: str, peers: Callable[..., tuple[PeeredOperator, str]]
) -> None:
    first, _ = peers()
    second, _ = peers()

    def priorities() -> list[int]:
        found = [re.search(r"with priority (\d+)", p.output()) for p in (first, second)]
        return [int(m.group(1)) for m in found if m]

    chosen = wait_for(
        "both operators to choose a priority", lambda: len(priorities()) == 2 and priorities(), 60
    )
    assert chosen[0] != chosen[1]
    higher, lower = (first, second) if chosen[0] > chosen[1] else (second, first)
    wait_for("both peers in the KopfPeering", lambda: len(peers_in(kubectl, namespace)) == 2, 60)
    wait_for("the higher one to be the active one", lambda: active(higher) and not active(lower), 60)
    assert "Possibly conflicting operators" not in first.output() + second.output()
