"""Review admission, the pure parts: which rights a review needs of its author, the
webhook configurations, and the webhook's certificate.

Covers: patch on the target only when a check may annotate, pause or roll back
(onFailure capped by spec.rollback.policy; dry runs and none need nothing; notify
annotates); the target's resource and API group per kind; create jobs for job checks
and impersonate for a named ServiceAccount; get on every Secret the review names;
delete on each cleanup kind in both namespaces and on ReplicaSets for
keepReplicaSets; a report check's ConfigMap; template checks merged in count, and
disabled checks do not; a ReviewTemplate's editor needs namespace-wide rights;
refusals name user, verb, resource, name and namespace; the configurations are
Fail, scoped to the watched namespaces and the shard selector, skip spec-less
updates, carry the caBundle and the handler's path; the certificate is renewed two
thirds into its life or when its hosts change, keeps its CA, and verifies.
"""

from __future__ import annotations

import base64
import datetime
import ssl
from typing import Any

import pytest
from cryptography import x509

from postdeploy.admission import certificates, configurations, reviews, rights
from postdeploy.decisions import selectors, templates

T0 = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)


def accesses(spec: dict[str, Any], template: dict[str, Any] | None = None, name: str = "r") -> set[str]:
    resolved = templates.resolve(templates.merge(template, spec))
    return {a.describe() for a in rights.for_review(resolved, "team-a", name)}


def review(*checks: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "target": {"name": "prod"},
        "useDefaultTemplate": False,
        "phases": [{"name": "p", "start": "0s", "end": "1h", "checks": list(checks)}],
        **spec,
    }


PROM = {"prometheus": {"query": "vector(1)"}}


def test_a_check_that_only_measures_needs_nothing() -> None:
    assert accesses(review({"name": "c", **PROM})) == set()
    assert accesses(review({"name": "c", "onFailure": "none", **PROM})) == set()


@pytest.mark.parametrize("level", ["annotate", "notify", "pause", "rollback"])
def test_acting_on_the_target_needs_patch_on_it(level: str) -> None:
    assert accesses(review({"name": "c", "onFailure": level, **PROM})) == {
        'patch deployments.apps "prod" in namespace team-a'
    }


def test_the_policy_caps_and_a_dry_run_acts_on_nothing() -> None:
    check = {"name": "c", "onFailure": "rollback", **PROM}
    assert accesses(review(check, rollback={"policy": "none"})) == set()
    assert accesses(review(check, rollback={"dryRun": True})) == set()
    assert accesses(review(check, rollback={"policy": "annotate"})) == {
        'patch deployments.apps "prod" in namespace team-a'
    }


@pytest.mark.parametrize(
    ("kind", "resource"),
    [
        ("Deployment", "deployments.apps"),
        ("StatefulSet", "statefulsets.apps"),
        ("DaemonSet", "daemonsets.apps"),
        ("Rollout", "rollouts.argoproj.io"),
    ],
)
def test_the_target_is_named_by_its_kinds_resource_and_namespace(kind: str, resource: str) -> None:
    spec = review(
        {"name": "c", "onFailure": "pause", **PROM}, target={"kind": kind, "name": "w", "namespace": "b"}
    )
    assert accesses(spec) == {f'patch {resource} "w" in namespace b'}


def test_a_job_check_needs_create_jobs_and_its_service_account() -> None:
    pod = {"spec": {"containers": [{"name": "x", "image": "busybox"}]}}
    assert accesses(review({"name": "j", "job": {"template": pod}})) == {
        "create jobs.batch in namespace team-a"
    }
    named = {"spec": {**pod["spec"], "serviceAccountName": "deployer"}}
    assert accesses(review({"name": "j", "job": {"template": named}})) == {
        "create jobs.batch in namespace team-a",
        'impersonate serviceaccounts "deployer" in namespace team-a',
    }
    default = {"spec": {**pod["spec"], "serviceAccountName": "default"}}
    assert accesses(review({"name": "j", "job": {"template": default}})) == {
        "create jobs.batch in namespace team-a"
    }


