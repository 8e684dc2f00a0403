"""What the engine gained for the default checklist, without a cluster.

Covers:
- time windows as template values: ``sinceDeploy``, ``phaseElapsed`` and
  ``phaseLength`` are whole-second PromQL durations, never below ``1s``, measured to
  the (aligned) time the query is evaluated at;
- selector parameters: label matchers inserted as written after their own values are
  escaped; anything but comma-separated matchers is refused;
- ``range`` of a prometheus check: a duration, ``phase`` or ``sinceDeploy``; ``count``
  takes no trend;
- a measurement that does not apply (no HPA) is a Skipped run; a check whose last run
  was skipped ends Skipped, and the review can still pass;
- a run's message carries what the provider said besides the decision;
- a review's provider block may be partial (the CRD requires none of its fields), the
  merged check must be complete;
- merging by name: the template's parameters are defaults; a provider block of the
  same provider is merged field by field; a baseline switched to preDeploy drops
  the template's offset and the other way round.
"""

from __future__ import annotations

import datetime
from typing import Any

import pydantic
import pytest

from postdeploy.decisions import checks as check_decisions
from postdeploy.decisions import templates, templating, verdicts
from postdeploy.kit import exceptions
from postdeploy.models import crds
from postdeploy.models.checks import PrometheusCheck
from postdeploy.models.measurements import Measurement
from postdeploy.models.reviews import CheckState
from postdeploy.providers import prometheus
from testbed import ports
from tests.contexts import NOW, make_context

SECOND = datetime.timedelta(seconds=1)
MINUTE = datetime.timedelta(minutes=1)


def test_time_windows_are_promql_durations() -> None:
    ctx = make_context(
        now=NOW,
        deployed_at=NOW - 90 * MINUTE,
        phase_start=NOW - 30 * MINUTE,
        phase_end=NOW + 22 * 60 * MINUTE,
    )
    values = ctx.template_values()
    assert values["sinceDeploy"] == "5400s"
    assert values["phaseElapsed"] == "1800s"
    assert values["phaseLength"] == "81000s"
    fresh = make_context(now=NOW, deployed_at=NOW, phase_start=NOW).template_values()
    assert fresh["sinceDeploy"] == fresh["phaseElapsed"] == "1s"
    query = 'rate(x{a="b"}[{{sinceDeploy}}] offset {{sinceDeploy}})'
    assert templating.render_promql(query, values) == 'rate(x{a="b"}[5400s] offset 5400s)'


@pytest.mark.parametrize(
    ("selector", "rendered"),
    [
        ('job="{{target}}"', 'up{job="shop"}'),
        ('namespace="{{namespace}}", pod=~"{{target}}-.*"', 'up{namespace="prod", pod=~"shop-.*"}'),
        ('app!="", env!~"dev|test" ,tier = "web"', 'up{app!="", env!~"dev|test" ,tier = "web"}'),
        ('path="a\\"b"', 'up{path="a\\"b"}'),
    ],
)
def test_selectors_go_in_as_matchers(selector: str, rendered: str) -> None:
    values = make_context().template_values()
    assert templating.render_promql("up{{{selector}}}", {**values, "selector": selector}) == rendered
    assert templating.render_promql("up{{{podSelector}}}", {**values, "podSelector": selector}) == rendered


@pytest.mark.parametrize(
    "selector",
    ['job="a"} or vector(1) or up{job="b"', "", "job", 'job="a",', 'job="a" env="b"', "job=a", '{job="a"}'],
)
def test_anything_but_matchers_is_refused(selector: str) -> None:
    values = {**make_context().template_values(), "selector": selector}
    with pytest.raises(ValueError, match=r"\{\{selector\}\}"):
        templating.render_promql("up{ {{selector}} }", values)


def test_other_parameters_stay_data() -> None:
    values = {**make_context().template_values(), "owner": 'x"} or vector(1) #'}
    assert templating.render_promql('up{owner="{{owner}}"}', values) == 'up{owner="x\\"} or vector(1) #"}'


def test_ranges_and_count() -> None:
    ctx = make_context(now=NOW, deployed_at=NOW - 90 * MINUTE, phase_start=NOW - 30 * MINUTE)
    assert prometheus._range("phase", ctx, 60) == 30 * MINUTE
    assert prometheus._range("sinceDeploy", ctx, 60) == 90 * MINUTE
    assert prometheus._range("2h", ctx, 60) == 120 * MINUTE
    assert prometheus._range("phase", make_context(now=NOW, phase_start=NOW), 300) == 5 * MINUTE
    assert prometheus._range(None, ctx, 60) is None
    for bad in ("phases", "since", "1x"):
        with pytest.raises(pydantic.ValidationError):
            PrometheusCheck(query="up", range=bad)
    with pytest.raises(pydantic.ValidationError, match="aggregate count takes no trend"):
        PrometheusCheck(query="up", range="1h", trend="slope", aggregate="count")


def _one_check(**check: Any) -> templates.ResolvedReview:
    phase = {"name": "p", "start": "0s", "end": "1h", "checks": [{"name": "c", **check}]}
    return templates.resolve({"target": {"name": "app"}, "phases": [phase]})


