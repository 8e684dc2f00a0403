"""The small kit of shared leaf helpers: modules that import nothing else of postdeploy.

- ``durations``  ``90s``/``5m``/``1h30m`` as users write them (models, phases, PromQL);
- ``times``      the one RFC 3339 time parser;
- ``exceptions`` the exception tree: every error postdeploy raises on purpose;
- ``workloads``  reading the reviewed workload (Deployment, StatefulSet, DaemonSet, Rollout);
- ``logs``       the operator's log formats, with secrets masked;
- ``metrics``    the operator's own Prometheus metrics.

The bottom layer of the import contract in ``pyproject.toml`` (``lint-imports``):
everything may import the kit, the kit imports no other part of the package.
"""
