"""No input crashes a tick: a hundred hostile reviews while ordinary ones run on time.

The operator runs as a real process with an egress allowlist of the test bed's
Prometheus and Alertmanager (``--egress-allow``). Three ordinary reviews run checks
every 4 s; once their phase has started, the hostile reviews below are created
through the API server, each a small review with one thing wrong: durations,
dates and numbers at and past every bound, conditions, names, URLs, SQL.

Covers:
- every hostile review ends as the table says: refused by the API server (CRD schema
  and CEL rules), Invalid (condition InvalidSpec or Refused, naming the field), or run
  harmlessly (a status with a verdict, checks Error/Inconclusive where they must be);
- no traceback in the operator log;
- every ordinary review ran each of its slots exactly once, each run within 2 s of its
  slot's start, and passed;
- nothing was harmed: the target Deployment is unchanged, a loopback server that
  hostile URLs point at (and a webhook Secret names) got no request at all, the
  database's tables are intact;
- a tick that raises (failpoint ``tick-raise``) is contained: condition TickFailed and
  a Warning Event per failure, retries after 1, 2, 4, 8, 8 s (``POSTDEPLOY_TICK_BACKOFF=1``,
  ``..._MAX_BACKOFF=8``), one traceback for the first failure only, TickFailed False
  once it stops failing, and a review beside it on time throughout.
"""

from __future__ import annotations

import base64
import collections
import copy
import datetime
import http.server
import itertools
import json
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from kubernetes import client as kube_client
from kubernetes import config as kube_config

from postdeploy.models.crds import GROUP, REVIEWS, VERSION
from tests.e2e.harness import Kubectl, OperatorProcess, wait_for

Run = Callable[..., OperatorProcess]
API, INVALID, RUNS = "refused by the API server", "Invalid", "ran harmlessly"


# --- reviews ------------------------------------------------------------------------------


def utc(moment: datetime.datetime) -> str:
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def base_review(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PostDeploymentReview",
        "metadata": {"name": name},
        "spec": {
            "target": {"kind": "Deployment", "name": "checkout"},
            "version": "1.0.0",
            "deployedAt": utc(datetime.datetime.now(datetime.UTC)),
            "useDefaultTemplate": False,
            "phases": [
                {
                    "name": "p",
                    "start": "0s",
                    "end": "20s",
                    "interval": "10s",
                    "checks": [{"name": "c", "kubernetes": {"measure": "readyRatio"}}],
                }
            ],
        },
    }


