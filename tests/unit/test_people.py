"""Pure parts of phase 4, phase 5 and the final review.

Covers: the SLO table (deployment time, downtime from availability samples, error
spike against the baseline, rollback) and unknown values never counted as met;
action items ranked by priority; which old ReplicaSets cleanup may prune (never the
current one, the rollback target, or one with replicas); reruns make a check due
again but never undo a failure nor touch a finished phase; notes and impact read
back from annotations; the report's Markdown and HTML carry the measured values and
charts, and the HTML loads nothing from outside; the plugin's exit codes.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from postdeploy.actions import cleanups
from postdeploy.decisions import slos
from postdeploy.engine import reruns
from postdeploy.models.people import SloTargets
from postdeploy.models.reviews import CheckState, CheckStatus
from postdeploy.plugin import errors
from postdeploy.reports import documents, inputs, markdown, pages

T0 = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)


def minutes(n: float) -> datetime.datetime:
    return T0 + datetime.timedelta(minutes=n)


def test_slo_table_judges_each_target() -> None:
    results = {
        r.name: r
        for r in slos.evaluate(
            SloTargets(),
            slos.Inputs(
                deployed_at=T0,
                now=minutes(60),
                rollout_completed_at=minutes(14),
                availability=[(minutes(0), 1.0), (minutes(5), 0.0), (minutes(7), 0.5)],
                error_ratio=[(minutes(1), 0.004), (minutes(2), 0.02)],
                error_baseline=0.005,
            ),
        )
    }
    assert results["deploymentTime"].value == "14m" and results["deploymentTime"].met
    assert results["downtime"].number == 120 and results["downtime"].met is False
    assert abs((results["errorSpike"].number or 0) - 0.015) < 1e-9 and results["errorSpike"].met is False
    assert results["rollbackRequired"].value == "No" and results["rollbackRequired"].met


def test_unmeasured_slos_are_unknown_not_met() -> None:
    results = slos.evaluate(SloTargets(), slos.Inputs(deployed_at=T0, now=minutes(5)))
    assert [r.met for r in results] == [None, None, None, True]
    assert slos.met(results) is None


def test_action_items_are_ranked() -> None:
    checks = [
        CheckStatus(name="slow", phase="p", provider="prometheus", state=CheckState.INCONCLUSIVE),
        CheckStatus(name="errors", phase="p", provider="prometheus", state=CheckState.FAILED, message="5xx"),
        CheckStatus(name="db", phase="p", provider="postgres", state=CheckState.ERROR),
    ]
    notes = [{"kind": "improvement", "text": "preview envs", "priority": "low", "key": "i"}]
    items = slos.action_items(checks, [], notes)
    assert [(i.priority, i.source) for i in items] == [
        ("High", "check/errors"),
        ("Medium", "check/db"),
        ("Low", "check/slow"),
        ("Low", "note/i"),
    ]


def _rs(revision: int, replicas: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"annotations": {cleanups.REVISION: str(revision)}, "name": f"rs-{revision}"},
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas},
    }


def test_replica_set_pruning_keeps_current_rollback_target_and_busy_ones() -> None:
    sets = [_rs(1), _rs(2, replicas=1), _rs(3), _rs(4), _rs(5, replicas=2)]
    pruned = {rs["metadata"]["name"] for rs, _ in cleanups.replica_sets_to_prune(sets, "5", keep=1)}
    assert pruned == {"rs-1", "rs-3"}  # 5 current, 4 the rollback target, 2 still has a replica
    assert cleanups.replica_sets_to_prune(sets, "5", keep=10) == []


def test_reruns_make_a_check_due_but_never_undo_a_failure() -> None:
    statuses = {
        "a": CheckStatus(name="a", phase="now", provider="x", state=CheckState.ERROR, last_slot=4),
        "b": CheckStatus(name="b", phase="now", provider="x", state=CheckState.FAILED, last_slot=4),
        "c": CheckStatus(name="c", phase="done", provider="x", state=CheckState.PASSED, last_slot=9),
    }
    annotations = {f"{inputs.RERUN_PREFIX}{n}": "t1" for n in "abc"}
    result = reruns.apply(statuses, annotations, {"done"})
    assert (
        result["a"].state is CheckState.RUNNING and result["a"].last_slot == -1 and result["a"].rerun == "t1"
    )
    assert result["b"].state is CheckState.FAILED and result["b"].last_slot == 4
    assert result["c"] == statuses["c"]
    again = reruns.apply(result, annotations, {"done"})
    assert again["a"] == result["a"]  # the same token is acted on once


def test_notes_and_impact_read_back() -> None:
    annotations = {
        inputs.NOTE_PREFIX + "lesson-2": json.dumps({"kind": "lesson", "text": "b", "at": "2"}),
        inputs.NOTE_PREFIX + "runbook-1": "plain text",
        inputs.IMPACT_ANNOTATION: json.dumps({"tickets": "3", "complaints": -1, "positive": 7}),
    }
    notes = inputs.notes(annotations)
    assert [(n["kind"], n["text"]) for n in notes] == [("runbook", "plain text"), ("lesson", "b")]
    assert inputs.impact(annotations) == {
        "tickets": 3,
        "complaints": None,
        "positive": 7,
        "by": None,
        "at": None,
    }


def test_report_carries_values_charts_and_no_external_assets() -> None:
    body = {
        "metadata": {"name": "r", "namespace": "shop", "annotations": {}},
        "status": {
            "target": "Deployment/checkout",
            "version": "2.0.0",
            "deployedAt": T0.isoformat(),
            "verdict": "Failed",
            "phase": "Completed",
            "checks": [
                {
                    "name": "error-rate",
                    "phase": "immediate",
                    "provider": "prometheus",
                    "state": "Failed",
                    "value": 0.4213,
                    "failWhen": "value > 0.2",
                    "message": "too many errors",
                    "history": [{"t": minutes(1).isoformat(), "v": 0.4213, "s": "Failed"}],
                },
                {
                    "name": "new-errors",
                    "phase": "extended",
                    "provider": "prometheus",
                    "state": "Passed",
                    "details": {"series": [{"labels": {"type": "ValidationError"}, "value": 145}]},
                },
            ],
        },
    }
    chart = documents.Chart(
        "Error rate", "ratio", ((T0.timestamp() - 60, 0.01), (T0.timestamp() + 60, 0.4)), "q"
    )
    report = documents.build(body, [chart], minutes(10))
    text = markdown.render(report)
    assert "0.4213" in text and "fail when value > 0.2" in text
    assert "| ValidationError | 145 |" in text
    assert "## Post-mortem (check(s) failed)" in text
    html = pages.render(report)
    assert html.count("<svg") == 1 and 'class="series"' in html and 'class="deploy"' in html
    assert "<script" not in html and "https://" not in html and "<link" not in html


def test_plugin_exit_codes_follow_the_api_status() -> None:
    def api_error(status: int) -> Exception:
        error = Exception()
        error.status, error.body, error.reason = status, json.dumps({"message": "nope"}), "x"  # type: ignore[attr-defined]
        return error

    codes = {s: errors.from_api(api_error(s), "do").code for s in (401, 403, 404, 409, 422, 500)}
    assert codes == {401: 4, 403: 4, 404: 3, 409: 5, 422: 6, 500: 1}
    assert str(errors.from_api(api_error(404), "read review x")) == "read review x: nope"
