"""Which revision a Deployment rollback goes back to (``actions.rollbacks.previous_release``).

Covers: the highest revision below the current one; a revision that is only a
``kubectl rollout restart`` of the current release is skipped (going back to it would
change nothing the release brought); a release that changed only configuration is a
release; none left is None.
"""

from __future__ import annotations

from typing import Any

from postdeploy.actions.rollbacks import DEPLOYMENT_REVISION, RESTARTED_AT, previous_release


def template(image: str, *, restarted: str | None = None, env: str = "a") -> dict[str, Any]:
    annotations = {RESTARTED_AT: restarted} if restarted else {}
    labels = {"app": "checkout", "pod-template-hash": image[-3:]}
    return {
        "metadata": {"labels": labels, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": image, "env": [{"name": "MODE", "value": env}]}]},
    }


def replica_set(revision: int, pod_template: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": f"checkout-{revision}", "annotations": {DEPLOYMENT_REVISION: str(revision)}},
        "spec": {"template": pod_template},
    }


def test_the_highest_older_revision_of_another_release() -> None:
    owned = [replica_set(1, template("app:1.0.0")), replica_set(2, template("app:1.1.0"))]
    found = previous_release(owned, 3, template("app:1.2.0"))
    assert found is not None and found["metadata"]["name"] == "checkout-2"


def test_a_restart_of_the_current_release_is_not_gone_back_to() -> None:
    owned = [
        replica_set(1, template("app:1.0.0")),
        replica_set(2, template("app:1.1.0")),
        replica_set(3, template("app:1.1.0", restarted="2026-11-30T23:00:00Z")),
    ]
    current = template("app:1.1.0", restarted="2026-11-30T23:30:00Z")
    found = previous_release(owned, 4, current)
    assert found is not None and found["metadata"]["name"] == "checkout-1"


def test_a_configuration_change_is_a_release() -> None:
    owned = [replica_set(1, template("app:1.0.0", env="a"))]
    found = previous_release(owned, 2, template("app:1.0.0", env="b"))
    assert found is not None and found["metadata"]["name"] == "checkout-1"


def test_nothing_but_restarts_leaves_nothing_to_go_back_to() -> None:
    owned = [replica_set(1, template("app:1.1.0")), replica_set(2, template("app:1.1.0", restarted="t1"))]
    assert previous_release(owned, 3, template("app:1.1.0", restarted="t2")) is None
    assert previous_release([], 1, template("app:1.1.0")) is None
