"""Exit codes and the one-line errors of ``kubectl postdeploy``.

Every failure becomes a ``PluginError`` with an exit code; ``cli.main`` prints its
message as one line on stderr (``error: ...``) and exits with the code.
"""

from __future__ import annotations

import json

from postdeploy.kit import exceptions

__all__ = [
    "API",
    "CONFLICT",
    "FORBIDDEN",
    "INVALID",
    "NOT_FOUND",
    "OK",
    "USAGE",
    "PluginError",
    "from_api",
]

OK, API, USAGE, NOT_FOUND, FORBIDDEN, CONFLICT, INVALID = 0, 1, 2, 3, 4, 5, 6


class PluginError(exceptions.PostdeployError):
    """``kubectl postdeploy`` cannot do what it was asked; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = API) -> None:
        super().__init__(message)
        self.code = code


def _reason(body: object) -> str:
    try:
        data = json.loads(body) if isinstance(body, (str, bytes)) else None
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])
    return ""


def from_api(error: Exception, what: str) -> PluginError:
    """A PluginError for a ``kubernetes`` ApiException met while doing ``what``."""
    status = int(getattr(error, "status", 0) or 0)
    detail = _reason(getattr(error, "body", None)) or str(getattr(error, "reason", "") or error)
    detail = " ".join(detail.split())
    code = {401: FORBIDDEN, 403: FORBIDDEN, 404: NOT_FOUND, 409: CONFLICT, 400: INVALID, 422: INVALID}.get(
        status, API
    )
    return PluginError(f"{what}: {detail}" if detail else what, code)
