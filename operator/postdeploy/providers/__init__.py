"""Check providers: one module per data source, behind the interface in ``base``.

A provider measures and never decides. It returns a ``base.Measurement``; a
failure of the data source is a measurement in the ``ERROR`` state, never an
exception and never a failed check. Deciding pass/fail happens in
``postdeploy.decisions``.
"""
