"""The operator under test: CRDs applied to the test bed, a namespace per test, and
postdeploy running as a real process (``python -m postdeploy run``).

Fixtures: ``crds`` (session: the generated CRDs applied), ``default_template`` (the
built-in ClusterReviewTemplate, for one test), ``namespace`` (a fresh
namespace with the sample Deployment ``checkout``, deleted afterwards),
``operator_env`` (what the operator process needs), ``run_operator`` (a factory for
operator processes, with optional ``postdeploy run`` arguments and namespaces to
watch, their admission webhooks on loopback; each is stopped and the webhook
configurations removed at the end of the test). Helpers wait for
conditions by polling the API server; none sleeps a fixed time.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_TEMPLATE = ROOT / "crds" / "postdeploy-default.yaml"
SAMPLE_DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: checkout
  labels: {app.kubernetes.io/name: checkout}
spec:
  replicas: 2
  revisionHistoryLimit: 5
  selector:
    matchLabels: {app.kubernetes.io/name: checkout}
  template:
    metadata:
      labels: {app.kubernetes.io/name: checkout}
    spec:
      containers:
        - name: checkout
          image: registry.example/shop/checkout:1.0.0
"""


class Kubectl:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = {**os.environ, **env}

    def __call__(self, *args: str, input_text: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            ["kubectl", *args],
            env=self.env,
            input=input_text,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout if check else result.stdout + result.stderr

    def apply(self, namespace: str, manifest: str | Mapping[str, Any]) -> str:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(dict(manifest))
        return self("-n", namespace, "apply", "-f", "-", input_text=text)

    def get(self, namespace: str, kind: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self("-n", namespace, "get", kind, name, "-o", "json"))
        return result

    def roll_out(self, namespace: str, version: str, deployment: str = "checkout") -> None:
        """Roll the sample Deployment out to ``version`` and wait until it is done."""
        image = f"registry.example/shop/checkout:{version}"
        self("-n", namespace, "set", "image", f"deployment/{deployment}", f"checkout={image}")
        self("-n", namespace, "rollout", "status", f"deployment/{deployment}", "--timeout=60s")

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        items = json.loads(
            self(
                "-n",
                namespace,
                "get",
                "events",
                "-o",
                "json",
                "--field-selector",
                f"involvedObject.name={name},involvedObject.kind=PostDeploymentReview",
            )
        )["items"]
        return list(items)


# An API server's refusal in an operator's log. A time stamp's milliseconds
# ("08:32:11,403") are not a status code: a stamp is left out before looking.
REFUSAL = re.compile(r"\b403\b|forbidden|not enough permissions", re.IGNORECASE)
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


def refusals(log: str) -> list[str]:
    """The lines of an operator's ``log`` that say the API server refused it."""
    return [line for line in log.splitlines() if REFUSAL.search(STAMP.sub("", line))]


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60.0, every: float = 0.5) -> Any:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


@pytest.fixture(scope="session")
def kubectl(kube_cluster: dict[str, Any]) -> Kubectl:
    return Kubectl(kube_cluster["env"])


@pytest.fixture(scope="session")
def crds(kubectl: Kubectl) -> None:
    # Only the CRDs: crds/ also ships the built-in ClusterReviewTemplate, which the API
    # server takes only once its CRD is established (see the default_template fixture).
    files = [p for p in sorted((ROOT / "crds").glob("*.yaml")) if p.name != DEFAULT_TEMPLATE.name]
    kubectl("apply", *(a for p in files for a in ("-f", str(p))))
    for name in ("postdeploymentreviews", "reviewtemplates", "clusterreviewtemplates"):
        kubectl("wait", "--for=condition=Established", f"crd/{name}.postdeploy.io", "--timeout=60s")


@pytest.fixture
def default_template(kubectl: Kubectl, crds: None) -> Iterator[dict[str, Any]]:
    """The built-in ``postdeploy-default`` ClusterReviewTemplate, installed for one test."""
    kubectl("apply", "-f", str(DEFAULT_TEMPLATE))
    yield yaml.safe_load(DEFAULT_TEMPLATE.read_text())
    kubectl("delete", "-f", str(DEFAULT_TEMPLATE), "--ignore-not-found", check=False)


