"""Latency models: how long an order message or a market-data message is in flight.

An order's journey has four latencies, all int64 nanoseconds ``>= 0``:

- ``SUBMIT``: strategy -> venue, for a new order;
- ``MODIFY``: strategy -> venue, for an amendment;
- ``CANCEL``: strategy -> venue, for a cancel;
- ``MARKET_DATA``: venue -> strategy, for market data and order responses
  (acks, fills, rejects).

A :class:`LatencyModel` draws one latency per message; the caller adds it to
the simulation time at which the message leaves. Two implementations, chosen
by the run spec through :func:`latency_from_spec`:

- :class:`ConstantLatency`: a fixed delay per kind (the default is zero:
  messages arrive when they are sent);
- :class:`SampledLatency`: per-kind random delays (lognormal, uniform, or
  resampled from observed values), seeded, each kind on its own independent
  random stream.

Randomness is always a ``numpy.random.Generator(PCG64(...))`` built from an
explicit seed; nothing here reads the wall clock or global random state, so
the same seed and the same sequence of calls give the same latencies. Seeds
are derived per symbol with :func:`symbol_seed`, so that a symbol's draws do
not depend on which actor it lives in or which other symbols share it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import Any, Final, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from tickray.engine.specvalues import spec_duration, spec_number

I64 = npt.NDArray[np.int64]

BLOCK: Final = 1024
"""Draws pre-generated per refill of one kind's stream."""

_MAX_NS: Final = 2**62
"""Draws are clipped here (about 146 years) so that a heavy tail never overflows int64."""


class LatencyError(ValueError):
    """An invalid latency setting; the message names the field (``latency.cancel.sigma ...``)."""


class LatencyKind(IntEnum):
    """Which message a latency is drawn for (also its random stream's index)."""

    SUBMIT = 0
    MODIFY = 1
    CANCEL = 2
    MARKET_DATA = 3


_KINDS: Final = tuple(k.name.lower() for k in LatencyKind)  # spec keys, in stream order


@runtime_checkable
class LatencyModel(Protocol):
    """Draws message latencies in int64 ns ``>= 0``."""

    def draw(self, kind: LatencyKind) -> int:
        """One latency in ns for a message of ``kind``; consumes that kind's stream only."""
        ...

    def describe(self) -> dict[str, object]:
        """A JSON-able spec; ``latency_from_spec(describe(), seed=seed)`` rebuilds the model."""
        ...


# --------------------------------------------------------------------------- constant


class ConstantLatency:
    """A fixed latency per message kind, in ns (all zero by default).

    >>> m = ConstantLatency(submit=5_000_000, market_data=1_000_000)
    >>> m.draw(LatencyKind.SUBMIT), m.draw(LatencyKind.CANCEL)
    (5000000, 0)
    """

    __slots__ = ("_values",)

    def __init__(
        self, submit: int = 0, modify: int = 0, cancel: int = 0, market_data: int = 0
    ) -> None:
        values = (submit, modify, cancel, market_data)
        for name, v in zip(_KINDS, values, strict=True):
            _check_ns(name, v)
        self._values: tuple[int, ...] = tuple(int(v) for v in values)

    def draw(self, kind: LatencyKind) -> int:
        return self._values[kind]

    def describe(self) -> dict[str, object]:
        return dict(zip(_KINDS, self._values, strict=True))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in zip(_KINDS, self._values, strict=True))
        return f"ConstantLatency({args})"


# --------------------------------------------------------------------------- distributions


class LatencyDistribution(Protocol):
    """One kind's latency distribution, in ns.

    ``sample(rng, n)`` returns ``n`` draws as Python ints ``>= floor``; a
    sequence of calls must consume ``rng`` so that the concatenated draws do
    not depend on how ``n`` was split (one value per uniform or normal
    variate), which is what lets :class:`SampledLatency` draw in blocks.
    """

    def sample(self, rng: np.random.Generator, n: int) -> list[int]: ...

    def describe(self) -> object: ...


