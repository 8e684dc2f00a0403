"""Every exception postdeploy raises on purpose, in one tree with one root.

::

    PostdeployError                 the root: ``except PostdeployError`` is "postdeploy said no"
    ├── QueryFailed                 a data source failed: down, timed out, refused the query,
    │   │                           or answered in a shape it should not (Prometheus, PostgreSQL);
    │   │                           the run is an Error, never a Failure
    │   └── NotConfigured           no address or DSN anywhere: Error, or Skipped when optional
    ├── InvalidSpec (ValueError)    a merged review cannot run; the message starts with the field
    ├── ConditionError (ValueError) ``failWhen``/``passWhen`` does not parse; names the column
    ├── Undecidable                 a condition needs a value that is missing (-> Inconclusive)
    ├── Refused                     an admission webhook refuses a request; ``code`` is its HTTP status
    ├── NotRolledBack               nothing to roll back to, or rolling back is refused
    ├── Unpausable                  the target's kind has no pause
    └── PluginError                 ``kubectl postdeploy`` fails; ``code`` is the exit status
                                    (defined in ``postdeploy.plugin.errors`` beside the codes)

Every message is safe to show: it may reach status, Events or a terminal, so it never
holds a password, token or DSN. The failpoint a test arms
(``postdeploy.engine.failpoints.Injected``) is deliberately outside the tree: it stands
for a bug, which is no decision of postdeploy's. So is ``postdeploy.kit.kube.ApiError``,
the API server's answer outside 2xx (or no answer): the transport's report, which each
caller turns into its own outcome (a held review, a refused request, an Error).
"""

from __future__ import annotations

__all__ = [
    "ConditionError",
    "InvalidSpec",
    "NotConfigured",
    "NotRolledBack",
    "PostdeployError",
    "QueryFailed",
    "Refused",
    "Undecidable",
    "Unpausable",
]


class PostdeployError(Exception):
    """The root of every exception postdeploy raises on purpose."""


class QueryFailed(PostdeployError):
    """The data source failed; the message is safe to show (no credentials)."""


class NotConfigured(QueryFailed):
    """No address or DSN anywhere: an Error, or Skipped for a check that is ``optional``."""


class InvalidSpec(PostdeployError, ValueError):
    """The merged spec cannot run; the message starts with the offending field."""


class ConditionError(PostdeployError, ValueError):
    """The text is not a valid condition; the message names the column."""


class Undecidable(PostdeployError):
    """A name the condition needs has no value (or a division by zero)."""


class Refused(PostdeployError):
    """The request may not be admitted; ``code`` is the HTTP status the user sees."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class NotRolledBack(PostdeployError):
    """There is nothing to roll back to, or rolling back is refused; the message says why."""


class Unpausable(PostdeployError):
    """The target's kind has no pause."""
