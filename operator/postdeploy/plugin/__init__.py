"""``kubectl postdeploy``: what a person does by hand with a review.

Installed as the console script ``kubectl-postdeploy``, which kubectl finds on PATH
as the plugin ``kubectl postdeploy``. It talks to the API server with the official
``kubernetes`` client as the user of the current kubeconfig context (``--kubeconfig``,
``--context``, ``-n/--namespace`` as in kubectl), so the API server's RBAC and the
sign-off webhook see the person, not the operator.

- ``errors``   the exit codes and the one-line error messages;
- ``kube``     the client, the namespace, and the reads and writes it needs;
- ``commands`` one function per subcommand;
- ``cli``      the argument parser and ``main``.

Exit codes: 0 ok; 1 API error (unreachable, 5xx, anything unexpected); 2 usage;
3 not found (review, check, report); 4 forbidden (RBAC or the sign-off webhook
refused it; 401 too); 5 conflict (the role has already signed, the check's phase is
over, the check is not manual); 6 invalid (the API server refused the object).
"""

from postdeploy.plugin.cli import main

__all__ = ["main"]
