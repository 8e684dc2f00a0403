"""Acting on a breach: decide what to do, then annotate, notify, pause or roll back.

- ``decide``         pure: which actions the checks that failed ask for, capped by the
                     review's ``spec.rollback`` policy, GitOps ownership and what was
                     already done (at most one rollback per review, ever);
- ``gitops``         pure: whether Argo CD or Flux manages the target;
- ``annotations``    breach annotations on the target, and their update at the end;
- ``pauses``         freezing a rollout (Deployment or Argo Rollout ``spec.paused``);
- ``rollbacks``      ``kubectl rollout undo`` for Deployments, StatefulSets and
                     DaemonSets; abort for an Argo Rollout;
- ``notifications``  webhook messages (generic JSON or Slack), delivered in the
                     background with bounded retries;
- ``targets``        reading and patching the target, whatever its kind;
- ``cleanups``, ``cleanup_checks``  phase 5's cleanup: what to delete, and the check
                     that deletes it (an act the registry runs in the check's slot).

``postdeploy.engine.executions`` carries the decided records out, one at a time,
writing each step to the review's status before and after touching the target.
"""
