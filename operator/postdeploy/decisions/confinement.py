"""Where a review may reach: its own namespace, and the URLs the operator allows.

Pure functions, no I/O. The engine calls them before a tick touches anything
(``engine/ticks.py``) and before a request leaves (providers, notifications); the
admission webhook calls the same functions, so a review is refused with the same
words at ``kubectl apply`` and at run time.

- :func:`namespace_refusal`: a review acts in its own namespace; a target in
  another one only for a pair the operator was started with
  (``--allow-cross-namespace FROM=TO``, Helm value ``confinement.allowCrossNamespace``).
- :func:`egress_refusal`: with an egress allowlist (``--egress-allow PREFIX``, Helm
  value ``confinement.egressAllowlist``), a review may send requests (and the Secrets they carry)
  only to URLs under one of its prefixes; an empty allowlist allows every URL.
- :func:`review_refusal`: both rules over a whole (merged) review spec: its target,
  and every URL written in it (``spec.providers``, each check's ``prometheus.address``,
  ``alertmanager.address`` and ``http.url``). Only ``http.url`` is templated: one
  with ``{{...}}`` placeholders is checked once rendered, by the http provider,
  before it is sent; anywhere else a placeholder is just text, checked as written.

URLs are parsed, never compared as strings: scheme, host and port must be equal
(case-insensitive, default ports filled in) and the path must lie under the
prefix's path on a segment boundary. Anything two URL parsers could read two ways
(backslashes, spaces, control or non-ASCII characters, credentials before the host,
``.``/``..`` segments, encoded slashes) is refused rather than interpreted.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections.abc import Collection, Iterable, Iterator

from postdeploy.models import reviews

__all__ = [
    "EGRESS_RULE",
    "NAMESPACE_RULE",
    "UrlPrefix",
    "egress_refusal",
    "namespace_refusal",
    "parse_namespace_pair",
    "parse_url_prefix",
    "review_refusal",
    "spec_urls",
]

NAMESPACE_RULE = (
    "a review acts only in its own namespace; the operator allows a cross-namespace pair with "
    "--allow-cross-namespace FROM=TO (Helm value confinement.allowCrossNamespace)"
)
EGRESS_RULE = (
    "reviews may send requests only to URLs under the operator's egress allowlist "
    "(--egress-allow PREFIX, Helm value confinement.egressAllowlist)"
)

_DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 1123 labels: what a Kubernetes namespace name may be.
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# Printable ASCII without space and backslash: everything else is read differently
# by different URL parsers (or by none), so it is refused, not guessed at.
_PLAIN = re.compile(r"[!-\[\]-~]+")
_DOT_SEGMENT = re.compile(r"(^|/)(\.|%2e){1,2}(/|$)", re.IGNORECASE)
_ENCODED_SEPARATOR = re.compile(r"%(2f|5c)", re.IGNORECASE)


def namespace_refusal(
    review_namespace: str, target_namespace: str | None, allowed_pairs: Collection[tuple[str, str]]
) -> str | None:
    """Why a review in ``review_namespace`` may not target ``target_namespace``; None when it may.

    A target without a namespace is in the review's own. ``allowed_pairs`` holds
    ``(FROM, TO)``: reviews in FROM may target workloads in TO.
    """
    if not target_namespace or target_namespace == review_namespace:
        return None
    if (review_namespace, target_namespace) in allowed_pairs:
        return None
    return (
        f"spec.target.namespace: {target_namespace!r} is not the review's namespace {review_namespace!r}: "
        f"{NAMESPACE_RULE}, e.g. --allow-cross-namespace {review_namespace}={target_namespace}"
    )


def parse_namespace_pair(text: str) -> tuple[str, str]:
    """``"team-a=team-b"`` as ``("team-a", "team-b")``; ValueError naming what is wrong."""
    source, sep, target = text.strip().partition("=")
    if not sep or not _NAMESPACE.fullmatch(source) or not _NAMESPACE.fullmatch(target):
        raise ValueError(f"{text!r} is not FROM=TO with two namespace names, e.g. team-a=team-b")
    return source, target


@dataclasses.dataclass(frozen=True)
class UrlPrefix:
    """A parsed URL, or prefix of URLs: what the comparison looks at."""

    scheme: str
    host: str
    port: int
    path: str

    def covers(self, url: UrlPrefix) -> bool:
        if (self.scheme, self.host, self.port) != (url.scheme, url.host, url.port):
            return False
        base = self.path.rstrip("/")
        return url.path == base or url.path.startswith(base + "/")

    def __str__(self) -> str:
        netloc = f"[{self.host}]" if ":" in self.host else self.host
        if self.port != _DEFAULT_PORTS[self.scheme]:
            netloc = f"{netloc}:{self.port}"
        return f"{self.scheme}://{netloc}{self.path}"


def _parse(text: str) -> UrlPrefix:
    """Parse a URL for comparison; ValueError saying what makes it unsafe to compare."""
    if not isinstance(text, str) or not text:
        raise ValueError("the URL is empty")
    if not _PLAIN.fullmatch(text):
        raise ValueError("the URL holds a space, backslash, control or non-ASCII character")
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError as error:
        raise ValueError(f"the URL does not parse ({error})") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError("only http and https URLs are allowed")
    if "@" in parts.netloc:
        raise ValueError("credentials before the host are not allowed (use a Secret reference)")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValueError("the URL names no host")
    path = parts.path or "/"
    if _DOT_SEGMENT.search(path):
        raise ValueError("the path holds '.' or '..' segments")
    if _ENCODED_SEPARATOR.search(path):
        raise ValueError("the path holds an encoded slash or backslash")
    return UrlPrefix(scheme, host.lower(), port if port is not None else _DEFAULT_PORTS[scheme], path)


def parse_url_prefix(text: str) -> UrlPrefix:
    """An allowlist entry such as ``https://hooks.example.com/services/``; ValueError when unsafe."""
    try:
        return _parse(text.strip())
    except ValueError as error:
        raise ValueError(f"egress prefix {text!r}: {error}") from None


