"""Admission webhooks: who signed a review, as the API server authenticated them.

- ``signoffs``  stamping a ``ReviewSignoff`` with the request's ``userInfo`` and
                refusing one the user may not make (SubjectAccessReview);
- ``servers``   where the webhook listens and how the API server reaches it
                (self-signed on loopback for development and tests, a Service with
                mounted certificates in a cluster).

The kopf handlers that wire these are in ``postdeploy.handlers.signoffs``.
"""
