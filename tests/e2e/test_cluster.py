"""End-to-end tests of the local Kubernetes test bed (``testbed/kube.py``).

What they cover, against real etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok processes on 127.0.0.1, driven with the built kubectl:

1. Deployments work: one applied with kubectl is scheduled onto the fake kwok nodes
   and rolls out to Running, Ready pods; ``kubectl set image`` rolls out a new
   template; ``kubectl rollout undo`` brings the old template and image back (as
   revision 3), and the pods run the old image again.
2. RBAC is enforced: the non-admin user ``alice`` (``kubectl auth whoami``: no group
   but ``system:authenticated``) is refused listing secrets with HTTP 403 Forbidden,
   both through kubectl and with her client certificate directly; after the admin
   creates a Role and RoleBinding she may list them in that namespace, and is still
   refused in another one.
3. ``stop()`` cleans up: a second, separate test bed is started and stopped; none of
   its processes (nor any process naming its work directory) remains, and none of
   its ports is still listening or cannot be bound again.

All objects live in namespaces these tests create (``e2e-cluster-*``) and delete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed import kube, processes

pytestmark = pytest.mark.e2e

IMAGE_V1 = "registry.local/postdeploy/web:1.0"
IMAGE_V2 = "registry.local/postdeploy/web:2.0"
REPLICAS = 3


def kubectl(
    cluster: dict[str, Any],
    *args: str,
    user: str = "admin",
    stdin: str | None = None,
    check: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run the test bed's own kubectl as ``admin`` or ``alice``."""
    env = {**os.environ, **cluster["env"]}
    if user == kube.ALICE_USER:
        env["KUBECONFIG"] = cluster["env"]["KUBECONFIG_ALICE"]
    exe = shutil.which("kubectl", path=env["PATH"])
    assert exe is not None and Path(exe).parent == Path(cluster["path_prefix"][0])
    proc = subprocess.run(
        [exe, *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def get_json(cluster: dict[str, Any], *args: str) -> Any:
    return json.loads(kubectl(cluster, "get", *args, "-o", "json").stdout)


def wait_for(what: str, predicate: Any, timeout: float = 60) -> Any:
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


@contextlib.contextmanager
def _namespaces(cluster: dict[str, Any], count: int) -> Iterator[list[str]]:
    names = [f"e2e-cluster-{uuid.uuid4().hex[:8]}" for _ in range(count)]
    for name in names:
        kubectl(cluster, "create", "namespace", name)
    try:
        yield names
    finally:
        for name in names:
            kubectl(cluster, "delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def namespace(kube_cluster: dict[str, Any]) -> Iterator[str]:
    with _namespaces(kube_cluster, 1) as names:
        yield names[0]


@pytest.fixture
def two_namespaces(kube_cluster: dict[str, Any]) -> Iterator[tuple[str, str]]:
    with _namespaces(kube_cluster, 2) as names:
        yield names[0], names[1]


def _deployment(name: str, image: str) -> str:
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "replicas": REPLICAS,
                "selector": {"matchLabels": {"app": name}},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
                },
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "containers": [
                            {
                                "name": "web",
                                "image": image,
                                "ports": [{"containerPort": 8080}],
                                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                            }
                        ],
                    },
                },
            },
        }
    )


def _live_pods(cluster: dict[str, Any], ns: str, app: str) -> list[dict[str, Any]]:
    pods = get_json(cluster, "pods", "-n", ns, "-l", f"app={app}")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def _ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status", {})
    return status.get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
    )


def _pods_ready_with(cluster: dict[str, Any], ns: str, app: str, image: str) -> bool:
    pods = _live_pods(cluster, ns, app)
    return len(pods) == REPLICAS and all(
        _ready(p) and p["spec"]["containers"][0]["image"] == image for p in pods
    )


def _rollout(cluster: dict[str, Any], ns: str, name: str) -> None:
    kubectl(cluster, "rollout", "status", f"deployment/{name}", "-n", ns, "--timeout=90s")


