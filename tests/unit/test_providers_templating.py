"""Filling queries with a review's values: ``postdeploy.decisions.templating``.

Covers:
- ``{{name}}`` with and without spaces; every occurrence replaced;
- PromQL escaping: backslash, double quote and newline cannot end the string literal,
  so a hostile target name stays one label value;
- unknown names are a ValueError naming each of them;
- URL values are percent-encoded, ``/`` and ``&`` included;
- SQL parameters: datetimes stay datetimes, review parameters are added;
- details helpers: JSON-safe values, trimming lists to a budget, URL redaction.
"""

from __future__ import annotations

import datetime
import decimal
import json

import pytest

from postdeploy.decisions import templating
from postdeploy.kit import details
from tests.contexts import NOW, make_context


def test_placeholders_with_and_without_spaces_are_all_replaced() -> None:
    text = 'up{job="{{target}}", ns="{{ namespace }}"} or up{job="{{  target}}"}'
    rendered = templating.render_promql(text, {"target": "shop", "namespace": "prod"})
    assert rendered == 'up{job="shop", ns="prod"} or up{job="shop"}'


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ('a"b', 'a\\"b'),
        ("a\\b", "a\\\\b"),
        ("a\nb", "a\\nb"),
        ('x"} or vector(1) #', 'x\\"} or vector(1) #'),
        ('\\"', '\\\\\\"'),  # a backslash cannot un-escape the quote that follows it
    ],
)
def test_promql_values_cannot_leave_the_string_literal(value: str, escaped: str) -> None:
    rendered = templating.render_promql('up{job="{{target}}"}', {"target": value})
    assert rendered == f'up{{job="{escaped}"}}'


def test_unknown_names_are_named_in_the_error() -> None:
    with pytest.raises(ValueError, match=r"\{\{servce\}\}.*\{\{zone\}\}.*known: target"):
        templating.render_promql('x{a="{{servce}}", b="{{zone}}"}', {"target": "t"})


def test_remembered_renderings_follow_the_values_a_query_uses() -> None:
    text = 'up{ {{selector}} }'
    values = {"selector": 'job="{{target}}"', "target": "a", "version": "1"}
    assert templating.render_promql(text, values) == 'up{ job="a" }'
    # A value the query does not use changes nothing; one it uses through its selector does.
    assert templating.render_promql(text, {**values, "version": "2"}) == 'up{ job="a" }'
    assert templating.render_promql(text, {**values, "target": "b"}) == 'up{ job="b" }'
    assert templating.render_promql(text, {**values, "selector": 'app="{{target}}"'}) == 'up{ app="a" }'
    # A missing value is still an error naming every known value, rendered before or not.
    with pytest.raises(ValueError, match=r"\{\{target\}\}.*known: version"):
        templating.render_promql(text, {"selector": values["selector"], "version": "1"})


def test_url_values_are_percent_encoded() -> None:
    url = templating.render_url(
        "https://example.test/api/{{target}}?v={{version}}", {"target": "a/b c", "version": "1&x=2"}
    )
    assert url == "https://example.test/api/a%2Fb%20c?v=1%26x%3D2"


def test_sql_parameters_carry_times_as_datetimes_and_review_parameters() -> None:
    ctx = make_context(parameters={"experiment": "checkout-v2"})
    params = templating.sql_parameters(ctx)
    assert params["deployed_at"] == ctx.deployed_at
    assert isinstance(params["deployed_at"], datetime.datetime)
    assert params["now"] == NOW
    assert params["version"] == "1.4.2"
    assert params["target"] == "shop"
    assert params["namespace"] == "prod"
    assert params["phase_start"] == ctx.phase_start
    assert params["phase_end"] == ctx.phase_end
    assert params["experiment"] == "checkout-v2"


def test_json_value_makes_database_types_json_safe() -> None:
    row = {
        "day": datetime.date(2026, 11, 26),
        "at": datetime.datetime(2026, 11, 26, 12, tzinfo=datetime.UTC),
        "revenue": decimal.Decimal("12.50"),
        "gap": datetime.timedelta(minutes=2),
        "ratio": float("nan"),
        "blob": b"\x00\x01",
    }
    safe = details.json_value(row)
    assert safe == {
        "day": "2026-11-26",
        "at": "2026-11-26T12:00:00+00:00",
        "revenue": 12.5,
        "gap": 120.0,
        "ratio": None,
        "blob": "<2 bytes>",
    }
    json.dumps(safe, allow_nan=False)


def test_fit_shortens_only_the_list_and_says_so() -> None:
    big = {"pValue": 0.01, "rows": [{"text": "x" * 100} for _ in range(100)]}
    fitted = details.fit(big, "rows", budget=2000)
    assert len(json.dumps(fitted)) <= 2000
    assert fitted["pValue"] == 0.01
    assert fitted["rowsShown"] == len(fitted["rows"]) < 100
    small = {"rows": [1, 2, 3]}
    assert details.fit(small, "rows") == small


def test_redact_url_drops_credentials_and_scrub_removes_secrets() -> None:
    assert details.redact_url("http://user:s3cret@prom:9090/x") == "http://prom:9090/x"
    assert details.redact_url("http://prom:9090") == "http://prom:9090"
    assert details.scrub("token s3cret failed", ["s3cret", None, ""]) == "token *** failed"

