"""The one place the engine compiles hot loops with numba.

The sequential loops of the execution simulator (applying depth diffs to the
L2 book, moving queue positions, checking triggers) run per market event and
cannot be vectorised; in plain Python they reach a few hundred thousand events
per second. numba compiles them to machine code (DESIGN.md, performance rules).
Compiled code is cached on disk next to the module (numba's ``cache=True``),
so only the first run on a machine pays the compile time.
``NUMBA_DISABLE_JIT=1`` runs the same functions as plain Python, for debugging.

Compiled functions do plain IEEE-754 float arithmetic (``fastmath`` stays off),
so results are identical to the Python execution of the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba

F = TypeVar("F", bound=Callable[..., Any])


def jit(fn: F) -> F:
    """Compile ``fn`` in nopython mode with the on-disk cache; keeps its type for mypy."""
    return cast(F, numba.njit(cache=True, nogil=True)(fn))
