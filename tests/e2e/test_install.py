"""Installing postdeploy: the Helm chart, the kustomize base, and the least RBAC.

Covers:
- ``helm lint --strict`` passes with the defaults and with every option turned on;
  the values schema refuses a misspelt key;
- ``manifests/`` is the chart's default render (``helm/render_manifests.py --check``),
  and ``kubectl kustomize manifests/`` yields the same objects as ``helm template``;
- the rendered Deployment: restricted security context, read-only root with /tmp the
  only writable mount, probes on kopf's liveness endpoint, Recreate with one replica;
  replicas > 1 elect a leader on one Lease (its env, a Role for that Lease only in the
  release's namespace, rolling updates, PDB, spread over nodes);
  watched namespaces bind the namespaced role in those namespaces only; provider URLs
  and the PostgreSQL Secret reach the container as environment, never as values;
  ServiceMonitor and PrometheusRule select the metrics Service, the alert rules pass
  ``promtool check rules``, the Grafana dashboard ships in a ConfigMap; the admission
  webhooks are on by default: served through their Service, with the operator's own
  certificate in a Secret only it may read and renew (or cert-manager's, mounted),
  the chart's configurations equal to what the operator writes (failurePolicy Fail,
  scoped to the watched namespaces), and their cluster rights granted only while on;
  cleanup kinds grant list/get/delete on those kinds only (none by default);
- the arguments the chart renders are ones ``postdeploy run`` accepts, and reach kopf
  (``confinement`` values as the memo the engine's settings are read from);
- the ClusterRoles grant exactly the table below, no wildcard, and less when told not to act
  on workloads;
- the default chart applied to the test bed in a namespace that enforces Pod Security
  ``restricted``: no warning, the operator's pods are created and Running (kwok), while
  a pod without the security context is refused there; the HA/sharded render passes a
  server-side dry run;
- ``kubectl apply -k manifests/`` installs and is idempotent; the built-in template
  (``manifests/templates/``, the chart's ``files/``) is accepted once the CRDs exist;
- the chart's ServiceAccount (a ``kubectl create token`` token) may do each thing in
  the table, and is refused what the operator never does (delete a Deployment, list
  Secrets, create pods, delete a review, bind a ClusterRole, patch a Node); with
  watched namespaces it may read a Secret in those only.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from postdeploy.decisions import confinement
from testbed import kube
from tests.e2e.harness import SAMPLE_DEPLOYMENT, Kubectl, wait_for
from tests.e2e.installs import (
    KUBE_VERSION,
    Helm,
    Release,
    create_restricted_namespace,
    kubeconfig_for_token,
)

pytest_plugins = ["tests.e2e.conftest_install"]

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "postdeploy"

# (API group, resource) -> verbs: every call the operator makes, nothing else.
NAMESPACED_RULES: dict[tuple[str, str], set[str]] = {
    ("postdeploy.io", "postdeploymentreviews"): {"get", "list", "watch", "patch", "create"},
    ("postdeploy.io", "postdeploymentreviews/status"): {"patch"},
    ("postdeploy.io", "reviewtemplates"): {"get"},
    ("postdeploy.io", "reviewsignoffs"): {"list", "watch"},
    ("", "events"): {"create"},
    ("apps", "deployments"): {"get", "list", "watch", "patch"},
    ("apps", "statefulsets"): {"get", "list", "watch", "patch"},
    ("apps", "daemonsets"): {"get", "list", "watch", "patch"},
    ("apps", "replicasets"): {"list"},
    ("apps", "controllerrevisions"): {"list"},
    ("argoproj.io", "rollouts"): {"get", "list", "watch", "patch"},
    ("argoproj.io", "rollouts/status"): {"patch"},
    ("", "pods"): {"list", "watch"},
    ("", "pods/log"): {"get"},
    ("autoscaling", "horizontalpodautoscalers"): {"list", "watch"},
    ("batch", "jobs"): {"create", "get"},
    ("", "secrets"): {"get"},
    ("", "configmaps"): {"create", "get", "patch"},
}
CLUSTER_RULES: dict[tuple[str, str], set[str]] = {
    ("postdeploy.io", "clusterreviewtemplates"): {"get"},
    ("", "nodes"): {"get"},
    ("", "namespaces"): {"list", "watch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
}
WORKLOAD_WRITES = {
    ("apps", "deployments"): {"patch"},
    ("apps", "statefulsets"): {"patch"},
    ("apps", "daemonsets"): {"patch"},
    ("argoproj.io", "rollouts"): {"patch"},
    ("argoproj.io", "rollouts/status"): {"patch"},
}
FULL_VALUES: dict[str, Any] = {
    "replicas": 2,
    "watch.namespaces": ["team-a", "team-b"],
    "providers.prometheus.url": "http://prometheus.monitoring:9090",
    "providers.alertmanager.url": "http://alertmanager.monitoring:9093",
    "providers.postgres.dsnSecretRef.name": "postdeploy-postgres",
    "metrics.serviceMonitor.enabled": True,
    "metrics.prometheusRule.enabled": True,
    "settings.verbose": True,
    "settings.logFormat": "json",
    "webhooks.enabled": True,
    "webhooks.certificate.certManager.enabled": True,
    "webhooks.certificate.certManager.issuerRef.name": "cluster-ca",
    "rbac.cleanupKinds": ["ConfigMap", "ReplicaSet"],
}
# The admission webhooks (on by default): cluster-wide, besides CLUSTER_RULES.
WEBHOOK_CLUSTER_RULES: dict[tuple[str, str], set[str]] = {
    ("authorization.k8s.io", "subjectaccessreviews"): {"create"},
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"): {"create", "patch(postdeploy.io)"},
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"): {"create", "patch(postdeploy.io)"},
}


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = by_kind(objects, kind)
    return found


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (operator,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = operator
    return result


def rules_of(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """(group, resource) -> verbs; a verb allowed on named objects only reads "verb(name)"."""
    table: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}, rule  # no URLs
        names = ",".join(rule.get("resourceNames", []))
        verbs = {f"{v}({names})" if names else v for v in rule["verbs"]}
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                table.setdefault((group, resource), set()).update(verbs)
    return table


def merged(*tables: dict[tuple[str, str], set[str]]) -> dict[tuple[str, str], set[str]]:
    result: dict[tuple[str, str], set[str]] = {}
    for table in tables:
        for key, verbs in table.items():
            result.setdefault(key, set()).update(verbs)
    return result


def roles(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    cluster_roles = {r["metadata"]["name"]: r for r in by_kind(objects, "ClusterRole")}
    (namespaced_name,) = [n for n in cluster_roles if not n.endswith("-cluster")]
    return cluster_roles[namespaced_name], cluster_roles[f"{namespaced_name}-cluster"]


def kubectl_binary() -> str:
    return str(kube.binaries().kubectl)


# --------------------------------------------------------------------------- lint and render


def test_chart_lints_strictly(helm: Helm) -> None:
    base = ["lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION]
    assert "0 chart(s) failed" in helm(*base).stdout
    flags = [f"--set-json={k}={json.dumps(v)}" for k, v in FULL_VALUES.items()]
    assert "0 chart(s) failed" in helm(*base, *flags).stdout


def test_values_schema_refuses_unknown_keys(helm: Helm) -> None:
    result = helm("template", "pd", str(CHART), "--set", "replicaCount=2", check=False)
    assert result.returncode != 0 and "replicaCount" in result.stderr
    result = helm("template", "pd", str(CHART), "--set", "replicas=0", check=False)
    assert result.returncode != 0 and "minimum" in result.stderr


def test_manifests_are_the_rendered_chart(helm: Helm) -> None:
    check = subprocess.run(
        [sys.executable, str(ROOT / "helm" / "render_manifests.py"), "--check"],
        env={**os.environ, "HELM": helm.binary},
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, f"run `python helm/render_manifests.py`:\n{check.stdout}{check.stderr}"

    def identity(o: dict[str, Any]) -> tuple[str, str, str]:
        return (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])

    def without_helm_labels(o: dict[str, Any]) -> dict[str, Any]:
        labels = o["metadata"].get("labels", {})
        for key in ("helm.sh/chart", "app.kubernetes.io/managed-by"):
            labels.pop(key, None)
        return o

    kustomized = {}
    for base in ("manifests", "manifests/templates"):
        built = subprocess.run(
            [kubectl_binary(), "kustomize", str(ROOT / base)], capture_output=True, text=True, check=True
        ).stdout
        kustomized.update({identity(o): o for o in yaml.safe_load_all(built) if o})
    rendered = helm.render({}, "postdeploy", "postdeploy")
    rendered += [
        d for p in sorted((CHART / "crds").glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())
    ]
    charted = {identity(o): without_helm_labels(o) for o in rendered}
    namespace = kustomized.pop(("Namespace", "", "postdeploy"))
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert kustomized.keys() == charted.keys()
    for key, obj in charted.items():
        assert squeezed(kustomized[key]) == squeezed(obj), key


def squeezed(value: Any) -> Any:
    """VALUE with whitespace runs in strings made one space: kustomize re-folds folded
    block scalars (``>-``) whose lines are more indented, adding a blank line (a PromQL
    query means the same)."""
    if isinstance(value, dict):
        return {k: squeezed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [squeezed(v) for v in value]
    return " ".join(value.split()) if isinstance(value, str) else value


def test_default_deployment_is_restricted_and_probed(helm: Helm) -> None:
    objects = helm.render()
    assert sorted(o["kind"] for o in objects) == [
        "ClusterReviewTemplate",
        "ClusterRole",
        "ClusterRole",
        "ClusterRoleBinding",
        "ClusterRoleBinding",
        "Deployment",
        "MutatingWebhookConfiguration",
        "Role",  # the webhook certificate's Secret
        "RoleBinding",
        "Service",
        "Service",  # the webhooks'
        "ServiceAccount",
        "ValidatingWebhookConfiguration",
    ]
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "two unpeered operators must not overlap"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(objects, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    operator = container(objects)
    security = operator["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert operator["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    assert operator["args"] == ["--liveness=http://0.0.0.0:8080/healthz", "--metrics-port=9090"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert operator[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in operator["ports"]}
    assert ports == {"health": 8080, "metrics": 9090, "webhook": 9443}
    assert operator["resources"]["requests"] and operator["resources"]["limits"]["memory"]
    env = {e["name"]: e for e in operator["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "POSTDEPLOY_PROMETHEUS_URL" not in env and "POSTDEPLOY_POSTGRES_DSN" not in env
    (service,) = [s for s in by_kind(objects, "Service") if s["metadata"]["name"] == "pd-postdeploy-metrics"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]


def test_replicas_elect_a_leader_on_one_lease(helm: Helm) -> None:
    objects = helm.render({"replicas": 2})
    deployment = one(objects, "Deployment")
    env = {e["name"]: e for e in container(objects)["env"]}
    assert env["POSTDEPLOY_LEADER_LEASE"]["value"] == "postdeploy/pd-postdeploy-leader"
    assert env["POSTDEPLOY_LEASE_SECONDS"]["value"] == "15"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"  # the identity
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["topologyKey"] == (
        "kubernetes.io/hostname"
    )
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    (role,) = [r for r in by_kind(objects, "Role") if r["metadata"]["name"].endswith("-leader-election")]
    assert role["metadata"]["namespace"] == "postdeploy"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["pd-postdeploy-leader"],
            "verbs": ["get", "update"],
        },
    ]
    (binding,) = [
        b for b in by_kind(objects, "RoleBinding") if b["roleRef"]["name"] == role["metadata"]["name"]
    ]
    assert binding["metadata"]["namespace"] == "postdeploy"
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    # One replica: no election, no Lease rights, no PDB.
    single = helm.render()
    assert not [r for r in by_kind(single, "Role") if r["metadata"]["name"].endswith("-leader-election")]
    assert not by_kind(single, "PodDisruptionBudget")
    assert "POSTDEPLOY_LEADER_LEASE" not in {e["name"] for e in container(single)["env"]}


def test_watched_namespaces_confine_the_namespaced_role(helm: Helm) -> None:
    objects = helm.render(FULL_VALUES, "pd", "ops")
    namespaced, cluster = roles(objects)
    bindings = [b for b in by_kind(objects, "RoleBinding") if b["roleRef"]["kind"] == "ClusterRole"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": namespaced["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "pd-postdeploy", "namespace": "ops"}
        ]
    (cluster_binding,) = by_kind(objects, "ClusterRoleBinding")
    assert cluster_binding["roleRef"]["name"] == cluster["metadata"]["name"]
    args = container(objects)["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    cleanup = {
        ("", "configmaps"): {"list", "get", "delete"},
        ("apps", "replicasets"): {"list", "get", "delete"},
    }
    assert rules_of(namespaced) == merged(NAMESPACED_RULES, cleanup)
    assert rules_of(cluster) == merged(CLUSTER_RULES, WEBHOOK_CLUSTER_RULES)


def test_providers_and_secrets_reach_the_container(helm: Helm) -> None:
    objects = helm.render(FULL_VALUES, "pd", "ops")
    env = {e["name"]: e for e in container(objects)["env"]}
    assert env["POSTDEPLOY_PROMETHEUS_URL"]["value"] == "http://prometheus.monitoring:9090"
    assert env["POSTDEPLOY_ALERTMANAGER_URL"]["value"] == "http://alertmanager.monitoring:9093"
    assert env["POSTDEPLOY_POSTGRES_DSN"] == {
        "name": "POSTDEPLOY_POSTGRES_DSN",
        "valueFrom": {"secretKeyRef": {"name": "postdeploy-postgres", "key": "dsn"}},
    }
    assert "--verbose" in container(objects)["args"]
    assert env["POSTDEPLOY_LOG_FORMAT"]["value"] == "json"


def test_service_monitor_and_rule_select_the_metrics_service(helm: Helm) -> None:
    objects = helm.render(FULL_VALUES, "pd", "ops")
    services = {s["metadata"]["name"]: s for s in by_kind(objects, "Service")}
    service = services.pop("pd-postdeploy-metrics")
    monitor = one(objects, "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"].items()
    assert selector <= service["metadata"]["labels"].items()
    assert not [name for name, other in services.items() if selector <= other["metadata"]["labels"].items()]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ops"]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [service["spec"]["ports"][0]["name"]]
    rule = one(objects, "PrometheusRule")
    expressions = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert any(f'job="{service["metadata"]["name"]}"' in e for e in expressions)


def test_alert_rules_pass_promtool(helm: Helm, tmp_path: pathlib.Path) -> None:
    from testbed import observability

    rule = one(helm.render(FULL_VALUES, "pd", "ops"), "PrometheusRule")
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    checked = subprocess.run(
        [observability.PROMTOOL_BIN, "check", "rules", str(rules_file)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    names = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert f"SUCCESS: {len(names)} rules found" in checked.stdout
    must = {"PostdeployOperatorDown", "PostdeployNoLeader", "PostdeployLagging", "PostdeployRolledBack"}
    assert must <= set(names)


def test_dashboard_ships_in_a_configmap_for_grafana(helm: Helm) -> None:
    objects = helm.render({"metrics.dashboard.enabled": True})
    (configmap,) = [
        c for c in by_kind(objects, "ConfigMap") if c["metadata"]["name"] == "pd-postdeploy-dashboard"
    ]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(configmap["data"]["postdeploy.json"])
    assert shipped == json.loads((CHART / "dashboards" / "postdeploy.json").read_text())
    assert not [c for c in by_kind(helm.render(), "ConfigMap")], "off by default"


def test_webhooks_are_on_by_default_and_fail_closed(helm: Helm) -> None:
    from postdeploy.admission import configurations
    from postdeploy.decisions import selectors

    objects = helm.render({"watch.namespaces": ["team-a"]}, "pd", "ops")
    env = {e["name"]: e.get("value") for e in container(objects)["env"]}
    assert env["POSTDEPLOY_WEBHOOK"] == "service"
    assert env["POSTDEPLOY_WEBHOOK_SERVICE"] == "ops/pd-postdeploy-webhook"
    assert env["POSTDEPLOY_WEBHOOK_PORT"] == "9443"
    assert env["POSTDEPLOY_WEBHOOK_CONFIGURATION"] == "postdeploy.io"
    # The operator's own certificate, kept in a Secret it alone may read and renew.
    assert env["POSTDEPLOY_WEBHOOK_SECRET"] == "ops/pd-postdeploy-webhook-certs"
    assert env["POSTDEPLOY_WEBHOOK_CERT_DAYS"] == "30"
    assert "POSTDEPLOY_WEBHOOK_CERT_DIR" not in env
    (certs,) = [r for r in by_kind(objects, "Role") if r["metadata"]["name"] == "pd-postdeploy-webhook-certs"]
    assert certs["metadata"]["namespace"] == "ops"
    assert rules_of(certs) == {
        ("", "secrets"): {"create", "get(pd-postdeploy-webhook-certs)", "update(pd-postdeploy-webhook-certs)"}
    }
    (service,) = [s for s in by_kind(objects, "Service") if s["metadata"]["name"] == "pd-postdeploy-webhook"]
    assert service["spec"]["ports"] == [
        {"name": "webhook", "port": 9443, "targetPort": "webhook", "protocol": "TCP"}
    ]
    assert {"name": "webhook", "containerPort": 9443, "protocol": "TCP"} in container(objects)["ports"]
    _, cluster = roles(objects)
    assert WEBHOOK_CLUSTER_RULES.items() <= rules_of(cluster).items()
    # The chart's configurations are what the operator writes, less the caBundle it adds.
    base = {"service": {"namespace": "ops", "name": "pd-postdeploy-webhook", "port": 9443}}
    expected = configurations.build("postdeploy.io", base, "", ["team-a"], selectors.parse(""))
    for kind, built in zip(
        ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"), expected, strict=True
    ):
        rendered = one(objects, kind)
        for hook in built["webhooks"]:
            del hook["clientConfig"]["caBundle"]
        assert rendered["webhooks"] == built["webhooks"]
        assert all(h["failurePolicy"] == "Fail" for h in rendered["webhooks"])

    # cert-manager, when asked: its Secret mounted, no Secret rights for the operator.
    objects = helm.render(FULL_VALUES, "pd", "ops")
    env = {e["name"]: e.get("value") for e in container(objects)["env"]}
    assert "POSTDEPLOY_WEBHOOK_SECRET" not in env
    mount = next(m for m in container(objects)["volumeMounts"] if m["name"] == "webhook-tls")
    assert mount == {"name": "webhook-tls", "mountPath": env["POSTDEPLOY_WEBHOOK_CERT_DIR"], "readOnly": True}
    volumes = one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    secret = next(v for v in volumes if v["name"] == "webhook-tls")["secret"]["secretName"]
    certificate = one(objects, "Certificate")
    assert certificate["spec"]["secretName"] == secret == "pd-postdeploy-webhook-tls"
    assert "pd-postdeploy-webhook.ops.svc" in certificate["spec"]["dnsNames"]
    assert certificate["spec"]["issuerRef"] == {"name": "cluster-ca", "kind": "Issuer"}
    assert not [r for r in by_kind(objects, "Role") if r["metadata"]["name"].endswith("-webhook-certs")]

    # Turned off: said so to the operator, no configurations, no rights they need.
    off = helm.render({"webhooks.enabled": False})
    assert {"name": "POSTDEPLOY_WEBHOOK", "value": "off"} in container(off)["env"]
    assert not by_kind(off, "ValidatingWebhookConfiguration") and not by_kind(
        off, "MutatingWebhookConfiguration"
    )
    assert not WEBHOOK_CLUSTER_RULES.keys() & rules_of(roles(off)[1]).keys()


def test_cleanup_kinds_grant_list_get_delete_and_nothing_else(helm: Helm) -> None:
    namespaced, _ = roles(helm.render({"rbac.cleanupKinds": ["Secret", "Job"]}))
    assert rules_of(namespaced) == merged(
        NAMESPACED_RULES, {("", "secrets"): {"list", "delete"}, ("batch", "jobs"): {"list", "delete"}}
    )
    assert not any("delete" in verbs for verbs in NAMESPACED_RULES.values()), "nothing deleted by default"
    refused = helm("template", "pd", str(CHART), "--set", "rbac.cleanupKinds={Deployment}", check=False)
    assert refused.returncode != 0 and "cleanupKinds" in refused.stderr


ARGUMENT_CASES = {
    "defaults": ({}, {"clusterwide": True, "namespaces": [], "standalone": True}),
    "ha-sharded": (
        {"replicas": 2, "watch.namespaces": ["team-a", "team-b"]},
        {
            "clusterwide": False,
            "namespaces": ["team-a", "team-b"],
            "standalone": True,
            "settings": {"namespaces": ("team-a", "team-b")},
        },
    ),
    "confined": (
        {
            "confinement.allowCrossNamespace": ["ci=prod"],
            "confinement.egressAllowlist": ["http://prometheus.monitoring:9090", "https://hooks.example/x/"],
        },
        {
            # The flags reach the engine as the Settings in kopf's memo.
            "settings": {
                "cross_namespace": frozenset({("ci", "prod")}),
                "egress_allowlist": (
                    confinement.UrlPrefix("http", "prometheus.monitoring", 9090, "/"),
                    confinement.UrlPrefix("https", "hooks.example", 443, "/x/"),
                ),
            }
        },
    ),
}


@pytest.mark.parametrize("case", sorted(ARGUMENT_CASES))
def test_rendered_arguments_are_what_the_operator_accepts(
    helm: Helm, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    import kopf

    from postdeploy import __main__ as cli
    from postdeploy.kit import metrics

    values, expected = ARGUMENT_CASES[case]
    seen: dict[str, Any] = {}

    async def operator(**kwargs: Any) -> None:
        seen.update(kwargs)

    monkeypatch.setattr(kopf, "operator", operator)
    monkeypatch.setattr(metrics, "serve", lambda port, addr: seen.update(metrics=(port, addr)))
    monkeypatch.setattr("postdeploy.kit.logs.configure", lambda fmt, level: None)  # keep pytest's logging
    assert cli.main(["run", *container(helm.render(values))["args"]]) == 0
    assert seen["liveness_endpoint"] == "http://0.0.0.0:8080/healthz"
    assert seen["metrics"] == (9090, "0.0.0.0"), "the metrics Service's target port"
    given = seen["memo"].settings
    assert {k: seen[k] for k in expected if k != "settings"} == {
        k: v for k, v in expected.items() if k != "settings"
    }
    assert {k: getattr(given, k) for k in expected.get("settings", {})} == expected.get("settings", {})


def test_label_selector_argument_is_accepted(helm: Helm, monkeypatch: pytest.MonkeyPatch) -> None:
    import kopf

    from postdeploy import __main__ as cli

    seen: dict[str, Any] = {}

    async def operator(**kwargs: Any) -> None:
        seen.update(kwargs)

    monkeypatch.setattr(kopf, "operator", operator)
    monkeypatch.setattr("postdeploy.kit.metrics.serve", lambda port, addr: None)
    monkeypatch.setattr("postdeploy.kit.logs.configure", lambda fmt, level: None)
    monkeypatch.delenv("POSTDEPLOY_SELECTOR", raising=False)
    args = container(helm.render({"watch.labelSelector": "shard=a"}))["args"]
    assert "--selector=shard=a" in args
    assert cli.main(["run", *args]) == 0
    assert seen
    assert seen["memo"].settings.selector == "shard=a"
    assert "POSTDEPLOY_SELECTOR" not in os.environ, "given in kopf's memo, not the environment"


def test_cluster_roles_grant_exactly_what_the_operator_uses(helm: Helm) -> None:
    namespaced, cluster = roles(helm.render())
    assert rules_of(namespaced) == NAMESPACED_RULES
    assert rules_of(cluster) == merged(CLUSTER_RULES, WEBHOOK_CLUSTER_RULES)
    assert rules_of(roles(helm.render({"webhooks.enabled": False}))[1]) == CLUSTER_RULES
    text = json.dumps([namespaced["rules"], cluster["rules"]])
    assert '"*"' not in text
    read_only, _ = roles(helm.render({"rbac.actOnWorkloads": False}))
    expected = {k: v - WORKLOAD_WRITES.get(k, set()) for k, v in NAMESPACED_RULES.items()}
    assert rules_of(read_only) == {k: v for k, v in expected.items() if v}


# --------------------------------------------------------------------------- on the test bed


def test_chart_installs_in_a_restricted_namespace(kubectl: Kubectl, chart_release: Release) -> None:
    assert "Warning" not in chart_release.apply_output, chart_release.apply_output
    namespace = chart_release.namespace
    labels = kubectl.get("", "namespace", namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    kubectl("-n", namespace, "rollout", "status", f"deployment/{chart_release.fullname}", "--timeout=90s")
    selector = f"app.kubernetes.io/instance={chart_release.name}"
    pods = json.loads(kubectl("-n", namespace, "get", "pods", "-l", selector, "-o", "json"))["items"]
    assert [p["status"]["phase"] for p in pods] == ["Running"]
    assert pods[0]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    events = json.loads(kubectl("-n", namespace, "get", "events", "-o", "json"))["items"]
    assert not [e["message"] for e in events if e["reason"] == "FailedCreate"]


def test_restricted_namespace_refuses_an_unconfined_pod(kubectl: Kubectl, chart_release: Release) -> None:
    """The control: the same namespace does refuse a pod that does not pass."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "unconfined"},
        "spec": {"containers": [{"name": "c", "image": "registry.example/any:1"}]},
    }
    out = kubectl(
        "-n", chart_release.namespace, "apply", "--dry-run=server", "-f", "-",
        input_text=yaml.safe_dump(pod), check=False,
    )  # fmt: skip
    assert "violates PodSecurity" in out and "restricted" in out, out


