"""Every duration, date and number a review holds is bounded where it is parsed.

Covers: durations up to 3650d and no further (the crashers of issue 12: 20-digit
seconds, 10^14 days); deployedAt in [1970, 2200) in the model and in the CRD's CEL
rule; intervals of at least 1s; conditions bounded in length, tokens and nesting, so
no text reaches Python's recursion limit; numeric limits in the schema; and that
resolving any of these gives InvalidSpec naming the field, never another exception.
The same inputs on a real API server and operator: tests/e2e/test_hostile_reviews.py.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from postdeploy.decisions import conditions, templates
from postdeploy.kit import durations, exceptions
from postdeploy.models import crds


def review(**check: Any) -> dict[str, Any]:
    """A minimal review spec with one phase; ``check`` fields override the check's."""
    phase: dict[str, Any] = {"name": "immediate", "start": "0s", "end": "1h", "interval": "1m"}
    phase.update(check.pop("phase", {}))
    spec: dict[str, Any] = {"target": {"name": "checkout"}, "useDefaultTemplate": False}
    spec.update(check.pop("spec", {}))
    phase["checks"] = [{"name": "c", "kubernetes": {"measure": "readyRatio"}, **check}]
    spec["phases"] = [phase]
    return spec


@pytest.mark.parametrize(
    "text", ["99999999999999999999s", "100000000000000d", "3650d1s", "521w4d", "9" * 32 + "ms"]
)
def test_durations_past_the_bound_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="at most 3650d"):
        durations.parse_duration(text)


def test_the_bound_itself_is_a_duration() -> None:
    assert durations.parse_duration("3650d") == durations.MAX
    assert durations.parse_duration("521w3d") == durations.MAX


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (review(interval="99999999999999999999s"), "spec.phases[immediate].checks[c].interval"),
        (review(phase={"end": "100000000000000d"}), "spec.phases[immediate].end"),
        (review(phase={"start": "3651d", "end": "3652d"}), "spec.phases[immediate].start"),
        (review(spec={"interval": "1000000w"}), "spec.interval"),
        (review(baseline={"offset": "99999999d"}), "spec.phases[immediate].checks[c].baseline.offset"),
        (
            review(kubernetes=None, prometheus={"query": "up", "range": "4000d"}),
            "spec.phases[immediate].checks[c].prometheus.range",
        ),
        (
            review(kubernetes=None, http={"url": "http://127.0.0.1/", "timeout": "9999999999h"}),
            "spec.phases[immediate].checks[c].http.timeout",
        ),
        (
            review(kubernetes=None, job={"template": {}, "activeDeadline": "99999999999d"}),
            "spec.phases[immediate].checks[c].job.activeDeadline",
        ),
        (review(spec={"slo": {"downtime": "99999999999w"}}), "spec.slo.downtime"),
    ],
)
def test_huge_durations_are_invalid_specs_naming_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(exceptions.InvalidSpec) as caught:
        templates.resolve({k: v for k, v in spec.items() if v is not None})
    assert str(caught.value).startswith(field + ": "), str(caught.value)
    assert "at most 3650d" in str(caught.value)


