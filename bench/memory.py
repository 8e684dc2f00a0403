"""``python -m bench.memory``: the operator's memory idle and at N active analyses.

The memory rows of ``make bench-argo`` (docs/benchmarks.md, "Beside Argo Rollouts"),
postdeploy alone and faster: the same test bed (``bench.argo.scale_bed``), the same N
reviews of the same two Prometheus checks every ``--interval`` (``bench.argo.review``).
For each variant (``--variant NAME:VAR=VALUE,...``: environment of the operator
process; the first is always the operator as it is), a fresh operator process

- with no reviews, for ``--idle`` seconds;
- then for each N of ``--sizes``: N reviews created first, the operator started, and
  ``--runs`` intervals (plus N / 200 s) to run them;

and prints its RSS (``VmRSS``) and peak RSS (``VmHWM``) at the end of each, the RSS
sampled every 5 s (from when on it stayed within 1 MB of the end), and where
the RSS is from ``/proc/PID/smaps``: files (shared libraries, bytecode), the main
heap (``[heap]``: glibc's main arena), glibc's other arenas (anonymous 64 MB-aligned
reservations of 64 MB: one per thread that allocated, at most 8 per core) and other
anonymous memory (pymalloc's 1 MB arenas, large blocks, thread stacks).

``--probe`` runs the operator under ``bench.memprobe`` and signals it at each reading
(glibc and pymalloc totals, threads, object counts, in ``--workdir``/probe-*); with
``--tracemalloc`` also tracemalloc's growth since the idle reading (slows the
operator, so its RSS figures are not the product's). Run it under ``flock
/work/wt/bench.lock`` on a shared machine; it prints the load average beside each row.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from bench import argo
from testbed import bench

__all__ = ["main", "parse_variant", "settled", "smaps_breakdown"]

HEAP_RESERVATION = 64 * 1024 * 1024  # glibc's HEAP_MAX_SIZE on 64-bit: one non-main arena heap


def _log(message: str) -> None:
    print(f"[bench-memory {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """``NAME:VAR=VALUE,VAR=VALUE`` (or ``NAME`` alone) to its name and environment."""
    name, _, rest = text.partition(":")
    env: dict[str, str] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"variant {text!r}: {item!r} is not VAR=VALUE")
        env[key] = value
    if not name:
        raise ValueError(f"variant {text!r} has no name")
    return name, env


def smaps_breakdown(smaps: str) -> dict[str, float]:
    """RSS by origin, MB, from the text of ``/proc/PID/smaps``: ``files`` (mapped files),
    ``heap`` (``[heap]``), ``arenas`` (glibc's non-main arenas: anonymous mappings in a
    64 MB-aligned block whose mappings add up to 64 MB), ``other`` (the rest), and
    ``arena_count``."""
    mappings: list[tuple[int, int, str, int]] = []  # start, size, name, rss (bytes)
    for line in smaps.splitlines():
        fields = line.split(maxsplit=5)
        if fields and "-" in fields[0] and ":" not in fields[0] and len(fields) >= 5:
            start, end = (int(x, 16) for x in fields[0].split("-"))
            mappings.append((start, end - start, fields[5] if len(fields) > 5 else "", 0))
        elif fields and fields[0] == "Rss:" and mappings:
            start, size, name, _ = mappings[-1]
            mappings[-1] = (start, size, name, int(fields[1]) * 1024)
    blocks: dict[int, list[tuple[int, int, str, int]]] = {}
    for mapping in mappings:
        if not mapping[2]:
            blocks.setdefault(mapping[0] // HEAP_RESERVATION, []).append(mapping)
    arena_blocks = {
        key
        for key, members in blocks.items()
        if min(m[0] for m in members) % HEAP_RESERVATION == 0
        and sum(m[1] for m in members) == HEAP_RESERVATION
    }
    out = {"files": 0.0, "heap": 0.0, "arenas": 0.0, "other": 0.0}
    for start, _size, name, rss in mappings:
        if name == "[heap]":
            key = "heap"
        elif name.startswith("/"):
            key = "files"
        elif not name and start // HEAP_RESERVATION in arena_blocks:
            key = "arenas"
        else:
            key = "other"
        out[key] += rss / 1e6
    out["arena_count"] = float(len(arena_blocks))
    return {k: round(v, 1) for k, v in out.items()}


def settled(samples: list[tuple[float, float]], within: float = 1.0) -> float:
    """The first sample time from which RSS stays within ``within`` MB of its last value:
    when the growth was over (``(seconds, MB)`` samples)."""
    if not samples:
        return float("nan")
    final = samples[-1][1]
    at = samples[-1][0]
    for when, mb in reversed(samples):
        if abs(mb - final) > within:
            break
        at = when
    return at


def _load() -> str:
    return " ".join(pathlib.Path("/proc/loadavg").read_text().split()[:3])


def reading(
    bed: argo.Bed,
    env: Mapping[str, str],
    seconds: float,
    log: pathlib.Path,
    probe: pathlib.Path | None,
) -> dict[str, Any]:
    """Start an operator, sample its RSS every 5 s for ``seconds``, read it, stop it."""
    module = "bench.memprobe" if probe is not None else "postdeploy"
    operator_env = {**bed.operator_env, **env}
    if probe is not None:
        probe.mkdir(parents=True, exist_ok=True)
        operator_env["POSTDEPLOY_MEMPROBE_DIR"] = str(probe)
    operator = bench.Operator(operator_env, log, module=module)
    pid = operator.process.pid
    samples: list[tuple[float, float]] = []
    started = time.monotonic()
    try:
        probed_idle = False
        while (elapsed := time.monotonic() - started) < seconds:
            if operator.process.poll() is not None:
                raise RuntimeError(f"the operator exited ({operator.process.returncode}); see {log}")
            samples.append((round(elapsed, 1), round(argo.memory_mb(pid, "VmRSS"), 1)))
            if probe is not None and not probed_idle and elapsed > 15:
                os.kill(pid, signal.SIGUSR1)  # the baseline: started, before much has run
                probed_idle = True
            time.sleep(5)
        breakdown = smaps_breakdown(pathlib.Path(f"/proc/{pid}/smaps").read_text())
        threads = len(list(pathlib.Path(f"/proc/{pid}/task").iterdir()))
        result: dict[str, Any] = {
            "rss_mb": round(argo.memory_mb(pid, "VmRSS"), 1),
            "peak_rss_mb": round(argo.memory_mb(pid, "VmHWM"), 1),
            "smaps_mb": breakdown,
            "threads": threads,
            "check_runs": operator.check_runs(),
            "settled_at_s": settled(samples),
            "samples": samples,
            "load": _load(),
        }
        if probe is not None:
            before = set(probe.glob("report-*.json"))
            os.kill(pid, signal.SIGUSR1)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and set(probe.glob("report-*.json")) == before:
                time.sleep(1)
            time.sleep(1)
            new = sorted(set(probe.glob("report-*.json")) - before)
            result["probe"] = json.loads(new[-1].read_text()) if new else None
        return result
    finally:
        operator.stop()


def compare(idle: pathlib.Path, busy: pathlib.Path, workdir: pathlib.Path) -> None:
    """``growth-<busy>.txt``: modules the busy operator imported that the idle one had not,
    and (with tracemalloc) the source lines whose traced memory is larger in the busy
    operator's last snapshot than in the idle one's."""
    reports = [sorted(d.glob("report-*.json"), key=lambda p: int(p.stem.split("-")[1])) for d in (idle, busy)]
    if not all(reports):
        return
    before, after = (json.loads(r[-1].read_text()) for r in reports)
    lines = [
        "modules imported after idle: " + " ".join(sorted(set(after["modules"]) - set(before["modules"])))
    ]
    snapshots = [
        sorted(d.glob("snapshot-*.pickle"), key=lambda p: int(p.stem.split("-")[1])) for d in (idle, busy)
    ]
    if all(snapshots):
        import tracemalloc

        from bench import memprobe

        old, new = (tracemalloc.Snapshot.load(str(s[-1])) for s in snapshots)
        lines.append(memprobe.growth(new, old))
    (workdir / f"growth-{busy.name}.txt").write_text("\n".join(lines) + "\n")


def run(args: argparse.Namespace, workdir: pathlib.Path) -> list[dict[str, Any]]:
    variants: list[tuple[str, dict[str, str]]] = [("as-is", {}), *(parse_variant(v) for v in args.variant)]
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows: list[dict[str, Any]] = []
    _log(f"load average {_load()} (start)")
    with argo.scale_bed(workdir, args.deployments, args.interval) as (bed, targets):
        for name, env in variants:

            def probe(size: int, name: str = name) -> pathlib.Path | None:
                return workdir / f"probe-{name}-{size}" if args.probe else None

            if args.probe and args.tracemalloc:
                env = {**env, "PYTHONTRACEMALLOC": "1"}
            _log(f"{name}: idle for {args.idle:.0f}s")
            row = {
                "variant": name,
                "env": env,
                "n": 0,
                **reading(bed, env, args.idle, workdir / f"{name}-0.log", probe(0)),
            }
            rows.append(row)
            _log(json.dumps({k: v for k, v in row.items() if k not in ("samples", "probe")}))
            for size in sizes:
                argo.create_reviews(bed, size, targets, args.interval)
                seconds = args.runs * args.interval + size / 200
                _log(f"{name}: N={size} for {seconds:.0f}s")
                try:
                    row = {
                        "variant": name,
                        "env": env,
                        "n": size,
                        **reading(bed, env, seconds, workdir / f"{name}-{size}.log", probe(size)),
                    }
                finally:
                    argo._delete_all(bed.env, "postdeploymentreviews", argo.NAMESPACE)
                rows.append(row)
                _log(json.dumps({k: v for k, v in row.items() if k not in ("samples", "probe")}))
                if args.probe:
                    compare(workdir / f"probe-{name}-0", workdir / f"probe-{name}-{size}", workdir)
                if args.json:
                    args.json.write_text(json.dumps(rows, indent=1))
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | N | RSS (MB) | peak RSS (MB) | files / heap / arenas (count) / other (MB) "
        "| threads | RSS within 1 MB of the end from (s) | check runs | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["smaps_mb"]
        lines.append(
            f"| {r['variant']} | {r['n']:,} | {r['rss_mb']:.1f} | {r['peak_rss_mb']:.1f} "
            f"| {s['files']:.0f} / {s['heap']:.0f} / {s['arenas']:.0f} ({s['arena_count']:.0f}) / "
            f"{s['other']:.0f} | {r['threads']} | {r['settled_at_s']:.0f} | {r['check_runs']:.0f} "
            f"| {r['load']} |"
        )
    probes = [r for r in rows if r.get("probe")]
    if probes:
        lines += [
            "",
            "| variant | N | glibc arenas | glibc system / free (MB) | pymalloc arenas now / peak "
            "| traced now / peak (MB) |",
            "|---|---|---|---|---|---|",
        ]
        for r in probes:
            p = r["probe"]
            g, m, t = p["glibc"], p["pymalloc"], p.get("traced") or {}
            lines.append(
                f"| {r['variant']} | {r['n']:,} | {g['arenas']} "
                f"| {g['system'] / 1e6:.1f} / {g['free'] / 1e6:.1f} "
                f"| {m['arenas_now']} / {m['arenas_peak']} "
                f"| {t.get('current', 0) / 1e6:.1f} / {t.get('peak', 0) / 1e6:.1f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sizes", default="100,500,2000", help="active reviews, comma-separated, in order")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds the idle operator runs")
    parser.add_argument("--runs", type=float, default=2.5, help="intervals each size runs before its reading")
    parser.add_argument("--interval", type=float, default=60.0, help="check interval, seconds")
    parser.add_argument("--deployments", type=int, default=100)
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME:VAR=VALUE,... more operator environments to measure",
    )
    parser.add_argument("--probe", action="store_true", help="run the operator under bench.memprobe")
    parser.add_argument("--tracemalloc", action="store_true", help="with --probe: tracemalloc on")
    parser.add_argument("--json", type=pathlib.Path, default=None)
    parser.add_argument(
        "--workdir", type=pathlib.Path, default=None, help="keep the test bed, logs, probes here"
    )
    args = parser.parse_args(argv)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        rows = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="postdeploy-bench-memory-") as tmp:
            rows = run(args, pathlib.Path(tmp))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
