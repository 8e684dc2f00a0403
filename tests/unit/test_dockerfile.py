"""The container image's recipe, read as text (no Docker engine is needed).

Covers: two stages on the same python:3.11-slim base, the final one built from the
builder's virtual environment only; a numeric non-root USER; no byte-code writes at
run time (PYTHONDONTWRITEBYTECODE) and HOME/TMPDIR under /tmp, for a read-only root
filesystem; the exec-form ENTRYPOINT ``postdeploy run`` is the console script the
package declares, and the default CMD is an option ``postdeploy run`` accepts; the
build context holds only what the builder copies.
"""

from __future__ import annotations

import json
import pathlib
import re
import shlex
import tomllib
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    pairs = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        pairs.append((keyword.upper(), rest.strip()))
    return pairs


def stages(pairs: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in pairs:
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def global_args(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """ARGs declared before the first FROM, with their defaults."""
    args: dict[str, str] = {}
    for keyword, rest in pairs:
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
    return args


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in stage:
        if keyword == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                env[name] = value
    return env


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions((ROOT / "Dockerfile").read_text())


def test_two_stages_on_the_same_slim_python_base(dockerfile: list[tuple[str, str]]) -> None:
    builder, final = stages(dockerfile)
    args = global_args(dockerfile)
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], builder[0][1].split()[0])
    assert base == "python:3.11-slim"
    assert builder[0][1].split()[-1] == "builder"
    assert final[0][1] == builder[0][1].split()[0], "the venv's python must be the final image's python"
    copies = [rest for keyword, rest in final if keyword == "COPY"]
    assert copies == ["--from=builder /opt/postdeploy /opt/postdeploy"]
    installs = " ".join(rest for keyword, rest in builder if keyword == "RUN")
    assert "python -m venv /opt/postdeploy" in installs
    assert "/opt/postdeploy/bin/pip install ." in installs


def test_final_stage_runs_as_a_numeric_non_root_user(dockerfile: list[tuple[str, str]]) -> None:
    final = stages(dockerfile)[-1]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert len(users) == 1
    uid, _, gid = users[0].partition(":")
    assert uid.isdigit() and int(uid) > 0, "runAsNonRoot can only check a numeric user"
    assert gid.isdigit() and int(gid) > 0
    # USER is the last thing that may change who runs: nothing after it runs as root.
    after = final[[k for k, _ in final].index("USER") :]
    assert not [rest for keyword, rest in after if keyword == "RUN"]


def test_nothing_is_written_outside_tmp(dockerfile: list[tuple[str, str]]) -> None:
    env = env_of(stages(dockerfile)[-1])
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HOME"] == "/tmp" and env["TMPDIR"] == "/tmp"
    assert env["PATH"].startswith("/opt/postdeploy/bin:")
    builder_runs = " ".join(rest for keyword, rest in stages(dockerfile)[0] if keyword == "RUN")
    assert "compileall" in builder_runs, "byte-code is compiled at build time, not at run time"


def test_entry_point_is_the_packaged_operator_command(dockerfile: list[tuple[str, str]]) -> None:
    final = stages(dockerfile)[-1]
    entrypoint = json.loads(next(rest for keyword, rest in final if keyword == "ENTRYPOINT"))
    assert entrypoint == ["postdeploy", "run"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["postdeploy"] == "postdeploy.__main__:main"
    exposed = {port for keyword, rest in final if keyword == "EXPOSE" for port in rest.split()}
    assert "8080" in exposed


def test_default_command_starts_kopf_with_the_liveness_endpoint(
    dockerfile: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import kopf

    from postdeploy import __main__ as cli

    final = stages(dockerfile)[-1]
    entrypoint = json.loads(next(rest for keyword, rest in final if keyword == "ENTRYPOINT"))
    command = json.loads(next(rest for keyword, rest in final if keyword == "CMD"))
    seen: dict[str, Any] = {}

    async def operator(**kwargs: Any) -> None:
        seen.update(kwargs)

    monkeypatch.setattr(kopf, "operator", operator)
    monkeypatch.setattr("postdeploy.kit.logs.configure", lambda fmt, level: None)  # keep pytest's logging
    assert cli.main([*entrypoint[1:], *command]) == 0
    assert seen["liveness_endpoint"] == "http://0.0.0.0:8080/healthz"
    assert seen["clusterwide"] is True and seen["standalone"] is True
    exposed = {port for keyword, rest in final if keyword == "EXPOSE" for port in rest.split()}
    assert "8080" in exposed


def test_build_context_holds_only_the_package() -> None:
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*"
    assert {"!pyproject.toml", "!operator/"} <= set(rules)
