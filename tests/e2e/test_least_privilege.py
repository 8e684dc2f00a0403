"""The operator with the chart's ServiceAccount, not as admin: the least RBAC suffices.

Every test here runs the operator as a real process (``tests/e2e/harness.py``) whose
KUBECONFIG holds only a token for the chart's ServiceAccount (installed by the
``chart_release`` fixture; token from ``kubectl create token --duration``). Each
replays a scenario of ``test_reviews.py`` / ``test_templates.py`` unchanged, then
requires that the API server accepted the operator's token as that ServiceAccount and
that the operator's log holds no refusal (HTTP 403, "Forbidden", kopf's "Not enough
permissions"):

- a healthy release passes (kopf's watch, finalizer and progress annotations, status
  writes, Events, every kubernetes check, Prometheus and Alertmanager checks);
- a rising error rate fails the right check (Warning Events, SLOBreached);
- a review runs its ReviewTemplate with overrides (namespaced template read);
- zero-touch creates one review per rolled-out version (workloads watched, reviews
  created).
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator

import pytest

from tests.e2e import test_reviews, test_templates
from tests.e2e.harness import Kubectl, OperatorProcess, refusals
from tests.e2e.installs import Release, whoami

pytest_plugins = ["tests.e2e.conftest_install"]

# The sample app's steering, shared with the scenarios replayed here.
steer = test_reviews.steer


@pytest.fixture
def operator_env(operator_env: dict[str, str], service_account_kubeconfig: pathlib.Path) -> dict[str, str]:
    """The harness's environment, with the ServiceAccount's kubeconfig instead of admin's."""
    return {**operator_env, "KUBECONFIG": str(service_account_kubeconfig)}


@pytest.fixture
def operators(
    run_operator: Callable[..., OperatorProcess],
    kubectl: Kubectl,
    service_account_kubeconfig: pathlib.Path,
    chart_release: Release,
) -> Iterator[Callable[..., OperatorProcess]]:
    """``run_operator`` that, after the scenario, checks identity and refusals in the logs."""
    started: list[OperatorProcess] = []

    def start(**env: str) -> OperatorProcess:
        process = run_operator(**env)
        started.append(process)
        return process

    identity = whoami(kubectl, service_account_kubeconfig)
    assert identity == f"system:serviceaccount:{chart_release.namespace}:{chart_release.service_account}"
    yield start
    assert started, "the scenario started no operator"
    for process in started:
        log = process.output()
        assert "postdeploy started" in log, log
        refused = refusals(log)
        assert not refused, "\n".join(refused)


def test_healthy_release_passes(
    kubectl: Kubectl, namespace: str, operators: Callable[..., OperatorProcess], steer: Callable[..., None]
) -> None:
    test_reviews.test_healthy_release_passes(kubectl, namespace, operators, steer)


def test_error_rate_rise_fails_the_right_check(
    kubectl: Kubectl, namespace: str, operators: Callable[..., OperatorProcess], steer: Callable[..., None]
) -> None:
    test_reviews.test_error_rate_rise_fails_the_right_check(kubectl, namespace, operators, steer)


def test_review_uses_its_template_with_overrides(
    kubectl: Kubectl, namespace: str, operators: Callable[..., OperatorProcess]
) -> None:
    test_templates.test_review_uses_its_template_with_overrides(kubectl, namespace, operators)


def test_zero_touch_creates_one_review_per_version(
    kubectl: Kubectl, namespace: str, operators: Callable[..., OperatorProcess]
) -> None:
    test_templates.test_zero_touch_creates_one_review_per_version(kubectl, namespace, operators)
