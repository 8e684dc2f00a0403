"""The built-in default template (``postdeploy.defaults``): shipped, valid, overridable.

Covers:
- ``crds/postdeploy-default.yaml`` is exactly what ``python -m postdeploy crds crds/``
  writes from ``operator/postdeploy/defaults/checklist.yaml``, and is the template the
  operator looks for by default;
- a review naming only its target and version resolves to the checklist's phases
  1-3 (0-2h, 2-24h, 24-72h) with every check of the issue, the disabled ones left out;
- every query of every check (enabled or not) fills in with the template's parameter
  defaults and the review's values: no unknown placeholder, selectors that are label
  matchers, SQL parameters that exist;
- overrides by name: a condition, one field of a provider block, a baseline switched to
  preDeploy, a parameter, a phase's timing, a disabled check turned on;
- docs/checklist.md names every check with its default query and parameter, and its
  review examples resolve against the template.
"""

from __future__ import annotations

import datetime
import pathlib
import re
from typing import Any

import pytest
import yaml

from postdeploy import defaults
from postdeploy.decisions import templates, templating
from postdeploy.engine.settings import Settings
from postdeploy.models import checks as check_models
from postdeploy.models import crds
from tests.contexts import make_context

ROOT = pathlib.Path(__file__).resolve().parents[2]
HOUR = datetime.timedelta(hours=1)


def _resolve(**spec: Any) -> templates.ResolvedReview:
    review = {"target": {"name": "checkout"}, "version": "1.2.0", **spec}
    return templates.resolve(templates.merge(defaults.manifest()["spec"], review))


def _all_checks() -> list[check_models.Check]:
    return [check for phase in defaults.spec().phases for check in phase.checks]


def test_the_shipped_file_is_generated_from_the_package_source(tmp_path: pathlib.Path) -> None:
    committed = (ROOT / "crds" / defaults.FILE_NAME).read_text()
    assert committed == defaults.render(), "crds/postdeploy-default.yaml is stale: run `make crds`"
    written = {p.name: p.read_text() for p in [*crds.write(tmp_path), defaults.write(tmp_path)]}
    assert written[defaults.FILE_NAME] == committed
    assert committed.endswith(defaults.source())


def test_it_is_the_cluster_template_the_operator_uses_by_default() -> None:
    manifest = defaults.manifest()
    assert manifest["apiVersion"] == crds.API_VERSION
    assert manifest["kind"] == "ClusterReviewTemplate"
    assert manifest["metadata"]["name"] == defaults.NAME == Settings().default_template


def test_a_review_with_only_target_and_version_runs_phases_one_to_three() -> None:
    review = _resolve()
    timings = [(p.name, p.start / HOUR, p.end / HOUR) for p in review.phases]
    assert timings == [("immediate", 0, 2), ("extended", 2, 24), ("business", 24, 72)]
    running = {p.name: [c.name for c in p.checks] for p in review.phases}
    assert running == {
        "immediate": [
            "rollout-complete", "replicas-ready", "replicas-available", "crash-loops",
            "image-pull-errors", "restarts", "critical-alerts", "error-rate", "latency-p95",
            "throughput", "cpu-usage", "memory-usage", "node-pressure", "slow-queries-immediate",
            "support-tickets", "social-media", "feedback-channels",
        ],
        "extended": [
            "error-rate-extended", "latency-p95-extended", "memory-leak", "latency-trend",
            "error-rate-trend", "slow-queries", "hpa", "new-error-types",
        ],
        "business": ["engagement", "feature-adoption"],
    }  # fmt: skip
    disabled = sorted(c.name for c in _all_checks() if not c.enabled)
    assert disabled == [
        "ab-test", "capacity", "conversion", "error-rate-threshold", "error-remediation",
        "latency-p95-threshold", "namespace-workloads", "revenue", "user-journeys",
    ]  # fmt: skip


def test_every_check_says_which_checklist_item_it_covers() -> None:
    for check in _all_checks():
        assert check.description, check.name


def _values(**parameters: str) -> dict[str, str]:
    ctx = make_context(
        target_name="checkout",
        namespace="shop",
        parameters={**defaults.spec().parameters, **parameters},
    )
    return ctx.template_values()


# Values the disabled checks need from the review.
EXTRA = {
    "projectedCpuCores": "2",
    "projectedMemoryBytes": "2147483648",
    "projectedReplicas": "4",
    "experiment": "checkout_redesign",
}


@pytest.mark.parametrize("check", _all_checks(), ids=lambda c: c.name)
def test_every_query_fills_in_with_the_defaults(check: check_models.Check) -> None:
    values = _values(**EXTRA, window="60s")  # window: the batch of a comparison
    if check.prometheus is not None:
        compare = check.prometheus.compare
        for text in (check.prometheus.query, check.prometheus.limit_query, compare and compare.total):
            if text is None:
                continue
            rendered = templating.render_promql(text, values)
            assert "{{" not in rendered
            assert 'namespace="shop"' in rendered, rendered
            assert rendered.count("(") == rendered.count(")")
            assert rendered.count("{") == rendered.count("}")
    elif check.alertmanager is not None:
        rendered = [templating.render_promql(m, values) for m in check.alertmanager.matchers]
        assert rendered == ['severity="critical"', 'namespace="shop"']
    sql = check.postgres.query if check.postgres is not None else None
    sql = check.statistics.query if check.statistics is not None else sql
    if sql is not None:
        ctx = make_context(parameters={**defaults.spec().parameters, **EXTRA})
        available = templating.sql_parameters(ctx)
        used = set(re.findall(r"%\(([^)]+)\)s", sql))
        assert used and used <= set(available), used - set(available)
        assert "%" not in re.sub(r"%\([^)]+\)s", "", sql), "a literal % must be written %%"


