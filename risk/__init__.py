"""tickray.risk: pure sizing and risk-limit functions (no I/O, no wall clock)."""
