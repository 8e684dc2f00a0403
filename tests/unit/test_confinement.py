"""Confinement rules (decisions/confinement.py): the namespace rule and the egress allowlist.

Covers: a review may target its own namespace and allowed pairs only, in one
direction; pairs parse from FROM=TO; an empty allowlist allows every URL; URLs are
compared by scheme, host, port and path segments, and the classic tricks (userinfo,
suffix hosts, case, default ports, dot segments, encoded slashes, backslashes) do
not pass; messages name the rule and how to allow it, and never show a query
string or a Secret URL's path.
"""

from __future__ import annotations

import types
from typing import Any

import pytest

from postdeploy.decisions import confinement
from postdeploy.engine import settings, ticks
from postdeploy.models import reviews


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


# --- the whole review, as the engine and the admission webhook see it ---------------------


def spec(**fields: Any) -> reviews.PostDeploymentReviewSpec:
    check: dict[str, Any] = {"name": "c", "prometheus": {"query": "up"}}
    check.update(fields.pop("check", {}))
    body: dict[str, Any] = {
        "target": {"name": "checkout"},
        "phases": [{"name": "immediate", "start": "0s", "end": "1h", "checks": [check]}],
        **fields,
    }
    return reviews.PostDeploymentReviewSpec.model_validate(body)


PREFIXES = [confinement.parse_url_prefix("http://prometheus.monitoring:9090/")]


def test_a_review_of_its_own_namespace_with_allowed_urls_runs() -> None:
    allowed = spec(
        providers={"prometheusUrl": "http://prometheus.monitoring:9090"},
        check={"prometheus": {"query": "up", "address": "http://prometheus.monitoring:9090/"}},
    )
    assert confinement.review_refusal("team-a", allowed, set(), PREFIXES) is None


def test_the_target_namespace_is_checked_first() -> None:
    other = spec(target={"name": "checkout", "namespace": "team-b"})
    message = confinement.review_refusal("team-a", other, set(), [])
    assert message is not None and message.startswith("spec.target.namespace:")
    assert confinement.review_refusal("team-a", other, {("team-a", "team-b")}, []) is None


def spec_with(check: dict[str, Any] | None = None, **fields: Any) -> reviews.PostDeploymentReviewSpec:
    """A review spec with one check (a prometheus check unless given)."""
    body: dict[str, Any] = {
        "target": {"name": "checkout"},
        "phases": [
            {
                "name": "immediate",
                "start": "0s",
                "end": "1h",
                "checks": [{"name": "c", **(check or {"prometheus": {"query": "up"}})}],
            }
        ],
        **fields,
    }
    return reviews.PostDeploymentReviewSpec.model_validate(body)


CHECK = "spec.phases[immediate].checks[c]"


@pytest.mark.parametrize(
    ("check", "fields", "field"),
    [
        (None, {"providers": {"prometheusUrl": "http://evil.example"}}, "spec.providers.prometheusUrl"),
        (None, {"providers": {"alertmanagerUrl": "http://evil.example"}}, "spec.providers.alertmanagerUrl"),
        (
            {"prometheus": {"query": "up", "address": "http://prometheus.monitoring:9090@evil/"}},
            {},
            f"{CHECK}.prometheus.address",
        ),
        ({"alertmanager": {"address": "http://evil.example"}}, {}, f"{CHECK}.alertmanager.address"),
        ({"http": {"url": "http://prometheus.monitoring:9090.evil/x"}}, {}, f"{CHECK}.http.url"),
    ],
)
def test_every_url_in_the_spec_is_held_to_the_allowlist(
    check: dict[str, Any] | None, fields: dict[str, Any], field: str
) -> None:
    message = confinement.review_refusal("team-a", spec_with(check, **fields), set(), PREFIXES)
    assert message is not None and message.startswith(field + ": "), message
    assert "--egress-allow" in message


def test_a_templated_http_url_is_left_to_the_provider() -> None:
    templated = spec_with({"http": {"url": "http://{{target}}.team-a.svc/metrics"}})
    assert confinement.review_refusal("team-a", templated, set(), PREFIXES) is None


def test_placeholders_elsewhere_are_checked_as_written() -> None:
    address = spec_with({"prometheus": {"query": "up", "address": "http://evil.example/{{target}}"}})
    message = confinement.review_refusal("team-a", address, set(), PREFIXES)
    assert message is not None and ".prometheus.address: " in message


def test_an_empty_allowlist_refuses_no_url() -> None:
    anywhere = spec(providers={"prometheusUrl": "http://anything.example"})
    assert confinement.review_refusal("team-a", anywhere, set(), []) is None


# --- the engine refuses before it reads or touches anything -------------------------------


def engine(pairs: set[tuple[str, str]] = frozenset(), prefixes: Any = ()) -> ticks.Engine:  # type: ignore[assignment]
    configured = settings.Settings().confined(pairs, prefixes)
    # No API client and no providers: a refused review must not need either.
    return ticks.Engine(None, types.SimpleNamespace(http=None), configured)  # type: ignore[arg-type]


def body(target: dict[str, Any], **spec_fields: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "team-a", "name": "r", "generation": 3},
        "spec": {
            "target": target,
            "useDefaultTemplate": False,
            "phases": [
                {
                    "name": "immediate",
                    "start": "0s",
                    "end": "1h",
                    "checks": [
                        {"name": "c", "kubernetes": {"measure": "readyRatio"}, "onFailure": "rollback"}
                    ],
                }
            ],
            **spec_fields,
        },
    }


async def test_a_cross_namespace_review_is_refused_with_a_condition_and_an_event() -> None:
    result = await engine().tick(body({"name": "prod", "namespace": "team-b"}))
    assert result.status is not None
    assert result.status["verdict"] == "Invalid" and result.status["phase"] == "Invalid"
    refused = next(c for c in result.status["conditions"] if c["type"] == "Refused")
    assert refused["status"] == "True" and refused["reason"] == "Refused"
    assert "--allow-cross-namespace team-a=team-b" in refused["message"]
    assert refused["observedGeneration"] == 3
    assert [(e.type, e.reason) for e in result.events] == [("Warning", "Refused")]
    assert "checks" not in result.status or not result.status["checks"]


async def test_a_refused_url_refuses_the_review_before_anything_runs() -> None:
    prefixes = [confinement.parse_url_prefix("http://127.0.0.1:9090")]
    spec_body = body({"name": "checkout"}, providers={"alertmanagerUrl": "http://evil.example:9093"})
    result = await engine(prefixes=prefixes).tick(spec_body)
    assert result.status is not None
    assert result.status["message"].startswith("spec.providers.alertmanagerUrl: http://evil.example:9093/")


# --- the flags ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [
        ("--allow-cross-namespace", "team-a", "FROM=TO"),
        ("--allow-cross-namespace", "Team-A=b", "FROM=TO"),
        ("--egress-allow", "prometheus:9090", "only http and https"),
        ("--egress-allow", "http://user@prometheus:9090", "credentials"),
    ],
)
def test_bad_flags_stop_the_operator_before_it_starts(
    flag: str, value: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from postdeploy import __main__ as cli

    with pytest.raises(SystemExit) as stopped:
        cli.main(["run", flag, value])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert f"{flag}: " in error and said in error, error