def test_every_secret_the_review_names_needs_get() -> None:
    spec = review(
        {
            "name": "h",
            "http": {"url": "http://127.0.0.1:1/x", "authSecretRef": {"name": "token", "key": "t"}},
        },
        {"name": "q", "postgres": {"query": "select 1", "dsnSecretRef": {"name": "db", "key": "dsn"}}},
        {
            "name": "s",
            "statistics": {
                "test": "sampleRatio",
                "query": "q",
                "dsnSecretRef": {"name": "stats", "key": "k"},
            },
        },
        providers={"postgresDsnSecretRef": {"name": "default-db", "key": "dsn"}},
        notifications=[{"name": "slack", "urlSecretRef": {"name": "hook", "key": "url"}}],
    )
    assert accesses(spec) == {
        f'get secrets "{name}" in namespace team-a' for name in ("token", "db", "stats", "default-db", "hook")
    }


def test_cleanup_needs_delete_on_each_kind_in_both_namespaces() -> None:
    cleanup = {
        "name": "clean",
        "cleanup": {"kinds": ["ConfigMap"], "names": [{"kind": "Role", "name": "tmp"}], "keepReplicaSets": 3},
    }
    got = accesses(review(cleanup, target={"name": "prod", "namespace": "team-b"}))
    assert got == {
        f"delete {resource} in namespace {ns}"
        for ns in ("team-a", "team-b")
        for resource in ("configmaps", "roles.rbac.authorization.k8s.io", "replicasets.apps")
    }


def test_a_report_check_may_overwrite_only_with_patch_on_its_configmap() -> None:
    assert accesses(review({"name": "rep", "report": {}}), name="rel-1") == {
        'patch configmaps "rel-1-report" in namespace team-a'
    }


def test_template_checks_count_and_disabled_ones_do_not() -> None:
    template = {
        "phases": [
            {
                "name": "p",
                "start": "0s",
                "end": "1h",
                "checks": [
                    {"name": "j", "enabled": False, "job": {"template": {"spec": {}}}},
                    {"name": "c", "onFailure": "rollback", **PROM},
                ],
            }
        ]
    }
    spec = {"target": {"name": "prod"}, "templateRef": {"name": "t"}}
    assert accesses(spec, template) == {'patch deployments.apps "prod" in namespace team-a'}
    spec["phases"] = [{"name": "p", "checks": [{"name": "j", "enabled": True}]}]
    assert "create jobs.batch in namespace team-a" in accesses(spec, template)


def test_a_review_templates_editor_needs_namespace_wide_rights() -> None:
    template = {
        "phases": [
            {"name": "p", "start": "0s", "end": "1h", "checks": [{"name": "c", "onFailure": "pause", **PROM}]}
        ]
    }
    assert {a.describe() for a in rights.for_template(template, "team-a")} == {
        f"patch {kind}.apps in namespace team-a" for kind in ("deployments", "statefulsets", "daemonsets")
    }


def test_a_refusal_names_the_user_the_verb_and_the_resource() -> None:
    access = rights.Access(
        "patch", "apps", "deployments", "team-a", "prod", "check c may roll back the target"
    )
    assert reviews.refusal("alice", [access]) == (
        'alice may not patch deployments.apps "prod" in namespace team-a (check c may roll back the target)'
    )


