"""Pure decision logic, no I/O: durations, conditions, phases, check states, verdicts."""