def test_selectors_find_the_target_by_job_and_its_pods_by_name() -> None:
    values = _values()
    assert templating.render_promql("up{ {{selector}} }", values) == 'up{ namespace="shop", job="checkout" }'
    pods = templating.render_promql("up{ {{podSelector}} }", values)
    pattern = re.search(r'pod=~"([^"]+)"', pods)
    assert pattern is not None
    regex = re.compile(f"^(?:{pattern.group(1)})$")  # PromQL anchors its regexes
    for pod in ("checkout-7d9f8b6c5d-x2k4q", "checkout-0", "checkout-x2k4q"):
        assert regex.match(pod), pod
    for other in ("checkout-worker-7d9f8b6c5d-x2k4q", "checkoutx-0", "cart-7d9f8b6c5d-x2k4q"):
        assert not regex.match(other), other


def test_a_hostile_target_name_stays_inside_the_selector() -> None:
    values = _values()
    values["target"] = 'x"} or vector(1) #'
    values = {**values, "selector": defaults.spec().parameters["selector"]}
    rendered = templating.render_promql("sum(up{ {{selector}} })", values)
    assert rendered == 'sum(up{ namespace="shop", job="x\\"} or vector(1) #" })'


def test_overrides_by_name() -> None:
    review = _resolve(
        parameters={"selector": 'service="checkout-api"', "rateWindow": "1m"},
        phases=[
            {
                "name": "immediate",
                "end": "1h",
                "checks": [
                    {
                        "name": "error-rate",
                        "failWhen": "ratioLower > 1.5 and pValue < alpha",
                        "prometheus": {"compare": {"minEffect": 0.5}},
                    },
                    {"name": "error-rate-threshold", "enabled": True, "failWhen": "value > 0.02"},
                    {"name": "throughput", "baseline": {"preDeploy": True}},
                    {"name": "user-journeys", "enabled": True, "job": {"template": {"spec": {}}}},
                ],
            },
            {"name": "extended", "checks": [{"name": "memory-leak", "prometheus": {"step": "1m"}}]},
            {"name": "business", "checks": [{"name": "feature-adoption", "enabled": False}]},
        ],
    )
    assert review.phases[0].end == HOUR
    assert review.spec.parameters["selector"] == 'service="checkout-api"'
    assert review.spec.parameters["podSelector"] == defaults.spec().parameters["podSelector"]
    error_rate = review.check("error-rate")
    assert error_rate is not None and error_rate.spec.fail_when == "ratioLower > 1.5 and pValue < alpha"
    assert error_rate.spec.prometheus is not None and error_rate.spec.prometheus.compare is not None
    assert error_rate.spec.prometheus.compare.alpha == 0.005  # the rest of the block stays
    assert error_rate.spec.prometheus.compare.min_effect == 0.5
    assert error_rate.spec.prometheus.compare.total is not None
    threshold = review.check("error-rate-threshold")
    assert threshold is not None and threshold.spec.fail_when == "value > 0.02"
    assert threshold.spec.baseline is not None and threshold.spec.baseline.pre_deploy
    throughput = review.check("throughput")
    assert throughput is not None and throughput.spec.baseline is not None
    assert throughput.spec.baseline.pre_deploy and throughput.spec.baseline.offset is None
    assert throughput.spec.baseline.tolerance == 0.3
    journeys = review.check("user-journeys")
    assert journeys is not None and journeys.spec.job is not None
    leak = review.check("memory-leak")
    assert leak is not None and leak.spec.prometheus is not None
    assert leak.spec.prometheus.step == "1m"
    assert leak.spec.prometheus.trend == "timeToLimit" and leak.spec.prometheus.range == "phase"
    assert review.check("feature-adoption") is None


def test_disabled_checks_run_once_enabled_with_their_parameters() -> None:
    review = _resolve(
        parameters={"experiment": "checkout_redesign"},
        phases=[
            {"name": "business", "checks": [{"name": n, "enabled": True} for n in ("conversion", "ab-test")]}
        ],
    )
    conversion = review.check("conversion")
    assert conversion is not None and conversion.spec.statistics is not None
    assert conversion.spec.statistics.test == "proportionChange"
    ab = review.check("ab-test")
    assert ab is not None and ab.spec.statistics is not None and ab.spec.statistics.test == "twoProportion"


DOC = ROOT / "docs" / "checklist.md"


def test_the_document_covers_every_check_with_its_default_query() -> None:
    text = DOC.read_text()
    for check in _all_checks():
        assert f"`{check.name}`" in text, check.name
        queries = [
            check.prometheus and check.prometheus.query,
            check.prometheus and check.prometheus.limit_query,
            check.prometheus and check.prometheus.compare and check.prometheus.compare.total,
            check.postgres and check.postgres.query,
            check.statistics and check.statistics.query,
        ]
        for query in filter(None, queries):
            assert query.strip() in text, f"docs/checklist.md lacks the default query of {check.name}"
    for name in defaults.spec().parameters:
        assert f"`{name}`" in text, name


def test_the_documents_review_examples_resolve_against_the_template() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    reviews = []
    for block in blocks:
        document = yaml.safe_load(block)  # every example parses
        if isinstance(document, dict) and "target" in document.get("spec", {}):
            reviews.append(document["spec"])
    assert len(reviews) >= 3
    for spec in reviews:
        resolved = templates.resolve(templates.merge(defaults.manifest()["spec"], spec))
        assert [p.name for p in resolved.phases] == ["immediate", "extended", "business"]
