"""``make demo``: the post-deployment checklist as it ships, on the test bed, in minutes.

Starts the local test bed (or reuses one that ``make testbed-up`` left running) and
then does what a team does with postdeploy, printing each command a person would type:

1. installs the CRDs and the built-in ClusterReviewTemplate ``postdeploy-default``;
   gives three people of the test bed (client certificates made by ``testbed.kube``)
   the sign-off roles of ``docs/rbac/signers.yaml`` and ``postdeploy-reviewer``:
   alice engineering-lead, bob operations-lead, carol product-owner;
2. steers the sample app to last week's load at this hour (the throughput check
   compares with it), plants what a deployment procedure leaves behind
   (``configmap/maintenance-mode``, a Secret labelled ``postdeploy.io/temporary``),
   starts postdeploy with its sign-off webhook on loopback and rolls
   ``shop/checkout`` out to 1.1.0;
3. applies one review of the built-in template in which only the timing is compressed
   (72 hours into about two minutes: the phases' start, end and interval, the
   three trend checks' sampling step, the before/after comparisons' batch step, and
   the template's time-window parameters
   ``rateWindow``, ``trendWindow`` and ``smoothWindow``) and which adds phase 4 (the
   report) and phase 5 (cleanup); error-rate may roll back (``onFailure: rollback``);
4. prints a live table as the operator writes status, one row per change (phase,
   verdict, checks by state; which checks changed state, with value vs baseline);
5. confirms the manual checks, records customer impact and a lesson, and gives the
   three sign-offs with ``kubectl postdeploy`` as alice, bob and carol;
6. prints the final review (``kubectl postdeploy status``: checks, SLO table,
   sign-offs, action items) and writes the Markdown and HTML report to files.

``--fault error-spike`` makes half the requests fail 15 s into the review: error-rate
fails, postdeploy rolls ``shop/checkout`` back to 1.0.0, and the demo prints the
breach annotations on the Deployment and the Events. ``run`` is the demo without the
test bed's start and stop, for ``tests/e2e/test_demo.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import psycopg
import yaml

from postdeploy.reports import documents, units
from testbed import bed, observability, ports, sampleapp

__all__ = ["PEOPLE", "REVIEW", "TIMELINE", "main", "review_manifest", "run"]

ROOT = pathlib.Path(__file__).resolve().parent.parent
NAMESPACE = "shop"
VERSION = "1.1.0"
REVIEW = f"checkout-{VERSION.replace('.', '-')}"
IMAGE = "registry.example/shop/checkout:{}"
TEMPLATE = ROOT / "crds" / "postdeploy-default.yaml"
SIGNERS = ROOT / "docs" / "rbac" / "signers.yaml"
# Who signs for which role (each a client certificate of the test bed).
PEOPLE = {"alice": "engineering-lead", "bob": "operations-lead", "carol": "product-owner"}
# The built-in template's phases, 0-2h, 2-24h and 24-72h, compressed; then phases 4 and 5.
TIMELINE = (
    ("immediate", "0s", "50s", "5s"),
    ("extended", "50s", "90s", "5s"),
    ("business", "90s", "110s", "10s"),
    ("documentation", "110s", "117s", "5s"),
    ("cleanup", "117s", "125s", "5s"),
)
TREND_CHECKS = ("memory-leak", "latency-trend", "error-rate-trend")  # steps of 30m/10m -> 5s
# The before/after comparisons (docs/judge.md) count in batches of their step (1m):
# compressed to 5 s, or not one batch would settle within the 50-second phase 1. Each
# batch is compared with its mirror before the deployment, once as long (the template
# says 6 times): the test bed's live traffic starts only a few minutes before the
# release, and a batch whose before-window holds no requests cannot be compared.
COMPARE_STEP = {"prometheus": {"step": "5s", "compare": {"multiplier": 1}}}
# The template's time windows, compressed with the phases (5m, 10m, 30m); rateWindow
# not below 2m: throughput's baseline a week ago is backfilled history, a sample a minute.
WINDOWS = (("rateWindow", "2m"), ("trendWindow", "30s"), ("smoothWindow", "5s"))
THROUGHPUT = 'sum(rate(http_requests_total{namespace="shop",job="checkout"}'
SETTLED_WITHIN = 0.15  # of the target rate; the throughput check tolerates 30%
NEVER = 1e9  # hours to the limit the memory-leak check reports for a flat working set
FAULT_AFTER = 15.0  # seconds into the review
TIMEOUT = 360.0
# The states the live table names checks for, most telling first.
SETTLED = ("Failed", "Error", "Inconclusive", "AwaitingConfirmation", "Passed", "Skipped")
# Units of the built-in checks' values, for the live table.
UNITS = {**documents.HISTORY_UNITS, "memory-leak": "h", "latency-trend": "ratio", "error-rate-trend": "ratio"}
STATES = (
    ("PASS", "Passed"),
    ("FAIL", "Failed"),
    ("INCONCL", "Inconclusive"),
    ("ERR", "Error"),
    ("RUN", "Running"),
    ("WAIT", "AwaitingConfirmation"),
    ("PEND", "Pending"),
    ("SKIP", "Skipped"),
)


def review_manifest() -> dict[str, Any]:
    """The review a pipeline applies: the built-in template, its timing compressed."""
    phases: list[dict[str, Any]] = []
    for name, start, end, interval in TIMELINE:
        phase: dict[str, Any] = {"name": name, "start": start, "end": end, "interval": interval}
        if name == "immediate":
            phase["checks"] = [
                {"name": "error-rate", "onFailure": "rollback", **COMPARE_STEP},
                {"name": "latency-p95", **COMPARE_STEP},
            ]
        elif name == "extended":
            phase["checks"] = [{"name": n, "prometheus": {"step": interval}} for n in TREND_CHECKS] + [
                {"name": n, **COMPARE_STEP} for n in ("error-rate-extended", "latency-p95-extended")
            ]
        elif name == "documentation":
            phase["checks"] = [{"name": "deployment-report", "report": {}}]
        elif name == "cleanup":
            phase["checks"] = [
                {
                    "name": "housekeeping",
                    "cleanup": {
                        "names": [{"kind": "ConfigMap", "name": "maintenance-mode"}],
                        "keepReplicaSets": 3,
                    },
                }
            ]
        phases.append(phase)
    return {
        "apiVersion": "postdeploy.io/v1alpha1",
        "kind": "PostDeploymentReview",
        "metadata": {"name": REVIEW, "namespace": NAMESPACE},
        "spec": {
            "target": {"kind": "Deployment", "name": "checkout"},
            "version": VERSION,
            "providers": {"postgresDsnSecretRef": {"name": "postdeploy-db", "key": "dsn"}},
            "parameters": dict(WINDOWS),
            "phases": phases,
        },
    }


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which."""


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


