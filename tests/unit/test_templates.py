"""Template merging and spec resolution.

Covers: review phases and checks override the template's by name, field by field;
a provider block in the review replaces the template's; new phases and checks are
appended; intervals fall back check -> phase -> review -> template -> 1m; default
conditions per provider; and each kind of bad spec raises InvalidSpec naming the
field.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from postdeploy.decisions import templates
from postdeploy.kit import exceptions

TEMPLATE: dict[str, Any] = {
    "interval": "2m",
    "phases": [
        {
            "name": "immediate",
            "start": "0s",
            "end": "2h",
            "checks": [
                {
                    "name": "error-rate",
                    "prometheus": {"query": "rate(x[5m])"},
                    "failWhen": "value > 0.01",
                    "baseline": {"preDeploy": True, "tolerance": 0.1},
                },
                {"name": "rollout", "kubernetes": {"measure": "rolloutComplete"}},
            ],
        },
        {"name": "extended", "start": "2h", "end": "24h", "interval": "10m", "checks": []},
    ],
}


def _resolve(review_phases: list[dict[str, Any]], **extra: Any) -> templates.ResolvedReview:
    review = {"target": {"name": "app"}, "phases": review_phases, **extra}
    return templates.resolve(templates.merge(TEMPLATE, review))


def test_review_overrides_template_check_fields_by_name() -> None:
    review = _resolve(
        [
            {
                "name": "immediate",
                "checks": [
                    {"name": "error-rate", "failWhen": "value > 0.05", "baseline": {"tolerance": 0.3}}
                ],
            }
        ]
    )
    check = review.check("error-rate")
    assert check is not None
    assert check.spec.fail_when == "value > 0.05"
    assert check.spec.prometheus is not None and check.spec.prometheus.query == "rate(x[5m])"
    assert check.spec.baseline is not None
    assert check.spec.baseline.pre_deploy and check.spec.baseline.tolerance == 0.3


def test_a_provider_in_the_review_replaces_the_templates_provider() -> None:
    review = _resolve(
        [{"name": "immediate", "checks": [{"name": "error-rate", "http": {"url": "http://127.0.0.1/x"}}]}]
    )
    check = review.check("error-rate")
    assert check is not None and check.spec.provider_name == "http"
    assert check.spec.prometheus is None


def test_new_phases_and_checks_are_appended_in_order() -> None:
    review = _resolve(
        [
            {"name": "immediate", "checks": [{"name": "journeys", "manual": {}}]},
            {"name": "business", "start": "24h", "end": "72h", "checks": [{"name": "dau", "manual": {}}]},
        ]
    )
    assert [p.name for p in review.phases] == ["immediate", "extended", "business"]
    assert [c.name for c in review.phases[0].checks] == ["error-rate", "rollout", "journeys"]


def test_intervals_fall_back_from_check_to_phase_to_review_to_template() -> None:
    review = _resolve(
        [
            {"name": "immediate", "checks": [{"name": "rollout", "interval": "15s"}]},
            {"name": "extended", "checks": [{"name": "x", "manual": {}}]},
        ]
    )
    assert review.check("rollout").interval == datetime.timedelta(seconds=15)  # type: ignore[union-attr]
    assert review.check("error-rate").interval == datetime.timedelta(minutes=2)  # type: ignore[union-attr]
    assert review.check("x").interval == datetime.timedelta(minutes=10)  # type: ignore[union-attr]
    overridden = _resolve([], interval="30s")
    assert overridden.check("error-rate").interval == datetime.timedelta(seconds=30)  # type: ignore[union-attr]
    assert (
        templates.resolve(
            {
                "target": {"name": "a"},
                "phases": [
                    {"name": "p", "start": "0s", "end": "1h", "checks": [{"name": "c", "manual": {}}]}
                ],
            }
        )
        .check("c")
        .interval
        == templates.DEFAULT_INTERVAL
    )  # type: ignore[union-attr]


def test_default_conditions_come_from_the_provider() -> None:
    review = _resolve([])
    rollout = review.check("rollout")
    assert rollout is not None
    assert rollout.spec.fail_when == "value < 0" and rollout.spec.pass_when == "value == 1"


def test_disabled_checks_are_dropped() -> None:
    review = _resolve([{"name": "immediate", "checks": [{"name": "rollout", "enabled": False}]}])
    assert review.check("rollout") is None


def _phase(**fields: Any) -> dict[str, Any]:
    return {"name": "p", "start": "0s", "end": "1h", **fields}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"target": {"name": "a"}}, "spec.phases: the review has no phases"),
        ({"target": {}, "phases": [_phase()]}, "spec.target.name: Field required"),
        ({"target": {"name": "a", "kind": "Pod"}, "phases": [_phase()]}, "spec.target.kind"),
        ({"target": {"name": "a"}, "phases": [{"name": "p", "end": "1h"}]}, "spec.phases[p].start: required"),
        ({"target": {"name": "a"}, "phases": [_phase(start="2h")]}, "end (1h) must be after start (2h)"),
        ({"target": {"name": "a"}, "phases": [_phase(interval="soon")]}, "spec.phases[p].interval"),
        (
            {"target": {"name": "a"}, "phases": [_phase(checks=[{"name": "c"}])]},
            "spec.phases[p].checks[c]: check 'c' names no provider",
        ),
        (
            {
                "target": {"name": "a"},
                "phases": [_phase(checks=[{"name": "c", "manual": {}, "failWhen": "value >"}])],
            },
            "spec.phases[p].checks[c].failWhen: expected a value at column 8",
        ),
        (
            {
                "target": {"name": "a"},
                "phases": [_phase(checks=[{"name": "c", "manual": {}, "http": {"url": "http://x"}}])],
            },
            "takes one provider, got 2",
        ),
        (
            {
                "target": {"name": "a"},
                "phases": [_phase(checks=[{"name": "c", "manual": {}}, {"name": "c", "manual": {}}])],
            },
            "check names must be unique",
        ),
        (
            {
                "target": {"name": "a"},
                "phases": [_phase(checks=[{"name": "c", "manual": {}, "colour": "red"}])],
            },
            "spec.phases[p].checks[c].colour: Extra inputs are not permitted",
        ),
        (
            {"target": {"name": "a"}, "phases": [_phase(name="b", start="1h", end="2h"), _phase()]},
            "phases must be listed in order",
        ),
        (
            {
                "target": {"name": "a"},
                "phases": [_phase(checks=[{"name": "c", "kubernetes": {"measure": "vibes"}}])],
            },
            "spec.phases[p].checks[c].kubernetes.measure",
        ),
    ],
)
def test_bad_specs_name_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(exceptions.InvalidSpec) as raised:
        templates.resolve(templates.merge(None, spec))
    assert message in str(raised.value)


def test_the_resolver_shares_one_templates_phases_between_reviews() -> None:
    resolver = templates.Resolver()
    one = resolver.resolve(TEMPLATE, {"target": {"name": "a"}, "version": "1.0"})
    two = resolver.resolve(dict(TEMPLATE), {"target": {"name": "b"}, "deployedAt": "2026-01-01T00:00:00Z"})
    assert one.phases is two.phases and one.spec.phases is two.spec.phases
    assert (one.spec.target.name, one.spec.version) == ("a", "1.0")
    assert (two.spec.target.name, two.spec.version) == ("b", None)
    assert two.spec.deployed_at == datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    # What the phases depend on resolves them anew: the review's phases and interval,
    # the template's content.
    faster = resolver.resolve(TEMPLATE, {"target": {"name": "a"}, "interval": "30s"})
    assert faster.phases is not one.phases
    assert faster.check("error-rate").interval == datetime.timedelta(seconds=30)  # type: ignore[union-attr]
    overridden = resolver.resolve(
        TEMPLATE,
        {"target": {"name": "a"}, "phases": [{"name": "immediate", "checks": [{"name": "x", "manual": {}}]}]},
    )
    assert [c.name for c in overridden.phases[0].checks] == ["error-rate", "rollout", "x"]
    changed = {**TEMPLATE, "interval": "5m"}
    assert resolver.resolve(changed, {"target": {"name": "a"}}).check(
        "rollout"
    ).interval == datetime.timedelta(  # type: ignore[union-attr]
        minutes=5
    )
    # A bad field outside the phases is still found, and named, when the phases are shared.
    with pytest.raises(exceptions.InvalidSpec, match=r"spec\.version"):
        resolver.resolve(TEMPLATE, {"target": {"name": "c"}, "version": "v" * 200})
    # and a bad phase is never remembered as good.
    bad = {
        "target": {"name": "a"},
        "phases": [{"name": "immediate", "checks": [{"name": "rollout", "failWhen": "value >"}]}],
    }
    for _ in range(2):
        with pytest.raises(exceptions.InvalidSpec, match=r"checks\[rollout\]\.failWhen"):
            resolver.resolve(TEMPLATE, bad)