class FixedDelay:
    """Always ``ns`` nanoseconds; consumes no randomness."""

    __slots__ = ("ns",)

    def __init__(self, ns: int) -> None:
        _check_ns("value", ns)
        self.ns = int(ns)

    def sample(self, rng: np.random.Generator, n: int) -> list[int]:
        return [self.ns] * n

    def describe(self) -> object:
        return self.ns


class LognormalDelay:
    """``median_ns * exp(sigma * Z)`` with ``Z`` standard normal, rounded to whole ns.

    ``median_ns`` is the median latency (the lognormal's ``exp(mu)``), ``sigma``
    the standard deviation of the latency's logarithm (0.4 means about a
    third of draws lie outside ``median / 1.5 .. median * 1.5``). Draws below
    ``floor_ns`` are raised to it (a wire's minimum delay).
    """

    __slots__ = ("median_ns", "sigma", "floor_ns")

    def __init__(self, median_ns: int, sigma: float, floor_ns: int = 0) -> None:
        _check_ns("median", median_ns)
        if median_ns <= 0:
            raise LatencyError(f"median must be > 0, got {median_ns!r}")
        _check_positive("sigma", sigma)
        _check_ns("floor", floor_ns)
        self.median_ns = int(median_ns)
        self.sigma = float(sigma)
        self.floor_ns = int(floor_ns)

    def sample(self, rng: np.random.Generator, n: int) -> list[int]:
        z = rng.standard_normal(n)
        x = np.rint(self.median_ns * np.exp(self.sigma * z))
        return _finish(x, self.floor_ns)

    def describe(self) -> object:
        return {
            "dist": "lognormal",
            "median": self.median_ns,
            "sigma": self.sigma,
            "floor": self.floor_ns,
        }


class UniformDelay:
    """``low_ns + (high_ns - low_ns) * U`` with ``U`` uniform on [0, 1), rounded to whole ns.

    So draws are integers in ``[low_ns, high_ns]``; ``floor_ns`` raises lower draws to it.
    """

    __slots__ = ("low_ns", "high_ns", "floor_ns")

    def __init__(self, low_ns: int, high_ns: int, floor_ns: int = 0) -> None:
        _check_ns("low", low_ns)
        _check_ns("high", high_ns)
        if high_ns < low_ns:
            raise LatencyError(f"high must be >= low ({low_ns}), got {high_ns!r}")
        _check_ns("floor", floor_ns)
        self.low_ns = int(low_ns)
        self.high_ns = int(high_ns)
        self.floor_ns = int(floor_ns)

    def sample(self, rng: np.random.Generator, n: int) -> list[int]:
        u = rng.random(n)
        x = np.rint(self.low_ns + float(self.high_ns - self.low_ns) * u)
        return _finish(x, self.floor_ns)

    def describe(self) -> object:
        return {"dist": "uniform", "low": self.low_ns, "high": self.high_ns, "floor": self.floor_ns}


class EmpiricalDelay:
    """Resamples observed latencies (ns) with replacement, each equally likely.

    Index ``floor(U * len(values))`` with ``U`` uniform on [0, 1), so only
    observed values are drawn (then raised to ``floor_ns`` if below it).
    """

    __slots__ = ("values", "floor_ns", "_arr")

    def __init__(self, values: Sequence[int], floor_ns: int = 0) -> None:
        if isinstance(values, str | bytes) or len(values) == 0:
            raise LatencyError(f"values must be a non-empty list of ns, got {values!r}")
        for i, v in enumerate(values):
            _check_ns(f"values[{i}]", v)
        _check_ns("floor", floor_ns)
        self.values: tuple[int, ...] = tuple(int(v) for v in values)
        self.floor_ns = int(floor_ns)
        self._arr: I64 = np.asarray(self.values, dtype=np.int64)

    def sample(self, rng: np.random.Generator, n: int) -> list[int]:
        m = len(self._arr)
        idx = np.minimum((rng.random(n) * m).astype(np.int64), m - 1)
        out: list[int] = np.maximum(self._arr[idx], self.floor_ns).tolist()
        return out

    def describe(self) -> object:
        return {"dist": "empirical", "values": list(self.values), "floor": self.floor_ns}


