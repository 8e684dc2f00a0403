"""``kubectl postdeploy rerun``: running a check again, now, in its current phase.

Called by ``postdeploy.engine.ticks`` before it plans. The plugin writes a new token
into ``rerun.postdeploy.io/<check>``; a check whose recorded ``rerun`` token differs
is made due again (its ``lastSlot`` forgotten) and, if it stopped on data-source
errors, running again. Pure.

A Failed check stays Failed: its failed runs still count against ``failureLimit``,
so a rerun cannot undo a breach. Checks of phases that already completed are not
rerun (the plugin says so before asking).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from postdeploy.models.reviews import CheckState, CheckStatus
from postdeploy.reports import inputs

__all__ = ["apply"]


def apply(
    statuses: Mapping[str, CheckStatus], annotations: Mapping[str, str], completed_phases: Collection[str]
) -> dict[str, CheckStatus]:
    result = dict(statuses)
    for name, token in inputs.reruns(annotations).items():
        status = result.get(name)
        if status is None or status.phase in completed_phases or status.rerun == token:
            continue
        again = status.model_copy(deep=True)
        again.rerun = token
        if again.state in (CheckState.ERROR, CheckState.INCONCLUSIVE):
            again.state = CheckState.RUNNING
            again.consecutive_errors = 0
        if again.state is not CheckState.FAILED:
            again.last_slot = -1
            again.message = f"rerun requested ({token})"
        result[name] = again
    return result
