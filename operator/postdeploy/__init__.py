"""postdeploy: a Kubernetes operator that runs the post-deployment checklist.

The package is layered, and ``lint-imports`` (``make lint``; the contract is in
``pyproject.toml``, the map in ``docs/architecture.md``) keeps it so. A reader finds
each concern by folder name:

- ``models``     pydantic models that mirror the CRDs (and generate ``crds/*.yaml``);
- ``decisions``  pure logic, no I/O: the condition language, phase scheduling,
                 check states and verdicts, template merging;
- ``providers``  one module per data source; each measures and never decides;
- ``engine``     one tick of a review: which checks are due, run them, decide, and
                 build the status patch;
- ``actions``    what happens on a breach: rollback, pause, annotate, notify;
- ``handlers``   thin kopf handlers wiring the above to the API server;
- ``kit``        shared leaf helpers every layer may use: durations, the time parser,
                 the exception tree (``kit.exceptions``), workload reads, logs, metrics.
"""
