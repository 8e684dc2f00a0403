"""The operator's Kubernetes client (``postdeploy.kit.kube``) against a loopback HTTP
server that answers as the API server would: paths, query parameters, content types,
errors, the connection bound and the second log-in after a 401; and the log-in from a
kubeconfig, an exec credential plugin's included."""

from __future__ import annotations

import json
import pathlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kopf
import pytest
from aiohttp import web

from postdeploy.kit import kube
from tests import loopback

Seen = list[dict[str, Any]]


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Seen]]:
    """An API server stand-in: echoes what it was asked; 401 for the token "old";
    a Status 404 for .../missing; 409 with a Status for POSTs to .../conflict."""
    seen: Seen = []

    async def answer(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "authorization": request.headers.get("Authorization"),
                "content_type": request.headers.get("Content-Type"),
                "body": json.loads(body) if body else None,
            }
        )
        if request.headers.get("Authorization") == "Bearer old":
            return web.json_response({"kind": "Status", "reason": "Unauthorized", "code": 401}, status=401)
        if request.path.endswith("/missing"):
            status = {"kind": "Status", "reason": "NotFound", "message": 'deployments "missing" not found'}
            return web.json_response(status, status=404)
        if request.path.endswith("/conflict"):
            status = {
                "kind": "Status",
                "reason": "AlreadyExists",
                "message": 'leases "conflict" already exists',
            }
            return web.json_response(status, status=409)
        return web.json_response({"kind": "Echo", "path": request.path, "query": dict(request.query)})

    async with loopback.serve(answer) as url:
        yield url, seen


def test_paths_of_core_and_grouped_resources() -> None:
    assert kube.path("v1", "pods", "team") == "/api/v1/namespaces/team/pods"
    assert (
        kube.path("apps/v1", "deployments", "team", "web") == "/apis/apps/v1/namespaces/team/deployments/web"
    )
    assert kube.path("postdeploy.io/v1alpha1", "postdeploymentreviews", "t", "r", "status") == (
        "/apis/postdeploy.io/v1alpha1/namespaces/t/postdeploymentreviews/r/status"
    )
    assert kube.path("authorization.k8s.io/v1", "subjectaccessreviews") == (
        "/apis/authorization.k8s.io/v1/subjectaccessreviews"
    )


async def test_requests_carry_the_token_parameters_and_content_types(server: tuple[str, Seen]) -> None:
    url, seen = server
    api = kube.Client(lambda: kopf.ConnectionInfo(server=url, token="t1"), connections=3)
    try:
        answer = await api.get(
            kube.path("v1", "pods", "team"), labelSelector="app=web,tier in (a)", watch=False
        )
        assert answer["path"] == "/api/v1/namespaces/team/pods"
        await api.patch(
            kube.path("apps/v1", "deployments", "team", "web"), {"a": 1}, kube.STRATEGIC_MERGE_PATCH
        )
        await api.patch(kube.path("apps/v1", "deployments", "team", "web"), {"b": 2})
        await api.create(kube.path("v1", "events", "team"), {"kind": "Event"}, dryRun="All")
        await api.delete(kube.path("v1", "configmaps", "team", "x"), {"propagationPolicy": "Background"})
    finally:
        await api.close()
    assert [s["authorization"] for s in seen] == ["Bearer t1"] * 5
    assert seen[0]["query"] == {"labelSelector": "app=web,tier in (a)", "watch": "false"}
    assert seen[0]["body"] is None
    assert [s["content_type"] for s in seen[1:]] == [
        "application/strategic-merge-patch+json",
        "application/merge-patch+json",
        "application/json",
        "application/json",
    ]
    assert seen[3]["query"] == {"dryRun": "All"} and seen[3]["body"] == {"kind": "Event"}
    assert seen[4]["method"] == "DELETE" and seen[4]["body"] == {"propagationPolicy": "Background"}


async def test_an_answer_outside_2xx_is_an_api_error_with_the_servers_message(
    server: tuple[str, Seen],
) -> None:
    url, _ = server
    api = kube.Client(lambda: kopf.ConnectionInfo(server=url, token="t"))
    try:
        assert await api.read(kube.path("apps/v1", "deployments", "team", "missing")) is None
        with pytest.raises(kube.ApiError) as raised:
            await api.get(kube.path("apps/v1", "deployments", "team", "missing"))
        assert (raised.value.status, raised.value.reason) == (404, "Not Found")
        assert raised.value.message == 'deployments "missing" not found'
        with pytest.raises(kube.ApiError) as conflict:
            await api.create(kube.path("coordination.k8s.io/v1", "leases", "team", "conflict"), {})
        assert conflict.value.status == 409 and "already exists" in str(conflict.value)
    finally:
        await api.close()


async def test_an_unreachable_server_is_an_api_error_of_status_0() -> None:
    api = kube.Client(lambda: kopf.ConnectionInfo(server="http://127.0.0.1:1", token="t"))
    try:
        with pytest.raises(kube.ApiError) as raised:
            await api.get("/api/v1/namespaces")
        assert raised.value.status == 0
    finally:
        await api.close()


async def test_a_401_logs_in_again_once_and_repeats_the_request(server: tuple[str, Seen]) -> None:
    url, seen = server
    tokens = iter(["old", "new"])
    logins: list[str] = []

    def credentials() -> kopf.ConnectionInfo:
        logins.append(token := next(tokens))
        return kopf.ConnectionInfo(server=url, token=token)

    api = kube.Client(credentials)
    try:
        answer = await api.get(kube.path("v1", "pods", "team"))
        assert answer["kind"] == "Echo"
        await api.get(kube.path("v1", "pods", "team"))
    finally:
        await api.close()
    assert logins == ["old", "new"]
    assert [s["authorization"] for s in seen] == ["Bearer old", "Bearer new", "Bearer new"]