@pytest.fixture
def namespace(kubectl: Kubectl, crds: None) -> Iterator[str]:
    name = f"pd-e2e-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    kubectl.apply(name, SAMPLE_DEPLOYMENT)
    kubectl("-n", name, "rollout", "status", "deployment/checkout", "--timeout=60s")
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def operator_env(kube_cluster: dict[str, Any], observability: dict[str, Any]) -> dict[str, str]:
    env = {**os.environ, **kube_cluster["env"]}
    env["POSTDEPLOY_PROMETHEUS_URL"] = observability["env"]["PROMETHEUS_URL"]
    env["POSTDEPLOY_ALERTMANAGER_URL"] = observability["env"]["ALERTMANAGER_URL"]
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "operator"), str(ROOT)])
    env["POSTDEPLOY_MEASURE_TIMEOUT"] = "5"
    # Operator settings of whoever runs the tests (a shard selector, a lease) must not
    # leak into the operators under test.
    for name in ("POSTDEPLOY_SELECTOR", "POSTDEPLOY_LEADER_LEASE"):
        env.pop(name, None)
    return env


class OperatorProcess:
    def __init__(
        self,
        env: Mapping[str, str],
        namespace: str | Sequence[str],
        log: pathlib.Path,
        args: Sequence[str] = (),
    ) -> None:
        self.log = log
        self.handle = open(log, "ab")  # noqa: SIM115 (closed in stop)
        watched = [namespace] if isinstance(namespace, str) else list(namespace)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "postdeploy",
                "run",
                *(option for name in watched for option in ("--namespace", name)),
                *args,
            ],
            env=dict(env),
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL: no clean-up, as when a node dies."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.handle.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


WEBHOOK_KINDS = ("mutatingwebhookconfiguration", "validatingwebhookconfiguration")


def webhooks_at(kubectl: Kubectl, name: str, port: int) -> bool:
    """Whether both webhook configurations ``name`` send every webhook to ``port``."""
    for kind in WEBHOOK_KINDS:
        raw = kubectl("get", kind, name, "-o", "json", check=False)
        if not raw.startswith("{"):
            return False
        hooks = json.loads(raw).get("webhooks") or []
        if not hooks or not all(f":{port}/" in (h.get("clientConfig") or {}).get("url", "") for h in hooks):
            return False
    return True


@pytest.fixture
def run_operator(
    operator_env: dict[str, str], namespace: str, tmp_path: pathlib.Path, kubectl: Kubectl
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start operator processes, with their admission webhooks on a free loopback port
    (``POSTDEPLOY_WEBHOOK=local``, the default).

    ``start`` returns at once, as before, unless the webhooks matter: asked for
    (``wait_for_webhooks=True``), or an earlier process of the test has stopped, whose
    configuration (kept, failing closed) would refuse reviews until the new process
    has rewritten it. Then it returns once the API server's configurations point at the
    new process (or it exited). At the end the processes stop and the configurations
    are deleted, as an uninstall does."""
    from testbed.ports import free_port as pick

    started: list[OperatorProcess] = []
    configurations: set[str] = set()

    def start(
        *,
        args: Sequence[str] = (),
        namespaces: Sequence[str] = (),
        wait_for_webhooks: bool = False,
        **extra_env: str,
    ) -> OperatorProcess:
        """An operator watching the test's namespace (or ``namespaces``), with ``args``."""
        env = {**operator_env, **extra_env}
        replaces_a_stopped_one = any(p.process.poll() is not None for p in started)
        webhook = env.get("POSTDEPLOY_WEBHOOK", "local") != "off"
        name = env.get("POSTDEPLOY_WEBHOOK_CONFIGURATION", "postdeploy.io")
        if webhook:
            env.setdefault("POSTDEPLOY_WEBHOOK_PORT", str(pick()))
            configurations.add(name)
        process = OperatorProcess(
            env, list(namespaces) or namespace, tmp_path / f"operator-{len(started)}.log", args
        )
        started.append(process)
        if webhook and (wait_for_webhooks or replaces_a_stopped_one):
            port = int(env["POSTDEPLOY_WEBHOOK_PORT"])
            wait_for(
                f"the webhooks of operator-{len(started) - 1} to be registered",
                lambda: process.process.poll() is not None or webhooks_at(kubectl, name, port),
                60,
            )
        return process

    yield start
    for process in started:
        process.stop()
    for name in configurations:
        for kind in WEBHOOK_KINDS:
            kubectl("delete", kind, name, "--ignore-not-found", check=False)


@pytest.fixture
def free_port() -> int:
    """A loopback port nothing listens on (for a data source that is down)."""
    from testbed.ports import free_port as pick

    return pick()
