"""A steerable sample application: the live side of ``shop/checkout``'s metrics.

A ``prometheus_client`` exporter on 127.0.0.1 serves ``/metrics`` while a background
thread simulates traffic every 200 ms according to the current settings. The series
carry the labels of the sample Deployment's pods (``namespace="shop"``, ``pod``,
``container``, ``job`` and ``service`` = ``checkout``), the same names as the
backfilled history (:mod:`testbed.history`); Prometheus must scrape it with
``honor_labels: true`` so the exported ``job`` label wins.

Metrics: ``http_requests_total{method,handler,code}``,
``http_request_duration_seconds`` (histogram), ``container_memory_working_set_bytes``,
``kube_pod_container_resource_limits`` / ``kube_pod_container_resource_requests``
``{resource="memory",unit="byte"}`` and ``{resource="cpu",unit="core"}``,
``container_cpu_usage_seconds_total`` and ``app_errors_total{type}``.

A control API on a second port steers it:

``GET /control``
    the current settings as JSON;
``POST /control``
    a JSON object with any subset of the settings, applied at once; unknown keys or
    invalid values give 400 and change nothing. The answer is the new settings.

Settings (see :class:`Settings`): ``rps`` (requests per second over all pods, 80 %
``GET /api/cart``, 20 % ``POST /api/checkout``), ``error_rate`` (share of requests
answered 500 (70 %) or 503 (30 %)), ``latency_seconds`` (median latency) and
``error_spread`` (``"random"``: each request fails with probability ``error_rate``, the
default; ``"even"``: the failures are spread evenly, exactly ``error_rate`` of every run
of requests to within one, for a test that must not depend on chance),
``latency_jitter`` (log-normal sigma, p95 ≈ median x e^(1.645 sigma)),
``memory_bytes`` (working set per pod now), ``memory_growth_bytes_per_s`` (linear
growth from the moment it is set), ``memory_limit_bytes``, ``memory_request_bytes``,
``cpu_limit_cores``, ``cpu_request_cores`` (also exported as
``kube_pod_container_resource_limits/requests{resource="cpu",unit="core"}``),
``error_types`` (``{"TimeoutError": 0.1}``: per-request probability that
``app_errors_total{type="TimeoutError"}`` is incremented; independent of the HTTP
codes). Setting ``memory_bytes`` restarts the growth from that value.

Run as a process::

    python -m testbed.sampleapp --port P --control-port C --pods a,b

It prints one JSON line with its ports when both servers listen, and stops on SIGTERM
or SIGINT. :func:`steer` and :func:`settings` are small clients for the control API.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from wsgiref.simple_server import WSGIServer

import httpx
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

__all__ = [
    "DEFAULT_PODS",
    "SampleApp",
    "Settings",
    "main",
    "settings",
    "steer",
]

MIB = 1024 * 1024
TICK_SECONDS = 0.2
SPREADS = ("random", "even")  # error_spread: failures drawn at random, or spread evenly
DEFAULT_PODS: tuple[str, ...] = ("checkout-0", "checkout-1")
ROUTES: tuple[tuple[str, str, float], ...] = (
    ("GET", "/api/cart", 0.8),
    ("POST", "/api/checkout", 0.2),
)
BASE_LABELS = ("namespace", "pod", "container", "job", "service")


@dataclass
class Settings:
    """What the simulated traffic looks like right now."""

    rps: float = 20.0
    error_rate: float = 0.0
    error_spread: str = "random"
    latency_seconds: float = 0.05
    latency_jitter: float = 0.35
    memory_bytes: float = 200.0 * MIB
    memory_growth_bytes_per_s: float = 0.0
    memory_limit_bytes: float = 512.0 * MIB
    memory_request_bytes: float = 256.0 * MIB
    cpu_limit_cores: float = 1.0
    cpu_request_cores: float = 0.25
    error_types: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-compatible dict."""
        return asdict(self)

    def updated(self, changes: Mapping[str, Any]) -> Settings:
        """A copy with ``changes`` applied; ``ValueError`` if any is invalid."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(unknown)}")
        clean: dict[str, Any] = {}
        for key, value in changes.items():
            if key == "error_types":
                if not isinstance(value, dict):
                    raise ValueError("error_types must be an object of type -> probability")
                types: dict[str, float] = {}
                for name, prob in value.items():
                    p = _number(f"error_types.{name}", prob)
                    if not 0.0 <= p <= 1.0:
                        raise ValueError(f"error_types.{name} must be within [0, 1]")
                    types[str(name)] = p
                clean[key] = types
                continue
            if key == "error_spread":
                if value not in SPREADS:
                    raise ValueError(f"error_spread must be one of {', '.join(SPREADS)}")
                clean[key] = value
                continue
            number = _number(key, value)
            if key == "error_rate" and not 0.0 <= number <= 1.0:
                raise ValueError("error_rate must be within [0, 1]")
            if key == "latency_seconds" and number <= 0.0:
                raise ValueError("latency_seconds must be positive")
            if key != "memory_growth_bytes_per_s" and number < 0.0:
                raise ValueError(f"{key} must not be negative")
            clean[key] = number
        return replace(self, **clean)


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{key} must be finite")
    return number


class SampleApp:
    """The exporter, the traffic simulator and the control API, in one process."""

    def __init__(
        self,
        pods: Sequence[str] = DEFAULT_PODS,
        *,
        port: int = 0,
        control_port: int = 0,
        host: str = "127.0.0.1",
        workload: str = "checkout",
        namespace: str = "shop",
        settings: Settings | None = None,
        seed: int = 0,
    ) -> None:
        if not pods:
            raise ValueError("at least one pod name is needed")
        self.pods = list(pods)
        self.host = host
        self.port = port
        self.control_port = control_port
        self.workload = workload
        self.namespace = namespace
        self._settings = settings or Settings()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._rng = random.Random(seed)
        self._memory_base = self._settings.memory_bytes
        self._memory_since = time.monotonic()
        self._carry = dict.fromkeys(self.pods, 0.0)
        self._error_carry = 0.0  # error_spread "even": the failures owed so far
        self._thread: threading.Thread | None = None
        self._metrics_server: WSGIServer | None = None
        self._control_server: ThreadingHTTPServer | None = None
        self._control_thread: threading.Thread | None = None
        self.registry = CollectorRegistry()
        labels = list(BASE_LABELS)
        self.requests = Counter(
            "http_requests",
            "HTTP requests handled, by method, handler and status code.",
            [*labels, "method", "handler", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency in seconds.",
            [*labels, "method", "handler"],
            registry=self.registry,
        )
        self.memory = Gauge(
            "container_memory_working_set_bytes",
            "Current working set of the container.",
            labels,
            registry=self.registry,
        )
        self.limits = Gauge(
            "kube_pod_container_resource_limits",
            "Resource limit of the container.",
            [*labels, "resource", "unit"],
            registry=self.registry,
        )
        self.requests_gauge = Gauge(
            "kube_pod_container_resource_requests",
            "Resource request of the container.",
            [*labels, "resource", "unit"],
            registry=self.registry,
        )
        self.cpu = Counter(
            "container_cpu_usage_seconds",
            "Cumulative CPU time consumed in seconds.",
            labels,
            registry=self.registry,
        )
        self.errors = Counter(
            "app_errors",
            "Application errors by exception type.",
            [*labels, "type"],
            registry=self.registry,
        )
        # Create the series up front so rates exist from the first scrape.
        for pod in self.pods:
            base = self._base(pod)
            for method, handler, _ in ROUTES:
                for code in ("200", "500", "503"):
                    self.requests.labels(*base, method, handler, code)
                self.latency.labels(*base, method, handler)
            self.cpu.labels(*base)
        self._publish_resources(time.monotonic())

    def _base(self, pod: str) -> tuple[str, ...]:
        return (self.namespace, pod, self.workload, self.workload, self.workload)

    # -- settings ------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """A copy of the current settings."""
        with self._lock:
            return replace(self._settings, error_types=dict(self._settings.error_types))

    def update(self, changes: Mapping[str, Any]) -> Settings:
        """Apply ``changes`` at once (``ValueError`` if invalid); return the new settings."""
        with self._lock:
            now = time.monotonic()
            new = self._settings.updated(changes)
            if "memory_bytes" in changes:
                self._memory_base = new.memory_bytes
                self._memory_since = now
            elif "memory_growth_bytes_per_s" in changes:
                self._memory_base = self._memory_now(now)
                self._memory_since = now
            self._settings = new
        self._publish_resources(time.monotonic())
        return self.settings

    def _memory_now(self, now: float) -> float:
        grown = self._settings.memory_growth_bytes_per_s * (now - self._memory_since)
        return max(0.0, self._memory_base + grown)

    def _publish_resources(self, now: float) -> None:
        with self._lock:
            memory = self._memory_now(now)
            limit = self._settings.memory_limit_bytes
            request = self._settings.memory_request_bytes
            cpu_limit = self._settings.cpu_limit_cores
            cpu_request = self._settings.cpu_request_cores
        for pod in self.pods:
            base = self._base(pod)
            self.memory.labels(*base).set(memory)
            self.limits.labels(*base, "memory", "byte").set(limit)
            self.requests_gauge.labels(*base, "memory", "byte").set(request)
            self.limits.labels(*base, "cpu", "core").set(cpu_limit)
            self.requests_gauge.labels(*base, "cpu", "core").set(cpu_request)

    # -- simulation ----------------------------------------------------------

    def tick(self, seconds: float) -> None:
        """Simulate ``seconds`` of traffic under the current settings."""
        current = self.settings
        rng = self._rng
        per_pod = current.rps * seconds / len(self.pods)
        mu = math.log(current.latency_seconds)
        for pod in self.pods:
            base = self._base(pod)
            expected = per_pod + self._carry[pod]
            count = int(expected)
            self._carry[pod] = expected - count
            for _ in range(count):
                r = rng.random()
                cumulative = 0.0
                method, handler = ROUTES[-1][0], ROUTES[-1][1]
                for m, h, share in ROUTES:
                    cumulative += share
                    if r < cumulative:
                        method, handler = m, h
                        break
                failed = self._fails(current, rng)
                code = ("500" if rng.random() < 0.7 else "503") if failed else "200"
                self.requests.labels(*base, method, handler, code).inc()
                self.latency.labels(*base, method, handler).observe(
                    rng.lognormvariate(mu, current.latency_jitter)
                )
                for kind, probability in current.error_types.items():
                    if rng.random() < probability:
                        self.errors.labels(*base, kind).inc()
            pod_rps = current.rps / len(self.pods)
            self.cpu.labels(*base).inc(seconds * (0.02 + 0.002 * pod_rps))
        self._publish_resources(time.monotonic())

    def _fails(self, current: Settings, rng: random.Random) -> bool:
        if current.error_spread == "random":
            return rng.random() < current.error_rate
        self._error_carry += current.error_rate
        if self._error_carry < 1.0 - 1e-9:
            return False
        self._error_carry -= 1.0
        return True

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(TICK_SECONDS):
            now = time.monotonic()
            self.tick(now - last)
            last = now

    # -- servers -------------------------------------------------------------

    def start(self) -> SampleApp:
        """Start the exporter, the control API and the simulator thread."""
        server, _ = start_http_server(self.port, addr=self.host, registry=self.registry)
        self._metrics_server = server
        self.port = int(server.server_port)
        self._control_server = ThreadingHTTPServer((self.host, self.control_port), _control_handler(self))
        self._control_server.daemon_threads = True
        self.control_port = int(self._control_server.server_address[1])
        self._control_thread = threading.Thread(
            target=self._control_server.serve_forever, name="sampleapp-control", daemon=True
        )
        self._control_thread.start()
        self._thread = threading.Thread(target=self._run, name="sampleapp-traffic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the simulator and both servers."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for srv in (self._control_server, self._metrics_server):
            if srv is not None:
                srv.shutdown()
                srv.server_close()

    @property
    def metrics_url(self) -> str:
        """Where Prometheus scrapes."""
        return f"http://{self.host}:{self.port}/metrics"

    @property
    def control_url(self) -> str:
        """Where the control API listens."""
        return f"http://{self.host}:{self.control_port}/control"


def _control_handler(app: SampleApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "sampleapp-control/1"

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/") in ("/control", ""):
                self._send(200, app.settings.to_json())
            elif self.path == "/healthz":
                self._send(200, {"status": "ok"})
            else:
                self._send(404, {"error": f"no such path: {self.path}"})

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/control":
                self._send(404, {"error": f"no such path: {self.path}"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                changes = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("the body must be a JSON object")
                new = app.update(changes)
            except (ValueError, json.JSONDecodeError) as exc:
                self._send(400, {"error": str(exc)})
                return
            self._send(200, new.to_json())

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(f"control: {format % args}\n")

    return Handler


def settings(control_url: str, *, timeout: float = 5.0) -> dict[str, Any]:
    """Read the sample application's settings."""
    response = httpx.get(control_url, timeout=timeout)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def steer(control_url: str, changes: Mapping[str, Any], *, timeout: float = 5.0) -> dict[str, Any]:
    """Change the sample application's settings at once; return the new settings."""
    response = httpx.post(control_url, json=dict(changes), timeout=timeout)
    if response.status_code == 400:
        raise ValueError(response.json().get("error", response.text))
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m testbed.sampleapp``."""
    parser = argparse.ArgumentParser(description="Steerable sample application.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="/metrics port (0: any)")
    parser.add_argument("--control-port", type=int, default=0, help="control port (0: any)")
    parser.add_argument("--pods", default=",".join(DEFAULT_PODS), help="comma-separated")
    parser.add_argument("--namespace", default="shop")
    parser.add_argument("--workload", default="checkout")
    parser.add_argument("--settings", default="{}", help="initial settings as JSON")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    pods = [p.strip() for p in args.pods.split(",") if p.strip()]
    # No ``*_created`` series: process-wide, hence only here and not in SampleApp.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    initial = Settings().updated(json.loads(args.settings))
    app = SampleApp(
        pods,
        port=args.port,
        control_port=args.control_port,
        host=args.host,
        workload=args.workload,
        namespace=args.namespace,
        settings=initial,
        seed=args.seed,
    ).start()
    stopping = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    # A parent that blocked these signals would have handed its mask down to us.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    print(
        json.dumps(
            {
                "metrics_url": app.metrics_url,
                "control_url": app.control_url,
                "pods": app.pods,
            }
        ),
        flush=True,
    )
    while not stopping.wait(1.0):
        pass
    app.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