def test_ha_and_sharded_render_passes_a_server_dry_run(
    kubectl: Kubectl, helm: Helm, chart_release: Release
) -> None:
    suffix = uuid.uuid4().hex[:6]
    operator_ns, watched = f"pd-ha-{suffix}", [f"pd-shard-a-{suffix}", f"pd-shard-b-{suffix}"]
    for name in (operator_ns, *watched):
        create_restricted_namespace(kubectl, name)
    try:
        values = {**FULL_VALUES, "watch.namespaces": watched, "defaultTemplate.install": False}
        for absent in (  # no Prometheus Operator or cert-manager CRDs on the test bed
            "metrics.serviceMonitor.enabled",
            "metrics.prometheusRule.enabled",
            "webhooks.certificate.certManager.enabled",
        ):
            values.pop(absent)
        rendered = helm.template(values, "pd-ha", operator_ns)
        out = kubectl("apply", "--dry-run=server", "--warnings-as-errors", "-f", "-", input_text=rendered)
        assert "role.rbac.authorization.k8s.io/pd-ha-postdeploy-leader-election created" in out
        assert "deployment.apps/pd-ha-postdeploy created (server dry run)" in out
    finally:
        for name in (operator_ns, *watched):
            kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def webhooks_removed_after(kubectl: Kubectl) -> Iterator[None]:
    """The base installs the webhook configurations, which call the operator through its
    Service; the test bed has no Service network (no kube-proxy) and the installed
    Deployment's pods are kwok's, so nothing would answer: with failurePolicy Fail they
    would refuse every later review. Removed at the end, as an uninstall does."""
    yield
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        kubectl("delete", kind, "postdeploy.io", "--ignore-not-found", check=False)


