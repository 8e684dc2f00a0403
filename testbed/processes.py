"""Starting, watching and stopping the test bed's server processes (Linux ``/proc``).

The one process machinery of the test bed, used by ``testbed.kube`` (etcd, the
control plane, kwok), ``testbed.observability`` (Prometheus, Alertmanager, the sample
app) and ``testbed.postgres`` (the postmaster and its backends); free ports come from
``testbed.ports``. Every server is started in a session of its own, so it leads its
own process group and a stop reaches whatever it forked. A pid is recognised by its
start time as well, so a stop never signals a process that reused a pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

__all__ = [
    "alive",
    "group_members",
    "kill_tree",
    "listening_ports",
    "log_tail",
    "reap",
    "spawn",
    "start_time",
    "stop_group",
    "terminate",
    "tree",
]


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: [0] state, [1] parent, [2] group,
    [19] start time in clock ticks; None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def _live(fields: list[str] | None) -> bool:
    return fields is not None and fields[0] not in ("Z", "X")


def start_time(pid: int) -> int | None:
    """When PID started (clock ticks since boot); None when it is gone or a zombie."""
    fields = _stat(pid)
    return int(fields[19]) if fields is not None and _live(fields) else None


def reap(pid: int) -> None:
    """Collect our own exited child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def alive(pid: int, started: int | None = None) -> bool:
    """Whether PID is a live process (not a zombie) and, given ``started``, the same one."""
    reap(pid)
    now = start_time(pid)
    return now is not None and (started is None or now == started)


def group_members(pgid: int) -> list[int]:
    """The live processes of process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and _live(fields) and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


def tree(root: int) -> list[int]:
    """``root`` and all its live descendants; empty when ``root`` is gone."""
    children: dict[int, list[int]] = {}
    live: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and _live(fields):
                live.add(int(entry.name))
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    if root not in live:
        return []
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def listening_ports(ports: Iterable[int]) -> list[int]:
    """Those of ``ports`` on which some socket is in LISTEN state (IPv4 or IPv6)."""
    wanted = set(ports)
    found: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 3 and cols[3] == "0A":  # TCP_LISTEN
                port = int(cols[1].rsplit(":", 1)[1], 16)
                if port in wanted:
                    found.add(port)
    return sorted(found)


def spawn(
    argv: Sequence[str], log: Path, *, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a session of its own, appending its output to ``log`` after a
    line naming the command; ``env`` None inherits ours."""
    with log.open("ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
        out.flush()
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(cwd),
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )


def log_tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _until(gone: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if gone():
            return True
        time.sleep(0.05)
    return gone()


def terminate(pid: int, started: int | None = None, grace: float = 10.0) -> bool:
    """Stop one process: SIGTERM, SIGKILL after ``grace`` seconds; True once it is gone."""
    if not alive(pid, started):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _until(lambda: not alive(pid, started), grace):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return _until(lambda: not alive(pid, started), 5.0)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_group(pgid: int, timeout: float, on_kill: Callable[[], None] | None = None) -> bool:
    """Stop a process group: SIGTERM, SIGKILL after ``timeout`` seconds (calling
    ``on_kill`` first); True once none of it is left."""

    def gone() -> bool:
        reap(pgid)
        return not group_members(pgid)

    _signal_group(pgid, signal.SIGTERM)
    if _until(gone, timeout):
        return True
    if on_kill is not None:
        on_kill()
    _signal_group(pgid, signal.SIGKILL)
    return _until(gone, 5.0)


def kill_tree(root: int) -> None:
    """Wait up to 5 s for ``root`` and its descendants to exit, then SIGKILL what is left."""
    _until(lambda: not tree(root), 5.0)
    for pid in tree(root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _until(lambda: not tree(root), 5.0)
