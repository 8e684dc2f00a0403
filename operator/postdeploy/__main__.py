"""``postdeploy run``: start the operator (kopf) with postdeploy's handlers.

Also ``postdeploy crds DIR`` to write the generated CRDs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import pathlib
import sys
from collections.abc import Callable, Mapping

__all__ = ["GC_THRESHOLD", "event_loop_factory", "gc_threshold", "main", "without_generated_clients"]

# The garbage collector's thresholds for the operator process. With Python's default
# (700, 10, 10) an operator holding 10,000 active reviews ran a full collection every
# 3-13 s, each 0.4-0.8 s with the event loop stopped: every check run allocates
# short-lived containers (parsed answers, statuses), and those alive across an await
# at a young collection were promoted until a full one. Collecting the youngest
# generation every 50,000 allocations instead of 700 let them die young (the steady
# 10,000 row: operator 0.38 -> 0.33 core, RSS 681 -> 568 MB). At 4,000 reviews in their
# first hour (52,000 runs a minute) 50,000 still meant a young collection every 2.8 s
# taking 0.12 s, 5 % of the operator's time by the pause clock. Every 200,000 (2026-12-02,
# docs/benchmarks.md), on a core of its own, the same code worked off the start in 4
# minutes instead of 15; sharing the cores with the test bed, with that day's cheaper
# ticks too, it ran all 52,000 at 0.77 core (33,070 at 0.82 before both), peak RSS 386 MB.
# A young collection there looks mostly at live objects (the ticks in flight: at 1,000
# reviews 178 collections freed 118,415 objects, about 665 each), so its pause grows with
# the load, not with garbage: at 4,000, 38 young and 3 middle ones in 15 minutes, none
# over 0.5 s (2026-12-03).
# ``POSTDEPLOY_GC_THRESHOLD`` overrides it.
GC_THRESHOLD = (200_000, 10, 10)


def gc_threshold(env: Mapping[str, str] = os.environ) -> tuple[int, int, int]:
    """``GC_THRESHOLD``, or ``POSTDEPLOY_GC_THRESHOLD`` ("N" for the youngest generation,
    "N,M,K" for all three), to trade the collector's pauses against memory (docs/benchmarks.md).
    A value that is not positive whole numbers is an error."""
    text = env.get("POSTDEPLOY_GC_THRESHOLD", "").strip()
    if not text:
        return GC_THRESHOLD
    parts = [part.strip() for part in text.split(",")]
    if len(parts) not in (1, 3) or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise ValueError(f"POSTDEPLOY_GC_THRESHOLD must be N or N,M,K (positive whole numbers), got {text!r}")
    young = int(parts[0])
    if len(parts) == 1:
        return young, GC_THRESHOLD[1], GC_THRESHOLD[2]
    return young, int(parts[1]), int(parts[2])


def event_loop_factory(env: Mapping[str, str] = os.environ) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The operator's event loop: uvloop's (libuv, in C), asyncio's own with
    ``POSTDEPLOY_EVENT_LOOP=asyncio`` or where uvloop is not installed (None: asyncio's
    default). The operator spends most of its CPU sending and reading requests from one
    loop; with uvloop an aiohttp query to Prometheus cost 13 % less CPU (421 against 487
    us, the medians of five runs of 2,000 queries each, alternated, on the 2-core bench
    machine), and kopf offers the same loop as its ``uvloop`` extra."""
    if env.get("POSTDEPLOY_EVENT_LOOP", "uvloop") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _not_routine(record: logging.LogRecord) -> bool:
    """Drop kopf's line for every watch event handled; keep everything else."""
    message = record.getMessage()
    return not (message.startswith("Handler '") and message.endswith("succeeded."))