@dataclasses.dataclass
class _Moments:
    """What the demo has already done during the review (each once)."""

    confirmed: bool = False
    faulted: bool = False
    recovered: bool = False
    features: bool = False
    notes: bool = False
    signed: bool = False


class Demo:
    """One demo run against a running test bed described by ``env``."""

    def __init__(self, env: Mapping[str, str], out: TextIO, output: pathlib.Path, fault: str) -> None:
        self.env = {**os.environ, **env}
        self.out = out
        self.output = output
        self.fault = fault
        self.workdir = output / "work"
        self.operator: subprocess.Popen[bytes] | None = None
        self.webhook_port: int | None = None
        self.control = env["SAMPLEAPP_CONTROL_URL"]
        self.original: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.people: list[threading.Thread] = []
        self.failures: list[str] = []

    # --- printing and commands -------------------------------------------------------

    def say(self, text: str = "") -> None:
        with self.lock:
            self.out.write(text + "\n")
            self.out.flush()

    def kubectl(self, *args: str, input_text: str | None = None) -> str:
        try:
            return bed.kubectl(self.env, *args, input_text=input_text)
        except RuntimeError as error:
            raise DemoError(str(error)) from None

    def person(self, user: str, *args: str) -> str:
        """Run ``kubectl postdeploy ARGS`` as ``user``, showing the command and its output."""
        command = ["kubectl", "postdeploy", "-n", NAMESPACE, *args]
        env = {**self.env, "KUBECONFIG": self.env[f"KUBECONFIG_{user.upper()}"]}
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, check=False)
        lines = [f"  {user + ' $':<8} {shlex.join(command)}"]
        lines += [f"           {line}" for line in (done.stdout + done.stderr).strip().splitlines()]
        self.say("\n".join(lines))  # at once: the live table's rows go on meanwhile
        if done.returncode != 0:
            raise DemoError(f"kubectl postdeploy {args[0]} as {user} exited {done.returncode}")
        return done.stdout

    # --- setting the scene -----------------------------------------------------------

    def plugin_on_path(self) -> None:
        """kubectl finds plugins on PATH: the installed console script, else a shim."""
        bindir = pathlib.Path(sys.executable).parent
        path = os.pathsep.join([self.env.get("PATH", ""), str(bindir)])
        if shutil.which("kubectl-postdeploy", path=path) is None:
            shim = self.workdir / "bin" / "kubectl-postdeploy"
            shim.parent.mkdir(parents=True, exist_ok=True)
            pythonpath = os.pathsep.join([str(ROOT / "operator"), str(ROOT)])
            shim.write_text(
                f"#!/bin/sh\nPYTHONPATH={shlex.quote(pythonpath)} exec {shlex.quote(sys.executable)} "
                '-m postdeploy.plugin "$@"\n'
            )
            shim.chmod(0o755)
            path = os.pathsep.join([str(shim.parent), path])
        self.env["PATH"] = path

    def install(self) -> None:
        crds = [p for p in sorted((ROOT / "crds").glob("*.yaml")) if p != TEMPLATE]
        self.kubectl("apply", *(a for p in crds for a in ("-f", str(p))))
        for crd in ("postdeploymentreviews", "reviewsignoffs", "clusterreviewtemplates"):
            self.kubectl("wait", "--for=condition=Established", f"crd/{crd}.postdeploy.io", "--timeout=60s")
        self.kubectl("apply", "-f", str(TEMPLATE))
        self.kubectl("apply", "-f", str(SIGNERS))
        if not self.kubectl("-n", NAMESPACE, "get", "deployment", "checkout", "--ignore-not-found").strip():
            self.kubectl("apply", "-f", str(bed.SAMPLE))  # the session test bed of the e2e tests
        self.say("$ kubectl apply -f crds/ && kubectl apply -f docs/rbac/signers.yaml")
        for user, role in PEOPLE.items():
            for cluster_role in (f"postdeploy-signer-{role}", "postdeploy-reviewer"):
                binding = f"{user}-{cluster_role.removeprefix('postdeploy-')}"
                manifest = self.kubectl(
                    "-n", NAMESPACE, "create", "rolebinding", binding, f"--clusterrole={cluster_role}",
                    f"--user={user}", "--dry-run=client", "-o", "yaml",
                )  # fmt: skip
                self.kubectl("apply", "-f", "-", input_text=manifest)
            self.say(
                f"$ kubectl -n {NAMESPACE} create rolebinding ... --user={user} "
                f"--clusterrole=postdeploy-signer-{role} (and postdeploy-reviewer)"
            )
        secret = self.kubectl(
            "-n", NAMESPACE, "create", "secret", "generic", "postdeploy-db",
            f"--from-literal=dsn={self.env['POSTGRES_DSN']}", "--dry-run=client", "-o", "yaml",
        )  # fmt: skip
        self.kubectl("apply", "-f", "-", input_text=secret)

    def steer_traffic(self) -> float:
        """Live traffic like last week's at this hour: the throughput check compares with it."""
        self.original = sampleapp.settings(self.control)
        week_ago = f"{THROUGHPUT}[5m] offset 1w))"
        result = observability.query(self.env["PROMETHEUS_URL"], week_ago)
        rps = round(float(result[0]["value"][1]), 1) if result else 20.0
        sampleapp.steer(self.control, {"rps": rps, "error_rate": 0.0})
        return rps

    def settle(self, rps: float, since: float) -> None:
        """Wait until the live rate over the review's rateWindow is near ``rps``: traffic
        before the release is what phase 1 compares with."""
        window = dict(WINDOWS)["rateWindow"]
        deadline = since + 240
        while time.monotonic() < deadline:
            result = observability.query(self.env["PROMETHEUS_URL"], f"{THROUGHPUT}[{window}]))")
            live = float(result[0]["value"][1]) if result else 0.0
            if abs(live - rps) <= SETTLED_WITHIN * rps:
                self.say(
                    f"  live traffic over the last {window}: {live:.1f} req/s "
                    f"(settled {time.monotonic() - since:.0f}s after steering)"
                )
                return
            time.sleep(2)
        raise DemoError(f"live traffic did not settle near {rps:g} req/s; is the sample app running?")

    def checklist(self) -> None:
        """The built-in template's phases and checks, as shipped."""
        template = yaml.safe_load(TEMPLATE.read_text())
        self.say(f"$ kubectl get clusterreviewtemplate {template['metadata']['name']} -o yaml   # in short:")
        for phase in template["spec"]["phases"]:
            on = [c["name"] for c in phase["checks"] if c.get("enabled", True)]
            off = len(phase["checks"]) - len(on)
            self.say(
                f"  {phase['name']:<10} {phase['start']}-{phase['end']} every {phase['interval']}: "
                f"{len(on)} checks ({', '.join(on)}){f'; {off} off until configured' if off else ''}"
            )

    def plant(self) -> None:
        """What a deployment procedure leaves behind, for phase 5 to remove."""
        label = f"postdeploy.io/temporary={VERSION}"
        for args in (
            ("create", "configmap", "maintenance-mode", "--from-literal=enabled=true"),
            ("create", "secret", "generic", "deploy-token", "--from-literal=token=demo-only"),
        ):
            manifest = self.kubectl("-n", NAMESPACE, *args, "--dry-run=client", "-o", "yaml")
            self.kubectl("apply", "-f", "-", input_text=manifest)
        self.kubectl("-n", NAMESPACE, "label", "secret", "deploy-token", label, "--overwrite")
        self.say(f"$ kubectl -n {NAMESPACE} create configmap maintenance-mode --from-literal=enabled=true")
        self.say(
            f"$ kubectl -n {NAMESPACE} create secret generic deploy-token ... && kubectl label ... {label}"
        )

    def roll_out(self) -> None:
        self.kubectl("-n", NAMESPACE, "delete", "pdr", REVIEW, "--ignore-not-found", "--wait=true")
        for role in PEOPLE.values():
            self.kubectl("-n", NAMESPACE, "delete", "reviewsignoff", f"{REVIEW}-{role}", "--ignore-not-found")
        replicasets = json.loads(self.kubectl("-n", NAMESPACE, "get", "replicasets", "-o", "json"))["items"]
        images = {c["image"] for rs in replicasets for c in rs["spec"]["template"]["spec"]["containers"]}
        image = IMAGE.format(VERSION)
        self.say(f"$ kubectl -n {NAMESPACE} set image deployment/checkout checkout={image}")
        self.kubectl("-n", NAMESPACE, "set", "image", "deployment/checkout", f"checkout={image}")
        self.kubectl("-n", NAMESPACE, "rollout", "status", "deployment/checkout", "--timeout=60s")
        if image in images:
            # A test bed kept from an earlier demo: the Deployment took the old ReplicaSet
            # back, whose creation time is long past; a restart makes this a new rollout.
            self.say(
                f"$ kubectl -n {NAMESPACE} rollout restart deployment/checkout   # {VERSION} ran here before"
            )
            self.kubectl("-n", NAMESPACE, "rollout", "restart", "deployment/checkout")
            self.kubectl("-n", NAMESPACE, "rollout", "status", "deployment/checkout", "--timeout=60s")

    def start_operator(self) -> None:
        self.webhook_port = ports.free_port()
        log_path = self.workdir / "operator.log"
        env = {
            **self.env,
            "POSTDEPLOY_PROMETHEUS_URL": self.env["PROMETHEUS_URL"],
            "POSTDEPLOY_ALERTMANAGER_URL": self.env["ALERTMANAGER_URL"],
            "POSTDEPLOY_WEBHOOK": "local",
            "POSTDEPLOY_WEBHOOK_PORT": str(self.webhook_port),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT)]),
        }
        for name in ("POSTDEPLOY_SELECTOR", "POSTDEPLOY_LEADER_LEASE"):
            env.pop(name, None)
        with open(log_path, "ab") as log:
            self.operator = subprocess.Popen(
                [sys.executable, "-m", "postdeploy", "run", "-n", NAMESPACE],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while not self._webhooks_registered():
            if self.operator.poll() is not None or time.monotonic() > deadline:
                raise DemoError(f"the operator did not register its sign-off webhook; see {log_path}")
            time.sleep(0.5)
        self.say(f"$ postdeploy run -n {NAMESPACE}   # sign-off webhook on 127.0.0.1:{self.webhook_port}")
        self.say(f"  (operator log: {log_path})")

    def _webhooks_registered(self) -> bool:
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            try:
                raw = json.loads(self.kubectl("get", kind, "postdeploy.io", "-o", "json"))
            except DemoError:
                return False
            urls = [(h.get("clientConfig") or {}).get("url", "") for h in raw.get("webhooks") or []]
            if not any(f":{self.webhook_port}/" in url for url in urls):
                return False
        return True

    def stop_operator(self) -> None:
        if self.operator is not None and self.operator.poll() is None:
            os.killpg(self.operator.pid, signal.SIGTERM)
            try:
                self.operator.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.operator.pid, signal.SIGKILL)
                self.operator.wait(5)
        # Persistent webhooks with failurePolicy Fail would refuse every sign-off while
        # no operator listens: remove the ones that point at this demo's port.
        if self.webhook_port is not None:
            for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
                with contextlib.suppress(DemoError):
                    if self._points_here(kind):
                        self.kubectl("delete", kind, "postdeploy.io", "--ignore-not-found")

    def _points_here(self, kind: str) -> bool:
        raw = json.loads(self.kubectl("get", kind, "postdeploy.io", "-o", "json"))
        urls = [(h.get("clientConfig") or {}).get("url", "") for h in raw.get("webhooks") or []]
        return any(f":{self.webhook_port}/" in url for url in urls)

    def restore_traffic(self) -> None:
        keys = ("rps", "error_rate")
        if self.original:
            with contextlib.suppress(Exception):
                sampleapp.steer(self.control, {k: self.original[k] for k in keys})

    # --- the review ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        body = json.loads(self.kubectl("-n", NAMESPACE, "get", "pdr", REVIEW, "-o", "json"))
        result: dict[str, Any] = body.get("status") or {}
        return result

    def watch(self) -> dict[str, Any]:
        """Print one row per change until the review is complete; act when it is time."""
        columns = f"{'TIME':>5}  {'PHASE':<15} {'VERDICT':<12}" + "".join(f"{h:>8}" for h, _ in STATES)
        self.say(columns + "   CHANGED (value vs baseline)")
        begin = time.monotonic()
        moments = _Moments()
        shown: tuple[Any, ...] | None = None
        states: dict[str, str] = {}
        status: dict[str, Any] = {}
        while time.monotonic() - begin < TIMEOUT:
            elapsed = time.monotonic() - begin
            status = self.status()
            checks = status.get("checks") or []
            counts = {state: 0 for _, state in STATES}
            for check in checks:
                counts[check["state"]] = counts.get(check["state"], 0) + 1
            changed = [c for c in checks if states.get(c["name"]) != c["state"] and c["state"] in SETTLED]
            changed.sort(key=lambda c: SETTLED.index(c["state"]))
            states = {c["name"]: c["state"] for c in checks}
            row = (status.get("phase"), status.get("verdict"), tuple(counts.values()))
            if checks and (row != shown or changed):
                moved = "; ".join(self._moved(c) for c in changed[:4])
                if len(changed) > 4:
                    moved += f"; +{len(changed) - 4} more"
                phase, verdict = status.get("phase") or "-", status.get("verdict") or "-"
                self.say(
                    f"{_clock(elapsed):>5}  {phase:<15} {verdict:<12}"
                    + "".join(f"{counts[state]:>8}" for _, state in STATES)
                    + (f"   {moved}" if moved else "")
                )
                shown = row
            self._act(status, elapsed, moments)
            if self.failures:
                raise DemoError(self.failures[0])
            if status.get("phase") == "Invalid":
                raise DemoError(f"the review is invalid: {status.get('message')}")
            complete = any(
                c["type"] == "Complete" and c["status"] == "True" for c in status.get("conditions") or []
            )
            if status.get("phase") == "Completed" and complete:
                for thread in self.people:
                    thread.join(60)
                return status
            time.sleep(1)
        raise DemoError(f"the review did not complete in {TIMEOUT:.0f}s: phase {status.get('phase')}")

    @staticmethod
    def _moved(check: Mapping[str, Any]) -> str:
        unit = UNITS.get(check["name"], "")
        text = f"{check['name']} {check['state']}"
        if check.get("value") is not None and unit == "h" and check["value"] >= NEVER:
            text += " never"  # a flat trend: no time to the limit
        elif check.get("value") is not None:
            text += f" {units.format_value(check['value'], unit)}"
            if check.get("baseline") is not None:
                text += f" vs {units.format_value(check['baseline'], unit)}"
        return text

    def meanwhile(self, *commands: tuple[str, ...]) -> None:
        """People type these (``(user, *args)``) while the table goes on: each person at
        their own terminal, their own commands one after the other."""
        by_user: dict[str, list[tuple[str, ...]]] = {}
        for user, *args in commands:
            by_user.setdefault(user, []).append(tuple(args))

        def work(user: str, lines: list[tuple[str, ...]]) -> None:
            try:
                for args in lines:
                    self.person(user, *args)
            except (DemoError, subprocess.TimeoutExpired) as error:
                self.failures.append(str(error))

        for user, lines in by_user.items():
            thread = threading.Thread(target=work, args=(user, lines), daemon=True)
            thread.start()
            self.people.append(thread)

    def _act(self, status: Mapping[str, Any], elapsed: float, moments: _Moments) -> None:
        checks = {c["name"]: c for c in status.get("checks") or []}
        phase = status.get("phase")
        manual = [n for n, c in checks.items() if c["state"] == "AwaitingConfirmation"]
        if not moments.confirmed and len(manual) >= 3:
            moments.confirmed = True
            self.say("         the three manual checks of phase 1 wait for people:")
            self.meanwhile(
                ("bob", "confirm", REVIEW, "support-tickets", "--note", "no tickets about 1.1.0"),
                ("carol", "confirm", REVIEW, "social-media", "--note", "nothing on social media"),
                ("alice", "confirm", REVIEW, "feedback-channels", "--note", "feedback channels quiet"),
            )
        if self.fault == "error-spike" and not moments.faulted and elapsed >= FAULT_AFTER:
            moments.faulted = True
            sampleapp.steer(self.control, {"error_rate": 0.5})
            self.say("         >>> fault: the sample app now answers 50% of requests with 5xx")
        rollback = next(
            (
                a
                for a in status.get("actions") or []
                if a.get("action") == "rollback" and a.get("state") == "Done"
            ),
            None,
        )
        if moments.faulted and rollback and not moments.recovered:
            moments.recovered = True
            sampleapp.steer(self.control, {"error_rate": 0.003})
            self.say(
                f"         >>> rolled back to {rollback.get('toImage') or 'the previous revision'}: "
                "the sample app answers as before the release"
            )
        if phase == "business" and not moments.features:
            moments.features = True
            self._use_features()
        if phase == "documentation" and not moments.notes:
            moments.notes = True
            self.meanwhile(
                ("carol", "impact", REVIEW, "--tickets", "0", "--complaints", "1", "--positive", "4"),
                (
                    "alice", "note", REVIEW, "--lesson", "Compressed reviews catch regressions early",
                    "--category", "Process", "--action", "Run a compressed review in staging first",
                ),
            )  # fmt: skip
        if phase == "AwaitingSignoff" and not moments.signed:
            moments.signed = True
            self.say("         every phase is done; the review waits for its three sign-offs:")
            self.meanwhile(
                *(
                    (user, "signoff", REVIEW, "--role", role, "--notes", f"reviewed as {role}")
                    for user, role in PEOPLE.items()
                )
            )

    def _use_features(self) -> None:
        """People use the release's features during phase 3 (rows in feature_usage)."""
        admin = self.env.get("POSTGRES_ADMIN_DSN")
        if not admin:
            return
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO feature_usage (feature_name, user_id, created_at) "
                "SELECT (ARRAY['search', 'playlists', 'smart_shuffle'])[1 + g %% 3], g, now() "
                "FROM generate_series(1, %(count)s) AS g",
                {"count": 60},
            )
        self.say("         (60 people use search, playlists and smart_shuffle: rows in feature_usage)")

    # --- after it ----------------------------------------------------------------------

    def breach(self) -> None:
        annotations = json.loads(self.kubectl("-n", NAMESPACE, "get", "deployment", "checkout", "-o", "json"))
        shown = {
            k: v for k, v in (annotations["metadata"].get("annotations") or {}).items() if "postdeploy" in k
        }
        image = annotations["spec"]["template"]["spec"]["containers"][0]["image"]
        self.say(
            f"\n$ kubectl -n {NAMESPACE} get deployment checkout -o yaml   # image {image}; annotations:"
        )
        for key, value in sorted(shown.items()):
            self.say(f"    {key}: {value}")
        self.say(f"\n$ kubectl -n {NAMESPACE} get events --field-selector involvedObject.name=checkout")
        events = json.loads(
            self.kubectl(
                "-n", NAMESPACE, "get", "events", "-o", "json",
                "--field-selector", "involvedObject.kind=Deployment,involvedObject.name=checkout",
            )
        )["items"]  # fmt: skip
        for event in sorted(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or ""):
            if (event.get("source") or {}).get("component") != "postdeploy":
                continue  # the Deployment controller's scaling events
            kind, reason = event.get("type", ""), event.get("reason", "")
            self.say(f"    {kind:<8} {reason:<18} {event.get('message', '')[:150]}")

    def cleanup(self, status: Mapping[str, Any]) -> None:
        check: Mapping[str, Any] = next(
            (c for c in status.get("checks") or [] if c["name"] == "housekeeping"), {}
        )
        details = check.get("details") or {}
        self.say(f"\nPhase 5, cleanup (check housekeeping, {check.get('state', 'not run')}):")
        for item in details.get("objects") or []:
            what = f"{item.get('kind')}/{item.get('name')}"
            self.say(f"    {item.get('result', '?'):<14} {what}  ({item.get('why', '')})")
        self.say(f"    temporary credentials revoked: {details.get('credentials', 0)}")

    def final(self) -> tuple[pathlib.Path, pathlib.Path]:
        self.say("\nThe final review, as anyone can read it:")
        self.person("admin", "status", REVIEW)
        markdown = (self.output / f"{REVIEW}.md").resolve()
        page = (self.output / f"{REVIEW}.html").resolve()
        self.say(f"\nThe deployment report (stored in ConfigMap {NAMESPACE}/{REVIEW}-report):")
        self.person("admin", "report", REVIEW, "-f", str(markdown))
        self.person("admin", "report", REVIEW, "--format", "html", "-f", str(page))
        return markdown, page