def put(body: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path (``spec.phases.0.checks.0.interval``); lists take indices."""
    *parents, last = path.split(".")
    node: Any = body
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


CHECK = "spec.phases.0.checks.0"
PHASE = "spec.phases.0"


def check(provider: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "c", **provider, **fields}


def hostile_cases(urls: dict[str, str]) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, expected outcome, {dotted path: value}) for every hostile review."""
    prom, am, bait = urls["prometheus"], urls["alertmanager"], urls["bait"]
    prom_host = prom.removeprefix("http://")
    dsn = {"dsnSecretRef": {"name": "db", "key": "dsn"}}

    def sql(query: str, **extra: Any) -> dict[str, Any]:
        return {CHECK: check({"postgres": {"query": query, **dsn, **extra}})}

    def http(url: str, **extra: Any) -> dict[str, Any]:
        return {CHECK: check({"http": {"url": url, **extra}})}

    vector = {"prometheus": {"query": "vector(1)"}}
    return [
        # durations
        ("d-interval-20-digits", INVALID, {f"{CHECK}.interval": "99999999999999999999s"}),
        ("d-end-1e14-days", INVALID, {f"{PHASE}.end": "100000000000000d"}),
        ("d-end-at-bound", RUNS, {f"{PHASE}.end": "3650d"}),
        ("d-end-past-bound", INVALID, {f"{PHASE}.end": "3650d1s"}),
        ("d-interval-999ms", INVALID, {f"{CHECK}.interval": "999ms"}),
        ("d-interval-at-bound", RUNS, {f"{CHECK}.interval": "1s", f"{PHASE}.end": "4s"}),
        ("d-interval-zero", INVALID, {f"{CHECK}.interval": "0s"}),
        ("d-interval-empty", API, {f"{CHECK}.interval": ""}),
        ("d-interval-space", API, {f"{CHECK}.interval": "5 m"}),
        ("d-interval-negative", API, {f"{CHECK}.interval": "-5m"}),
        ("d-interval-exponent", API, {f"{CHECK}.interval": "1e9s"}),
        ("d-interval-too-long", API, {f"{CHECK}.interval": "1s" * 17}),
        ("d-interval-years", API, {f"{CHECK}.interval": "5y"}),
        ("d-offset-past-bound", INVALID, {CHECK: check(vector, baseline={"offset": "99999999999d"})}),
        (
            "d-offset-at-bound",
            RUNS,
            {CHECK: check(vector, baseline={"offset": "3650d"}, failWhen="value > baseline * 2")},
        ),
        (
            "d-range-past-bound",
            INVALID,
            {CHECK: check({"prometheus": {"query": "vector(1)", "range": "4000d"}})},
        ),
        (
            "d-step-tiny",
            RUNS,
            {CHECK: check({"prometheus": {"query": "vector(1)", "range": "1h", "step": "1ms"}})},
        ),
        ("d-http-timeout", INVALID, http(f"{prom}/api/v1/query", timeout="9999999999h")),
        (
            "d-job-deadline",
            INVALID,
            {CHECK: check({"job": {"template": {"spec": {}}, "activeDeadline": "99999999999d"}})},
        ),
        ("d-slo-downtime", INVALID, {"spec.slo": {"downtime": "99999999999w"}}),
        ("d-report-window", INVALID, {CHECK: check({"report": {"window": "3651d"}})}),
        ("d-remind-after", INVALID, {CHECK: check({"manual": {"remindAfter": "99999999999999999999s"}})}),
        ("d-spec-interval", INVALID, {"spec.interval": "100000000000000d", f"{PHASE}.interval": None}),
        ("d-start-nan", API, {f"{PHASE}.start": "NaNs"}),
        ("d-start-after-end", INVALID, {f"{PHASE}.start": "10s", f"{PHASE}.end": "5s"}),
        ("d-start-equals-end", API, {f"{PHASE}.start": "5s", f"{PHASE}.end": "5s"}),
        ("d-sql-timeout-zero", RUNS, sql("select 1", timeout="0s")),
        # dates
        ("t-year-9999", API, {"spec.deployedAt": "9999-12-31T23:59:59Z"}),
        ("t-year-2200", API, {"spec.deployedAt": "2200-01-01T00:00:00Z"}),
        ("t-last-second", RUNS, {"spec.deployedAt": "2199-12-31T23:59:59Z"}),
        ("t-before-1970", API, {"spec.deployedAt": "1969-12-31T23:59:59Z"}),
        ("t-epoch", RUNS, {"spec.deployedAt": "1970-01-01T00:00:00Z"}),
        ("t-year-1", API, {"spec.deployedAt": "0001-01-01T00:00:00Z"}),
        ("t-garbage", API, {"spec.deployedAt": "not-a-date"}),
        ("t-month-13", API, {"spec.deployedAt": "2026-13-45T99:00:00Z"}),
        ("t-number", API, {"spec.deployedAt": 12345}),
        ("t-offset-past-2200", API, {"spec.deployedAt": "2199-12-31T23:00:00-14:00"}),
        # numbers
        ("n-failure-limit-at-bound", RUNS, {f"{CHECK}.failureLimit": 1000000}),
        ("n-failure-limit-past", API, {f"{CHECK}.failureLimit": 1000001}),
        ("n-failure-limit-negative", API, {f"{CHECK}.failureLimit": -1}),
        ("n-failure-limit-float", API, {f"{CHECK}.failureLimit": 1e30}),
        ("n-error-limit-20-digits", API, {f"{CHECK}.consecutiveErrorLimit": 99999999999999999999}),
        (
            "n-tolerance-at-bound",
            RUNS,
            {CHECK: check(vector, baseline={"preDeploy": True, "tolerance": 1000})},
        ),
        ("n-tolerance-huge", API, {CHECK: check(vector, baseline={"preDeploy": True, "tolerance": 1e308})}),
        (
            "n-tolerance-negative",
            API,
            {CHECK: check(vector, baseline={"preDeploy": True, "tolerance": -0.1})},
        ),
        ("n-expect-status-huge", API, http(f"{prom}/-/healthy", expectStatus=99999)),
        ("n-expect-status-zero", API, http(f"{prom}/-/healthy", expectStatus=0)),
        ("n-row-limit", API, sql("select 1", rowLimit=10001)),
        ("n-keep-replica-sets", API, {CHECK: check({"cleanup": {"keepReplicaSets": 51}})}),
        ("n-log-lines", API, {CHECK: check({"job": {"template": {}, "logLines": 501}})}),
        (
            "n-alpha-one",
            API,
            {CHECK: check({"statistics": {"test": "twoProportion", "query": "select 1", "alpha": 1, **dsn}})},
        ),
        (
            "n-alpha-at-bound",
            RUNS,
            {
                CHECK: check(
                    {
                        "statistics": {
                            "test": "twoProportion",
                            "alpha": 0.999999,
                            "query": "select 'a' as \"group\", 100 as trials, 10 as successes "
                            "union all select 'b', 100, 12",
                            **dsn,
                        }
                    }
                )
            },
        ),
        (
            "n-ratios-negative",
            API,
            {
                CHECK: check(
                    {"statistics": {"test": "sampleRatio", "query": "q", "expectedRatios": [1, -1], **dsn}}
                )
            },
        ),
        (
            "n-slower-by",
            API,
            {CHECK: check({"postgres": {"slowStatements": {"slowerBy": 1e300}, **dsn}})},
        ),
        ("n-min-calls-zero", API, {CHECK: check({"postgres": {"slowStatements": {"minCalls": 0}, **dsn}})}),
        ("n-limit-as-string", API, {f"{CHECK}.failureLimit": "3"}),
        ("n-version-too-long", API, {"spec.version": "v" * 129}),
        # conditions
        ("c-too-long", API, {f"{CHECK}.failWhen": "value > 1 " * 120}),
        ("c-nested-40", INVALID, {f"{CHECK}.failWhen": "(" * 40 + "value" + ")" * 40 + " > 1"}),
        ("c-284-tokens", INVALID, {f"{CHECK}.failWhen": "value > 1" + " or value > 1" * 70}),
        ("c-python", INVALID, {f"{CHECK}.failWhen": "__import__('os').system('id')"}),
        ("c-division-by-zero", RUNS, {f"{CHECK}.failWhen": "value / 0 > 1"}),
        ("c-infinity", RUNS, {f"{CHECK}.failWhen": "value > 1e999"}),
        ("c-empty", INVALID, {f"{CHECK}.failWhen": ""}),
        ("c-dangling", INVALID, {f"{CHECK}.failWhen": "value >"}),
        ("c-not-a-comparison", INVALID, {f"{CHECK}.passWhen": "not not not value"}),
        ("c-missing-baseline", RUNS, {f"{CHECK}.failWhen": "value > baseline"}),
        ("c-unknown-function", INVALID, {f"{CHECK}.failWhen": "pow(value, 99999) > 1"}),
        ("c-unicode-operator", INVALID, {f"{CHECK}.failWhen": "value \uff1e 1"}),
        # names
        ("Hostile-Upper-Case", API, {}),
        ("x-check-name", API, {f"{CHECK}.name": "Bad_Name"}),
        ("x-check-name-long", API, {f"{CHECK}.name": "a" * 64}),
        ("x-phase-path", API, {f"{PHASE}.name": "../etc"}),
        (
            "x-duplicate-checks",
            INVALID,
            {
                "spec.phases.1": {
                    "name": "q",
                    "start": "20s",
                    "end": "30s",
                    "checks": [{"name": "c", "kubernetes": {"measure": "readyRatio"}}],
                }
            },
        ),
        ("x-target-empty", API, {"spec.target.name": ""}),
        ("x-target-missing", RUNS, {"spec.target.name": "does-not-exist"}),
        ("x-target-kube-system", INVALID, {"spec.target.namespace": "kube-system"}),
        ("x-target-namespace-path", API, {"spec.target.namespace": "../x"}),
        ("x-target-kind", API, {"spec.target.kind": "Pod"}),
        ("x-template-missing", INVALID, {"spec.templateRef": {"name": "nope"}}),
        (
            "x-notification-twice",
            INVALID,
            {"spec.notifications": [{"name": "a", "urlSecretRef": {"name": "hook", "key": "url"}}] * 2},
        ),
        (
            "x-parameter-injection",
            RUNS,
            {
                "spec.parameters": {"q": '"} or vector(1) #'},
                CHECK: check({"prometheus": {"query": 'up{job="{{q}}"}'}}),
            },
        ),
        # URLs (the allowlist: the test bed's Prometheus and Alertmanager)
        ("u-userinfo", INVALID, http(f"http://{prom_host}@{bait.removeprefix('http://')}/")),
        (
            "u-suffix-host",
            INVALID,
            {CHECK: check({"prometheus": {"query": "up", "address": f"{prom}.evil.example"}})},
        ),
        ("u-metadata-server", INVALID, http("http://169.254.169.254/latest/meta-data/")),
        ("u-file", API, http("file:///etc/passwd")),
        ("u-gopher", API, http(f"gopher{bait.removeprefix('http')}/")),
        ("u-upper-case-scheme", API, http(f"HTTP{bait.removeprefix('http')}/")),
        (
            "u-dot-segments",
            INVALID,
            {CHECK: check({"prometheus": {"query": "up", "address": f"{prom}/x/../../y"}})},
        ),
        ("u-providers", INVALID, {"spec.providers": {"prometheusUrl": bait}}),
        ("u-alertmanager-port", INVALID, {CHECK: check({"alertmanager": {"address": am + "0"}})}),
        ("u-token-to-bait", INVALID, http(f"{bait}/steal", authSecretRef={"name": "token", "key": "token"})),
        ("u-backslash", INVALID, http(f"{prom}\\@{bait.removeprefix('http://')}/")),
        (
            "u-templated-host",
            RUNS,
            {
                "spec.parameters": {"host": bait.removeprefix("http://")},
                **http("http://{{host}}/steal", authSecretRef={"name": "token", "key": "token"}),
            },
        ),
        (
            "u-webhook-to-bait",
            RUNS,
            {
                CHECK: check(vector, failWhen="value > 0", onFailure="notify"),
                "spec.notifications": [{"name": "team", "urlSecretRef": {"name": "bait-hook", "key": "url"}}],
                "spec.rollback": {"dryRun": True},
            },
        ),
        (
            "u-allowed",
            RUNS,
            http(f"{prom}/api/v1/query?query=vector(1)", jsonPath="$.data.result[0].value[1]"),
        ),
        # SQL, through the read-only role
        ("s-drop-table", RUNS, sql("DROP TABLE users")),
        ("s-two-statements", RUNS, sql("select 1; drop table users")),
        ("s-sleep", RUNS, sql("select pg_sleep(100)", timeout="1s")),
        ("s-copy-to-program", RUNS, sql("COPY users TO PROGRAM 'id'")),
        ("s-float-overflow", RUNS, sql("select 1e308::float8 * 10")),
        ("s-unknown-parameter", RUNS, sql("select %(nope)s")),
        ("s-read-write", RUNS, sql("set transaction read write")),
    ]


def build(name: str, changes: dict[str, Any]) -> dict[str, Any]:
    body = base_review(name)
    for path, value in changes.items():
        if value is None:
            *parents, last = path.split(".")
            node: Any = body
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node[part]
            node.pop(last, None)
        elif path == "spec.phases.1":
            body["spec"]["phases"].append(copy.deepcopy(value))
        else:
            put(body, path, copy.deepcopy(value))
    return body


def ordinary_review(name: str, deployed_at: datetime.datetime) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PostDeploymentReview",
        "metadata": {"name": name},
        "spec": {
            "target": {"kind": "Deployment", "name": "checkout"},
            "version": "1.0.0",
            "deployedAt": utc(deployed_at),
            "useDefaultTemplate": False,
            "phases": [
                {
                    "name": "immediate",
                    "start": "0s",
                    "end": "40s",
                    "interval": "4s",
                    "checks": [
                        {"name": "ready", "kubernetes": {"measure": "readyRatio"}},
                        {"name": "vector", "prometheus": {"query": "vector(1)"}, "failWhen": "value > 1"},
                    ],
                }
            ],
        },
    }


