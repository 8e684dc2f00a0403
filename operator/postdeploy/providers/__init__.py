"""Check providers: one module per data source, each satisfying ``base.Provider``.

A provider measures and never decides, and never acts: the checks that act (cleanup,
the report) live in ``postdeploy.actions.cleanup_checks`` and
``postdeploy.reports.publishing``. It returns a ``Measurement``
(``postdeploy.models.measurements``); a
failure of the data source is a measurement in the ``ERROR`` state, never an
exception and never a failed check. Deciding pass/fail happens in
``postdeploy.decisions``.
"""
