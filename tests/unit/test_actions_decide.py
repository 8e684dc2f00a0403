"""Deciding what a breach does (postdeploy.actions.decide), and who owns the target.

Covers: the ladder and the review's policy cap (including the default, no cap); dry
run marks every record; a GitOps-managed target is annotated and notified instead
of rolled back unless allowGitOps, and may still be paused; at most one rollback
and one pause per review, whatever state the earlier one ended in; a check is
decided once (the same input twice gives nothing new); missing data (Error,
Inconclusive) and checks that ask for nothing never act; GitOps evidence from
labels and annotations.
"""

from __future__ import annotations

import datetime

import pytest

from postdeploy.actions import decide, gitops
from postdeploy.models.checks import OnFailure
from postdeploy.models.reviews import ActionRecord, ActionState, CheckState, CheckStatus, RollbackSpec

NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)
ARGO = gitops.Owner("Argo CD", "shop", "label argocd.argoproj.io/instance")


def failed(
    name: str = "error-rate", state: CheckState = CheckState.FAILED, value: float = 0.6
) -> CheckStatus:
    return CheckStatus(
        name=name, phase="immediate", provider="prometheus", state=state, value=value, fail_when="value > 0.2"
    )


def plan(
    checks: list[CheckStatus],
    asks: OnFailure | dict[str, OnFailure] = OnFailure.ROLLBACK,
    policy: decide.Policy | None = None,
    owner: gitops.Owner | None = None,
    recorded: list[ActionRecord] | None = None,
) -> list[ActionRecord]:
    requests = asks if isinstance(asks, dict) else {c.name: asks for c in checks}
    return decide.decide(checks, requests, policy or decide.Policy(), owner, recorded or [], NOW)


def steps(records: list[ActionRecord]) -> list[tuple[str | None, str]]:
    return [(r.check, r.action) for r in records]


# --- the ladder and the cap ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("asks", "expected"),
    [
        (OnFailure.ANNOTATE, ["annotate"]),
        (OnFailure.NOTIFY, ["annotate", "notify"]),
        (OnFailure.PAUSE, ["annotate", "notify", "pause"]),
        (OnFailure.ROLLBACK, ["annotate", "notify", "rollback"]),
    ],
)
def test_each_step_includes_the_ones_below(asks: OnFailure, expected: list[str]) -> None:
    records = plan([failed()], asks)
    assert [r.action for r in records] == expected
    assert all(r.state is ActionState.PENDING and r.reason is None for r in records)
    assert len({r.id for r in records}) == len(records)


def test_no_rollback_spec_means_no_cap() -> None:
    assert decide.Policy.from_spec(None) == decide.Policy(OnFailure.ROLLBACK, False, False)
    assert decide.Policy.from_spec(RollbackSpec()).cap is OnFailure.ROLLBACK


@pytest.mark.parametrize(
    ("cap", "expected"),
    [
        (OnFailure.PAUSE, ["annotate", "notify", "pause"]),
        (OnFailure.NOTIFY, ["annotate", "notify"]),
        (OnFailure.ANNOTATE, ["annotate"]),
    ],
)
def test_policy_caps_the_strongest_action(cap: OnFailure, expected: list[str]) -> None:
    records = plan([failed()], OnFailure.ROLLBACK, decide.Policy(cap=cap))
    assert [r.action for r in records] == expected
    assert f"caps actions at {cap.value}" in (records[-1].reason or "")
    assert all(r.requested == "rollback" for r in records)


def test_policy_none_records_that_nothing_is_done_and_why() -> None:
    [record] = plan([failed()], OnFailure.ROLLBACK, decide.Policy(cap=OnFailure.NONE))
    assert record.action == "none" and "caps actions at none" in (record.reason or "")


def test_a_cap_above_the_request_changes_nothing() -> None:
    records = plan([failed()], OnFailure.ANNOTATE, decide.Policy(cap=OnFailure.ROLLBACK))
    assert [r.action for r in records] == ["annotate"] and records[0].reason is None


def test_records_carry_the_breach() -> None:
    record = plan([failed(value=0.42)], OnFailure.ROLLBACK)[-1]
    assert record.check == "error-rate" and record.value == 0.42 and record.threshold == "value > 0.2"
    assert "error-rate" in record.cause and "0.42" in record.cause
    assert record.decided_at == NOW.isoformat()


def test_dry_run_marks_every_record() -> None:
    records = plan([failed()], OnFailure.ROLLBACK, decide.Policy(dry_run=True))
    assert [r.action for r in records] == ["annotate", "notify", "rollback"]
    assert all(r.dry_run for r in records)


# --- GitOps -------------------------------------------------------------------------------