@pytest.mark.parametrize(
    "when", ["9999-12-31T23:59:59Z", "2200-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "0001-01-01T00:00:00Z"]
)
def test_deployed_at_outside_1970_to_2200_is_invalid(when: str) -> None:
    with pytest.raises(
        exceptions.InvalidSpec, match=r"^spec.deployedAt: .*between 1970-01-01 and 2200-01-01"
    ):
        templates.resolve(review(spec={"deployedAt": when}))


@pytest.mark.parametrize("when", ["1970-01-01T00:00:00Z", "2199-12-31T23:59:59Z", "2026-11-30T12:00:00"])
def test_deployed_at_inside_the_range_resolves(when: str) -> None:
    assert templates.resolve(review(spec={"deployedAt": when})).spec.deployed_at is not None


def test_the_furthest_times_the_engine_computes_are_valid_datetimes() -> None:
    latest = datetime.datetime(2199, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
    earliest = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    assert latest + durations.MAX + durations.MAX < datetime.datetime.max.replace(tzinfo=datetime.UTC)
    assert earliest - durations.MAX - durations.MAX > datetime.datetime.min.replace(tzinfo=datetime.UTC)


def test_the_crd_refuses_deployed_at_out_of_range_with_cel() -> None:
    schema = crds.all_crds()["postdeploymentreviews.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    rules = schema["properties"]["spec"]["x-kubernetes-validations"]
    assert any("timestamp('2200-01-01T00:00:00Z')" in r["rule"] for r in rules)


@pytest.mark.parametrize("interval", ["1ms", "999ms", "0.5s", "0s"])
def test_intervals_below_one_second_are_invalid(interval: str) -> None:
    with pytest.raises(
        exceptions.InvalidSpec, match=r"checks\[c\]\.interval: .* shorter than the minimum, 1s"
    ):
        templates.resolve(review(interval=interval))
    with pytest.raises(exceptions.InvalidSpec, match="shorter than the minimum"):
        templates.resolve(review(phase={"interval": interval}))


@pytest.mark.parametrize(
    "text",
    [
        "(" * 500 + "value" + ")" * 500 + " > 1",
        "-" * 1000 + "value > 1",
        "not " * 200 + "value > 1",
        "1" + "+1" * 300 + " > 1",
        "max(1," * 40 + "1" + ")" * 40 + " > 1",
        "value > 1" + " " * 2000,
    ],
)
def test_conditions_cannot_recurse_past_the_bounds(text: str) -> None:
    with pytest.raises(exceptions.ConditionError, match=r"at most|nested more than"):
        conditions.parse(text)


def test_conditions_within_the_bounds_still_parse_and_evaluate() -> None:
    nested = "(" * 31 + "value" + ")" * 31 + " > 1"
    assert conditions.parse(nested).evaluate({"value": 2.0}) is True
    long_sum = "value" + " + 1" * 120 + " > 100"
    assert conditions.parse(long_sum).evaluate({"value": 0.0}) is True


@pytest.mark.parametrize(
    ("check", "field"),
    [
        ({"failureLimit": 10**7}, "failureLimit"),
        ({"consecutiveErrorLimit": -1}, "consecutiveErrorLimit"),
        ({"inconclusiveLimit": 10**20}, "inconclusiveLimit"),
        ({"baseline": {"preDeploy": True, "tolerance": 1e300}}, "baseline.tolerance"),
        (
            {"kubernetes": None, "http": {"url": "http://127.0.0.1/", "expectStatus": 99999}},
            "http.expectStatus",
        ),
        (
            {
                "kubernetes": None,
                "statistics": {"test": "sampleRatio", "query": "q", "expectedRatios": [1, -1]},
            },
            "statistics.expectedRatios",
        ),
        ({"kubernetes": None, "postgres": {"query": "select 1", "rowLimit": 10**9}}, "postgres.rowLimit"),
        ({"failWhen": "value > 1" + " or value > 1" * 100}, "failWhen"),
    ],
)
def test_numbers_and_texts_past_their_bounds_are_invalid(check: dict[str, Any], field: str) -> None:
    with pytest.raises(exceptions.InvalidSpec) as caught:
        templates.resolve(review(**check))
    assert str(caught.value).startswith(f"spec.phases[immediate].checks[c].{field}"), str(caught.value)


def test_a_version_and_a_target_namespace_are_bounded() -> None:
    with pytest.raises(exceptions.InvalidSpec, match=r"^spec.version: "):
        templates.resolve(review(spec={"version": "v" * 129}))
    with pytest.raises(exceptions.InvalidSpec, match=r"^spec.target.namespace: "):
        templates.resolve(review(spec={"target": {"name": "x", "namespace": "../kube-system"}}))
