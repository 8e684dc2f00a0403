"""The install step (``testbed/install.sh``) is what makes a fresh checkout work.

Covers, against a new virtual environment in a temporary directory:

- before the install step the venv imports none of the project's packages;
- after it, ``postdeploy`` and every runtime and test dependency import from the venv
  with no ``PYTHONPATH`` and outside the checkout, and the venv's ``postdeploy``,
  ``kubectl-postdeploy``, ``pytest``, ``ruff`` and ``mypy`` run; Debian's packages and
  the Go binaries the test bed needs are there;
- a second run is a no-op: it says every part is present, runs no pip (the stamp file
  and the venv's site-packages are unchanged); it prints how long each run took;
- a changed ``pyproject.toml`` (a stamp that no longer matches) makes it install again.

Slow (a ``pip install`` into an empty venv, one to four minutes here), hence e2e.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
INSTALL = ROOT / "testbed" / "install.sh"
BINARIES = pathlib.Path(os.environ.get("POSTDEPLOY_CACHE", pathlib.Path.home() / ".cache/postdeploy")) / "bin"
IMPORTS = [
    "postdeploy",
    "postdeploy.plugin",
    "kopf",
    "kubernetes",
    "aiohttp",
    "httpx",
    "pydantic",
    "psycopg",
    "jsonpath_ng",
    "yaml",
    "prometheus_client",
    "cryptography",
    "pytest",
    "pytest_asyncio",
    "pytest_timeout",
    "scipy",
    "mypy",
    "ruff",
]


def clean_env(venv: pathlib.Path) -> dict[str, str]:
    """The environment of a shell that has never seen the project: no PYTHONPATH, and
    no other venv (the one `make` runs in) on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    outer = os.environ.get("VENV")
    paths = [p for p in env["PATH"].split(os.pathsep) if not (outer and p.startswith(outer))]
    env["PATH"] = os.pathsep.join(paths)
    env["VENV"] = str(venv)
    return env


def install(venv: pathlib.Path) -> tuple[str, float]:
    began = time.monotonic()
    done = subprocess.run(
        [str(INSTALL)], env=clean_env(venv), cwd=ROOT, capture_output=True, text=True, timeout=1800
    )
    took = time.monotonic() - began
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stderr, took


def run_in(venv: pathlib.Path, tmp: pathlib.Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / argv[0]), *argv[1:]],
        env=clean_env(venv),
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=300,
    )


def site_packages(venv: pathlib.Path) -> set[str]:
    return {p.name for p in venv.glob("lib/python*/site-packages/*")}


@pytest.mark.timeout(2400)
def test_install_step_sets_up_a_fresh_venv_and_then_does_nothing(tmp_path: pathlib.Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True, env=clean_env(venv))
    probe = "import importlib.util, sys; print([m for m in sys.argv[1:] if importlib.util.find_spec(m)])"
    before = run_in(venv, tmp_path, "python", "-c", probe, *{m.split(".")[0] for m in IMPORTS})
    assert before.returncode == 0, before.stderr
    assert before.stdout.strip() == "[]", f"the fresh venv already has {before.stdout}"

    first, first_took = install(venv)
    assert "installing the Python packages" in first

    load = "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]"
    imported = run_in(venv, tmp_path, "python", "-c", load, *IMPORTS)
    assert imported.returncode == 0, imported.stderr
    where = run_in(venv, tmp_path, "python", "-c", "import postdeploy; print(postdeploy.__file__)")
    assert where.stdout.strip() == str(ROOT / "operator" / "postdeploy" / "__init__.py")
    for argv in (
        ["postdeploy", "--help"],
        ["kubectl-postdeploy", "--help"],
        ["pytest", "--version"],
        ["ruff", "--version"],
        ["mypy", "--version"],
    ):
        ran = run_in(venv, tmp_path, *argv)
        assert ran.returncode == 0, (argv, ran.stderr)
    for pkg in ("prometheus", "prometheus-alertmanager", "postgresql-15", "postgresql-contrib", "chromium"):
        assert subprocess.run(["dpkg", "-s", pkg], capture_output=True).returncode == 0, pkg
    for binary in ("kube-apiserver", "kubectl", "etcd", "kwok", "helm"):
        assert list(BINARIES.glob(f"*/{binary}")), f"no {binary} in {BINARIES}"

    stamp = venv / "postdeploy-installed"
    stamped, packages = stamp.stat().st_mtime_ns, site_packages(venv)
    second, second_took = install(venv)
    assert "Debian packages present" in second
    assert f"Python packages present in {venv}" in second
    assert "installing" not in second and "building" not in second, second
    assert stamp.stat().st_mtime_ns == stamped
    assert site_packages(venv) == packages
    print(f"\ninstall step into an empty venv: {first_took:.1f} s; again with all there: {second_took:.2f} s")

    stamp.write_text("the hash of an older pyproject.toml\n")
    third, _ = install(venv)
    assert "installing the Python packages" in third
    assert stamp.read_text() != "the hash of an older pyproject.toml\n"
