"""Reading durations and numbers out of run-spec mappings, with errors that name the field.

Shared by the spec parsers of the engine's models (latency, impact): each
passes the error class its callers catch.
"""

from __future__ import annotations

from tickray.engine.clock import duration_ns


def spec_duration(where: str, value: object, error: type[ValueError], example: str) -> int:
    """A duration in ns: an int ``>= 0`` or text like ``"5ms"``; ``error`` naming ``where``."""
    if isinstance(value, str):
        try:
            return duration_ns(value)
        except ValueError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise error(
        f"{where} must be a duration (ns as an int >= 0, or text like '{example}'), got {value!r}"
    )


def spec_number(where: str, value: object, error: type[ValueError]) -> float:
    """A real number, returned as given (so that errors quote the spec's own text)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(f"{where} must be a number, got {value!r}")
    return value