def test_gitops_target_is_annotated_and_notified_instead_of_rolled_back() -> None:
    records = plan([failed()], OnFailure.ROLLBACK, owner=ARGO)
    assert [r.action for r in records] == ["annotate", "notify"]
    assert "managed by Argo CD" in (records[-1].reason or "") and "allowGitOps" in (records[-1].reason or "")


def test_allow_gitops_rolls_back_anyway() -> None:
    records = plan([failed()], OnFailure.ROLLBACK, decide.Policy(allow_gitops=True), owner=ARGO)
    assert records[-1].action == "rollback"


def test_gitops_target_may_still_be_paused() -> None:
    assert plan([failed()], OnFailure.PAUSE, owner=ARGO)[-1].action == "pause"


# --- once only ----------------------------------------------------------------------------


@pytest.mark.parametrize("state", list(ActionState))
def test_at_most_one_rollback_per_review_whatever_became_of_it(state: ActionState) -> None:
    earlier = ActionRecord(id="rollback-latency", action="rollback", check="latency", state=state)
    records = plan([failed("latency"), failed()], OnFailure.ROLLBACK, recorded=[earlier])
    assert steps(records) == [("error-rate", "annotate"), ("error-rate", "notify")]
    assert "at most one rollback" in (records[-1].reason or "")


def test_two_checks_failing_together_roll_back_once() -> None:
    records = plan([failed("error-rate"), failed("latency")], OnFailure.ROLLBACK)
    assert [r.id for r in records if r.action == "rollback"] == ["rollback-error-rate"]
    assert steps(records)[3:] == [("latency", "annotate"), ("latency", "notify")]


def test_at_most_one_pause_and_no_pause_after_a_rollback() -> None:
    records = plan([failed("a"), failed("b")], {"a": OnFailure.PAUSE, "b": OnFailure.PAUSE})
    assert [r.check for r in records if r.action == "pause"] == ["a"]
    rolled = ActionRecord(id="rollback-a", action="rollback", check="a", state=ActionState.DONE)
    records = plan(
        [failed("a"), failed("b")], {"a": OnFailure.ROLLBACK, "b": OnFailure.PAUSE}, recorded=[rolled]
    )
    assert [r.action for r in records] == ["annotate", "notify"]
    assert "already rolled back" in (records[-1].reason or "")


def test_a_rollback_may_follow_a_pause() -> None:
    paused = ActionRecord(id="pause-a", action="pause", check="a", state=ActionState.DONE)
    records = plan(
        [failed("a"), failed("b")], {"a": OnFailure.PAUSE, "b": OnFailure.ROLLBACK}, recorded=[paused]
    )
    assert steps(records)[-1] == ("b", "rollback")


def test_deciding_twice_gives_nothing_new() -> None:
    checks = [failed("a"), failed("b")]
    first = plan(checks, OnFailure.ROLLBACK)
    assert plan(checks, OnFailure.ROLLBACK, recorded=first) == []
    assert decide.undecided(checks, {"a": OnFailure.ROLLBACK, "b": OnFailure.ROLLBACK}, first) == []


# --- missing data never acts --------------------------------------------------------------


@pytest.mark.parametrize(
    "state",
    [CheckState.ERROR, CheckState.INCONCLUSIVE, CheckState.RUNNING, CheckState.PASSED, CheckState.PENDING],
)
def test_only_failed_checks_act(state: CheckState) -> None:
    assert plan([failed(state=state)], OnFailure.ROLLBACK) == []


def test_checks_asking_for_nothing_or_unknown_checks_do_not_act() -> None:
    assert plan([failed()], OnFailure.NONE) == []
    assert plan([failed("gone")], {}) == []


# --- GitOps evidence ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "tool", "name"),
    [
        (
            {"annotations": {"argocd.argoproj.io/tracking-id": "shop:apps/Deployment:prod/checkout"}},
            "Argo CD",
            "shop",
        ),
        ({"labels": {"argocd.argoproj.io/instance": "shop"}}, "Argo CD", "shop"),
        (
            {
                "labels": {
                    "kustomize.toolkit.fluxcd.io/name": "apps",
                    "kustomize.toolkit.fluxcd.io/namespace": "flux",
                }
            },
            "Flux",
            "Kustomization flux/apps",
        ),
        ({"labels": {"helm.toolkit.fluxcd.io/name": "shop"}}, "Flux", "HelmRelease shop"),
    ],
)
def test_gitops_evidence(metadata: dict[str, dict[str, str]], tool: str, name: str) -> None:
    owner = gitops.owner(metadata)
    assert owner is not None and (owner.tool, owner.name) == (tool, name)


def test_helm_instance_label_alone_is_not_gitops() -> None:
    labels = {"app.kubernetes.io/instance": "shop", "app.kubernetes.io/managed-by": "Helm"}
    assert gitops.owner({"labels": labels}) is None
    assert gitops.owner({}) is None