def test_webhook_configurations_fail_closed_and_are_scoped() -> None:
    mutating, validating = configurations.build(
        "postdeploy.io", {"url": "https://127.0.0.1:9443"}, "Q0E=", ["b", "a"], selectors.parse("shard=a")
    )
    hooks = {h["name"]: h for h in mutating["webhooks"] + validating["webhooks"]}
    assert set(hooks) == {f"{w}.postdeploy.io" for w in configurations.WEBHOOKS}
    assert [h["name"] for h in mutating["webhooks"]] == ["stamp-signer.postdeploy.io"]
    for name, hook in hooks.items():
        assert hook["failurePolicy"] == "Fail"
        assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == ["a", "b"]
        assert hook["clientConfig"] == {
            "caBundle": "Q0E=",
            "url": f"https://127.0.0.1:9443/{name.removesuffix('.postdeploy.io')}",
        }
    review_hook = hooks["authorize-review.postdeploy.io"]
    assert review_hook["objectSelector"] == {
        "matchExpressions": [{"key": "shard", "operator": "In", "values": ["a"]}]
    }
    assert review_hook["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    assert review_hook["matchConditions"][0]["expression"] == configurations.SPEC_CHANGED
    assert "objectSelector" not in hooks["authorize-signer.postdeploy.io"]


def test_a_clusterwide_operator_in_a_cluster_is_called_through_its_service() -> None:
    service = {"service": {"namespace": "ops", "name": "pd-webhook", "port": 9443}}
    _, validating = configurations.build("pd.postdeploy.io", service, "Q0E=", [], selectors.parse(""))
    hook = validating["webhooks"][0]
    assert hook["namespaceSelector"] == {} and validating["webhooks"][1]["objectSelector"] == {}
    assert hook["clientConfig"]["service"] == {
        "namespace": "ops",
        "name": "pd-webhook",
        "port": 9443,
        "path": "/authorize-signer",
    }


def _leaf(bundle: certificates.Bundle) -> x509.Certificate:
    return x509.load_pem_x509_certificate(bundle.cert)


def test_the_certificate_is_renewed_before_it_expires_under_the_same_ca(tmp_path: Any) -> None:
    life = datetime.timedelta(days=30)
    first = certificates.renewed(None, ["127.0.0.1", "localhost"], T0, life)
    assert (
        certificates.renewed(first, ["127.0.0.1", "localhost"], T0 + datetime.timedelta(days=19), life)
        is first
    )
    later = certificates.renewed(first, ["127.0.0.1", "localhost"], T0 + datetime.timedelta(days=21), life)
    assert later.ca_cert == first.ca_cert and later.cert != first.cert
    assert _leaf(later).not_valid_after_utc > _leaf(first).not_valid_after_utc
    moved = certificates.renewed(later, ["pd.ops.svc"], T0 + datetime.timedelta(days=21), life)
    assert moved.cert != later.cert and moved.ca_cert == first.ca_cert
    # The leaf verifies against the CA the API server is given.
    cert, key, ca = certificates.write(later, tmp_path)
    context = ssl.create_default_context(cafile=str(ca))
    assert context.get_ca_certs()
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    assert base64.b64decode(certificates.Bundle.from_data(later.data()).data()["ca.crt"]) == later.ca_cert  # type: ignore[union-attr]


def test_zero_touch_reviews_hold_only_a_template_and_their_workload() -> None:
    from postdeploy.handlers import zerotouch

    assert zerotouch.template_ref("quick") == {"kind": "ClusterReviewTemplate", "name": "quick"}
    assert zerotouch.template_ref("ReviewTemplate/quick") == {"kind": "ReviewTemplate", "name": "quick"}
    assert zerotouch.template_ref("Secret/quick") is None
    assert zerotouch.template_ref("ReviewTemplate/") is None
    workload = {"metadata": {"name": "checkout", "namespace": "shop", "uid": "u1"}}
    made = zerotouch.review_for(workload, "Deployment", "ReviewTemplate/quick", "1.2.0")
    assert made["metadata"]["namespace"] == "shop"
    assert made["spec"] == {
        "target": {"kind": "Deployment", "name": "checkout"},
        "version": "1.2.0",
        "templateRef": {"kind": "ReviewTemplate", "name": "quick"},
    }


def test_a_short_lived_certificate_is_renewed_two_thirds_into_its_own_life() -> None:
    life = datetime.timedelta(seconds=90)
    first = certificates.renewed(None, ["127.0.0.1"], T0, life)
    assert certificates.renewed(first, ["127.0.0.1"], T0 + datetime.timedelta(seconds=55), life) is first
    assert certificates.renewed(first, ["127.0.0.1"], T0 + datetime.timedelta(seconds=61), life) is not first
