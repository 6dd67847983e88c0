"""Risk settings of a run: the ``[risk]`` limits and the risk monitor's rules.

Plain data, checked when built, with errors naming the spec key
(``risk.var_confidence: must be in (0, 1), got -0.5``). They live in the
engine so that a :class:`~tickray.engine.config.RunConfig` can carry them;
what they do is in :mod:`tickray.risk` (:mod:`tickray.risk.limits`,
:mod:`tickray.risk.monitor`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, TypeGuard

from tickray.engine.errors import ConfigError

VAR_METHODS = ("historical", "parametric")
"""How VaR and CVaR are estimated (see tickray.risk.var)."""

CORRELATION_ACTIONS = ("resize", "reject")


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """The ``[risk]`` section: portfolio limits on every order intent; None turns one off.

    ``max_position_notional``: the largest ``|position| * price`` of one symbol,
    in the account's currency. ``max_position_fraction``: the same as a fraction
    of equity. ``max_gross_leverage``: ``sum |position notional| / equity``.
    ``max_net_leverage``: ``|sum signed notional| / equity`` (not above the gross cap).
    ``max_open_positions``: how many symbols may hold a nonzero position.

    ``max_correlation`` (in (0, 1]): the most an opening order's returns may
    correlate with the P&L of the other positions over ``correlation_window``
    bars (>= 2), signed by its side (a short in a symbol that moves with a long
    book hedges it). ``correlation_action``: ``"reject"`` the opening part, or
    ``"resize"`` it by ``max_correlation / correlation`` (0.6 / 0.9 keeps two
    thirds), a heuristic: the more an order duplicates the risk already held,
    the less of it goes through.

    ``groups``: symbol -> group name (``{"BTCUSDT": "majors"}``), with
    ``max_group_fraction``: the most gross notional a group may hold, as a
    fraction of equity. Symbols in no group are not limited by it.

    ``var_limit`` and ``cvar_limit``: the most one bar's value at risk and
    expected shortfall of the whole portfolio may be, as fractions of equity,
    at ``var_confidence`` (in (0, 1)), estimated by ``var_method``
    (``"historical"`` or zero-mean Gaussian ``"parametric"``, see
    :mod:`tickray.risk.var`) over ``var_window`` bars (>= 2).

    ``max_orders_per_step`` and ``max_orders_per_day``: how many intents the
    portfolio approves per symbol in one step and in one UTC day (the caller
    counts; these limits never hold up the closing part of an order).
    """

    max_position_notional: float | None = None
    max_position_fraction: float | None = None
    max_gross_leverage: float | None = None
    max_net_leverage: float | None = None
    max_open_positions: int | None = None
    max_correlation: float | None = None
    correlation_window: int = 30
    correlation_action: str = "reject"
    groups: dict[str, str] = field(default_factory=dict)
    max_group_fraction: float | None = None
    var_limit: float | None = None
    cvar_limit: float | None = None
    var_confidence: float = 0.99
    var_method: str = "historical"
    var_window: int = 250
    max_orders_per_step: int | None = None
    max_orders_per_day: int | None = None

    def __post_init__(self) -> None:
        for name in (
            "max_position_notional",
            "max_position_fraction",
            "max_gross_leverage",
            "max_net_leverage",
            "max_group_fraction",
            "var_limit",
            "cvar_limit",
        ):
            _positive_or_none(name, getattr(self, name))
        for name in ("max_open_positions", "max_orders_per_step", "max_orders_per_day"):
            if getattr(self, name) is not None:
                _int_at_least(name, getattr(self, name), 1)
        _int_at_least("correlation_window", self.correlation_window, 2)
        _int_at_least("var_window", self.var_window, 2)
        mc = self.max_correlation
        if mc is not None and not (_is_number(mc) and 0.0 < mc <= 1.0):
            raise ConfigError(f"risk.max_correlation: must be in (0, 1], got {mc!r}")
        c = self.var_confidence
        if not (_is_number(c) and 0.0 < c < 1.0):
            raise ConfigError(f"risk.var_confidence: must be in (0, 1), got {c!r}")
        _choice("correlation_action", self.correlation_action, CORRELATION_ACTIONS)
        _choice("var_method", self.var_method, VAR_METHODS)
        self._check_groups()
        self._check_consistency()

    def _check_groups(self) -> None:
        if not isinstance(self.groups, Mapping):
            raise ConfigError(f"risk.groups: must be a table symbol -> group, got {self.groups!r}")
        for sym, group in self.groups.items():
            if not (isinstance(sym, str) and sym):
                raise ConfigError(f"risk.groups: {sym!r} is not a symbol")
            if not (isinstance(group, str) and group):
                raise ConfigError(f"risk.groups.{sym}: must be a group name, got {group!r}")
        if self.groups and self.max_group_fraction is None:
            raise ConfigError("risk.groups: groups are set but risk.max_group_fraction is not")
        if not self.groups and self.max_group_fraction is not None:
            raise ConfigError("risk.max_group_fraction: set but risk.groups names no group")

    def _check_consistency(self) -> None:
        """Limits that contradict each other, or that another makes unable to bind."""
        gross = self.max_gross_leverage
        if gross is not None:
            # net, one position and one group are each at most the gross: above it they never bind
            for name in ("max_net_leverage", "max_position_fraction", "max_group_fraction"):
                v = getattr(self, name)
                if v is not None and v > gross:
                    raise ConfigError(
                        f"risk.{name}: {v!r} is above risk.max_gross_leverage {gross!r}, "
                        "which always binds first"
                    )
        var, cvar = self.var_limit, self.cvar_limit
        if var is not None and cvar is not None and cvar < var:
            raise ConfigError(
                f"risk.cvar_limit: {cvar!r} is below risk.var_limit {var!r}; CVaR >= VaR "
                "at the same confidence, so the VaR limit could never bind"
            )
        step, day = self.max_orders_per_step, self.max_orders_per_day
        if step is not None and day is not None and step > day:
            raise ConfigError(
                f"risk.max_orders_per_step: {step} is above risk.max_orders_per_day {day}"
            )
        uses_var = self.var_limit is not None or self.cvar_limit is not None
        tail = self.var_window * (1.0 - self.var_confidence)
        if uses_var and self.var_method == "historical" and tail < 1.0 - 1e-9:
            need = math.ceil(1.0 / (1.0 - self.var_confidence) - 1e-9)
            raise ConfigError(
                f"risk.var_window: {self.var_window} bars have no loss beyond the "
                f"{self.var_confidence:g} quantile; historical VaR needs at least {need}"
            )

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any]) -> RiskLimits:
        """Build from a spec's ``[risk]`` table; an unknown key is a ConfigError naming it."""
        known = {f.name for f in fields(cls)}
        for key in section:
            if key not in known:
                raise ConfigError(f"risk.{key}: unknown key (known: {', '.join(sorted(known))})")
        kwargs = dict(section)
        if "groups" in kwargs and isinstance(kwargs["groups"], Mapping):
            kwargs["groups"] = dict(kwargs["groups"])
        return cls(**kwargs)

    @property
    def enabled(self) -> bool:
        """True when at least one limit is on."""
        return any(getattr(self, name) is not None for name in _LIMIT_KEYS)

    @property
    def returns_window(self) -> int:
        """Rows of past returns the checks read (0 when no check reads any)."""
        rows = 0
        if self.max_correlation is not None:
            rows = self.correlation_window
        if self.var_limit is not None or self.cvar_limit is not None:
            rows = max(rows, self.var_window)
        return rows

    def check_universe(self, symbols: Sequence[str]) -> None:
        """Raise ConfigError when ``groups`` names a symbol the run does not trade."""
        unknown = sorted(set(self.groups) - set(symbols))
        if unknown:
            raise ConfigError(f"risk.groups: not in the run's symbols: {unknown}")