# --- fixtures -----------------------------------------------------------------------------


class Bait(http.server.BaseHTTPRequestHandler):
    """A loopback server no hostile review may reach: it counts what reaches it."""

    hits: list[str] = []

    def _answer(self) -> None:
        Bait.hits.append(f"{self.command} {self.path}")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"value": 1}')

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def bait() -> Iterator[str]:
    Bait.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Bait)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def custom_objects(kube_cluster: dict[str, Any]) -> kube_client.CustomObjectsApi:
    api = kube_config.new_client_from_config(config_file=kube_cluster["env"]["KUBECONFIG"])
    return kube_client.CustomObjectsApi(api)


def secret(kubectl: Kubectl, namespace: str, name: str, data: dict[str, str]) -> None:
    kubectl.apply(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        },
    )


def reviews_in(kubectl: Kubectl, namespace: str) -> dict[str, dict[str, Any]]:
    items = json.loads(kubectl("-n", namespace, "get", "pdr", "-o", "json"))["items"]
    return {item["metadata"]["name"]: item for item in items}


def runs_logged(log: str, review: str, check: str) -> list[tuple[int, float]]:
    """(slot, seconds after its run time) for each run of a check, from the
    operator's JSON log at ``--verbose`` (one ``run CHECK slot N, Ds after ...`` line per
    run; the status history keeps equal values only as first and last, so it cannot
    count runs)."""
    runs = []
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("review") != review or entry.get("check") != check:
            continue
        found = re.match(r"run \S+ slot (\d+), ([-\d.]+)s after", entry["message"])
        if found:
            runs.append((int(found[1]), float(found[2])))
    return runs