def run(
    env: Mapping[str, str], *, fault: str = "none", out: TextIO = sys.stdout, output: pathlib.Path
) -> int:
    """The demo on a running test bed; ``env`` as ``.testbed/env`` (plus KUBECONFIG_<USER>)."""
    output.mkdir(parents=True, exist_ok=True)
    env = {**env, "KUBECONFIG_ADMIN": env["KUBECONFIG"]}
    demo = Demo(env, out, output, fault)
    demo.workdir.mkdir(parents=True, exist_ok=True)
    begin = time.monotonic()
    try:
        rps = demo.steer_traffic()  # first: the rates before the release are the ones compared with
        steered = time.monotonic()
        demo.plugin_on_path()
        demo.say("== Installing postdeploy's CRDs, its built-in checklist and who may sign what")
        demo.install()
        demo.checklist()
        demo.start_operator()
        demo.say(f"\n== Releasing {NAMESPACE}/checkout {VERSION}; live traffic as a week ago: {rps:g} req/s")
        demo.settle(rps, steered)
        demo.plant()
        demo.roll_out()
        manifest = review_manifest()
        demo.say("\n== The review a pipeline applies: the built-in checklist, its timing compressed")
        demo.say(
            "$ kubectl apply -f - <<EOF\n" + yaml.safe_dump(manifest, sort_keys=False).rstrip() + "\nEOF"
        )
        demo.kubectl("apply", "-f", "-", input_text=yaml.safe_dump(manifest))
        timeline = ", ".join(f"{n} {s}-{e}" for n, s, e, _ in TIMELINE)
        demo.say(f"\n== Watching it ({timeline}); like kubectl get pdr -w")
        status = demo.watch()
        demo.cleanup(status)
        if fault != "none":
            demo.breach()
        markdown, page = demo.final()
        final = status.get("finalReview") or {}
        signers = ", ".join(f"{s['role']}: {s['by']}" for s in final.get("signoffs") or [] if s.get("signed"))
        demo.say(f"\nVERDICT: {final.get('verdict') or status.get('verdict')} (signed off by {signers})")
        demo.say(f"REPORT: {markdown}")
        demo.say(f"REPORT: {page}")
        demo.say(f"demo took {time.monotonic() - begin:.0f}s after the test bed was up")
        return 0
    except DemoError as error:
        demo.say(f"demo failed: {error}")
        return 1
    finally:
        demo.stop_operator()
        demo.restore_traffic()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fault", choices=["none", "error-spike"], default="none")
    parser.add_argument("--keep", action="store_true", help="leave the test bed running")
    parser.add_argument(
        "--output", type=pathlib.Path, default=ROOT / "artifacts" / "demo", help="where the reports go"
    )
    args = parser.parse_args(argv)
    began = time.monotonic()
    started_bed = not (bed.DIRECTORY / "state.json").exists()
    if started_bed:
        print("starting the test bed (Kubernetes, Prometheus, Alertmanager, PostgreSQL)...", flush=True)
        state = bed.up()
        print(f"test bed up in {state['startup_seconds']}s", flush=True)
    else:
        state = json.loads((bed.DIRECTORY / "state.json").read_text())
        print("reusing the running test bed (.testbed/)", flush=True)
    try:
        code = run(state["env"], fault=args.fault, output=args.output)
    finally:
        if started_bed and not args.keep:
            print("stopping the test bed", flush=True)
            bed.down()
    total = time.monotonic() - began
    print(f"make demo: {total:.0f}s in all ({datetime.timedelta(seconds=round(total))})", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
