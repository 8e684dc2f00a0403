"""Sampling profiles of the operator during a benchmark, read back as a short summary.

``bench --profile DIR`` starts ``py-spy record --format raw --gil`` on the operator
process for the measurement window (py-spy reads the process's memory from outside: nothing
is imported into the operator). The raw format is one line per distinct stack,
``frame;frame;...;frame count`` from the outermost frame in, each frame written as
``function (file:line)``. ``summary`` turns that into the figures quoted in
``docs/benchmarks.md``: the share of samples per top-level package seen anywhere on
the stack (inclusive) and the functions where the samples were taken (self).

The same option has kube-apiserver started with ``--profiling`` and records its CPU
profile over the window (``ApiServerRecording``: Go's pprof format, read with ``go
tool pprof``; ``go_top`` prints its top functions when Go is installed): what the API
server spends on the operator's status writes.
"""

from __future__ import annotations

import collections
import pathlib
import re
import shutil
import subprocess
import threading
from collections.abc import Mapping
from typing import Any

from testbed import kube

__all__ = ["ApiServerRecording", "Recording", "go_top", "summary"]

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


class Recording:
    """py-spy sampling one process for ``seconds``; ``wait`` returns the output path."""

    def __init__(self, pid: int, seconds: float, output: pathlib.Path) -> None:
        if shutil.which("py-spy") is None:
            raise RuntimeError("--profile needs py-spy (pip install py-spy)")
        self.output = output
        self.process = subprocess.Popen(
            [
                "py-spy",
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, int(seconds))),
                "--format",
                "raw",
                "--nonblocking",
                # Only samples holding the GIL: where the operator spends CPU, not where
                # its threads and event loop wait.
                "--gil",
                "--output",
                str(output),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait(self) -> pathlib.Path:
        self.process.wait(timeout=120)
        return self.output


class ApiServerRecording:
    """kube-apiserver's CPU profile over ``seconds``, fetched in a thread;
    ``wait`` returns the output path (None when the fetch failed, said in ``error``)."""

    def __init__(self, kube_state: Mapping[str, Any], seconds: float, output: pathlib.Path) -> None:
        self.output = output
        self.error = ""
        self._thread = threading.Thread(target=self._fetch, args=(kube_state, seconds), daemon=True)
        self._thread.start()

    def _fetch(self, kube_state: Mapping[str, Any], seconds: float) -> None:
        try:
            kube.pprof_cpu(kube_state, seconds, self.output)
        except OSError as error:  # urllib's errors are OSErrors
            self.error = f"{type(error).__name__}: {error}"

    def wait(self) -> pathlib.Path | None:
        self._thread.join(timeout=180)
        return None if self.error or not self.output.exists() else self.output


def go_top(path: pathlib.Path, lines: int = 25) -> str:
    """``go tool pprof -top`` of a Go CPU profile, its first ``lines`` lines (the
    profile names its functions itself); a sentence instead when Go is not installed."""
    installed = pathlib.Path("/usr/local/go/bin/go")  # the Go the test bed builds with
    go = shutil.which("go") or (str(installed) if installed.exists() else None)
    if go is None:
        return f"{path.name}: go is not installed; read it with `go tool pprof -top {path}`"
    done = subprocess.run(
        [go, "tool", "pprof", "-top", f"-nodecount={lines}", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return f"{path.name}:\n{done.stdout.strip() or done.stderr.strip()}"


def _package(file: str) -> str:
    """The package a frame belongs to: ``postdeploy.engine``, ``aiohttp``, ``asyncio``."""
    path = file.replace("\\", "/")
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif "/operator/" in path:
        path = path.split("/operator/", 1)[1]
    parts = [p for p in path.split("/") if p]
    if not parts:
        return "?"
    if parts[0] == "postdeploy" and len(parts) > 1:
        return f"postdeploy.{parts[1].removesuffix('.py')}"
    if len(parts) == 1 or parts[0].startswith("python3"):
        # Standard library, shortened by py-spy to the file name (or python3.x/file).
        return parts[-1].removesuffix(".py") if len(parts) <= 2 else parts[-2]
    return parts[0].removesuffix(".py")


def _frames(line: str) -> tuple[list[tuple[str, str]], int]:
    stack, _, count = line.rstrip().rpartition(" ")
    frames = []
    for text in stack.split(";"):
        found = _FRAME.match(text)
        if found:
            frames.append((found.group("function"), found.group("file")))
        else:
            frames.append((text, "?"))
    return frames, int(count)


def summary(path: pathlib.Path, top: int = 12) -> str:
    """Inclusive share per package and self share per function, as a few text lines."""
    total = 0
    inclusive: collections.Counter[str] = collections.Counter()
    selfs: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            frames, count = _frames(line)
        except ValueError:
            continue
        total += count
        for package in {_package(file) for _, file in frames}:
            inclusive[package] += count
        if frames:
            function, file = frames[-1]
            selfs[f"{function} ({_package(file)})"] += count
    if not total:
        return f"{path.name}: no samples"
    lines = [f"{path.name}: {total} samples"]
    lines.append(
        "  inclusive by package: "
        + ", ".join(f"{name} {count / total:.0%}" for name, count in inclusive.most_common(top))
    )
    lines.append(
        "  self by function: "
        + ", ".join(f"{name} {count / total:.1%}" for name, count in selfs.most_common(top))
    )
    return "\n".join(lines)