# --- the tests ----------------------------------------------------------------------------


def test_hostile_reviews_are_refused_or_invalid_or_harmless_and_others_stay_on_time(
    kubectl: Kubectl,
    namespace: str,
    run_operator: Run,
    observability: dict[str, Any],
    postgres_db: dict[str, Any],
    custom_objects: kube_client.CustomObjectsApi,
    bait: str,
) -> None:
    prom = observability["env"]["PROMETHEUS_URL"].rstrip("/")
    am = observability["env"]["ALERTMANAGER_URL"].rstrip("/")
    secret(kubectl, namespace, "db", {"dsn": postgres_db["env"]["POSTGRES_DSN"]})
    secret(kubectl, namespace, "token", {"token": "hostile-test-token"})
    secret(kubectl, namespace, "bait-hook", {"url": f"{bait}/hook"})
    with psycopg.connect(postgres_db["env"]["POSTGRES_ADMIN_DSN"]) as db:
        users_before = db.execute("select count(*) from users").fetchone()
    target_before = kubectl.get(namespace, "deployment", "checkout")

    # The engine's own defences, without admission (on by default, it would refuse the
    # confined URLs at creation: tests/e2e/test_admission.py).
    operator = run_operator(
        args=["--egress-allow", prom, "--egress-allow", am, "--verbose"],
        POSTDEPLOY_WEBHOOK="off",
        POSTDEPLOY_LOG_FORMAT="json",
    )
    wait_for("the operator to start", lambda: "postdeploy started" in operator.output())
    start = datetime.datetime.now(datetime.UTC).replace(microsecond=0) + datetime.timedelta(seconds=6)
    ordinary = [f"ordinary-{i}" for i in range(3)]
    for name in ordinary:
        custom_objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, REVIEWS, ordinary_review(name, start)
        )
    wait_for(
        "the ordinary reviews' first runs",
        lambda: all(
            (reviews_in(kubectl, namespace)[n].get("status") or {}).get("checks", [{}])[0].get("runs")
            for n in ordinary
        ),
        timeout=60,
    )

    cases = hostile_cases({"prometheus": prom, "alertmanager": am, "bait": bait})
    outcome: dict[str, str] = {}
    refusals: dict[str, str] = {}
    for name, _, changes in cases:
        try:
            custom_objects.create_namespaced_custom_object(
                GROUP, VERSION, namespace, REVIEWS, build(name, changes)
            )
        except kube_client.ApiException as error:
            assert error.status in (400, 422), (name, error.status, error.body)
            outcome[name] = API
            refusals[name] = json.loads(error.body).get("message", "")[:200]
    accepted = [name for name, _, _ in cases if name not in outcome]

    def all_have_a_verdict() -> bool:
        items = reviews_in(kubectl, namespace)
        statuses = {n: items.get(n, {}).get("status") or {} for n in accepted}
        # The SQL cases are read for their check's first result: a run is due at its
        # run time, a moment after the first status (verdict Pending) is written.
        return all(s.get("verdict") for s in statuses.values()) and all(
            any(c.get("lastResult") for c in statuses[n].get("checks", []))
            for n in accepted
            if n.startswith("s-") and statuses[n].get("verdict") != "Invalid"
        )

    wait_for("a verdict on every accepted hostile review", all_have_a_verdict, timeout=90)
    items = reviews_in(kubectl, namespace)
    messages: dict[str, str] = {}
    for name in accepted:
        status = items[name]["status"]
        outcome[name] = INVALID if status["verdict"] == "Invalid" else RUNS
        messages[name] = status.get("message", "")
        if outcome[name] == INVALID:
            kinds = {c["type"] for c in status["conditions"] if c["status"] == "True"}
            assert kinds & {"InvalidSpec", "Refused"}, (name, status["conditions"])
            assert status["message"].startswith("spec."), (name, status["message"])

    # The ordinary reviews finish on time: each slot once, each run within 2 s of its start.
    def ordinary_done() -> bool:
        found = reviews_in(kubectl, namespace)
        return all((found[n].get("status") or {}).get("phase") == "Completed" for n in ordinary)

    wait_for("the ordinary reviews to complete", ordinary_done, timeout=90)
    found = reviews_in(kubectl, namespace)
    worst = 0.0
    for name in ordinary:
        status = found[name]["status"]
        assert status["verdict"] == "Passed", (name, status.get("message"))
        for check_name in ("ready", "vector"):
            runs = runs_logged(operator.output(), f"{namespace}/{name}", check_name)
            assert sorted(slot for slot, _ in runs) == list(range(10)), (name, check_name, runs)
            check = next(c for c in status["checks"] if c["name"] == check_name)
            assert check["runs"] == 10, (name, check)  # the slots it ran: from the log, above
            worst = max(worst, *(late for _, late in runs))
    assert worst < 2.0, worst

    log = operator.output()
    assert "Traceback" not in log
    assert Bait.hits == [], Bait.hits
    webhook = items["u-webhook-to-bait"]["status"]
    wait_for(
        "the webhook delivery to be refused",
        lambda: any(
            d["state"] == "Failed" and "not under an allowed prefix" in (d.get("error") or "")
            for n in (
                reviews_in(kubectl, namespace)["u-webhook-to-bait"]["status"].get("notifications") or []
            )
            for d in n["deliveries"]
        ),
        timeout=30,
    )
    assert Bait.hits == [], (Bait.hits, webhook)
    for name in (n for n, _, _ in cases if n.startswith("s-")):
        sql_check = next(c for c in items[name]["status"]["checks"] if c["name"] == "c")
        messages[name] = sql_check["message"]
        assert sql_check["lastResult"] == "Error", (name, sql_check)
    templated = next(c for c in items["u-templated-host"]["status"]["checks"] if c["name"] == "c")
    assert "--egress-allow" in templated["message"], templated
    target_after = kubectl.get(namespace, "deployment", "checkout")
    assert target_after["metadata"]["generation"] == target_before["metadata"]["generation"]
    assert target_after["metadata"]["annotations"] == target_before["metadata"]["annotations"]
    with psycopg.connect(postgres_db["env"]["POSTGRES_ADMIN_DSN"]) as db:
        assert db.execute("select count(*) from users").fetchone() == users_before

    counts = collections.Counter(outcome.values())
    print(f"\nhostile reviews: {len(cases)}: " + ", ".join(f"{n} {what}" for what, n in counts.most_common()))
    print(f"ordinary reviews: every slot run once, latest run {worst:.2f}s after its run time")
    for name, _expected, _ in cases:
        detail = " ".join((refusals.get(name) or messages.get(name, "")).split())
        print(f"  {name:28} {outcome[name]:26} {detail[:110]}")
    wrong = {name: (outcome[name], expected) for name, expected, _ in cases if outcome[name] != expected}
    assert not wrong, wrong
    assert len(cases) >= 70


