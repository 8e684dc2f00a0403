"""The test bed's observability: Prometheus with history, Alertmanager, the sample app.

``start(workdir, pods)`` does, in order:

1. backfills eight days of history (:mod:`testbed.history`) into
   ``workdir/prometheus-data`` (wiped first: the history is anchored to "now");
2. starts the steerable sample application (``python -m testbed.sampleapp``,
   :mod:`testbed.sampleapp`) with the ``checkout`` pod names ``pods`` (default: the
   history's deterministic names);
3. writes ``workdir/config/alertmanager.yml`` (one null receiver, 1 s group
   timers) and starts Debian's Alertmanager without clustering;
4. writes ``workdir/config/prometheus.yml`` (the sample app scraped every 1 s
   with ``honor_labels``, Prometheus and Alertmanager every 5 s, rules evaluated
   every 1 s, alerts to the Alertmanager) and ``rules.yml``, checks both with
   ``promtool check config`` and starts Prometheus with a 30-day retention, the
   lifecycle and admin APIs and ``--rules.alert.resend-delay=2s`` (a firing alert's
   ``endsAt`` is then ~8 s ahead, so alerts vanish quickly once Prometheus stops);
5. waits for ``/-/ready`` of both servers, for the first scrape of the sample app
   (``up{job="checkout"} == 1``) and for Prometheus to know its Alertmanager.

Everything listens on 127.0.0.1 at free ports; logs go to ``workdir/logs``.

Alerting rule (group ``checkout``, evaluated every 1 s): ``CheckoutHighErrorRate``
fires, after ``for: 2s``, when the 5xx share of ``http_requests_total`` of
``namespace="shop", service="checkout"`` over 30 s exceeds 10 %; labels
``severity="critical"``, ``namespace="shop"``, ``service="checkout"``. Steering the
sample app to ``error_rate=0.5`` fires it within ~10 s; back at 0 it resolves within
~30 s.

The state returned by ``start`` (JSON-serialisable) has ``pids``, ``ports``, ``pods``,
``history`` (timeline and the checkpoints file), ``files``, ``logs``,
``startup_seconds`` and ``env``: ``PROMETHEUS_URL``, ``ALERTMANAGER_URL`` (base URLs),
``SAMPLEAPP_CONTROL_URL`` (``.../control``) and ``SAMPLEAPP_METRICS_URL``
(``.../metrics``). ``stop(state)`` ends the three processes (SIGTERM, then SIGKILL)
and raises ``RuntimeError`` if a process or a port survives.

Helpers for tests: :func:`post_alert` (Alertmanager API v2), :func:`alerts`,
:func:`query`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import yaml

from testbed import history, ports, processes

__all__ = [
    "ALERTMANAGER_BIN",
    "ALERT_NAME",
    "PROMETHEUS_BIN",
    "PROMTOOL_BIN",
    "alerts",
    "post_alert",
    "query",
    "start",
    "stop",
]

PROMETHEUS_BIN = os.environ.get("POSTDEPLOY_PROMETHEUS_BIN", "/usr/bin/prometheus")
PROMTOOL_BIN = os.environ.get("POSTDEPLOY_PROMTOOL_BIN", "/usr/bin/promtool")
ALERTMANAGER_BIN = os.environ.get("POSTDEPLOY_ALERTMANAGER_BIN", "/usr/bin/prometheus-alertmanager")
HOST = ports.LOOPBACK
ALERT_NAME = "CheckoutHighErrorRate"
READY_TIMEOUT = 60.0
_START_ATTEMPTS = 3
_REPO = Path(__file__).resolve().parent.parent
_STOP_ORDER = ("prometheus", "alertmanager", "sampleapp")

_ERROR_SHARE = (
    'sum by (namespace, service) (rate(http_requests_total{namespace="shop",'
    'service="checkout",code=~"5.."}[30s]))\n'
    "  /\n"
    'sum by (namespace, service) (rate(http_requests_total{namespace="shop",'
    'service="checkout"}[30s]))\n'
)


def _rules() -> dict[str, Any]:
    return {
        "groups": [
            {
                "name": "checkout",
                "interval": "1s",
                "rules": [
                    {
                        "alert": ALERT_NAME,
                        "expr": f"(\n{_ERROR_SHARE}) > 0.10\n",
                        "for": "2s",
                        "labels": {"severity": "critical"},
                        "annotations": {
                            "summary": "checkout answers too many requests with 5xx",
                            "description": (
                                "5xx share over 30s is {{ $value | humanizePercentage }} "
                                "(threshold 10%) for {{ $labels.namespace }}/"
                                "{{ $labels.service }}."
                            ),
                        },
                    }
                ],
            }
        ]
    }


def _prometheus_config(
    ports_: Mapping[str, int],
    rules_file: Path,
    extra_targets: Sequence[str] = (),
    query_log: Path | None = None,
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "global": {"scrape_interval": "5s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_file)],
        "alerting": {
            "alertmanagers": [
                {
                    "api_version": "v2",
                    "timeout": "2s",
                    "static_configs": [{"targets": [f"{HOST}:{ports_['alertmanager']}"]}],
                }
            ]
        },
        "scrape_configs": [
            {
                "job_name": "checkout",
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                # The sample app exports job/namespace/pod like the real pods would get
                # them from service discovery; its labels win over the target's.
                "honor_labels": True,
                "static_configs": [{"targets": [f"{HOST}:{ports_['sampleapp_metrics']}"]}],
            },
            {
                "job_name": "prometheus",
                "static_configs": [{"targets": [f"{HOST}:{ports_['prometheus']}"]}],
            },
            {
                "job_name": "alertmanager",
                "static_configs": [{"targets": [f"{HOST}:{ports_['alertmanager']}"]}],
            },
        ],
    }
    if query_log is not None:
        # One JSON line per query served, with its parameters (the benchmark counts them).
        config["global"]["query_log_file"] = str(query_log)
    if extra_targets:
        # Exporters of the caller's own (the benchmark's fleet), labelled by themselves.
        config["scrape_configs"].append(
            {
                "job_name": "extra",
                "scrape_interval": "5s",
                "scrape_timeout": "4s",
                "honor_labels": True,
                "static_configs": [{"targets": list(extra_targets)}],
            }
        )
    return config


def _alertmanager_config() -> dict[str, Any]:
    return {
        "route": {
            "receiver": "testbed-null",
            "group_by": ["alertname", "namespace", "service"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [{"name": "testbed-null"}],
    }


# -- processes -----------------------------------------------------------------------


def _wait(
    what: str,
    check: Callable[[], bool],
    proc: subprocess.Popen[bytes] | None,
    log: Path | None,
    timeout: float = READY_TIMEOUT,
) -> None:
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = processes.log_tail(log) if log else ""
            raise RuntimeError(f"{what}: exited with {proc.returncode}\n{tail}")
        try:
            if check():
                return
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            last_error = repr(exc)
        time.sleep(0.1)
    tail = processes.log_tail(log) if log else ""
    raise RuntimeError(f"{what}: not ready after {timeout:.0f}s ({last_error})\n{tail}")


def _get_ok(url: str) -> bool:
    return httpx.get(url, timeout=2.0).status_code == 200


def _launch(
    name: str,
    argv_for: Callable[[int], list[str]],
    ready_url_for: Callable[[int], str],
    log: Path,
    env: Mapping[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start a server on a free port; retry with another port if it loses the race."""
    error: RuntimeError | None = None
    for _ in range(_START_ATTEMPTS):
        port = ports.free_port()
        proc = processes.spawn(argv_for(port), log, cwd=_REPO, env=env)
        ready = functools.partial(_get_ok, ready_url_for(port))
        try:
            _wait(f"{name} on {HOST}:{port}", ready, proc, log)
        except RuntimeError as exc:
            processes.terminate(proc.pid, None)
            error = exc
            if "address already in use" in str(exc).lower():
                continue
            raise
        return proc, port
    assert error is not None
    raise error