_LIMIT_KEYS = (
    "max_position_notional",
    "max_position_fraction",
    "max_gross_leverage",
    "max_net_leverage",
    "max_open_positions",
    "max_correlation",
    "max_group_fraction",
    "var_limit",
    "cvar_limit",
    "max_orders_per_step",
    "max_orders_per_day",
)


def _is_number(v: object) -> TypeGuard[float]:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _positive_or_none(name: str, v: object) -> None:
    if v is not None and not (_is_number(v) and v > 0):
        raise ConfigError(f"risk.{name}: must be a positive number, got {v!r}")


def _int_at_least(name: str, v: object, low: int) -> None:
    if not (isinstance(v, int) and not isinstance(v, bool) and v >= low):
        raise ConfigError(f"risk.{name}: must be an integer >= {low}, got {v!r}")


def _choice(name: str, v: object, choices: tuple[str, ...]) -> None:
    if v not in choices:
        raise ConfigError(f"risk.{name}: must be one of {', '.join(choices)}, got {v!r}")


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """Risk monitor limits (fractions of equity; None turns a rule off).

    ``break_even_r`` and ``trail_r`` manage the stop-loss of an event
    strategy's position over its life, in the symbol's simulation, at each
    bar's close. ``R`` is the position's initial risk, ``|entry - initial
    stop|``. Once the best close since the entry is ``break_even_r`` R in the
    position's favour, its stop moves to the entry price; once it is
    ``trail_r`` R in favour, the stop trails the best close at ``trail_r`` R.
    A stop only ever moves towards the price (a modify at the venue, with its
    latency).
    """

    max_drawdown: float | None = None
    drawdown_lookback_ns: int = 0
    resume_drawdown: float | None = None
    min_scale: float = 0.2
    scale_with_drawdown: bool = True
    daily_loss_limit: float | None = None
    kill_drawdown: float | None = None
    break_even_r: float | None = None
    trail_r: float | None = None

    def __post_init__(self) -> None:
        for key in ("break_even_r", "trail_r"):
            v = getattr(self, key)
            if v is not None and not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ConfigError(f"risk.{key}: must be a number > 0, got {v!r}")
        for key in ("max_drawdown", "daily_loss_limit", "kill_drawdown"):
            v = getattr(self, key)
            if v is not None and not (isinstance(v, int | float) and 0 < v < 1):
                raise ConfigError(f"risk.{key}: must be in (0, 1), got {v!r}")
        if self.drawdown_lookback_ns < 0:
            raise ConfigError(
                f"risk.drawdown_lookback: must be >= 0, got {self.drawdown_lookback_ns!r}"
            )
        if not (isinstance(self.min_scale, int | float) and 0 <= self.min_scale <= 1):
            raise ConfigError(f"risk.min_scale: must be in [0, 1], got {self.min_scale!r}")
        if self.resume_drawdown is not None:
            if self.max_drawdown is None:
                raise ConfigError("risk.resume_drawdown: needs risk.max_drawdown")
            if not 0 <= self.resume_drawdown < self.max_drawdown:
                raise ConfigError(
                    f"risk.resume_drawdown: must be >= 0 and below risk.max_drawdown "
                    f"({self.max_drawdown}), got {self.resume_drawdown!r}"
                )
        if (
            self.kill_drawdown is not None
            and self.max_drawdown is not None
            and self.kill_drawdown <= self.max_drawdown
        ):
            raise ConfigError(
                f"risk.kill_drawdown: must be above risk.max_drawdown ({self.max_drawdown}), "
                f"got {self.kill_drawdown!r}"
            )

    @property
    def active(self) -> bool:
        return any(
            v is not None for v in (self.max_drawdown, self.daily_loss_limit, self.kill_drawdown)
        )

    @property
    def resume_at(self) -> float:
        if self.resume_drawdown is not None:
            return self.resume_drawdown
        return (self.max_drawdown or 0.0) / 2


