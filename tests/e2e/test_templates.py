"""Templates, zero-touch reviews and malformed reviews, on the real API server.

Covers:
- a review naming a ReviewTemplate runs the template's checks with its own overrides;
- zero-touch: a Deployment annotated ``postdeploy.io/template`` gets exactly one review
  per version it rolls out, however many events the rollout causes;
- malformed reviews: each is refused by the API server (CRD schema and CEL rules) with
  a message naming the problem, or accepted and reported by the operator in an
  InvalidSpec condition naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.harness import Kubectl, OperatorProcess, wait_for
from tests.e2e.test_reviews import checks_by_name, wait_verdict

TEMPLATE = {
    "apiVersion": "postdeploy.io/v1alpha1",
    "kind": "ReviewTemplate",
    "metadata": {"name": "quick"},
    "spec": {
        "phases": [
            {
                "name": "immediate",
                "start": "0s",
                "end": "6s",
                "interval": "2s",
                "checks": [
                    {"name": "rollout", "kubernetes": {"measure": "rolloutComplete"}},
                    {"name": "ready", "kubernetes": {"measure": "readyRatio"}},
                    {"name": "restarts", "kubernetes": {"measure": "restarts"}, "failWhen": "value > 5"},
                ],
            }
        ]
    },
}


def _review(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "postdeploy.io/v1alpha1",
        "kind": "PostDeploymentReview",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_review_uses_its_template_with_overrides(
    kubectl: Kubectl, namespace: str, run_operator: Callable[..., OperatorProcess]
) -> None:
    kubectl.apply(namespace, TEMPLATE)
    run_operator()
    kubectl.apply(
        namespace,
        _review(
            "templated",
            {
                "target": {"name": "checkout"},
                "templateRef": {"kind": "ReviewTemplate", "name": "quick"},
                "phases": [
                    {
                        "name": "immediate",
                        "checks": [
                            {"name": "restarts", "failWhen": "value > 100"},
                            {"name": "crash-loops", "kubernetes": {"measure": "crashLoops"}},
                        ],
                    }
                ],
            },
        ),
    )
    status = wait_verdict(kubectl, namespace, "templated")
    assert status["verdict"] == "Passed", json.dumps(status, indent=1)
    checks = checks_by_name(status)
    assert list(checks) == ["rollout", "ready", "restarts", "crash-loops"]
    assert checks["restarts"]["failWhen"] == "value > 100"


def test_zero_touch_creates_one_review_per_version(
    kubectl: Kubectl, namespace: str, run_operator: Callable[..., OperatorProcess]
) -> None:
    kubectl.apply(namespace, TEMPLATE)
    run_operator()
    kubectl("-n", namespace, "annotate", "deployment/checkout", "postdeploy.io/template=ReviewTemplate/quick")

    def reviews() -> list[dict[str, Any]]:
        items = json.loads(kubectl("-n", namespace, "get", "pdr", "-o", "json"))["items"]
        return list(items)

    first = wait_for("a review for 1.0.0", lambda: [r for r in reviews() if r["spec"]["version"] == "1.0.0"])
    assert len(first) == 1
    for version in ("1.1.0", "1.2.0"):
        kubectl.roll_out(namespace, version)
        wait_for(
            f"a review for {version}", lambda v=version: [r for r in reviews() if r["spec"]["version"] == v]
        )
    # Scaling causes more events but no new version: still one review per version.
    kubectl("-n", namespace, "scale", "deployment/checkout", "--replicas=3")
    kubectl("-n", namespace, "rollout", "status", "deployment/checkout", "--timeout=60s")
    versions = sorted(r["spec"]["version"] for r in reviews())
    assert versions == ["1.0.0", "1.1.0", "1.2.0"]
    newest = next(r for r in reviews() if r["spec"]["version"] == "1.2.0")
    assert newest["spec"]["templateRef"] == {"kind": "ReviewTemplate", "name": "quick"}
    assert wait_verdict(kubectl, namespace, newest["metadata"]["name"])["verdict"] == "Passed"


def _phase(**fields: Any) -> dict[str, Any]:
    return {"name": "p", "start": "0s", "end": "10s", **fields}


def _check(**fields: Any) -> dict[str, Any]:
    return {"name": "c", "prometheus": {"query": "up"}, **fields}


REFUSED = [
    ("no target", {"phases": [_phase()]}, "spec.target: Required value"),
    ("unsupported kind", {"target": {"kind": "Pod", "name": "x"}}, 'Unsupported value: "Pod"'),
    ("bad duration", {"target": {"name": "x"}, "phases": [_phase(start="soon")]}, "spec.phases[0].start"),
    (
        "two providers",
        {"target": {"name": "x"}, "phases": [_phase(checks=[_check(manual={})])]},
        "a check takes at most one provider",
    ),
    (
        "baseline both ways",
        {
            "target": {"name": "x"},
            "phases": [_phase(checks=[_check(baseline={"offset": "1w", "preDeploy": True})])],
        },
        "choose offset or preDeploy, not both",
    ),
    ("empty phase", {"target": {"name": "x"}, "phases": [_phase(end="0s")]}, "start and end must differ"),
    (
        "negative limit",
        {"target": {"name": "x"}, "phases": [_phase(checks=[_check(failureLimit=-1)])]},
        "failureLimit: Invalid value: -1",
    ),
    (
        "bad check name",
        {"target": {"name": "x"}, "phases": [_phase(checks=[_check(name="Error Rate")])]},
        "spec.phases[0].checks[0].name",
    ),
    (
        "unknown field",
        {"target": {"name": "x"}, "phases": [_phase(checks=[_check(colour="red")])]},
        'unknown field "spec.phases[0].checks[0].colour"',
    ),
    (
        "zero row limit",
        {
            "target": {"name": "x"},
            "phases": [_phase(checks=[{"name": "c", "postgres": {"query": "select 1", "rowLimit": 0}}])],
        },
        "rowLimit",
    ),
    (
        "no phases and no template",
        {"target": {"name": "x"}, "useDefaultTemplate": False},
        "needs templateRef or phases",
    ),
    (
        "unknown onFailure",
        {"target": {"name": "x"}, "phases": [_phase(checks=[_check(onFailure="explode")])]},
        'Unsupported value: "explode"',
    ),
]


@pytest.mark.parametrize(("case", "spec", "message"), REFUSED, ids=[c[0] for c in REFUSED])
def test_malformed_review_is_refused_by_the_api_server(
    kubectl: Kubectl, namespace: str, case: str, spec: dict[str, Any], message: str
) -> None:
    output = kubectl(
        "-n", namespace, "apply", "-f", "-", input_text=json.dumps(_review("bad", spec)), check=False
    )
    assert "created" not in output, f"{case}: accepted"
    assert message in output, output


REPORTED = [
    (
        "condition syntax",
        [_phase(checks=[_check(failWhen="value >> 1")])],
        "spec.phases[p].checks[c].failWhen: expected a value at column 8",
    ),
    (
        "no provider",
        [_phase(checks=[{"name": "c", "failWhen": "value > 1"}])],
        "spec.phases[p].checks[c]: check 'c' names no provider",
    ),
    (
        "phases out of order",
        [_phase(name="late", start="1m", end="2m"), _phase()],
        "spec.phases[p].start: phases must be listed in order",
    ),
    ("duplicate checks", [_phase(checks=[_check(), _check()])], "check names must be unique"),
    ("number as condition", [_phase(checks=[_check(failWhen="value * 2")])], "is a number, not a condition"),
]


def test_malformed_reviews_are_reported_in_a_condition(
    kubectl: Kubectl, namespace: str, run_operator: Callable[..., OperatorProcess]
) -> None:
    run_operator()
    for index, (_, phases, _) in enumerate(REPORTED):
        kubectl.apply(
            namespace,
            _review(
                f"bad-{index}",
                {"target": {"name": "checkout"}, "useDefaultTemplate": False, "phases": phases},
            ),
        )
    kubectl.apply(
        namespace,
        _review(
            "missing-template",
            {"target": {"name": "checkout"}, "templateRef": {"kind": "ReviewTemplate", "name": "nope"}},
        ),
    )
    expected = [
        *((f"bad-{i}", m) for i, (_, _, m) in enumerate(REPORTED)),
        ("missing-template", "spec.templateRef: ReviewTemplate 'nope' not found"),
    ]
    for name, message in expected:
        status = wait_verdict(kubectl, namespace, name, timeout=30)
        assert status["verdict"] == "Invalid"
        condition = next(c for c in status["conditions"] if c["type"] == "InvalidSpec")
        assert message in condition["message"], (name, condition["message"])
        reasons = [e["reason"] for e in kubectl.events(namespace, name)]
        assert reasons.count("InvalidSpec") == 1
