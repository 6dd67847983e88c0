"""The depth levels of a Binance diff, read from their JSON text straight into floats (numba).

A USD-M ``depth@0ms`` diff carries about 66 levels, ``[["61496.50","0.010"], ...]``: 130-odd
decimal strings, which cost more to turn into floats than all the rest of the message. The
websocket fast path (:mod:`tickray.feeds.ws`) hands the raw text of ``b`` and ``a`` to
:func:`scan_levels`, which reads them in one compiled pass.

Exactness: a decimal string is read here only when it is plain digits with at most one point
(``"61496.50"``, ``"0.010"``, ``"7"``), its digits make an integer ``m`` of at most 2**53 and
it has at most 22 digits after the point; its value is then ``m / 10**k``, a single IEEE
division of two exactly represented numbers, hence the correctly rounded value of the
decimal, which is what Python's ``float()`` gives (Clinger's fast path, as in every correct
``strtod``). Anything else (a JSON number, an exponent, a sign, whitespace, more digits) makes
the whole call give up (-1), and the caller takes the general path: the text never yields a
value that differs from the reference parser's.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tickray.engine.jit import jit

F64 = npt.NDArray[np.float64]

#: 10**0 .. 10**22, all exact doubles.
_POW10 = np.array([10.0**k for k in range(23)], dtype=np.float64)
_MAX_MANTISSA = 1 << 53


@jit
def _scan(buf: bytes, out: F64, at: int, pow10: F64) -> int:
    """Values of ``[["p","q"], ...]`` in ``buf`` into ``out[at:]``; their count, or -1."""
    n = len(buf)
    if n < 2 or buf[0] != 91:  # [
        return -1
    if buf[1] == 93:  # ]
        return 0 if n == 2 else -1
    i = 1
    k = at
    while True:
        if i >= n or buf[i] != 91:  # [
            return -1
        i += 1
        for j in range(2):
            if i >= n or buf[i] != 34:  # "
                return -1
            i += 1
            m = 0
            digits = 0
            frac = -1  # digits after the point; -1: no point yet
            while i < n:
                c = buf[i]
                if 48 <= c <= 57:
                    m = m * 10 + (c - 48)
                    if m > _MAX_MANTISSA:
                        return -1
                    digits += 1
                    if frac >= 0:
                        frac += 1
                elif c == 46 and frac < 0:  # .
                    frac = 0
                else:
                    break
                i += 1
            if digits == 0 or frac > 22 or i >= n or buf[i] != 34:  # "
                return -1
            i += 1
            if k >= len(out):
                return -1
            out[k] = m / pow10[frac] if frac > 0 else float(m)
            k += 1
            if j == 0:
                if i >= n or buf[i] != 44:  # ,
                    return -1
                i += 1
        if i >= n or buf[i] != 93:  # ]
            return -1
        i += 1
        if i >= n:
            return -1
        if buf[i] == 93:  # ] (the end)
            return k - at if i == n - 1 else -1
        if buf[i] != 44:  # ,
            return -1
        i += 1


@jit
def _scan_both(bids: bytes, asks: bytes, out: F64, pow10: F64) -> int:
    """Both sides' values into ``out``, bids first: ``(bid count << 32) | ask count``, or -1.

    One call per diff: the call itself (arguments checked and unboxed) cost about as much
    as scanning a side, so both sides share one."""
    nb = _scan(bids, out, 0, pow10)
    if nb < 0:
        return -1
    na = _scan(asks, out, nb, pow10)
    if na < 0:
        return -1
    return (nb << 32) | na


def scan_levels(bids: bytes, asks: bytes) -> tuple[F64, int] | None:
    """Both sides' levels as one float64 array ``[p, q, p, q, ...]`` (bids first) and the
    number of bid values, or None when either text is not in the exact form (module doc)."""
    out = np.empty((len(bids) + len(asks)) // 4 + 2, dtype=np.float64)
    got = _scan_both(bids, asks, out, _POW10)
    if got < 0:
        return None
    nb = got >> 32
    return out[: nb + (got & 0xFFFFFFFF)], nb


def warm_up() -> None:
    """Load (or compile, on a machine's first run) the scanner now rather than at the first
    depth diff of a live session."""
    scan_levels(b'[["1.5","2"]]', b"[]")
