"""Named points where a crash test has the operator killed, as if its node died there.

``POSTDEPLOY_FAILPOINTS=name[,name...]`` arms points; ``hit(name)`` at an armed
point sends the operator SIGKILL (no clean-up, no last status write). The e2e tests
use it to prove that a restart at exactly that point neither loses nor repeats an
action (see ``postdeploy.engine.executions``). Unset, as in production, ``hit`` is a
set lookup. Points:

- ``rollback-applying``: the rollback's plan is in status (Applying), the target is
  not patched yet;
- ``rollback-patched``: the target is patched, status still says Applying.

``raise_at(name, annotations)`` is the other kind: at an armed point it raises
``Injected``, only for a review annotated ``postdeploy.io/failpoint: NAME``, so a
test sees how the operator contains a tick that fails while other reviews run.
Point: ``tick-raise``, at the start of every tick of such a review.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping

__all__ = ["ANNOTATION", "ENV", "Injected", "hit", "raise_at"]

ENV = "POSTDEPLOY_FAILPOINTS"
ANNOTATION = "postdeploy.io/failpoint"
_ARMED = frozenset(p.strip() for p in os.environ.get(ENV, "").split(",") if p.strip())


def hit(name: str) -> None:
    if name in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)


class Injected(RuntimeError):
    """Raised by an armed failpoint on purpose."""


def raise_at(name: str, annotations: Mapping[str, str]) -> None:
    if name in _ARMED and annotations.get(ANNOTATION) == name:
        raise Injected(f"failpoint {name}")
