"""Confinement rules (decisions/confinement.py): the namespace rule and the egress allowlist.

Covers: a review may target its own namespace and allowed pairs only, in one
direction; pairs parse from FROM=TO; an empty allowlist allows every URL; URLs are
compared by scheme, host, port and path segments, and the classic tricks (userinfo,
suffix hosts, case, default ports, dot segments, encoded slashes, backslashes) do
not pass; messages name the rule and how to allow it, and never show a query
string or a Secret URL's path.
"""

from __future__ import annotations

import pytest

from postdeploy.decisions import confinement


def test_own_namespace_is_always_allowed() -> None:
    assert confinement.namespace_refusal("team-a", "team-a", set()) is None
    assert confinement.namespace_refusal("team-a", None, set()) is None
    assert confinement.namespace_refusal("team-a", "", set()) is None


def test_other_namespace_is_refused_with_the_rule_and_the_flag() -> None:
    message = confinement.namespace_refusal("team-a", "team-b", set())
    assert message is not None
    assert message.startswith("spec.target.namespace: 'team-b'")
    assert "--allow-cross-namespace team-a=team-b" in message
    assert "allowCrossNamespace" in message


def test_an_allowed_pair_works_in_its_direction_only() -> None:
    pairs = {("team-a", "team-b")}
    assert confinement.namespace_refusal("team-a", "team-b", pairs) is None
    assert confinement.namespace_refusal("team-b", "team-a", pairs) is not None
    assert confinement.namespace_refusal("team-a", "team-c", pairs) is not None


def test_pairs_parse_from_flag_text() -> None:
    assert confinement.parse_namespace_pair("team-a=team-b") == ("team-a", "team-b")
    assert confinement.parse_namespace_pair(" ci=prod ") == ("ci", "prod")


@pytest.mark.parametrize("text", ["team-a", "=team-b", "team-a=", "Team-A=b", "a=b=c", "*=prod", "a b=c"])
def test_malformed_pairs_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="FROM=TO"):
        confinement.parse_namespace_pair(text)


def test_an_empty_allowlist_allows_every_url() -> None:
    assert confinement.egress_refusal("http://anything.example:1234/x?y=1", []) is None
    assert confinement.egress_refusal("not even a url", []) is None


ALLOWED = ["http://ok.example/api/", "https://hooks.example.com/services", "http://127.0.0.1:9090"]


@pytest.mark.parametrize(
    "url",
    [
        "http://ok.example/api/",
        "http://ok.example/api/v1/query?query=up",
        "http://ok.example/api",
        "HTTP://OK.EXAMPLE/api/x",
        "http://ok.example:80/api/x",
        "http://ok.example./api/x",
        "https://hooks.example.com/services/T0/B0/xyz",
        "https://hooks.example.com:443/services",
        "http://127.0.0.1:9090/api/v1/query",
        "http://127.0.0.1:9090",
    ],
)
def test_urls_under_a_prefix_pass(url: str) -> None:
    assert confinement.egress_refusal(url, ALLOWED) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://ok.example@evil.example/api/",  # userinfo: the host is evil.example
        "http://ok.example:80@evil.example/api/",
        "http://evil.example#@ok.example/api/",
        "http://evil.example?@ok.example/api/",
        "http://ok.example.evil.com/api/",  # a suffix host
        "http://ok.exampl/api/",
        "http://xok.example/api/",
        "https://ok.example/api/",  # another scheme
        "http://ok.example:8080/api/",  # another port
        "http://ok.example/apix",  # not on a segment boundary
        "http://ok.example/",
        "http://ok.example/api/../admin",  # dot segments
        "http://ok.example/api/%2e%2e/admin",
        "http://ok.example/api/%2E%2E/admin",
        "http://ok.example/api/./x",
        "http://ok.example/api/..",
        "http://ok.example/api/..%2fadmin",  # encoded slash
        "http://ok.example/api%5c..%5cadmin",
        "http://ok.example\\@evil.example/api/",  # backslash
        "http://ok.example/api/ x",
        "http://ok.example/api/\n",
        "http://ok.example/api/\t",
        "http://ok.exämple/api/",
        "https://hooks.example.com/servicesX",
        "https://hooks.example.com:8443/services",
        "http://127.0.0.2:9090/",
        "http://127.0.0.1/api/v1/query",
        "ftp://ok.example/api/",
        "file:///etc/passwd",
        "//ok.example/api/",
        "http:///api/",
        "http://ok.example:99999/api/",
        "",
    ],
)
def test_tricks_do_not_pass(url: str) -> None:
    message = confinement.egress_refusal(url, ALLOWED)
    assert message is not None
    assert "--egress-allow" in message and "egressAllowlist" in message


def test_the_message_names_the_allowed_prefixes_and_never_the_query() -> None:
    message = confinement.egress_refusal("http://evil.example/x?token=s3cret", ALLOWED)
    assert message is not None
    assert "http://evil.example/x is not under an allowed prefix" in message
    assert "http://ok.example/api/" in message and "http://127.0.0.1:9090/" in message
    assert "s3cret" not in message
    refused = confinement.egress_refusal("http://user:s3cret@ok.example/api/?t=s3cret", ALLOWED)
    assert refused is not None and "s3cret" not in refused


def test_a_secret_url_is_shown_without_its_path() -> None:
    message = confinement.egress_refusal("https://evil.example/T0/B0/s3cret", ALLOWED, secret=True)
    assert message is not None
    assert message.startswith("https://evil.example/… is not under")
    assert "s3cret" not in message
    unparsable = confinement.egress_refusal("https://evil.example/s3cret\\x", ALLOWED, secret=True)
    assert unparsable is not None and "s3cret" not in unparsable


def test_ipv6_hosts_compare_as_hosts() -> None:
    assert confinement.egress_refusal("http://[::1]:9090/x", ["http://[::1]:9090/"]) is None
    assert confinement.egress_refusal("http://[::2]:9090/x", ["http://[::1]:9090/"]) is not None


@pytest.mark.parametrize(
    "text", ["ok.example", "ftp://ok.example", "http://u@ok.example/", "http://a/../b", "http://a/ b", ""]
)
def test_unsafe_prefixes_are_refused_at_start_up(text: str) -> None:
    with pytest.raises(ValueError, match="egress prefix"):
        confinement.parse_url_prefix(text)


def test_a_prefix_prints_in_its_normal_form() -> None:
    assert str(confinement.parse_url_prefix("HTTPS://Hooks.Example.com:443")) == "https://hooks.example.com/"
    assert str(confinement.parse_url_prefix("http://h:8080/a/")) == "http://h:8080/a/"