def without_generated_clients() -> None:
    """Keep the generated Kubernetes clients out of the operator process: their imports fail.

    The sync ``kubernetes`` client is installed for the kubectl plugin
    (``postdeploy.plugin``), and ``kubernetes_asyncio`` may be installed beside the
    operator for other reasons; kopf imports either whenever it is importable (``import
    kopf`` takes their model classes for isinstance checks on objects a handler passes
    it, and the operator passes none). The operator uses neither: its requests go
    through ``postdeploy.kit.kube``, and kopf logs in with the same credentials
    (``handlers.lifecycle.login``). Each generated client stays resident for nothing
    once imported: kubernetes_asyncio 36 MB, the sync one 7 MB more than the operator's
    other imports (docs/benchmarks.md "Beside Argo Rollouts"). Call before kopf is
    imported; a client already imported (a test runner's process) is left alone.
    """
    for name in ("kubernetes", "kubernetes_asyncio"):
        if name not in sys.modules:
            # Python's own switch: a module that is None in sys.modules raises ImportError.
            sys.modules[name] = None  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="postdeploy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the operator")
    run.add_argument("-n", "--namespace", action="append", default=[], help="watch only these namespaces")
    run.add_argument(
        "--selector",
        default=os.environ.get("POSTDEPLOY_SELECTOR", ""),
        help="handle only reviews whose labels match (e.g. shard=a, tier!=batch, !legacy): "
        "shards reviews across operator deployments (default: $POSTDEPLOY_SELECTOR, else all)",
    )
    run.add_argument("--liveness", default=None, help="e.g. http://0.0.0.0:8080/healthz")
    run.add_argument(
        "--metrics-port", type=int, default=None, help="serve the operator's own metrics on :PORT/metrics"
    )
    run.add_argument("--metrics-address", default="0.0.0.0", help="the address --metrics-port listens on")
    run.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=os.environ.get("POSTDEPLOY_LOG_FORMAT", "text"),
        help="text lines, or one JSON object per line with review and check names "
        "(default: $POSTDEPLOY_LOG_FORMAT, else text); secrets are masked in both",
    )
    run.add_argument(
        "--allow-cross-namespace",
        action="append",
        default=[],
        metavar="FROM=TO",
        help="let reviews in namespace FROM target workloads in namespace TO (repeatable); "
        "without it a review may only target its own namespace",
    )
    run.add_argument(
        "--egress-allow",
        action="append",
        default=[],
        metavar="URL_PREFIX",
        help="a URL prefix reviews may send requests to: http checks, Prometheus/Alertmanager "
        "addresses, notification webhooks (repeatable); none given: any URL",
    )
    run.add_argument("--verbose", action="store_true")
    crds = commands.add_parser("crds", help="write the generated CRDs")
    crds.add_argument("directory", type=pathlib.Path)
    args = parser.parse_args(argv)

    if args.command == "crds":
        from postdeploy import defaults
        from postdeploy.models import crds as crd_models

        for path in [*crd_models.write(args.directory), defaults.write(args.directory)]:
            print(path)
        return 0

    without_generated_clients()
    from postdeploy.decisions import confinement
    from postdeploy.engine import settings

    configuration = settings.Settings.from_env()
    try:
        configuration = configuration.watching(args.namespace, args.selector)
    except ValueError as error:
        parser.error(f"--selector: {error}")
    try:
        pairs = [confinement.parse_namespace_pair(text) for text in args.allow_cross_namespace]
    except ValueError as error:
        parser.error(f"--allow-cross-namespace: {error}")
    try:
        prefixes = [confinement.parse_url_prefix(text) for text in args.egress_allow]
    except ValueError as error:
        parser.error(f"--egress-allow: {error}")
    # The one Settings of this process, passed to the handlers in kopf's memo: the engine,
    # the watch's shard (--selector) and the webhooks' scope (--namespace) read it there.
    configuration = configuration.confined(pairs, prefixes)

    import kopf

    import postdeploy.handlers  # noqa: F401  (registers the handlers)
    from postdeploy.kit import logs

    logs.configure(args.log_format, logging.DEBUG if args.verbose else logging.INFO)
    logs.add_secret(configuration.postgres_dsn)
    # One line per HTTP request or per watch event drowns what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # a line per liveness probe
    logging.getLogger("kopf.objects").addFilter(_not_routine)
    if args.metrics_port is not None:
        from postdeploy.kit import metrics

        metrics.serve(args.metrics_port, args.metrics_address)
        metrics.watch_gc_pauses()
    try:
        thresholds = gc_threshold()
    except ValueError as error:
        parser.error(str(error))
    gc.set_threshold(*thresholds)
    factory = event_loop_factory()
    logging.getLogger(__name__).info("event loop: %s", "uvloop" if factory is not None else "asyncio")
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(
            kopf.operator(
                clusterwide=not args.namespace,
                namespaces=args.namespace,
                # HA is a Lease election in the engine (POSTDEPLOY_LEADER_LEASE): every
                # replica watches, only the leader ticks. kopf's peering would pause standbys.
                standalone=True,
                liveness_endpoint=args.liveness,
                memo=kopf.Memo(settings=configuration),
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