def test_deployment_rollout_and_undo(kube_cluster: dict[str, Any], namespace: str) -> None:
    cluster, ns = kube_cluster, namespace
    print(f"test bed start-up timings (s): {cluster['timings']}")

    kubectl(cluster, "apply", "-n", ns, "-f", "-", stdin=_deployment("web", IMAGE_V1))
    _rollout(cluster, ns, "web")
    wait_for("3 Ready pods of v1", lambda: _pods_ready_with(cluster, ns, "web", IMAGE_V1))
    pods = _live_pods(cluster, ns, "web")
    assert {p["spec"]["nodeName"] for p in pods} <= set(cluster["nodes"])
    assert all(p["status"].get("podIP") for p in pods)
    deploy = get_json(cluster, "deployment", "web", "-n", ns)
    assert deploy["status"]["readyReplicas"] == REPLICAS
    assert deploy["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"

    kubectl(cluster, "set", "image", "deployment/web", f"web={IMAGE_V2}", "-n", ns)
    _rollout(cluster, ns, "web")
    wait_for("3 Ready pods of v2", lambda: _pods_ready_with(cluster, ns, "web", IMAGE_V2))
    deploy = get_json(cluster, "deployment", "web", "-n", ns)
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE_V2
    assert deploy["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"

    kubectl(cluster, "rollout", "undo", "deployment/web", "-n", ns)
    _rollout(cluster, ns, "web")
    deploy = get_json(cluster, "deployment", "web", "-n", ns)
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE_V1
    assert deploy["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    wait_for("3 Ready pods of v1 again", lambda: _pods_ready_with(cluster, ns, "web", IMAGE_V1))
    history = kubectl(cluster, "rollout", "history", "deployment/web", "-n", ns).stdout
    assert "2" in history and "3" in history
    replicasets = get_json(cluster, "replicasets", "-n", ns, "-l", "app=web")["items"]
    images = {rs["spec"]["template"]["spec"]["containers"][0]["image"] for rs in replicasets}
    assert images == {IMAGE_V1, IMAGE_V2}


def _alice_get(cluster: dict[str, Any], path: str) -> tuple[int, Any]:
    """GET PATH with alice's client certificate, straight over HTTPS."""
    pki = Path(cluster["pki"])
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "alice.crt"), str(pki / "alice.key"))
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx)
    )
    try:
        with opener.open(cluster["server"] + path, timeout=10) as resp:
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return int(err.code), json.loads(err.read())


def test_rbac_refuses_alice_until_bound(
    kube_cluster: dict[str, Any],
    two_namespaces: tuple[str, str],
) -> None:
    cluster = kube_cluster
    ns, other = two_namespaces

    whoami = json.loads(kubectl(cluster, "auth", "whoami", "-o", "json", user="alice").stdout)
    assert whoami["status"]["userInfo"]["username"] == "alice"
    assert whoami["status"]["userInfo"].get("groups") == ["system:authenticated"]

    refused = kubectl(cluster, "get", "secrets", "-n", ns, user="alice", check=False)
    assert refused.returncode != 0
    assert "Forbidden" in refused.stderr
    assert 'User "alice" cannot list resource "secrets"' in refused.stderr
    code, status = _alice_get(cluster, f"/api/v1/namespaces/{ns}/secrets")
    assert (code, status["reason"]) == (403, "Forbidden")

    kubectl(cluster, "create", "role", "secret-reader", "--verb=get,list", "--resource=secrets", "-n", ns)
    kubectl(
        cluster,
        "create",
        "rolebinding",
        "alice-secret-reader",
        "--role=secret-reader",
        "--user=alice",
        "-n",
        ns,
    )
    wait_for(
        "alice to be allowed to list secrets",
        lambda: (
            kubectl(
                cluster, "auth", "can-i", "list", "secrets", "-n", ns, user="alice", check=False
            ).stdout.strip()
            == "yes"
        ),
        timeout=30,
    )
    kubectl(cluster, "get", "secrets", "-n", ns, user="alice")
    code, body = _alice_get(cluster, f"/api/v1/namespaces/{ns}/secrets")
    assert code == 200 and body["kind"] == "SecretList"

    code, status = _alice_get(cluster, f"/api/v1/namespaces/{other}/secrets")
    assert (code, status["reason"]) == (403, "Forbidden")
    # Only get and list were granted: creating one is still refused.
    denied = kubectl(
        cluster,
        "create",
        "secret",
        "generic",
        "alice-made",
        "--from-literal=k=v",
        "-n",
        ns,
        user="alice",
        check=False,
    )
    assert denied.returncode != 0
    assert 'User "alice" cannot create resource "secrets"' in denied.stderr


def _processes_naming(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and processes.alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_stop_leaves_nothing(tmp_path: Path) -> None:
    workdir = tmp_path / "bed"
    started = time.monotonic()
    state = kube.start(workdir, nodes=1)
    print(f"second test bed ready in {time.monotonic() - started:.1f}s")
    try:
        pids = list(state["pids"].values())
        ports = list(state["ports"].values())
        assert set(state["pids"]) == set(kube.START_ORDER)
        assert all(processes.alive(p) for p in pids)
        assert set(processes.listening_ports(ports)) == set(ports)
        assert _processes_naming(str(workdir))
    finally:
        stopped = time.monotonic()
        kube.stop(state)
        print(f"stopped in {time.monotonic() - stopped:.1f}s")
    assert [p for p in pids if processes.alive(p)] == []
    assert _processes_naming(str(workdir)) == []
    assert processes.listening_ports(ports) == []
    assert all(_bindable(p) for p in ports)
    assert (workdir / "logs" / "kube-apiserver.log").stat().st_size > 0