async def test_after_a_401_a_write_and_a_watch_are_asked_again_with_the_new_login(
    server: tuple[str, Seen],
) -> None:
    url, seen = server
    tokens = iter(["old", "new", "old", "new"])
    api = kube.Client(lambda: kopf.ConnectionInfo(server=url, token=next(tokens)))
    try:
        await api.patch(kube.path("v1", "pods", "team", "web"), {"a": 1})
        await api.close()  # the next request logs in again: "old", then "new" after the 401
        events = [event async for event in api.watch(kube.path("v1", "pods", "team"), timeoutSeconds=5)]
    finally:
        await api.close()
    assert [(s["method"], s["authorization"]) for s in seen] == [
        ("PATCH", "Bearer old"),
        ("PATCH", "Bearer new"),
        ("GET", "Bearer old"),
        ("GET", "Bearer new"),
    ]
    assert seen[1]["content_type"] == kube.MERGE_PATCH and seen[1]["body"] == {"a": 1}
    assert seen[3]["query"] == {"timeoutSeconds": "5", "watch": "true"}
    assert [event["kind"] for event in events] == ["Echo"]


async def test_a_second_401_is_an_error_not_a_loop(server: tuple[str, Seen]) -> None:
    url, seen = server
    api = kube.Client(lambda: kopf.ConnectionInfo(server=url, token="old"))
    try:
        with pytest.raises(kube.ApiError) as raised:
            await api.get(kube.path("v1", "pods", "team"))
        assert raised.value.status == 401
    finally:
        await api.close()
    assert len(seen) == 2


async def test_the_client_keeps_at_most_that_many_connections(server: tuple[str, Seen]) -> None:
    url, _ = server
    api = kube.Client(lambda: kopf.ConnectionInfo(server=url, token="t"), connections=5)
    try:
        await api.get("/api/v1/namespaces")
        session = api._session
        assert isinstance(session, aiohttp.ClientSession)
        assert session.connector is not None and session.connector.limit == 5
        assert session.trust_env is False  # no per-request ~/.netrc and proxy lookups
    finally:
        await api.close()


def _kubeconfig(tmp_path: pathlib.Path, user: str) -> pathlib.Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:6443', insecure-skip-tls-verify: true}}]\n"
        f"users: [{{name: u, user: {user}}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u, namespace: team}}]\n"
    )
    return path


def test_login_reads_the_kubeconfigs_current_context(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path, "{token: t0}")))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    info = kube.login()
    assert (info.server, info.token, info.insecure, info.default_namespace) == (
        "https://127.0.0.1:6443",
        "t0",
        True,
        "team",
    )


def test_login_runs_the_kubeconfigs_exec_plugin(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "import json, os\n"
        "asked = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "print(json.dumps({'apiVersion': asked['apiVersion'], 'kind': 'ExecCredential', 'status': {\n"
        "    'token': 'from-' + os.environ['WHO'], 'expirationTimestamp': '2030-01-02T03:04:05Z'}}))\n"
    )
    user = (
        "{exec: {apiVersion: client.authentication.k8s.io/v1, "
        f"command: '{sys.executable}', args: ['{plugin}'], env: [{{name: WHO, value: plugin}}]}}}}"
    )
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path, user)))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    info = kube.login()
    assert info.token == "from-plugin"
    assert info.expiration is not None and info.expiration.year == 2030


def test_a_failing_exec_plugin_is_a_login_error(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = f"{{exec: {{apiVersion: client.authentication.k8s.io/v1, command: '{tmp_path / 'absent'}'}}}}"
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path, user)))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(kopf.LoginError, match="exec plugin"):
        kube.login()


def test_login_reads_relative_files_beside_the_kubeconfig(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_text("from-file\n")
    config = _kubeconfig(tmp_path, "{tokenFile: token}")
    config.write_text(
        config.read_text().replace("insecure-skip-tls-verify: true", "certificate-authority: ca.crt")
    )
    monkeypatch.setenv("KUBECONFIG", str(config))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    info = kube.login()
    assert info.token == "from-file"
    assert info.ca_path == str(tmp_path / "ca.crt")


@pytest.mark.parametrize(
    ("host", "server"),
    [("10.96.0.1", "https://10.96.0.1:6443"), ("fd00::1", "https://[fd00::1]:6443")],
)
def test_in_a_cluster_the_service_account_logs_in_to_the_address_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, host: str, server: str
) -> None:
    """kopf reads the token and CA (fixed paths a test cannot write); the server is the
    kubernetes Service's address from the pod's environment, as client-go takes it."""
    read = kopf.ConnectionInfo(
        server="https://kubernetes.default.svc", token="sa-token", ca_path="/sa/ca.crt"
    )
    monkeypatch.setattr(kopf, "login_with_service_account", lambda settings: read)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    info = kube.login()
    assert (info.server, info.token, info.ca_path) == (server, "sa-token", "/sa/ca.crt")


def test_in_a_cluster_without_a_token_the_login_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kopf, "login_with_service_account", lambda settings: None)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    with pytest.raises(kopf.LoginError, match="no service account token"):
        kube.login()
