"""``python -m bench.memprobe run ...``: ``postdeploy run ...`` that reports its memory on SIGUSR1.

Used by ``bench.memory --probe``; nothing of it is in the operator. On each SIGUSR1 the
process writes ``report-<n>.json`` (and ``tracemalloc-<n>.txt`` when tracemalloc is
on, ``PYTHONTRACEMALLOC``) into ``$POSTDEPLOY_MEMPROBE_DIR``:

- ``glibc``: ``malloc_info`` summed: arenas, bytes the allocator holds from the system
  (``system``) and bytes it keeps free (``free``: fragmentation and caches);
- ``pymalloc``: Python's small-object allocator (``sys._debugmallocstats``): arenas
  allocated now and at most, bytes in use;
- ``threads``: the Python threads by name;
- ``types``: the 25 most numerous object types the collector tracks;
- ``modules``: every module imported so far; ``allocated_blocks``: Python's count;
- ``traced``: tracemalloc's current and peak bytes; ``snapshot-<n>.pickle`` is the
  snapshot, and the text file lists the 40 source lines and files whose allocations
  grew most since the process's first report.

The handler runs in the main thread between two bytecodes, so it pauses the event loop
for as long as it takes (a second or so at 2,000 reviews; longer with tracemalloc).
"""

from __future__ import annotations

import collections
import ctypes
import gc
import json
import os
import pathlib
import re
import signal
import sys
import tempfile
import threading
import tracemalloc
from types import FrameType
from typing import Any

__all__ = ["glibc_totals", "growth", "main", "pymalloc_totals"]

_baseline: list[tracemalloc.Snapshot] = []
_count = [0]


def glibc_totals(xml: str) -> dict[str, int]:
    """Arenas and bytes of a ``malloc_info`` document: the ``<heap>`` elements, and the
    document's closing totals (``system`` current, free chunks' bytes, mmapped bytes)."""
    tail = xml[xml.rfind("</heap>") :] if "</heap>" in xml else xml
    free = sum(
        int(size) for size in re.findall(r'<total type="(?:fast|rest)" count="\d+" size="(\d+)"/>', tail)
    )
    system = re.search(r'<system type="current" size="(\d+)"/>', tail)
    mmap = re.search(r'<total type="mmap" count="\d+" size="(\d+)"/>', tail)
    return {
        "arenas": len(re.findall(r"<heap nr=", xml)),
        "system": int(system.group(1)) if system else 0,
        "free": free,
        "mmap": int(mmap.group(1)) if mmap else 0,
    }


def pymalloc_totals(text: str) -> dict[str, int]:
    """Arenas and bytes from ``sys._debugmallocstats``'s text."""

    def number(label: str) -> int:
        found = re.search(rf"^# {re.escape(label)}\s*=\s*([\d,]+)", text, re.M)
        return int(found.group(1).replace(",", "")) if found else 0

    return {
        "arenas_now": number("arenas allocated current"),
        "arenas_peak": number("arenas highwater mark"),
        "arena_bytes": number("bytes in allocated blocks")
        + number("bytes in available blocks")
        + number("bytes in unused pools")
        + number("bytes lost to pool headers")
        + number("bytes lost to quantization")
        + number("bytes lost to arena alignment"),
        "allocated_blocks_bytes": number("bytes in allocated blocks"),
    }


def _malloc_info() -> str:
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    with tempfile.NamedTemporaryFile(suffix=".xml") as handle:
        stream = libc.fopen(handle.name.encode(), b"w")
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        return pathlib.Path(handle.name).read_text()


def _debugmallocstats() -> str:
    """``sys._debugmallocstats`` writes to the C stderr: borrow fd 2 for a moment."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as handle:
        os.dup2(handle.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        handle.seek(0)
        return handle.read().decode(errors="replace")


def _status() -> dict[str, int]:
    fields = {}
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM", "Threads", "RssAnon", "RssFile"):
            fields[name] = int(value.split()[0])
    return fields


def report(directory: pathlib.Path) -> dict[str, Any]:
    _count[0] += 1
    n = _count[0]
    types = collections.Counter(type(o).__name__ for o in gc.get_objects())
    out: dict[str, Any] = {
        "n": n,
        "status_kb": _status(),
        "glibc": glibc_totals(_malloc_info()),
        "pymalloc": pymalloc_totals(_debugmallocstats()),
        "threads": sorted(t.name for t in threading.enumerate()),
        "types": dict(types.most_common(25)),
    }
    out["modules"] = sorted(sys.modules)
    out["allocated_blocks"] = sys.getallocatedblocks()
    if tracemalloc.is_tracing():
        current, peak = tracemalloc.get_traced_memory()
        out["traced"] = {"current": current, "peak": peak}
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        snapshot.dump(str(directory / f"snapshot-{n}.pickle"))
        if not _baseline:
            _baseline.append(snapshot)
        (directory / f"tracemalloc-{n}.txt").write_text(
            f"traced now {current / 1e6:.1f} MB, peak {peak / 1e6:.1f} MB\n" + growth(snapshot, _baseline[0])
        )
    (directory / f"report-{n}.json").write_text(json.dumps(out, indent=1))
    return out


def growth(snapshot: tracemalloc.Snapshot, baseline: tracemalloc.Snapshot, top: int = 40) -> str:
    """The source lines (then files) whose traced memory grew most from ``baseline``."""
    lines = ["by line:"]
    lines += [str(stat) for stat in snapshot.compare_to(baseline, "lineno")[:top]]
    lines += ["", "by file:"]
    lines += [str(stat) for stat in snapshot.compare_to(baseline, "filename")[:top]]
    return "\n".join(lines) + "\n"


def main() -> int:
    directory = pathlib.Path(os.environ["POSTDEPLOY_MEMPROBE_DIR"])
    directory.mkdir(parents=True, exist_ok=True)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        report(directory)

    signal.signal(signal.SIGUSR1, on_signal)
    from postdeploy.__main__ import main as operator_main

    return operator_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