class SizingMethod(StrEnum):
    """The sizers a run spec may name in ``sizing.method``."""

    FRACTION = "fraction"
    QUANTITY = "quantity"
    NOTIONAL = "notional"
    RISK = "risk"
    ATR = "atr"
    VOL_TARGET = "vol_target"
    KELLY = "kelly"
    INVERSE_VOL = "inverse_vol"
    RISK_PARITY = "risk_parity"


_COMMON_KEYS = ("method", "max_position_fraction")

#: The keys each method reads, besides ``method`` and ``max_position_fraction``.
METHOD_KEYS: dict[SizingMethod, tuple[str, ...]] = {
    SizingMethod.FRACTION: ("fraction",),
    SizingMethod.QUANTITY: ("quantity",),
    SizingMethod.NOTIONAL: ("notional",),
    SizingMethod.RISK: ("risk",),
    SizingMethod.ATR: ("risk", "atr_window", "atr_mult"),
    SizingMethod.VOL_TARGET: ("target_vol", "vol_window", "periods_per_year"),
    SizingMethod.KELLY: ("kelly_fraction", "kelly_cap", "window", "min_trades"),
    SizingMethod.INVERSE_VOL: ("fraction", "vol_window"),
    SizingMethod.RISK_PARITY: ("fraction", "vol_window"),
}


