"""The operator's /metrics, scraped by the test bed's Prometheus.

Covers: ``postdeploy run --metrics-port`` serves the operator's metrics; with a scrape
job added to the test bed's Prometheus (configuration reloaded, put back afterwards)
the target is up and ``postdeploy_build_info``, ``postdeploy_leader`` and the process
metrics arrive; every query of the Grafana dashboard is valid PromQL that Prometheus
runs, and the replica count it shows is 1.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from testbed.ports import free_port
from tests.e2e.harness import wait_for
from tests.e2e.test_ha import OperatorWithArgs

ROOT = pathlib.Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "helm" / "postdeploy" / "dashboards" / "postdeploy.json"
JOB, NAMESPACE = "postdeploy-operator", "pd-metrics"


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert answer["status"] == "success", (expr, answer)
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


@pytest.fixture
def scraped_operator(
    observability: dict[str, Any], operator_env: dict[str, str], namespace: str, tmp_path: pathlib.Path
) -> Iterator[str]:
    """An operator serving /metrics, and a Prometheus scrape job for it; yields Prometheus's URL."""
    prometheus = observability["env"]["PROMETHEUS_URL"]
    config_path = pathlib.Path(observability["files"]["prometheus_config"])
    original = config_path.read_text()
    port = free_port()
    operator = OperatorWithArgs(
        operator_env, namespace, tmp_path / "operator.log", ["--metrics-port", str(port)]
    )
    config = yaml.safe_load(original)
    config["scrape_configs"].append(
        {
            "job_name": JOB,
            "scrape_interval": "1s",
            "scrape_timeout": "1s",
            # What a ServiceMonitor's target would carry.
            "static_configs": [
                {"targets": [f"127.0.0.1:{port}"], "labels": {"namespace": NAMESPACE, "pod": "op-0"}}
            ],
        }
    )
    try:
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        httpx.post(f"{prometheus}/-/reload", timeout=10).raise_for_status()
        yield prometheus
    finally:
        operator.stop()
        config_path.write_text(original)
        httpx.post(f"{prometheus}/-/reload", timeout=10)


def test_prometheus_scrapes_the_operator(scraped_operator: str) -> None:
    prometheus = scraped_operator
    wait_for("the operator's target to be up", lambda: query(prometheus, f'up{{job="{JOB}"}} == 1'), 60)
    info = wait_for(
        "postdeploy_build_info", lambda: query(prometheus, f'postdeploy_build_info{{job="{JOB}"}}'), 30
    )
    assert info[0]["metric"]["version"] and info[0]["value"][1] == "1"
    assert query(prometheus, f'postdeploy_leader{{job="{JOB}"}}')[0]["value"][1] == "1"
    assert query(prometheus, f'process_resident_memory_bytes{{job="{JOB}"}} > 0')

    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            query(prometheus, target["expr"].replace("$namespace", NAMESPACE))  # valid PromQL
    replicas = next(p for p in dashboard["panels"] if p["title"] == "Replicas")["targets"][0]["expr"]
    assert query(prometheus, replicas.replace("$namespace", NAMESPACE))[0]["value"][1] == "1"
