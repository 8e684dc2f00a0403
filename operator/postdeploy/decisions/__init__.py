"""Pure decision logic, no I/O: conditions, phases, check states, verdicts, template
merging and query templating, statistics. Below it: ``models`` and the ``kit``."""
