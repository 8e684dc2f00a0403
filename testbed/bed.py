"""The whole test bed at once: ``python -m testbed up|down|env``.

``up`` starts the Kubernetes control plane (``testbed.kube``), applies the sample
workload ``shop/checkout`` and waits for its pods, starts Prometheus, Alertmanager
and the sample app labelled like those pods, its traffic at the history's rate for
this hour of the day (``testbed.observability``), and
PostgreSQL (``testbed.postgres``). It writes ``.testbed/state.json`` (what ``down``
needs) and ``.testbed/env`` (shell-sourceable). ``down`` stops everything and
removes ``.testbed``. The pytest fixtures in ``tests/conftest.py`` call the same
component functions.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

from testbed import history, kube, observability, postgres

__all__ = ["DIRECTORY", "apply_sample_workload", "down", "env_file_text", "kubectl", "up"]

ROOT = pathlib.Path(__file__).resolve().parent.parent
DIRECTORY = ROOT / ".testbed"
SAMPLE = pathlib.Path(__file__).resolve().parent / "manifests" / "checkout.yaml"


def kubectl(env: Mapping[str, str], *args: str, input_text: str | None = None, timeout: float = 120.0) -> str:
    """Run the test bed's kubectl; its output, or RuntimeError with kubectl's message."""
    result = subprocess.run(
        ["kubectl", *args],
        env={**os.environ, **env},
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args[:4])} failed: {result.stderr.strip()[:500]}")
    return result.stdout


def apply_sample_workload(kube_env: Mapping[str, str], timeout: float = 60.0) -> list[str]:
    """Apply shop/checkout and wait until it is rolled out; return its pod names."""
    kubectl(kube_env, "apply", "-f", str(SAMPLE))
    kubectl(kube_env, "-n", "shop", "rollout", "status", "deployment/checkout", f"--timeout={int(timeout)}s")
    out = kubectl(
        kube_env,
        "-n",
        "shop",
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=checkout",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    )
    return sorted(out.split())


def env_file_text(env: Mapping[str, str]) -> str:
    lines = ["# postdeploy test bed: source this file (. .testbed/env)"]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in sorted(env.items())]
    return "\n".join(lines) + "\n"


def up(directory: pathlib.Path = DIRECTORY) -> dict[str, Any]:
    if (directory / "state.json").exists():
        raise RuntimeError(
            f"a test bed is already up ({directory}/state.json): run `make testbed-down` first"
        )
    directory.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    state: dict[str, Any] = {"directory": str(directory)}
    try:
        state["kube"] = kube.start(directory / "kube")
        _save(directory, state)
        kube_env = state["kube"]["env"]
        pods = apply_sample_workload(kube_env)
        # Live traffic continues the history's daily cycle, so "the same hour a week ago"
        # compares like with like from the first minute.
        live = {"rps": round(history.checkout_rps(time.time(), len(pods)), 1)}
        state["observability"] = observability.start(
            directory / "observability", pods=pods, sample_settings=live
        )
        _save(directory, state)
        state["postgres"] = postgres.start(directory / "postgres")
        _save(directory, state)
    except BaseException:
        down(directory)
        raise
    env: dict[str, str] = {}
    for part in ("kube", "observability", "postgres"):
        env.update(state[part]["env"])
    state["env"] = env
    state["startup_seconds"] = round(time.monotonic() - started, 1)
    _save(directory, state)
    (directory / "env").write_text(env_file_text(env))
    return state


def _save(directory: pathlib.Path, state: Mapping[str, Any]) -> None:
    (directory / "state.json").write_text(json.dumps(state, indent=2, default=str))


def down(directory: pathlib.Path = DIRECTORY) -> None:
    path = directory / "state.json"
    problems: list[str] = []
    if path.exists():
        state = json.loads(path.read_text())
        for name, module in (("postgres", postgres), ("observability", observability), ("kube", kube)):
            if name in state:
                try:
                    module.stop(state[name])
                except Exception as error:  # keep stopping the rest
                    problems.append(f"{name}: {error}")
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(directory)
    if problems:
        raise RuntimeError("; ".join(problems))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "up"
    if command == "up":
        state = up()
        print(f"test bed up in {state['startup_seconds']}s; `. {DIRECTORY}/env` to use it:")
        for key, value in sorted(state["env"].items()):
            if key != "PATH" and "DSN" not in key:
                print(f"  {key}={value}")
        return 0
    if command == "down":
        down()
        print("test bed down")
        return 0
    if command == "env":
        print((DIRECTORY / "env").read_text(), end="")
        return 0
    print(f"usage: python -m testbed up|down|env (got {command!r})", file=sys.stderr)
    return 2
