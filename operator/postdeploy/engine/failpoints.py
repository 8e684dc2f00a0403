"""Named points where a crash test has the operator killed, as if its node died there.

``POSTDEPLOY_FAILPOINTS=name[,name...]`` arms points; ``hit(name)`` at an armed
point sends the operator SIGKILL (no clean-up, no last status write). The e2e tests
use it to prove that a restart at exactly that point neither loses nor repeats an
action (see ``postdeploy.engine.executions``). Unset, as in production, ``hit`` is a
set lookup. Points:

- ``rollback-applying``: the rollback's plan is in status (Applying), the target is
  not patched yet;
- ``rollback-patched``: the target is patched, status still says Applying.
"""

from __future__ import annotations

import os
import signal

__all__ = ["ENV", "hit"]

ENV = "POSTDEPLOY_FAILPOINTS"
_ARMED = frozenset(p.strip() for p in os.environ.get(ENV, "").split(",") if p.strip())


def hit(name: str) -> None:
    if name in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
