"""The operator's log: JSON lines, and never a secret.

Covers, with the operator as a real process (``--log-format json``) on the test bed:
- every line it writes is one JSON object with time, level, logger and message, and
  the lines about a review name it (``review``: namespace/name);
- secrets planted everywhere a review or the operator takes them from never show in
  its log nor in the review's status: the operator-wide PostgreSQL DSN (environment),
  a check's DSN (Secret), an http check's bearer token (Secret) and a notification
  webhook URL (Secret). Every data source and receiver is down, so each secret goes
  through an error path (connection refused, failed deliveries), where leaks happen.
"""

from __future__ import annotations

import json
import pathlib
import uuid
from typing import Any

from testbed.ports import free_port
from tests.e2e import test_reviews
from tests.e2e.harness import Kubectl, wait_for
from tests.e2e.test_ha import OperatorWithArgs


def secret(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


def test_json_log_lines_name_their_review_and_hold_no_secret(
    kubectl: Kubectl, namespace: str, operator_env: dict[str, str], tmp_path: pathlib.Path
) -> None:
    planted = {name: f"PLANTED-{name}-{uuid.uuid4().hex[:12]}" for name in ("env", "dsn", "token", "hook")}
    down = free_port()  # nothing listens there
    kubectl.apply(namespace, secret("pg", dsn=f"postgresql://reader:{planted['dsn']}@127.0.0.1:{down}/shop"))
    kubectl.apply(namespace, secret("api", token=planted["token"]))
    kubectl.apply(namespace, secret("hook", url=f"http://127.0.0.1:{down}/hooks/{planted['hook']}?x=1"))
    phases = [
        {
            "name": "immediate",
            "start": "0s",
            "end": "6s",
            "interval": "2s",
            "checks": [
                {"name": "rollout", "kubernetes": {"measure": "rolloutComplete"}},
                {
                    "name": "orders",
                    "postgres": {
                        "query": "SELECT count(*) FROM orders",
                        "dsnSecretRef": {"name": "pg", "key": "dsn"},
                    },
                },
                {
                    "name": "health-api",
                    "http": {
                        "url": f"http://127.0.0.1:{down}/health",
                        "authSecretRef": {"name": "api", "key": "token"},
                    },
                },
                {"name": "default-db", "postgres": {"query": "SELECT 1"}},
            ],
        }
    ]
    review = test_reviews.review(
        "secrets", phases, notifications=[{"name": "team", "urlSecretRef": {"name": "hook", "key": "url"}}]
    )
    env = {
        **operator_env,
        "POSTDEPLOY_POSTGRES_DSN": f"postgresql://operator:{planted['env']}@127.0.0.1:{down}/ops",
        "POSTDEPLOY_NOTIFY_ATTEMPTS": "2",
        "POSTDEPLOY_NOTIFY_BACKOFF": "0.2",
    }
    operator = OperatorWithArgs(env, namespace, tmp_path / "operator.log", ["--log-format", "json"])
    try:
        kubectl.apply(namespace, review)
        status = test_reviews.wait_verdict(kubectl, namespace, "secrets")
        checks = test_reviews.checks_by_name(status)
        assert {checks[name]["state"] for name in ("orders", "health-api", "default-db")} <= {
            "Error",
            "Inconclusive",
        }, json.dumps(checks, indent=1)

        def delivery_failed() -> bool:
            records = test_reviews.status_of(kubectl, namespace, "secrets").get("notifications", [])
            return any(d.get("state") == "Failed" for r in records for d in r.get("deliveries", []))

        wait_for("a notification delivery to fail", delivery_failed, 60)
        final = json.dumps(test_reviews.status_of(kubectl, namespace, "secrets"))
    finally:
        operator.stop()

    log = operator.output()
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines
    entries = [json.loads(line) for line in lines]  # every line is JSON
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
    assert any(e.get("review") == f"{namespace}/secrets" for e in entries)
    leaked = {name: value for name, value in planted.items() if value in log}
    assert not leaked, f"in the log: {leaked}"
    leaked = {name: value for name, value in planted.items() if value in final}
    assert not leaked, f"in the review's status: {leaked}"