@pytest.mark.usefixtures("webhooks_removed_after")
def test_kustomize_base_installs(kubectl: Kubectl) -> None:
    manifests = str(ROOT / "manifests")
    first = kubectl("apply", "--warnings-as-errors", "-k", manifests)
    assert "namespace/postdeploy" in first and "deployment.apps/postdeploy" in first
    kubectl("-n", "postdeploy", "rollout", "status", "deployment/postdeploy", "--timeout=90s")
    pods = json.loads(
        kubectl(
            "-n", "postdeploy", "get", "pods", "-l", "app.kubernetes.io/instance=postdeploy", "-o", "json"
        )
    )["items"]
    assert [p["status"]["phase"] for p in pods] == ["Running"]
    again = kubectl("apply", "-k", manifests)
    assert all(line.endswith("unchanged") for line in again.splitlines()), again


@pytest.mark.usefixtures("webhooks_removed_after")
def test_builtin_template_installs_once_the_crds_exist(kubectl: Kubectl) -> None:
    """manifests/templates/ after manifests/; the chart's own copy is the same file."""
    kubectl("apply", "-k", str(ROOT / "manifests"))
    templates = str(ROOT / "manifests" / "templates")
    try:
        applied = kubectl("apply", "--warnings-as-errors", "-k", templates)
        assert applied.strip() == "clusterreviewtemplate.postdeploy.io/postdeploy-default created", applied
    finally:
        # Other tests expect the cluster without it (those that need it install it).
        kubectl("delete", "-k", templates, "--ignore-not-found", check=False)
    shipped = (ROOT / "manifests" / "templates" / "postdeploy-default.yaml").read_text()
    assert (CHART / "files" / "postdeploy-default.yaml").read_text() == shipped


