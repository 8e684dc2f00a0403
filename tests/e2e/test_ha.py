"""The chart's health probes and its two-replica install, run as the chart configures them.

Covers, with the operator as real processes on the test bed:
- the liveness endpoint the chart's probes use (``--liveness``) answers 200 once the
  operator runs, also on a replica that is not the leader;
- the chart with ``replicas: 2`` (release ``pd-ha``, applied by the ``ha_release``
  fixture): two operators with the environment its Deployment sets (the Lease in the
  release's namespace, ``POD_NAME`` as identity) and only its ServiceAccount's token.
  One holds the Lease; a review is created; the leader is SIGKILLed mid-review (as when
  its node dies); the other takes the Lease once it expires and finishes the review
  with verdict Passed: no slot ran twice, no Event was posted twice, nothing was lost,
  and neither log holds a refusal (the Role for the one Lease suffices).

``tests/e2e/test_leadership.py`` covers the election itself with admin credentials.
"""

from __future__ import annotations

import collections
import datetime
import json
import pathlib
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence

import httpx

from testbed.ports import free_port
from tests.e2e import test_reviews
from tests.e2e.harness import ROOT, Kubectl, OperatorProcess, refusals, wait_for
from tests.e2e.installs import Release

pytest_plugins = ["tests.e2e.conftest_install"]

LEASE_SECONDS = "6"  # the chart's 15 s, shortened: the takeover time
# (not the ",403" of a log line's milliseconds)
steer = test_reviews.steer


class OperatorWithArgs(OperatorProcess):
    """An operator process with extra ``postdeploy run`` arguments."""

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


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def holder(kubectl: Kubectl, namespace: str, name: str) -> str | None:
    out = kubectl("-n", namespace, "get", "lease", name, "-o", "json", check=False)
    try:
        spec = json.loads(out).get("spec", {})
    except ValueError:
        return None
    return str(spec["holderIdentity"]) if spec.get("holderIdentity") else None


def test_liveness_endpoint_answers_on_leader_and_standby(
    operator_env: dict[str, str], namespace: str, tmp_path: pathlib.Path
) -> None:
    lease = {"POSTDEPLOY_LEADER_LEASE": f"{namespace}/liveness-leader", "POSTDEPLOY_LEASE_SECONDS": "6"}
    processes = []
    try:
        for name in ("a", "b"):
            url = f"http://127.0.0.1:{free_port()}/healthz"
            env = {**operator_env, **lease, "POD_NAME": f"replica-{name}"}
            processes.append(OperatorWithArgs(env, namespace, tmp_path / f"{name}.log", ["--liveness", url]))
            wait_for(f"replica-{name}'s liveness endpoint", lambda u=url: healthy(u), 60)
    finally:
        for process in processes:
            process.stop()


def test_chart_ha_install_survives_the_loss_of_its_leader(
    kubectl: Kubectl,
    namespace: str,
    run_operator: Callable[..., OperatorProcess],
    steer: Callable[..., None],
    ha_release: Release,
    ha_kubeconfig: pathlib.Path,
) -> None:
    deployment = next(o for o in ha_release.objects if o["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    rendered = {e["name"]: e.get("value") for e in container["env"]}
    lease_namespace, _, lease_name = rendered["POSTDEPLOY_LEADER_LEASE"].partition("/")
    assert lease_namespace == ha_release.namespace
    env = {
        "KUBECONFIG": str(ha_kubeconfig),
        "POSTDEPLOY_LEADER_LEASE": rendered["POSTDEPLOY_LEADER_LEASE"],
        "POSTDEPLOY_LEASE_SECONDS": LEASE_SECONDS,
    }

    def lease_holder() -> str | None:
        return holder(kubectl, lease_namespace, lease_name)

    steer(error_rate=0.0)
    first = run_operator(**env, POD_NAME="replica-a")
    wait_for("replica-a to hold the Lease", lambda: lease_holder() == "replica-a", 60)
    second = run_operator(**env, POD_NAME="replica-b")

    # The phases count from now, not from the Deployment's rollout (see test_leadership).
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    phases = test_reviews.healthy_phases(end="15s")
    kubectl.apply(namespace, test_reviews.review("ha", phases, deployedAt=now))
    wait_for(
        "a few runs by the leader",
        lambda: any(
            c.get("runs", 0) >= 2 for c in test_reviews.status_of(kubectl, namespace, "ha").get("checks", [])
        ),
        60,
    )
    assert lease_holder() == "replica-a"
    first.kill()
    before = test_reviews.status_of(kubectl, namespace, "ha")
    wait_for("replica-b to take the Lease", lambda: lease_holder() == "replica-b", 60)

    status = test_reviews.wait_verdict(kubectl, namespace, "ha", timeout=120)
    assert status["verdict"] == "Passed", json.dumps(status, indent=1)
    for check in status["checks"]:
        old = next(c for c in before["checks"] if c["name"] == check["name"])
        assert check["runs"] >= old["runs"]
        assert check["runs"] <= test_reviews.slots_of(status, check), check
    events = kubectl.events(namespace, "ha")
    counts = collections.Counter((e["reason"], e["message"]) for e in events)
    assert not {k: n for k, n in counts.items() if n > 1}
    assert all(e.get("count", 1) == 1 for e in events)
    for process in (first, second):
        refused = refusals(process.output())
        assert not refused, "\n".join(refused)