def test_a_tick_that_raises_backs_off_and_others_stay_on_time(
    kubectl: Kubectl, namespace: str, run_operator: Run, custom_objects: kube_client.CustomObjectsApi
) -> None:
    operator = run_operator(
        args=["--verbose"],
        POSTDEPLOY_FAILPOINTS="tick-raise",
        POSTDEPLOY_TICK_BACKOFF="1",
        POSTDEPLOY_TICK_MAX_BACKOFF="8",
        POSTDEPLOY_LOG_FORMAT="json",
    )
    wait_for("the operator to start", lambda: "postdeploy started" in operator.output())
    start = datetime.datetime.now(datetime.UTC).replace(microsecond=0) + datetime.timedelta(seconds=4)
    steady = ordinary_review("steady", start)
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, REVIEWS, steady)
    crashing = base_review("crashing")
    crashing["metadata"]["annotations"] = {"postdeploy.io/failpoint": "tick-raise"}
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, REVIEWS, crashing)

    def failures() -> list[tuple[datetime.datetime, str]]:
        found = []
        for line in operator.output().splitlines():
            if "tick failed (" not in line or "crashing" not in line:
                continue
            entry = json.loads(line)
            found.append((datetime.datetime.fromisoformat(entry["time"]), entry["message"]))
        return found

    wait_for("six failed ticks", lambda: len(failures()) >= 6, timeout=60)
    status = kubectl.get(namespace, "pdr", "crashing")["status"]
    failed = next(c for c in status["conditions"] if c["type"] == "TickFailed")
    assert failed["status"] == "True" and "Injected: failpoint tick-raise" in failed["message"]
    events = [e for e in kubectl.events(namespace, "crashing") if e["reason"] == "TickFailed"]
    assert events and all(e["type"] == "Warning" for e in events)

    kubectl("-n", namespace, "annotate", "pdr", "crashing", "postdeploy.io/failpoint-")
    recovered = wait_for(
        "TickFailed False",
        lambda: next(
            (
                c
                for c in (kubectl.get(namespace, "pdr", "crashing").get("status") or {}).get("conditions", [])
                if c["type"] == "TickFailed" and c["status"] == "False"
            ),
            None,
        ),
    )
    assert recovered["reason"] == "TickSucceeded"

    times = [t for t, _ in failures()][:6]
    gaps = [round((b - a).total_seconds(), 2) for a, b in itertools.pairwise(times)]
    print(f"\nbackoff after 1..5 failures in a row (s): {gaps}")
    for gap, expected in zip(gaps, [1, 2, 4, 8, 8], strict=True):
        assert expected <= gap < expected + 1.0, gaps

    wait_for(
        "the steady review to complete",
        lambda: (kubectl.get(namespace, "pdr", "steady").get("status") or {}).get("phase") == "Completed",
        timeout=90,
    )
    status = kubectl.get(namespace, "pdr", "steady")["status"]
    assert status["verdict"] == "Passed"
    for check_name in ("ready", "vector"):
        runs = runs_logged(operator.output(), f"{namespace}/steady", check_name)
        assert sorted(slot for slot, _ in runs) == list(range(10)), runs
        check = next(c for c in status["checks"] if c["name"] == check_name)
        assert check["runs"] == 10, check  # the slots it ran: from the log, above
        assert max(late for _, late in runs) < 2.0, runs
    log = operator.output()
    assert log.count('"exception"') == 1 and "Injected: failpoint tick-raise" in log