# --------------------------------------------------------------------------- the ServiceAccount's rights


def can_i(
    kubectl: Kubectl, kubeconfig: pathlib.Path, verb: str, group: str, resource: str, namespace: str
) -> bool:
    """The API server's answer to a SelfSubjectAccessReview ("" namespace: all of them)."""
    plain, _, subresource = resource.partition("/")
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {
            "resourceAttributes": {
                "verb": verb,
                "group": group,
                "resource": plain,
                "subresource": subresource,
                "namespace": namespace,
            }
        },
    }
    out = kubectl(
        "--kubeconfig", str(kubeconfig), "create", "-o", "json", "-f", "-", input_text=json.dumps(review)
    )
    return bool(json.loads(out)["status"].get("allowed"))


@pytest.fixture
def workload_namespace(kubectl: Kubectl) -> Iterator[str]:
    name = f"pd-rbac-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    kubectl.apply(name, SAMPLE_DEPLOYMENT)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_service_account_may_do_what_the_operator_needs(
    kubectl: Kubectl, service_account_kubeconfig: pathlib.Path, workload_namespace: str
) -> None:
    missing = [
        f"{verb} {group}/{resource}"
        for (group, resource), verbs in NAMESPACED_RULES.items()
        for verb in sorted(verbs)
        if not can_i(kubectl, service_account_kubeconfig, verb, group, resource, workload_namespace)
    ]
    missing += [
        f"{verb} {group}/{resource}"
        for (group, resource), verbs in CLUSTER_RULES.items()
        for verb in sorted(verbs)
        if not can_i(kubectl, service_account_kubeconfig, verb, group, resource, "")
    ]
    assert not missing
    # And for real, not only by review: read the target the way the engine does.
    as_operator = ("--kubeconfig", str(service_account_kubeconfig), "-n", workload_namespace)
    assert (
        kubectl(*as_operator, "get", "deployment", "checkout", "-o", "name").strip()
        == "deployment.apps/checkout"
    )