def egress_refusal(
    url: str, allowed_prefixes: Iterable[UrlPrefix | str], *, secret: bool = False
) -> str | None:
    """Why a review may not send a request to ``url``; None when it may.

    An empty allowlist allows every URL (the behaviour without the setting). The
    message never repeats a URL's query string, which may carry a token, and for a
    URL read from a Secret (``secret=True``, e.g. a Slack webhook) shows only its
    scheme, host and port.
    """
    prefixes = [p if isinstance(p, UrlPrefix) else parse_url_prefix(p) for p in allowed_prefixes]
    if not prefixes:
        return None
    try:
        parsed = _parse(url)
    except ValueError as error:
        shown = "the URL from the Secret" if secret else _shown(url)
        return f"{shown} is refused: {error}; {EGRESS_RULE}"
    if any(prefix.covers(parsed) for prefix in prefixes):
        return None
    allowed = ", ".join(str(p) for p in prefixes)
    shown = str(dataclasses.replace(parsed, path="/…")) if secret else str(parsed)
    return f"{shown} is not under an allowed prefix ({allowed}): {EGRESS_RULE}"


def _shown(url: str) -> str:
    """The URL as a message may show it: no query, fragment or credentials, at most 200 characters."""
    text = url.split("?", 1)[0].split("#", 1)[0] if isinstance(url, str) else repr(url)
    if "@" in text:
        scheme, sep, rest = text.partition("://")
        text = f"{scheme}{sep}…@{rest.rpartition('@')[2]}" if sep else "…@" + text.rpartition("@")[2]
    text = text if len(text) <= 200 else text[:200] + "…"
    return repr(text)


def spec_urls(spec: reviews.PostDeploymentReviewSpec) -> Iterator[tuple[str, str]]:
    """(field, URL) for every URL written in a review spec, placeholders not rendered."""
    if spec.providers is not None:
        if spec.providers.prometheus_url:
            yield "spec.providers.prometheusUrl", spec.providers.prometheus_url
        if spec.providers.alertmanager_url:
            yield "spec.providers.alertmanagerUrl", spec.providers.alertmanager_url
    for phase in spec.phases:
        for check in phase.checks:
            where = f"spec.phases[{phase.name}].checks[{check.name}]"
            if check.prometheus is not None and check.prometheus.address:
                yield f"{where}.prometheus.address", check.prometheus.address
            if check.alertmanager is not None and check.alertmanager.address:
                yield f"{where}.alertmanager.address", check.alertmanager.address
            if check.http is not None:
                yield f"{where}.http.url", check.http.url


def review_refusal(
    namespace: str,
    spec: reviews.PostDeploymentReviewSpec,
    allowed_pairs: Collection[tuple[str, str]],
    allowed_prefixes: Collection[UrlPrefix],
) -> str | None:
    """Why the operator refuses to run this review at all; None when it may.

    ``spec`` is the review merged with its template: a template's URLs are held to
    the allowlist as the review's own are.
    """
    refusal = namespace_refusal(namespace, spec.target.namespace, allowed_pairs)
    if refusal is not None:
        return refusal
    for field, url in spec_urls(spec):
        if field.endswith(".http.url") and "{{" in url:
            continue  # rendered per run; the http provider checks the result
        refusal = egress_refusal(url, allowed_prefixes)
        if refusal is not None:
            return f"{field}: {refusal}"
    return None
