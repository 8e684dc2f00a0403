"""The operator's Kubernetes client: JSON over aiohttp to the API server.

Every read and write of the operator goes through one ``Client``: a path, a method, a
body, and the answer as a plain dict in its wire form (camelCase), as ``kubectl get -o
json`` shows it (a pod's log, ``Client.text``, is the one plain-text answer). There are
no model classes: every caller here wants the wire form, and the generated clients'
models cost memory whether used or not (kubernetes_asyncio's 1,536 model modules are
36 MB of an operator's ~140; docs/benchmarks.md "Beside Argo Rollouts"). The
credentials come from kopf's login functions (``login``); the transport is aiohttp, the
library kopf's own API client and the Prometheus provider use.

``Client.watch`` streams a collection's watch events (``postdeploy.kit.mirrors`` keeps
namespaces' workloads and pods with it; kopf watches the reviews itself), over
connections of their own, so a long watch never holds one of the ``connections`` that
reads and writes wait for. What it does not do: YAML, typed objects, retries (a caller
that retries says so). An answer outside 2xx raises ``ApiError`` with the
status code, the reason and the API server's message; a 401 logs in again once and
repeats the request (a service account's token file is rotated by the kubelet).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime
import json
import os
import ssl
import subprocess
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any, Literal

import aiohttp
import kopf
import orjson

__all__ = [
    "JSON_PATCH",
    "MERGE_PATCH",
    "STRATEGIC_MERGE_PATCH",
    "ApiError",
    "Client",
    "ContentType",
    "login",
    "path",
]

Obj = dict[str, Any]
Params = Mapping[str, str | int | bool | None]

ContentType = Literal[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
]
MERGE_PATCH: ContentType = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH: ContentType = "application/strategic-merge-patch+json"
JSON_PATCH: ContentType = "application/json-patch+json"

# A request that the API server has not answered in a minute is an error of its own
# (aiohttp's default would wait five): a tick then fails and is retried, instead of
# holding a review's run for minutes.
TIMEOUT_SECONDS = 60.0
# A watch the API server has sent nothing on for this long (not even the end of its
# ``timeoutSeconds``) is taken as broken: a hung server is found within this time.
WATCH_READ_SECONDS = 90.0

_SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


class ApiError(Exception):
    """The API server answered outside 2xx: ``status`` (0 when it could not be reached),
    ``reason`` (the HTTP reason phrase, e.g. "Not Found"; the exception's name for 0) and
    ``message`` (the Status object's message, which names the object and the rule)."""

    def __init__(self, status: int, reason: str, message: str = "") -> None:
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"({status}) {reason}" + (f": {message}" if message else ""))


def path(
    api_version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The URL path of a collection or object: ``path("apps/v1", "deployments", "ns",
    "web")`` is ``/apis/apps/v1/namespaces/ns/deployments/web``; the core group is
    ``"v1"``."""
    parts = ["/api/v1" if api_version == "v1" else f"/apis/{api_version}"]
    if namespace is not None:
        parts.append(f"namespaces/{namespace}")
    parts.append(plural)
    if name is not None:
        parts.append(name)
        if subresource is not None:
            parts.append(subresource)
    return "/".join(parts)


def login() -> kopf.ConnectionInfo:
    """The operator's own credentials: its pod's service account when run in a cluster
    (``KUBERNETES_SERVICE_HOST`` set and no ``KUBECONFIG``), else the kubeconfig's
    current context (``KUBECONFIG`` or ``~/.kube/config``) as kopf reads it, with an
    ``exec`` credential plugin run when the context's user names one.

    Registered as kopf's login handler too (``handlers.lifecycle``), so kopf's watches
    and the engine's requests act as the same identity."""
    settings = kopf.OperatorSettings()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        info = kopf.login_with_service_account(settings=settings)
        if info is None:
            raise kopf.LoginError(f"no service account token in {_SERVICE_ACCOUNT}")
        host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        host = f"[{host}]" if ":" in host else host
        # The service's address from the environment, as client-go does: a pod on the
        # host network may not resolve kubernetes.default.svc.
        return dataclasses.replace(info, server=f"https://{host}:{port}")
    info = kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.LoginError("no KUBECONFIG, no ~/.kube/config and not in a cluster")
    directory, user = _kubeconfig_user()
    # Relative file names are relative to the kubeconfig's directory, as kubectl reads them.
    files: dict[str, Any] = {
        name: os.path.join(directory, os.fsdecode(value))
        for name in ("ca_path", "certificate_path", "private_key_path")
        if (value := getattr(info, name)) and not os.path.isabs(os.fsdecode(value))
    }
    if user.get("tokenFile") and not info.token:
        with open(os.path.join(directory, user["tokenFile"]), encoding="utf-8") as file:
            files["token"] = file.read().strip()
    info = dataclasses.replace(info, **files) if files else info
    if user.get("exec") and not info.token:
        return _exec_credentials(info, user["exec"])
    return info


def _kubeconfig_user() -> tuple[str, Obj]:
    """The directory of the kubeconfig that names the current context, and the context's
    user entry (the first file that has each, as kubectl merges them)."""
    import yaml  # kopf's own dependency; only read when run outside a cluster

    names = os.environ.get("KUBECONFIG") or "~/.kube/config"
    documents: list[tuple[str, Obj]] = []
    for name in (os.path.expanduser(p.strip()) for p in names.split(os.pathsep)):
        if name and os.path.exists(name):
            with open(name, encoding="utf-8") as file:
                documents.append((os.path.dirname(os.path.abspath(name)), yaml.safe_load(file) or {}))
    directory, current = next(
        ((d, c["current-context"]) for d, c in documents if c.get("current-context")), ("", None)
    )
    context = next(
        (
            x.get("context") or {}
            for _, c in documents
            for x in c.get("contexts") or []
            if x.get("name") == current
        ),
        {},
    )
    user = next(
        (
            x.get("user") or {}
            for _, c in documents
            for x in c.get("users") or []
            if x.get("name") == context.get("user")
        ),
        {},
    )
    return directory, user


def _exec_credentials(info: kopf.ConnectionInfo, spec: Mapping[str, Any]) -> kopf.ConnectionInfo:
    """Run a kubeconfig's ``exec`` credential plugin (client.authentication.k8s.io
    ExecCredential) and take its token or client certificate."""
    environment = dict(os.environ)
    environment.update({e["name"]: e["value"] for e in spec.get("env") or []})
    request = {
        "apiVersion": spec.get("apiVersion", "client.authentication.k8s.io/v1"),
        "kind": "ExecCredential",
    }
    environment["KUBERNETES_EXEC_INFO"] = json.dumps({**request, "spec": {"interactive": False}})
    try:
        done = subprocess.run(
            [spec["command"], *(spec.get("args") or [])],
            env=environment,
            capture_output=True,
            check=True,
            timeout=TIMEOUT_SECONDS,
        )
        status = json.loads(done.stdout).get("status") or {}
    except (OSError, subprocess.SubprocessError, ValueError) as error:
        raise kopf.LoginError(
            f"the kubeconfig's exec plugin {spec.get('command')!r} failed: {error}"
        ) from None
    expiry = status.get("expirationTimestamp")
    changes: dict[str, Any] = {
        "token": status.get("token"),
        "expiration": datetime.datetime.fromisoformat(expiry.replace("Z", "+00:00")) if expiry else None,
    }
    if status.get("clientCertificateData") and status.get("clientKeyData"):
        changes["certificate_path"] = changes["private_key_path"] = None
        changes["certificate_data"] = base64.b64encode(status["clientCertificateData"].encode()).decode()
        changes["private_key_data"] = base64.b64encode(status["clientKeyData"].encode()).decode()
    return dataclasses.replace(info, **changes)


class Client:
    """Requests to one API server as one identity, over at most ``connections``
    connections (``Settings.api_connections``).

    ``credentials`` is called at the first request and again after a 401 (or when the
    credentials it gave have expired); the session is built then. Not thread-safe: use
    it from the operator's event loop.
    """

    def __init__(self, credentials: Callable[[], kopf.ConnectionInfo] = login, connections: int = 16) -> None:
        self._credentials = credentials
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._server = ""
        self._headers: dict[str, str] = {}
        self._expiry: datetime.datetime | None = None
        self._proxy: str | None = None
        self._ssl: ssl.SSLContext | None = None
        self._watch_session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()

    async def _connect(self, stale: aiohttp.ClientSession | None = None) -> aiohttp.ClientSession:
        async with self._lock:
            if self._session is not None and self._session is not stale and not self._expired():
                return self._session
            info = await asyncio.to_thread(self._credentials)
            self._ssl = info.as_ssl_context()
            connector = aiohttp.TCPConnector(limit=self._connections, ssl=self._ssl)
            old, self._session = (
                self._session,
                aiohttp.ClientSession(
                    connector=connector,
                    # No ~/.netrc or proxy variables looked up on every request (aiohttp
                    # does that in a worker thread); a kubeconfig's proxy-url is kept.
                    trust_env=False,
                    read_bufsize=2**21,
                    timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS),
                ),
            )
            self._server = info.server.rstrip("/")
            self._proxy = info.proxy_url
            self._headers = {"Accept": "application/json", **info.as_http_headers()}
            expiry = info.expiration
            if expiry is not None and expiry.tzinfo is None:
                expiry = expiry.replace(tzinfo=datetime.UTC)
            self._expiry = expiry
            if old is not None:
                await old.close()
            if self._watch_session is not None:  # watches go on with the new credentials
                await self._watch_session.close()
                self._watch_session = None
            return self._session

    def _expired(self) -> bool:
        return self._expiry is not None and datetime.datetime.now(datetime.UTC) >= self._expiry

    async def request(
        self,
        method: str,
        url_path: str,
        *,
        params: Params | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Obj:
        """The API server's answer to one request, decoded; ``ApiError`` outside 2xx."""
        payload = await self._send(method, url_path, params, body, content_type)
        if not payload:
            return {}
        result: Obj = orjson.loads(payload)
        return result

    async def _send(
        self,
        method: str,
        url_path: str,
        params: Params | None,
        body: Any,
        content_type: str,
        accept: str | None = None,
    ) -> bytes:
        """The body of the API server's answer; ``ApiError`` outside 2xx."""
        query = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        data = None if body is None else orjson.dumps(body)
        extra = {} if data is None else {"Content-Type": content_type}
        if accept is not None:
            extra["Accept"] = accept
        async with self._opened(method, url_path, query, data, extra) as response:
            payload = await response.read()
            status, reason = response.status, response.reason or ""
        if not 200 <= status <= 299:
            raise _error(status, reason, payload)
        return payload

    @contextlib.asynccontextmanager
    async def _opened(
        self,
        method: str,
        url_path: str,
        query: Mapping[str, str],
        data: bytes | None,
        extra_headers: Mapping[str, str] | None = None,
        *,
        watch: bool = False,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One answer of the API server, open for its body, over the request session
        (``watch``: the watches' own), with the login's headers and ``extra_headers``.
        A 401 logs in again and asks once more, with the new login's headers; a
        connection that breaks or times out, while asking or while the caller reads,
        is ``ApiError(0, ...)``."""
        session = self._session
        if session is None or self._expired():
            session = await self._connect()
        for attempt in (1, 2):
            try:
                sender = await self._watching() if watch else session
                async with sender.request(
                    method,
                    self._server + url_path,
                    params=query,
                    data=data,
                    headers={**self._headers, **extra_headers} if extra_headers else self._headers,
                    proxy=self._proxy,
                ) as response:
                    if response.status == 401 and attempt == 1:
                        session = await self._connect(stale=session)
                        continue
                    yield response
                    return
            except (aiohttp.ClientError, TimeoutError) as error:
                raise ApiError(0, type(error).__name__, str(error)) from None

    async def get(self, url_path: str, **params: str | int | bool | None) -> Obj:
        return await self.request("GET", url_path, params=params)

    async def text(self, url_path: str, **params: str | int | bool | None) -> str:
        """A plain-text answer (a pod's log), decoded as UTF-8."""
        payload = await self._send("GET", url_path, params, None, "application/json", "text/plain, */*")
        return payload.decode("utf-8", "replace")

    async def read(self, url_path: str) -> Obj | None:
        """The object, or None when it does not exist (404)."""
        try:
            return await self.request("GET", url_path)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def create(self, url_path: str, body: Any, **params: str | int | bool | None) -> Obj:
        return await self.request("POST", url_path, params=params, body=body)

    async def patch(
        self, url_path: str, body: Any, content_type: str = MERGE_PATCH, **params: str | int | bool | None
    ) -> Obj:
        return await self.request("PATCH", url_path, params=params, body=body, content_type=content_type)

    async def replace(self, url_path: str, body: Any) -> Obj:
        return await self.request("PUT", url_path, body=body)

    async def delete(self, url_path: str, body: Any = None, **params: str | int | bool | None) -> Obj:
        return await self.request("DELETE", url_path, params=params, body=body)

    async def watch(self, url_path: str, **params: str | int | bool | None) -> AsyncGenerator[Obj, None]:
        """The watch events of a collection (``{"type": ..., "object": ...}``, in the
        order the API server sends them) until it ends the watch: ``timeoutSeconds``
        passed, or the connection broke (``ApiError(0, ...)``), or nothing came for
        ``WATCH_READ_SECONDS``. ``ApiError`` outside 2xx; an expired ``resourceVersion``
        is an ``ERROR`` event whose object is a Status with code 410."""
        query = {k: _query_value(v) for k, v in {**params, "watch": True}.items() if v is not None}
        async with self._opened("GET", url_path, query, None, watch=True) as response:
            if not 200 <= response.status <= 299:
                raise _error(response.status, response.reason or "", await response.read())
            try:
                async for line in response.content:
                    if line.strip():
                        event: Obj = orjson.loads(line)
                        yield event
            except ValueError as error:  # a line that is not JSON, or longer than the buffer
                raise ApiError(0, "bad watch stream", str(error)) from None

    async def _watching(self) -> aiohttp.ClientSession:
        """The session of the watches: connections of their own, no total timeout."""
        if self._watch_session is None or self._watch_session.closed:
            self._watch_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ssl=self._ssl if self._ssl is not None else True),
                trust_env=False,
                read_bufsize=2**21,
                timeout=aiohttp.ClientTimeout(total=None, sock_read=WATCH_READ_SECONDS),
            )
        return self._watch_session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._watch_session is not None:
            await self._watch_session.close()
            self._watch_session = None


def _query_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _error(status: int, reason: str, payload: bytes) -> ApiError:
    """An ApiError from the answer: the HTTP reason phrase, and the Status object's
    message when the answer is one."""
    try:
        answer = orjson.loads(payload) if payload else {}
    except orjson.JSONDecodeError:
        answer = {}
    if isinstance(answer, dict) and answer.get("kind") == "Status":
        return ApiError(status, reason, str(answer.get("message") or ""))
    return ApiError(status, reason)