REFUSED = [
    ("delete", "deployment", "checkout"),
    ("get", "secrets"),  # list: only one named Secret at a time may be read
    ("create", "deployment", "intruder", "--image=registry.example/any:1"),
    ("delete", "postdeploymentreviews.postdeploy.io", "any-review"),
    ("create", "clusterrolebinding", "escalate", "--clusterrole=cluster-admin", "--user=me"),
    ("patch", "node", "kwok-node-0", "--type=merge", "-p", '{"spec":{"unschedulable":true}}'),
    ("get", "configmaps"),  # list: not granted either
]


@pytest.mark.parametrize("action", REFUSED, ids=[" ".join(a[:2]) for a in REFUSED])
def test_service_account_is_refused_what_the_operator_never_does(
    kubectl: Kubectl,
    service_account_kubeconfig: pathlib.Path,
    workload_namespace: str,
    action: tuple[str, ...],
) -> None:
    out = kubectl(
        "--kubeconfig", str(service_account_kubeconfig), "-n", workload_namespace, *action, check=False
    )
    assert "Forbidden" in out or "forbidden" in out, out
    kubectl("-n", workload_namespace, "get", "deployment", "checkout")  # still there


def test_watched_namespaces_confine_the_service_account(
    kube_cluster: dict[str, Any],
    kubectl: Kubectl,
    helm: Helm,
    chart_release: Release,
    tmp_path: pathlib.Path,
) -> None:
    suffix = uuid.uuid4().hex[:6]
    operator_ns, watched, other = f"pd-ops-{suffix}", f"pd-watched-{suffix}", f"pd-other-{suffix}"
    for name in (operator_ns, watched, other):
        kubectl("create", "namespace", name)
    rbac: list[dict[str, Any]] = []
    try:
        for name in (watched, other):
            kubectl("-n", name, "create", "secret", "generic", "dsn", "--from-literal=dsn=postgresql://x")
        rendered = helm.template({"watch.namespaces": [watched]}, f"pd-{suffix}", operator_ns)
        rbac = [
            d
            for d in yaml.safe_load_all(rendered)
            if d and d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "RoleBinding")
        ]
        kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(rbac))
        token = kubectl(
            "-n", operator_ns, "create", "token", f"pd-{suffix}-postdeploy", "--duration=10m"
        ).strip()
        config = kubeconfig_for_token(kube_cluster, token, tmp_path / "sharded.kubeconfig")

        def reads_secret(namespace: str) -> str:
            return kubectl(
                "--kubeconfig",
                str(config),
                "-n",
                namespace,
                "get",
                "secret",
                "dsn",
                "-o",
                "name",
                check=False,
            )

        wait_for("the RoleBinding to take effect", lambda: reads_secret(watched).strip() == "secret/dsn", 30)
        assert "Forbidden" in reads_secret(other)
        assert "Forbidden" in reads_secret("kube-system")
        assert can_i(kubectl, config, "watch", "postdeploy.io", "postdeploymentreviews", watched)
        assert not can_i(kubectl, config, "watch", "postdeploy.io", "postdeploymentreviews", other)
        assert not can_i(kubectl, config, "list", "postdeploy.io", "postdeploymentreviews", "")
        assert can_i(kubectl, config, "get", "", "nodes", "")
    finally:
        cluster_scoped = [d for d in rbac if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
        kubectl(
            "delete",
            "-f",
            "-",
            "--ignore-not-found",
            input_text=yaml.safe_dump_all(cluster_scoped),
            check=False,
        )
        for name in (operator_ns, watched, other):
            kubectl("delete", "namespace", name, "--wait=false", check=False)
