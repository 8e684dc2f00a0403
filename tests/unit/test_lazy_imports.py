"""What the operator loads before it needs it: psycopg only with the first SQL query.

psycopg with its bundled libpq is about 24 MB of resident memory; an operator whose
reviews have no SQL checks never needs it (docs/benchmarks.md, "Beside Argo Rollouts").
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

OPERATOR = pathlib.Path(__file__).resolve().parents[2] / "operator"


def test_the_operator_imports_psycopg_only_for_a_query() -> None:
    probe = (
        "import sys; import postdeploy.__main__, postdeploy.handlers, postdeploy.engine.registry; "
        "print('psycopg' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(OPERATOR)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "False", out.stderr