def _finish(x: npt.NDArray[np.float64], floor_ns: int) -> list[int]:
    """Clip rounded float draws into ``[floor_ns, 2**62]`` and return them as Python ints."""
    out: list[int] = np.clip(x, floor_ns, _MAX_NS).astype(np.int64).tolist()
    return out


# --------------------------------------------------------------------------- sampled


class _Stream:
    """One kind's generator and its pre-generated block of draws."""

    __slots__ = ("dist", "rng", "block", "buf", "pos")

    def __init__(self, dist: LatencyDistribution, rng: np.random.Generator, block: int) -> None:
        self.dist = dist
        self.rng = rng
        self.block = block
        self.buf: list[int] = []
        self.pos = 0


class SampledLatency:
    """Random latencies per kind, reproducible from ``seed``.

    Each kind draws from its own ``Generator(PCG64(SeedSequence(seed,
    spawn_key=(kind,))))``, the same streams as ``SeedSequence(seed).spawn(4)``,
    so drawing cancels never shifts the submit draws. Draws are generated
    ``block`` at a time and handed out one by one; the sequence is the same
    whatever ``block`` is (``block=1`` is drawing one at a time). A kind
    given as an ``int`` is a fixed delay in ns.

    >>> m = SampledLatency(7, submit=LognormalDelay(5_000_000, 0.3), cancel=2_000_000)
    >>> m.draw(LatencyKind.CANCEL)
    2000000
    """

    __slots__ = ("seed", "block", "_dists", "_streams")

    def __init__(
        self,
        seed: int,
        submit: LatencyDistribution | int = 0,
        modify: LatencyDistribution | int = 0,
        cancel: LatencyDistribution | int = 0,
        market_data: LatencyDistribution | int = 0,
        *,
        block: int = BLOCK,
    ) -> None:
        _check_seed(seed)
        if isinstance(block, bool) or not isinstance(block, int) or block < 1:
            raise LatencyError(f"block must be an int >= 1, got {block!r}")
        self.seed = int(seed)
        self.block = block
        dists = [
            FixedDelay(d) if isinstance(d, int) else d
            for d in (submit, modify, cancel, market_data)
        ]
        self._dists: tuple[LatencyDistribution, ...] = tuple(dists)
        self._streams = tuple(
            _Stream(d, _kind_rng(self.seed, kind), block)
            for d, kind in zip(dists, LatencyKind, strict=True)
        )

    def draw(self, kind: LatencyKind) -> int:
        s = self._streams[kind]
        if s.pos >= len(s.buf):
            s.buf = s.dist.sample(s.rng, s.block)
            s.pos = 0
        v = s.buf[s.pos]
        s.pos += 1
        return v

    def describe(self) -> dict[str, object]:
        """The spec without the seed (passed separately): rebuild with ``latency_from_spec``."""
        return {k: d.describe() for k, d in zip(_KINDS, self._dists, strict=True)}

    def __repr__(self) -> str:
        return f"SampledLatency(seed={self.seed}, {self.describe()!r})"


def _kind_rng(seed: int, kind: LatencyKind) -> np.random.Generator:
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(int(kind),)))
    )


# --------------------------------------------------------------------------- seeds


def symbol_seed(seed: int, symbol: str) -> int:
    """A stable 64-bit seed for ``symbol`` derived from the run's ``seed``.

    ``blake2b(f"{seed}:{symbol}", digest_size=8, person=b"tickray-latency")``
    read little-endian. Unlike ``hash()`` it is the same in every process and
    on every machine, so a symbol's random draws do not depend on how symbols
    are spread over actors or nodes.
    """
    _check_seed(seed)
    h = hashlib.blake2b(f"{seed}:{symbol}".encode(), digest_size=8, person=b"tickray-latency")
    return int.from_bytes(h.digest(), "little")


# --------------------------------------------------------------------------- spec


_DIST_KEYS: Final = {
    "lognormal": ("median", "sigma", "floor"),
    "uniform": ("low", "high", "floor"),
    "empirical": ("values", "floor"),
}


