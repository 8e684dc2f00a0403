"""Live metrics for a fleet of services, so that benchmark checks get real answers.

``make bench`` points hundreds of reviews at Deployments ``bench/svc-NNN``; without
series of their own every PromQL check would answer "no data", which is cheaper for
Prometheus and the operator than a real answer and would flatter the figures. This
exporter serves, for each service, what the built-in template's phase-1 queries read
(the sample app's metric names, see ``testbed.sampleapp``):

- ``http_requests_total{namespace,job,service,pod,method,handler,code}``: 10 req/s
  per service, 0.3 % answered 500;
- ``http_request_duration_seconds_bucket/_sum/_count``: a fixed latency mix
  (median ~60 ms, p95 ~200 ms);
- ``container_memory_working_set_bytes``, ``container_cpu_usage_seconds_total`` and
  ``kube_pod_container_resource_limits{resource="memory"|"cpu"}`` per pod.

Counters are computed at each scrape from the time since start (rate x seconds), so
serving costs no background work. One pod per service, named like a Deployment's
pod (``svc-001-5d8f7c9b4-x2k4q``) so the template's pod selector matches it.
Runs as a thread of the benchmark process on a loopback port.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Sequence

__all__ = ["Fleet"]

RPS = 10.0
ERROR_SHARE = 0.003
# Upper bounds of the latency histogram and the share of requests at or below each.
BUCKETS = ((0.025, 0.15), (0.05, 0.40), (0.1, 0.70), (0.25, 0.96), (0.5, 0.99), (1.0, 0.999))
MEAN_LATENCY = 0.08
MEMORY_BYTES = 200 * 1024 * 1024
MEMORY_LIMIT = 512 * 1024 * 1024
CPU_CORES = 0.05


def pod_of(service: str) -> str:
    return f"{service}-5d8f7c9b4-x2k4q"


class Fleet:
    """Serves ``/metrics`` for ``services`` in ``namespace`` until ``stop``."""

    def __init__(self, namespace: str, services: Sequence[str]) -> None:
        self.namespace = namespace
        self.services = list(services)
        self.started = time.time()
        fleet = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = fleet.exposition(time.time()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="fleet", daemon=True)
        self.thread.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def exposition(self, now: float) -> str:
        """The text exposition format at ``now``: counters grow at their fixed rates."""
        elapsed = max(0.0, now - self.started)
        requests = RPS * elapsed
        lines: list[str] = []
        for service in self.services:
            pod = pod_of(service)
            base = f'namespace="{self.namespace}",job="{service}",service="{service}",pod="{pod}"'
            container = f'namespace="{self.namespace}",pod="{pod}",container="app"'
            ok, failed = requests * (1 - ERROR_SHARE), requests * ERROR_SHARE
            lines.append(f'http_requests_total{{{base},method="GET",handler="/api",code="200"}} {ok:.3f}')
            lines.append(f'http_requests_total{{{base},method="GET",handler="/api",code="500"}} {failed:.3f}')
            bucket = "http_request_duration_seconds_bucket"
            for bound, share in BUCKETS:
                lines.append(f'{bucket}{{{base},le="{bound}"}} {requests * share:.3f}')
            lines.append(f'{bucket}{{{base},le="+Inf"}} {requests:.3f}')
            lines.append(f"http_request_duration_seconds_sum{{{base}}} {requests * MEAN_LATENCY:.3f}")
            lines.append(f"http_request_duration_seconds_count{{{base}}} {requests:.3f}")
            lines.append(f"container_memory_working_set_bytes{{{container}}} {MEMORY_BYTES}")
            lines.append(f"container_cpu_usage_seconds_total{{{container}}} {CPU_CORES * elapsed:.3f}")
            for resource, unit, value in (("memory", "byte", MEMORY_LIMIT), ("cpu", "core", 1)):
                limits = f'{container},resource="{resource}",unit="{unit}"'
                lines.append(f"kube_pod_container_resource_limits{{{limits}}} {value}")
        return "\n".join(lines) + "\n"