@dataclass(frozen=True, slots=True)
class SizingConfig:
    """The sizer chosen in a run spec (its ``sizing`` table); validated when built.

    ``method``: one of :class:`SizingMethod` (a string is accepted and
    normalised). Keys, each read only by the methods named:

    * ``fraction`` (fraction, inverse_vol): share of the capital a full
      position takes, in (0, 1]; 0.9 leaves room for fees, as the engine always has.
    * ``quantity`` (quantity): fixed base quantity, > 0; required by that method.
    * ``notional`` (notional): fixed quote notional, > 0; required by that method.
    * ``risk`` (risk, atr): fraction of equity lost if the stop is hit, in (0, 1).
    * ``atr_window``, ``atr_mult`` (atr): the Wilder ATR's window in bars (>= 1)
      and the stop distance in ATRs (> 0).
    * ``target_vol`` (vol_target): annualised volatility of the position as a
      fraction of its capital, in (0, 5] (0.2 is 20 % a year).
    * ``vol_window`` (vol_target, inverse_vol): log returns in the realised
      volatility estimate, >= 2.
    * ``periods_per_year`` (vol_target): bars per year, > 0, to annualise a
      per-bar volatility; required by that method (see :func:`bars_per_year`).
    * ``kelly_fraction`` (kelly): share of the full Kelly bet taken, in (0, 1].
    * ``kelly_cap`` (kelly): largest share of the capital Kelly may take, in (0, 1].
    * ``window`` (kelly): closed trades in the edge estimate, >= 2.
    * ``min_trades`` (kelly): closed trades needed before Kelly sizes anything,
      in [1, window].
    * ``max_position_fraction`` (all): cap of one position's notional as a
      fraction of equity (of its margin, under leverage), in (0, 1].

    Out-of-range or contradictory values raise :class:`ConfigError` naming the
    key (``sizing.kelly_fraction: must be in (0, 1], got 1.5``). Use
    :meth:`from_spec` to build one from a spec table: it also rejects unknown
    keys and keys the chosen method does not read.
    """

    method: str = SizingMethod.FRACTION
    fraction: float = 0.9
    quantity: float | None = None
    notional: float | None = None
    risk: float = 0.01
    atr_window: int = 14
    atr_mult: float = 2.0
    target_vol: float = 0.2
    vol_window: int = 20
    periods_per_year: float | None = None
    kelly_fraction: float = 0.5
    kelly_cap: float = 1.0
    window: int = 50
    min_trades: int = 20
    max_position_fraction: float = 1.0

    def __post_init__(self) -> None:
        method = _method(self.method)
        if method is None:
            names = ", ".join(repr(m.value) for m in SizingMethod)
            raise ConfigError(f"sizing.method: must be one of {names}, got {self.method!r}")
        object.__setattr__(self, "method", method)
        _in_range("fraction", self.fraction, 0.0, 1.0, hi_open=False)
        _in_range("risk", self.risk, 0.0, 1.0, hi_open=True)
        _in_range("atr_mult", self.atr_mult, 0.0, math.inf, hi_open=True)
        _in_range("target_vol", self.target_vol, 0.0, 5.0, hi_open=False)
        _in_range("kelly_fraction", self.kelly_fraction, 0.0, 1.0, hi_open=False)
        _in_range("kelly_cap", self.kelly_cap, 0.0, 1.0, hi_open=False)
        _in_range("max_position_fraction", self.max_position_fraction, 0.0, 1.0, hi_open=False)
        _integer("atr_window", self.atr_window, 1)
        _integer("vol_window", self.vol_window, 2)
        _integer("window", self.window, 2)
        _integer("min_trades", self.min_trades, 1)
        if self.min_trades > self.window:
            raise ConfigError(
                f"sizing.min_trades: must be <= sizing.window ({self.window}), "
                f"got {self.min_trades!r}"
            )
        for key in ("quantity", "notional", "periods_per_year"):
            value = getattr(self, key)
            if value is None:
                if key in METHOD_KEYS[method]:
                    raise ConfigError(f"sizing.{key}: required by method {method.value!r}")
                continue
            _in_range(key, value, 0.0, math.inf, hi_open=True)
            if key not in METHOD_KEYS[method]:
                raise ConfigError(_unused(key, method))

    @classmethod
    def from_spec(cls, table: Mapping[str, Any]) -> SizingConfig:
        """A config from a spec's ``sizing`` table, e.g. ``{"method": "kelly", "window": 40}``.

        Beyond the checks of the constructor, a key that is not a field, or that
        the chosen method does not read, is an error naming it.
        """
        known = {f.name for f in fields(cls)}
        for key in table:
            if key not in known:
                raise ConfigError(f"sizing.{key}: unknown key; known: {', '.join(sorted(known))}")
        method = _method(table.get("method", SizingMethod.FRACTION))
        if method is not None:  # else the constructor names the bad method
            used = set(_COMMON_KEYS) | set(METHOD_KEYS[method])
            for key in table:
                if key not in used:
                    raise ConfigError(_unused(key, method))
        return cls(**table)

    @property
    def method_enum(self) -> SizingMethod:
        """``method`` typed as the enum it is normalised to."""
        return SizingMethod(self.method)


def _method(v: object) -> SizingMethod | None:
    if not isinstance(v, str):
        return None
    try:
        return SizingMethod(v)
    except ValueError:
        return None


def _unused(key: str, method: SizingMethod) -> str:
    users = [m.value for m, keys in METHOD_KEYS.items() if key in keys]
    return (
        f"sizing.{key}: not read by method {method.value!r} "
        f"(read by {', '.join(repr(u) for u in users)})"
    )


def _in_range(key: str, v: object, lo: float, hi: float, *, hi_open: bool) -> None:
    """``lo < v <= hi`` (``< hi`` when ``hi_open``) for a finite real ``v``, else ConfigError."""
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    if ok:
        assert isinstance(v, int | float)
        ok = lo < v and (v < hi if hi_open else v <= hi)
    if not ok:
        if math.isinf(hi):
            want = f"a number > {lo:g}"
        else:
            want = f"in ({lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ConfigError(f"sizing.{key}: must be {want}, got {v!r}")


def _integer(key: str, v: object, minimum: int) -> None:
    if not (isinstance(v, int) and not isinstance(v, bool) and v >= minimum):
        raise ConfigError(f"sizing.{key}: must be an integer >= {minimum}, got {v!r}")