def test_not_applicable_is_skipped_and_the_review_still_passes() -> None:
    review = _one_check(kubernetes={"measure": "hpaHealthy"})
    check = review.phases[0].checks[0]
    status, result = check_decisions.record(
        check,
        check_decisions.initial(check),
        Measurement.not_applicable("no HPA targets Deployment/app"),
        NOW,
        0,
    )
    assert result == "Skipped" and status.state is CheckState.RUNNING
    assert status.message == "not applicable: no HPA targets Deployment/app"
    assert status.failures == status.errors == 0
    final = check_decisions.finish(check, status)
    assert final.state is CheckState.SKIPPED
    assert verdicts.verdict([final], complete=True, rolled_back=False).value == "Passed"
    # An HPA created later is measured: the last run decides.
    status, _ = check_decisions.record(
        check, status, Measurement.ok(1.0, message="HPA able to scale"), NOW, 1
    )
    assert check_decisions.finish(check, status).state is CheckState.PASSED


def test_a_runs_message_carries_what_the_provider_said() -> None:
    review = _one_check(statistics={"test": "proportionChange", "query": "q"}, failWhen="value < -tolerance")
    check = review.phases[0].checks[0]
    said = "a drop larger than the 10% tolerance and significant: after 1.00% vs before 2.00%"
    status, result = check_decisions.record(
        check, check_decisions.initial(check), Measurement.ok(-0.5, message=said), NOW, 0
    )
    assert result == "Failed"
    assert status.message.startswith("value -0.5: failWhen 'value < -tolerance' is true; " + said)


TEMPLATE = {
    "parameters": {"selector": 'job="{{target}}"', "rateWindow": "5m"},
    "phases": [
        {
            "name": "p",
            "start": "0s",
            "end": "1h",
            "checks": [
                {
                    "name": "leak",
                    "prometheus": {"query": "q", "range": "phase", "step": "5m", "trend": "timeToLimit",
                                   "limitQuery": "l"},
                    "failWhen": "value < 24",
                },
                {"name": "rps", "prometheus": {"query": "r"}, "baseline": {"offset": "1w", "tolerance": 0.3}},
                {"name": "errors", "prometheus": {"query": "e"}, "baseline": {"preDeploy": True}},
            ],
        }
    ],
}  # fmt: skip


def _merged(**review: Any) -> templates.ResolvedReview:
    return templates.resolve(templates.merge(TEMPLATE, {"target": {"name": "app"}, **review}))


def test_template_parameters_are_defaults_under_the_reviews() -> None:
    assert _merged().spec.parameters == {"selector": 'job="{{target}}"', "rateWindow": "5m"}
    review = _merged(parameters={"rateWindow": "30s", "experiment": "x"})
    assert review.spec.parameters == {"selector": 'job="{{target}}"', "rateWindow": "30s", "experiment": "x"}


def test_the_same_provider_is_merged_field_by_field() -> None:
    review = _merged(phases=[{"name": "p", "checks": [{"name": "leak", "prometheus": {"step": "10s"}}]}])
    leak = review.check("leak")
    assert leak is not None and leak.spec.prometheus is not None
    assert leak.spec.prometheus.step == "10s" and leak.spec.prometheus.trend == "timeToLimit"
    assert leak.spec.prometheus.limit_query == "l" and leak.spec.fail_when == "value < 24"
    other = _merged(phases=[{"name": "p", "checks": [{"name": "leak", "manual": {}}]}])
    leak = other.check("leak")
    assert leak is not None and leak.spec.prometheus is None and leak.spec.manual is not None


def test_a_baseline_switches_between_offset_and_pre_deploy() -> None:
    review = _merged(
        phases=[
            {
                "name": "p",
                "checks": [
                    {"name": "rps", "baseline": {"preDeploy": True}},
                    {"name": "errors", "baseline": {"offset": "1d"}},
                ],
            }
        ]
    )
    rps, errors = review.check("rps"), review.check("errors")
    assert rps is not None and rps.spec.baseline is not None
    assert rps.spec.baseline.pre_deploy and rps.spec.baseline.offset is None
    assert rps.spec.baseline.tolerance == 0.3
    assert errors is not None and errors.spec.baseline is not None
    assert errors.spec.baseline.offset == "1d" and not errors.spec.baseline.pre_deploy


def test_a_partial_provider_block_needs_a_template_check_to_complete_it() -> None:
    phase = {
        "name": "p",
        "start": "0s",
        "end": "1h",
        "checks": [{"name": "c", "prometheus": {"step": "10s"}}],
    }
    with pytest.raises(exceptions.InvalidSpec, match=r"^spec\.phases\[p\]\.checks\[c\]\.prometheus\.query: "):
        templates.resolve({"target": {"name": "app"}, "phases": [phase]})


def test_only_the_review_crd_takes_partial_provider_blocks() -> None:
    def check_schema(name: str) -> dict[str, Any]:
        spec = crds.all_crds()[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        schema: dict[str, Any] = spec["properties"]["phases"]["items"]["properties"]["checks"]["items"]
        return schema

    review = check_schema("postdeploymentreviews.yaml")
    template = check_schema("clusterreviewtemplates.yaml")
    assert "required" not in review["properties"]["prometheus"]
    assert template["properties"]["prometheus"]["required"] == ["query"]
    assert review["required"] == template["required"] == ["name"]


async def test_windows_end_where_the_query_is_evaluated() -> None:
    # Evaluation times are aligned down (to the whole second); {{sinceDeploy}} must be
    # measured to that time, or the window would reach back before the deployment.
    provider = prometheus.PrometheusProvider(f"http://127.0.0.1:{ports.free_port()}", timeout_seconds=1)
    ctx = make_context(now=NOW + 7.9 * SECOND, deployed_at=NOW - MINUTE, interval=MINUTE)
    spec = PrometheusCheck(query="sum(increase(x[{{sinceDeploy}}]))")
    m = await provider.measure(spec, ctx)
    await provider.close()
    assert m.query == "sum(increase(x[67s]))"  # to 7 s after NOW, not 7.9 (68s)
