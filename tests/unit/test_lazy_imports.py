"""What the operator loads before it needs it: psycopg only with the first SQL query,
cryptography only for a webhook certificate it makes, and
the generated Kubernetes clients (the sync one installed for the kubectl plugin,
kubernetes_asyncio wherever it is installed) never.

psycopg with its bundled libpq is about 24 MB of resident memory; an operator whose
reviews have no SQL checks never needs it (docs/benchmarks.md, "Beside Argo Rollouts").
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

OPERATOR = pathlib.Path(__file__).resolve().parents[2] / "operator"


def _run(probe: str) -> str:
    """What ``probe`` prints in a fresh interpreter with the operator's code importable
    (its stderr shown when it fails)."""
    env = {**os.environ, "PYTHONPATH": str(OPERATOR)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_operator_imports_psycopg_only_for_a_query() -> None:
    probe = (
        "import sys; import postdeploy.__main__, postdeploy.handlers, postdeploy.engine.registry; "
        "print('psycopg' in sys.modules)"
    )
    assert _run(probe) == "False"


def test_the_operator_process_runs_without_the_generated_kubernetes_clients() -> None:
    """``postdeploy run`` makes both generated clients unimportable before kopf is
    imported: kopf then imports none of them, and logs in with the operator's own login,
    as the engine does (``postdeploy.kit.kube``)."""
    probe = (
        "import sys; import postdeploy.__main__ as m; m.without_generated_clients(); "
        "import kopf, postdeploy.handlers, postdeploy.engine.registry, postdeploy.kit.metrics; "
        "from kopf._core.intents import causes; "
        "logins = kopf.get_default_registry()._activities.get_handlers(causes.Activity.AUTHENTICATION); "
        "loaded = sorted(k for k, v in sys.modules.items() "
        "if k.split('.')[0] in ('kubernetes', 'kubernetes_asyncio') and v); "
        "print(loaded, [h.id for h in logins])"
    )
    assert _run(probe) == "[] ['login']"


def test_without_the_generated_clients_leaves_an_imported_one_alone() -> None:
    probe = (
        "import sys, kubernetes; import postdeploy.__main__ as m; m.without_generated_clients(); "
        "import kubernetes.client; print(sys.modules['kubernetes'] is kubernetes)"
    )
    assert _run(probe) == "True"


def test_the_operator_imports_cryptography_only_to_make_a_webhook_certificate() -> None:
    """About 7 MB that an operator without webhooks, or with cert-manager's certificate,
    never needs: ``ManagedWebhookServer.renew`` imports it."""
    probe = (
        "import sys; import postdeploy.__main__, postdeploy.handlers, postdeploy.admission.servers; "
        "print('cryptography' in sys.modules)"
    )
    assert _run(probe) == "False"