# -- the component -------------------------------------------------------------------


def start(
    workdir: Path,
    pods: list[str] | None = None,
    *,
    history_days: float = history.DAYS,
    seed: int = history.DEFAULT_SEED,
    extra_targets: Sequence[str] = (),
    query_log: Path | None = None,
    sample_settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Backfill history, start the sample app, Alertmanager and Prometheus; wait for them.

    ``extra_targets`` (host:port) are scraped too, every 5 s, their labels kept; with
    ``query_log`` Prometheus writes every query it serves there; ``sample_settings``
    are the sample app's settings from its start (``testbed.sampleapp.Settings``)."""
    began = time.monotonic()
    workdir = Path(workdir).resolve()
    logs = workdir / "logs"
    confdir = workdir / "config"
    datadir = workdir / "prometheus-data"
    amdir = workdir / "alertmanager-data"
    for path in (datadir, amdir):
        shutil.rmtree(path, ignore_errors=True)
    for path in (logs, confdir, datadir, amdir):
        path.mkdir(parents=True, exist_ok=True)
    pod_names = list(pods) if pods else history.default_pods(seed)
    leaky_pod, creepy_pod = history.helper_pods(seed)
    state: dict[str, Any] = {
        "component": "observability",
        "workdir": str(workdir),
        "pids": {},
        "starttimes": {},
        "ports": {},
        "pods": pod_names,
        "logs": {
            name: str(logs / f"{name}.log")
            for name in ("promtool", "sampleapp", "alertmanager", "prometheus")
        },
    }
    state["sample_settings"] = dict(sample_settings or {})
    try:
        _start_all(state, workdir, confdir, datadir, amdir, history_days, seed, extra_targets, query_log)
    except BaseException:
        with contextlib.suppress(Exception):
            stop(state)
        raise
    state["history"]["leaky_pod"] = leaky_pod
    state["history"]["creepy_pod"] = creepy_pod
    state["startup_seconds"] = round(time.monotonic() - began, 2)
    return state


def _start_all(
    state: dict[str, Any],
    workdir: Path,
    confdir: Path,
    datadir: Path,
    amdir: Path,
    history_days: float,
    seed: int,
    extra_targets: Sequence[str] = (),
    query_log: Path | None = None,
) -> None:
    logs = {name: Path(path) for name, path in state["logs"].items()}
    pids: dict[str, int] = state["pids"]
    starttimes: dict[str, int | None] = state["starttimes"]
    port_map: dict[str, int] = state["ports"]

    def remember(name: str, proc: subprocess.Popen[bytes]) -> None:
        pids[name] = proc.pid
        starttimes[name] = processes.start_time(proc.pid)

    # 1. History.
    if history_days > 0:
        result = history.backfill(
            datadir,
            workdir / "history.om",
            pods=state["pods"],
            seed=seed,
            days=history_days,
            promtool=PROMTOOL_BIN,
            log=logs["promtool"],
        )
        state["history"] = {
            "checkpoints": str(result.checkpoints_file),
            "timeline": asdict(result.timeline),
            "series": result.series,
            "samples": result.samples,
            "seconds": round(result.seconds, 2),
        }
    else:
        state["history"] = {"checkpoints": None, "timeline": None}

    # 2. The sample application (two ports: take the control port first, then retry the
    # metrics port through _launch).
    control_port = ports.free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    app_argv = [sys.executable, "-m", "testbed.sampleapp", "--host", HOST]
    app_argv += ["--control-port", str(control_port), "--pods", ",".join(state["pods"])]
    if state.get("sample_settings"):
        app_argv += ["--settings", json.dumps(state["sample_settings"])]
    proc, metrics_port = _launch(
        "sampleapp",
        lambda port: [*app_argv, "--port", str(port)],
        lambda port: f"http://{HOST}:{port}/metrics",
        logs["sampleapp"],
        env,
    )
    remember("sampleapp", proc)
    port_map["sampleapp_metrics"] = metrics_port
    port_map["sampleapp_control"] = control_port
    _wait(
        "sampleapp control API",
        lambda: _get_ok(f"http://{HOST}:{control_port}/control"),
        proc,
        logs["sampleapp"],
    )

    # 3. Alertmanager.
    am_config = confdir / "alertmanager.yml"
    am_config.write_text(yaml.safe_dump(_alertmanager_config(), sort_keys=False))
    proc, am_port = _launch(
        "alertmanager",
        lambda port: [
            ALERTMANAGER_BIN,
            f"--config.file={am_config}",
            f"--storage.path={amdir}",
            f"--web.listen-address={HOST}:{port}",
            "--cluster.listen-address=",
            "--log.level=info",
        ],
        lambda port: f"http://{HOST}:{port}/-/ready",
        logs["alertmanager"],
    )
    remember("alertmanager", proc)
    port_map["alertmanager"] = am_port

    # 4. Prometheus; its own port is in its config (self-scrape), so the config is
    # written per attempt.
    rules_file = confdir / "rules.yml"
    rules_file.write_text(yaml.safe_dump(_rules(), sort_keys=False))
    prom_config = confdir / "prometheus.yml"

    def prom_argv(port: int) -> list[str]:
        config = _prometheus_config({**port_map, "prometheus": port}, rules_file, extra_targets, query_log)
        prom_config.write_text(yaml.safe_dump(config, sort_keys=False))
        check = subprocess.run(
            [PROMTOOL_BIN, "check", "config", str(prom_config)],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            raise RuntimeError(f"promtool check config failed:\n{check.stdout}{check.stderr}")
        return [
            PROMETHEUS_BIN,
            f"--config.file={prom_config}",
            f"--storage.tsdb.path={datadir}",
            "--storage.tsdb.retention.time=30d",
            f"--web.listen-address={HOST}:{port}",
            "--web.enable-lifecycle",
            "--web.enable-admin-api",
            "--rules.alert.resend-delay=2s",
            "--log.level=info",
        ]

    proc, prom_port = _launch(
        "prometheus",
        prom_argv,
        lambda port: f"http://{HOST}:{port}/-/ready",
        logs["prometheus"],
    )
    remember("prometheus", proc)
    port_map["prometheus"] = prom_port
    prom_url = f"http://{HOST}:{prom_port}"
    am_url = f"http://{HOST}:{am_port}"
    state["files"] = {
        "prometheus_config": str(prom_config),
        "rules": str(rules_file),
        "alertmanager_config": str(am_config),
        "prometheus_data": str(datadir),
        "alertmanager_data": str(amdir),
    }
    state["env"] = {
        "PROMETHEUS_URL": prom_url,
        "ALERTMANAGER_URL": am_url,
        "SAMPLEAPP_CONTROL_URL": f"http://{HOST}:{control_port}/control",
        "SAMPLEAPP_METRICS_URL": f"http://{HOST}:{metrics_port}/metrics",
    }

    # 5. The first scrape of the sample app, and Prometheus knows its Alertmanager.
    _wait(
        "first scrape of the sample app",
        lambda: bool(query(prom_url, 'up{job="checkout"} == 1')),
        proc,
        logs["prometheus"],
    )

    def knows_alertmanager() -> bool:
        response = httpx.get(f"{prom_url}/api/v1/alertmanagers", timeout=2.0)
        return bool(response.json()["data"]["activeAlertmanagers"])

    _wait("Prometheus discovering Alertmanager", knows_alertmanager, proc, logs["prometheus"])


def stop(state: dict[str, Any]) -> None:
    """Stop Prometheus, Alertmanager and the sample app; raise if one survives."""
    pids: dict[str, int] = state.get("pids", {})
    starttimes: dict[str, int | None] = state.get("starttimes", {})
    survivors: list[str] = []
    for name in _STOP_ORDER:
        pid = pids.get(name)
        if pid is None:
            continue
        if not processes.terminate(pid, starttimes.get(name)):
            survivors.append(f"{name} (pid {pid})")
    busy: list[str] = []
    deadline = time.monotonic() + 5.0
    for name, port in state.get("ports", {}).items():
        while not ports.is_port_free(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not ports.is_port_free(port):
            busy.append(f"{name} ({HOST}:{port})")
    if survivors or busy:
        raise RuntimeError(
            "observability stop left "
            + ", ".join([*(f"process {s}" for s in survivors), *(f"port {b}" for b in busy)])
        )


# -- helpers for tests and tools ---------------------------------------------------------


def _rfc3339(moment: dt.datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def post_alert(
    alertmanager_url: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
    ends_at: dt.datetime | None = None,
    *,
    starts_at: dt.datetime | None = None,
    generator_url: str | None = None,
    timeout: float = 5.0,
) -> None:
    """Post one alert to Alertmanager's API v2 (``POST /api/v2/alerts``).

    Without ``ends_at`` Alertmanager resolves it after its ``resolve_timeout`` (5 m)
    unless it is posted again; naive datetimes are taken as UTC.
    """
    alert: dict[str, Any] = {
        "labels": dict(labels),
        "annotations": dict(annotations or {}),
        "startsAt": _rfc3339(starts_at or dt.datetime.now(dt.UTC)),
    }
    if ends_at is not None:
        alert["endsAt"] = _rfc3339(ends_at)
    if generator_url is not None:
        alert["generatorURL"] = generator_url
    response = httpx.post(f"{alertmanager_url.rstrip('/')}/api/v2/alerts", json=[alert], timeout=timeout)
    response.raise_for_status()


def alerts(
    alertmanager_url: str, matchers: Sequence[str] = (), *, timeout: float = 5.0
) -> list[dict[str, Any]]:
    """Alertmanager's current (not yet resolved) alerts, optionally filtered.

    ``matchers`` are Alertmanager matchers such as ``'alertname="CheckoutHighErrorRate"'``.
    """
    params: list[tuple[str, str | int | float | bool | None]] = [("filter", m) for m in matchers]
    response = httpx.get(f"{alertmanager_url.rstrip('/')}/api/v2/alerts", params=params, timeout=timeout)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()
    return result


def query(
    prometheus_url: str, promql: str, at: float | None = None, *, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """A PromQL instant query; the ``result`` list (``ValueError`` on an API error)."""
    params: dict[str, str] = {"query": promql}
    if at is not None:
        params["time"] = f"{at:.3f}"
    response = httpx.get(f"{prometheus_url.rstrip('/')}/api/v1/query", params=params, timeout=timeout)
    body = response.json()
    if body.get("status") != "success":
        raise ValueError(f"query {promql!r} failed: {body.get('error', response.text)}")
    data = body["data"]
    if data["resultType"] not in ("vector", "matrix"):
        return [{"metric": {}, "value": data["result"]}]
    result: list[dict[str, Any]] = data["result"]
    return result


def _main() -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Start the observability test bed until ^C.")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--pods", default="")
    parser.add_argument("--days", type=float, default=history.DAYS)
    args = parser.parse_args()
    pods = [p for p in args.pods.split(",") if p] or None

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Handlers, not a blocked signal mask: children would inherit the mask.
    signal.signal(signal.SIGTERM, interrupt)
    state: dict[str, Any] | None = None
    try:
        state = start(args.workdir, pods, history_days=args.days)
        print(json.dumps(state, indent=2), flush=True)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        if state is not None:
            stop(state)


if __name__ == "__main__":
    _main()