def latency_from_spec(spec: Mapping[str, Any] | None, *, seed: int) -> LatencyModel:
    """Build a latency model from the run spec's ``latency`` section.

    Keys are ``submit``, ``modify``, ``cancel`` and ``market_data`` (missing
    ones are 0). Each is a duration (ns int, or text such as ``"5ms"`` parsed
    by :func:`tickray.engine.clock.duration_ns`) or a distribution::

        {"dist": "lognormal", "median": "3ms", "sigma": 0.4, "floor": "1ms"}
        {"dist": "uniform", "low": "1ms", "high": "4ms"}
        {"dist": "empirical", "values": [1200000, 1500000, "2ms"]}

    All plain durations give a :class:`ConstantLatency`; any distribution a
    :class:`SampledLatency` seeded with ``seed`` (usually
    ``symbol_seed(run_seed, symbol)``). Errors raise :class:`LatencyError`
    naming the field, e.g. ``latency.cancel.sigma must be > 0, got -1``.
    """
    _check_seed(seed)
    if spec is None:
        return ConstantLatency()
    if not isinstance(spec, Mapping):
        raise LatencyError(f"latency must be a mapping of {', '.join(_KINDS)}, got {spec!r}")
    for key in spec:
        if key not in _KINDS:
            raise LatencyError(
                f"latency.{key} is not a latency; expected one of {', '.join(_KINDS)}"
            )
    entries = [_entry(f"latency.{k}", spec.get(k, 0)) for k in _KINDS]
    fixed = [e for e in entries if isinstance(e, int)]
    if len(fixed) == len(entries):
        return ConstantLatency(*fixed)
    return SampledLatency(seed, *entries)


def _entry(where: str, value: object) -> int | LatencyDistribution:
    """One kind's entry: a duration in ns, or a distribution."""
    if not isinstance(value, Mapping):
        return _duration(where, value)
    name = value.get("dist")
    if name not in _DIST_KEYS:
        raise LatencyError(f"{where}.dist must be one of {', '.join(_DIST_KEYS)}, got {name!r}")
    allowed = _DIST_KEYS[name]
    for key in value:
        if key != "dist" and key not in allowed:
            raise LatencyError(
                f"{where}.{key} is not a parameter of {name!r}; expected {', '.join(allowed)}"
            )
    for key in allowed:
        if key != "floor" and key not in value:
            raise LatencyError(f"{where}.{key} is required for {name!r}")
    floor = _duration(f"{where}.floor", value.get("floor", 0))
    try:
        if name == "lognormal":
            return LognormalDelay(
                _duration(f"{where}.median", value["median"]),
                _number(f"{where}.sigma", value["sigma"]),
                floor,
            )
        if name == "uniform":
            return UniformDelay(
                _duration(f"{where}.low", value["low"]),
                _duration(f"{where}.high", value["high"]),
                floor,
            )
        values = value["values"]
        if isinstance(values, str | bytes) or not isinstance(values, Sequence):
            raise LatencyError(f"values must be a non-empty list of durations, got {values!r}")
        return EmpiricalDelay(
            [_duration(f"{where}.values[{i}]", v) for i, v in enumerate(values)], floor
        )
    except LatencyError as e:
        msg = str(e)
        raise LatencyError(msg if msg.startswith("latency.") else f"{where}.{msg}") from None


def _duration(where: str, value: object) -> int:
    return spec_duration(where, value, LatencyError, "5ms")


def _number(where: str, value: object) -> float:
    return spec_number(where, value, LatencyError)


# --------------------------------------------------------------------------- checks


def _check_ns(name: str, v: object) -> None:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0:
        raise LatencyError(f"{name} must be an int number of ns >= 0, got {v!r}")
    if v > _MAX_NS:
        raise LatencyError(f"{name} must be <= 2**62 ns, got {v!r}")


def _check_positive(name: str, v: object) -> None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
        raise LatencyError(f"{name} must be > 0, got {v!r}")


def _check_seed(seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise LatencyError(f"seed must be an int >= 0, got {seed!r}")
