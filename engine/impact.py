"""Market-impact models: the price a taker fill really gets, and an incremental volatility.

An :class:`ImpactModel` turns the un-impacted price of a **taker** fill (the
bar's open, the touch, the trade price the fill matches against) into the
price the fill gets once its own size, and the fills before it, have moved
the market. Maker fills (resting limit orders filled at their limit price)
are not passed through it: impact applies to taker fills only.

Conventions shared by every model:

- ``side`` is +1 for a buy, -1 for a sell; ``qty`` is the fill quantity
  (``> 0``, base asset); ``price`` the un-impacted price (quote per base).
- Impact is a *fraction* of ``price``: a fraction ``f`` moves a buy to
  ``price * (1 + f)`` and a sell to ``price * (1 - f)``.
- ``volume`` is the reference traded volume (base asset) of the period the
  fill competes with (the bar's volume, or recent traded volume), and
  ``sigma`` the volatility of returns over that same period, as a fraction
  (0.02 is 2%); :class:`EwmaVolatility` estimates it.
- ``ts`` is simulation time in int64 ns UTC, given by the caller. Transient
  impact decays over simulation time only; nothing here reads the wall clock.
- The result is a float; the caller rounds it to the tick, away from the trader.

Models are deterministic: the same calls in the same order give the same
prices. Three implementations, chosen by the run spec via :func:`impact_from_spec`:
:class:`NoImpact`, :class:`LinearImpact` and :class:`SquareRootImpact`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from tickray.engine.clock import SECOND
from tickray.engine.specvalues import spec_duration, spec_number

F64 = npt.NDArray[np.float64]


class ImpactError(ValueError):
    """An invalid impact setting; the message names the field (``impact.coef ...``)."""


@runtime_checkable
class ImpactModel(Protocol):
    """Prices taker fills with market impact, and remembers fills whose impact decays."""

    def price(
        self, ts: int, side: int, qty: float, price: float, volume: float, sigma: float
    ) -> float:
        """The fill price of a taker fill of ``qty`` on ``side`` whose un-impacted price is ``price``."""
        ...

    def record(
        self, ts: int, side: int, qty: float, price: float, volume: float, sigma: float
    ) -> None:
        """Register a fill made at ``ts`` so that its transient impact moves later fills."""
        ...

    def describe(self) -> dict[str, object]:
        """A JSON-able spec that :func:`impact_from_spec` rebuilds the model from."""
        ...


class NoImpact:
    """Fills get the un-impacted price: the market absorbs any size for free."""

    __slots__ = ()

    def price(
        self, ts: int, side: int, qty: float, price: float, volume: float, sigma: float
    ) -> float:
        return price

    def record(
        self, ts: int, side: int, qty: float, price: float, volume: float, sigma: float
    ) -> None:
        return None

    def describe(self) -> dict[str, object]:
        return {"model": "none"}

    def __repr__(self) -> str:
        return "NoImpact()"


class LinearImpact:
    """The classic slippage model: a fixed spread cost plus a cost linear in participation.

    Adverse fraction ``f = bps / 1e4 + coef * qty / volume`` (only ``bps / 1e4``
    when ``volume <= 0``), capped at ``max_fraction``; a buy fills at
    ``price * (1 + f)``, a sell at ``price * (1 - f)``. ``bps`` is in basis points
    of the price (half a spread, say); ``coef`` is the fraction paid per unit of
    participation ``qty / volume``. Fills leave no memory: ``record`` does nothing.
    The cap (default 1, i.e. none in practice) keeps a sell's price from going
    below zero when an order dwarfs the volume.

    >>> LinearImpact(bps=5).price(0, +1, 1.0, 100.0, 0.0, 0.0)  # 100 * (1 + 0.0005)
    100.05
    """

    __slots__ = ("bps", "coef", "max_fraction")

    def __init__(self, bps: float = 0.0, coef: float = 0.0, max_fraction: float = 1.0) -> None:
        _check_nonneg("bps", bps)
        _check_nonneg("coef", coef)
        _check_cap(max_fraction)
        self.bps = float(bps)
        self.coef = float(coef)
        self.max_fraction = float(max_fraction)

    def fraction(self, qty: float, volume: float) -> float:
        """The adverse fraction of the price paid by a fill of ``qty`` against ``volume``."""
        _check_qty(qty)
        f = self.bps / 1e4
        if volume > 0 and self.coef > 0:
            f += self.coef * qty / volume
        return min(f, self.max_fraction)

    def price(
        self, ts: int, side: int, qty: float, price: float, volume: float, sigma: float
    ) -> float:
        return price * (1.0 + side * self.fraction(qty, volume))

    def record(
        self, ts: int, side: int, qty: float, price: float, volume: float, sigma: float
    ) -> None:
        return None

    def describe(self) -> dict[str, object]:
        return {
            "model": "linear",
            "bps": self.bps,
            "coef": self.coef,
            "max_fraction": self.max_fraction,
        }

    def __repr__(self) -> str:
        return f"LinearImpact(bps={self.bps}, coef={self.coef}, max_fraction={self.max_fraction})"


class SquareRootImpact:
    """The square-root law with a transient, exponentially decaying impact.

    A fill's instantaneous impact is the fraction
    ``I = min(coef * sigma * sqrt(qty / volume), max_fraction)``
    (``I = max_fraction`` when ``volume <= 0``: nothing to trade against).
    Earlier fills leave a signed transient ``S`` (positive after buys) that
    decays in simulation time as ``S(t) = S(t0) * exp(-(t - t0) / decay_ns)``.

    A taker fill is priced at ``price * (1 + S(ts) + side * I / 2)``: the
    transient of earlier fills moves the price for buys and sells alike, and a
    fill pays half of its own impact on average while it walks into the book.
    :meth:`record` then adds the fill's full impact, ``S(ts) += side * I``,
    capped at ``+-max_fraction``. ``decay_ns = 0`` keeps no memory (``record``
    does nothing). A ``ts`` earlier than the last recorded fill counts as no
    time elapsed (the transient never grows back).

    Example: ``coef=1``, ``sigma=0.02``, ``qty=100``, ``volume=10_000`` give
    ``I = 0.02 * sqrt(0.01) = 0.002``; a buy at 100 pays ``100 * 1.001 = 100.1``.
    """

    __slots__ = ("coef", "decay_ns", "max_fraction", "_s", "_t")

    def __init__(
        self, coef: float = 1.0, decay_ns: int = 60 * SECOND, max_fraction: float = 0.1
    ) -> None:
        _check_nonneg("coef", coef)
        if isinstance(decay_ns, bool) or not isinstance(decay_ns, int) or decay_ns < 0:
            raise ImpactError(f"decay must be an int number of ns >= 0, got {decay_ns!r}")
        _check_cap(max_fraction)
        self.coef = float(coef)
        self.decay_ns = decay_ns
        self.max_fraction = float(max_fraction)
        self._s = 0.0  # transient fraction at time _t
        self._t = 0

    def instantaneous(self, qty: float, volume: float, sigma: float) -> float:
        """``I = min(coef * sigma * sqrt(qty / volume), max_fraction)``, a fraction ``>= 0``."""
        _check_qty(qty)
        if not sigma >= 0:
            raise ImpactError(f"sigma must be >= 0, got {sigma!r}")
        if not volume > 0:  # also NaN: no volume to trade against
            return self.max_fraction
        scale = self.coef * sigma
        if scale == 0.0:  # no volatility: no impact (and no 0 * inf when qty / volume overflows)
            return 0.0
        return min(scale * math.sqrt(qty / volume), self.max_fraction)

    def transient(self, ts: int) -> float:
        """The signed transient fraction ``S(ts)`` left by recorded fills (+ after buys)."""
        if self._s == 0.0:
            return 0.0
        dt = max(ts - self._t, 0)
        return self._s * math.exp(-dt / self.decay_ns)

    def price(
        self, ts: int, side: int, qty: float, price: float, volume: float, sigma: float
    ) -> float:
        impact = self.instantaneous(qty, volume, sigma)
        return price * (1.0 + self.transient(ts) + side * impact / 2.0)

    def record(
        self, ts: int, side: int, qty: float, price: float, volume: float, sigma: float
    ) -> None:
        if self.decay_ns == 0:
            return
        s = self.transient(ts) + side * self.instantaneous(qty, volume, sigma)
        self._s = min(max(s, -self.max_fraction), self.max_fraction)
        self._t = max(ts, self._t)

    def describe(self) -> dict[str, object]:
        return {
            "model": "sqrt",
            "coef": self.coef,
            "decay": self.decay_ns,
            "max_fraction": self.max_fraction,
        }

    def __repr__(self) -> str:
        return (
            f"SquareRootImpact(coef={self.coef}, decay_ns={self.decay_ns}, "
            f"max_fraction={self.max_fraction})"
        )


# --------------------------------------------------------------------------- spec


_MODEL_KEYS: Final = {
    "none": (),
    "linear": ("bps", "coef", "max_fraction"),
    "sqrt": ("coef", "decay", "max_fraction"),
}


def impact_from_spec(spec: Mapping[str, Any] | None) -> ImpactModel:
    """Build an impact model from the run spec's ``impact`` section.

    ``None`` or ``{"model": "none"}``: :class:`NoImpact`.
    ``{"model": "linear", "bps": 2, "coef": 0.1}``: :class:`LinearImpact`.
    ``{"model": "sqrt", "coef": 0.8, "decay": "30s", "max_fraction": 0.05}``:
    :class:`SquareRootImpact` (``decay`` as ns int or text for
    :func:`tickray.engine.clock.duration_ns`). Missing parameters take the
    class defaults. Errors raise :class:`ImpactError` naming the field.
    """
    if spec is None:
        return NoImpact()
    if not isinstance(spec, Mapping):
        raise ImpactError(f"impact must be a mapping with a 'model', got {spec!r}")
    name = spec.get("model")
    if name not in _MODEL_KEYS:
        raise ImpactError(f"impact.model must be one of {', '.join(_MODEL_KEYS)}, got {name!r}")
    allowed = _MODEL_KEYS[name]
    for key in spec:
        if key != "model" and key not in allowed:
            expected = ", ".join(allowed) or "no parameters"
            raise ImpactError(f"impact.{key} is not a parameter of {name!r}; expected {expected}")
    kwargs: dict[str, Any] = {}
    for key in allowed:
        if key in spec:
            value = spec[key]
            if key == "decay":
                kwargs["decay_ns"] = _duration("impact.decay", value)
            else:
                kwargs[key] = _number(f"impact.{key}", value)
    try:
        if name == "linear":
            return LinearImpact(**kwargs)
        if name == "sqrt":
            return SquareRootImpact(**kwargs)
        return NoImpact()
    except ImpactError as e:
        raise ImpactError(f"impact.{e}") from None


def _duration(where: str, value: object) -> int:
    return spec_duration(where, value, ImpactError, "30s")


def _number(where: str, value: object) -> float:
    return spec_number(where, value, ImpactError)


def _check_nonneg(name: str, v: object) -> None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
        raise ImpactError(f"{name} must be a number >= 0, got {v!r}")


def _check_cap(v: object) -> None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 1:
        raise ImpactError(f"max_fraction must be in (0, 1], got {v!r}")


def _check_qty(qty: float) -> None:
    if not qty >= 0:
        raise ImpactError(f"qty must be >= 0, got {qty!r}")


# --------------------------------------------------------------------------- volatility


class EwmaVolatility:
    """Exponentially weighted volatility of log returns, updated in O(1) per price.

    Each price after the first gives a log return ``r = log(p / p_prev)``; the
    variance is seeded with the first ``r**2`` and then follows
    ``var = (1 - alpha) * var + alpha * r**2`` (zero-mean returns, as in
    RiskMetrics), with ``alpha = 1 - 2 ** (-1 / halflife)`` so that a return's
    weight halves every ``halflife`` returns. :attr:`value` is ``sqrt(var)``:
    the volatility per update interval as a fraction (per bar when fed bar
    closes, per trade when fed trades; over ``n`` intervals it is about
    ``value * sqrt(n)``), and 0.0 until two prices were seen.

    ``update_many`` gives the bit-identical state to calling ``update`` per
    price (same operations in the same order), for bar batches and tick fills alike.
    Prices must be finite and ``> 0``.
    """

    __slots__ = ("halflife", "alpha", "_prev", "_var", "_n")

    def __init__(self, halflife: int) -> None:
        if isinstance(halflife, bool) or not isinstance(halflife, int) or halflife < 1:
            raise ValueError(f"halflife must be an int >= 1 (returns), got {halflife!r}")
        self.halflife = halflife
        self.alpha = 1.0 - 2.0 ** (-1.0 / halflife)
        self._prev = math.nan
        self._var = 0.0
        self._n = 0  # prices seen

    @property
    def value(self) -> float:
        """The volatility of one interval's log return (a fraction); 0.0 before two prices."""
        return math.sqrt(self._var)

    @property
    def count(self) -> int:
        """Prices seen so far."""
        return self._n

    def update(self, price: float) -> None:
        if not (price > 0 and math.isfinite(price)):
            raise ValueError(f"price must be finite and > 0, got {price!r}")
        if self._n:
            r = math.log(price / self._prev)
            if self._n == 1:
                self._var = r * r
            else:
                self._var = (1.0 - self.alpha) * self._var + self.alpha * (r * r)
        self._prev = price
        self._n += 1

    def update_many(self, prices: F64) -> None:
        """``update(p)`` for each ``p`` in order, in one call (same float operations)."""
        xs = np.asarray(prices, dtype=np.float64)
        if len(xs) == 0:
            return
        if not (np.all(xs > 0) and np.all(np.isfinite(xs))):
            bad = xs[~((xs > 0) & np.isfinite(xs))][0]
            raise ValueError(f"price must be finite and > 0, got {float(bad)!r}")
        # The recurrence is sequential by nature; a plain loop with locals keeps
        # it bit-identical to update() (numpy's vectorised log may round differently).
        keep, alpha = 1.0 - self.alpha, self.alpha
        prev, var, n = self._prev, self._var, self._n
        log = math.log
        for p in xs.tolist():
            if n:
                r = log(p / prev)
                var = r * r if n == 1 else keep * var + alpha * (r * r)
            prev = p
            n += 1
        self._prev, self._var, self._n = prev, var, n
