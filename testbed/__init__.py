"""The local test bed: real servers on 127.0.0.1, started by the project's own code.

Components (one module each), all driven by ``python -m testbed up|down|env``:

- ``kube``        etcd, kube-apiserver (RBAC,Node), kube-controller-manager,
                  kube-scheduler and kwok (fake nodes), built by ``build-binaries.sh``;
- ``observability`` Prometheus (with backfilled history), Alertmanager, alerting
                  rules and the steerable sample application;
- ``postgres``    a throwaway PostgreSQL cluster with ``pg_stat_statements`` and a
                  seeded business schema.

They start and stop their processes through ``processes`` (sessions of their own,
pids checked by start time, SIGTERM then SIGKILL) and pick ports through ``ports``.

Each component module exposes ``start(workdir: pathlib.Path) -> dict`` (returns its
state: pids, ports, env entries) and ``stop(state: dict) -> None``. The orchestrator
(``testbed.bed``) writes ``.testbed/state.json`` and ``.testbed/env``; pytest fixtures
in ``tests/conftest.py`` reuse the same code.
"""
