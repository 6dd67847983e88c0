"""Deterministic synthetic universe of bars for demos, tests and benchmarks.

Model, per bar of length ``dt`` (returns are log returns):

- ``r_i = a_i * v_m * z_m + b_i * v_i * z_i``: one market factor plus an idiosyncratic part,
  with ``a_i = sqrt(R2_i) * sigma_i`` and ``b_i = sqrt(1 - R2_i) * sigma_i``; ``R2_i`` is drawn
  in [0.3, 0.7] so pairwise correlations are ``sqrt(R2_i * R2_j)``, roughly 0.3-0.7;
  ``sigma_i`` is the per-bar volatility from an annual volatility drawn in [35%, 90%];
- ``z`` are Student-t innovations (df 4) scaled to unit variance;
- ``v = exp(h - s^2)`` is stochastic volatility with ``h`` a Gaussian AR(1) in log-vol (stationary
  sd ``s`` = 0.45, half-life about 2.8 hours), so E[v^2] = 1;
- prices on a per-symbol tick grid (tick ``10^k`` giving ~5 significant digits; price levels
  log-spaced from about 0.05 to 50,000 across the universe); ``open`` = previous ``close``;
  ``high`` / ``low`` extend beyond max/min(open, close) by a vol-scaled half-normal; all
  prices are integer tick counts (round-half-even) divided by ``10^-k``, so OHLC is consistent;
- volume in base units, rounded to a step size: U-shaped over the UTC day, higher with
  ``|r| / sigma``, log-normal noise; taker buy volume leans with the sign of the return.

Randomness comes only from ``np.random.Generator(np.random.PCG64(seed))``: the per-symbol
parameters first, then fixed-size day blocks in order, so the output does not depend on how
many bars are requested or how they are consumed (a shorter run is a prefix of a longer one).

Perpetual marks and funding (:func:`generate_marks_funding`, :class:`MarkFundingStream`), one
FUNDING row per bar at its close time, for a USD-M perpetual on each symbol:

- ``index_price`` is the bar close (the spot index proxy);
- ``mark_price = index * (1 + x_t)`` on the tick grid, where the basis ``x_t`` is a
  per-symbol mean drawn in [0.2, 1.5] bp, plus a slow AR(1) (stationary sd 3.5 bp, time
  constant 12 h, half-life about 8.3 h: sentiment; Student-t innovations, df 4, so it jumps now
  and then), plus independent noise of sd 2 bp per bar (Student-t with df 30: nearly Gaussian,
  since the exchange's mark is smoothed and does not spike). The basis is thus mostly within
  +-10 bp (sd about 4 bp), wider now and then, and its 8-hour averages leave the +-5 bp band
  around the interest rate often enough to move funding off 0.01% (in about 1 interval in 10);
- ``funding_rate`` at the funding times only, from Binance's formula (see
  :func:`generate_marks_funding`), null on other rows.

Those draws come from a stream of their own per symbol (``SeedSequence(seed,
spawn_key=(PERP_STREAM_KEY, symbol_index))``), so adding them leaves the bars unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from tickray.engine.clock import DAY as DAY_NS
from tickray.engine.clock import HOUR, YEAR_NS
from tickray.feeds.schemas import BARS, FUNDING, TS_TYPE, DataError, interval_ns, ts_numpy
from tickray.feeds.store import (
    read_symbol_specs,
    validate_symbol,
    write_bars,
    write_symbol_specs,
    write_ticks,
)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

T_DF = 4.0
T_SCALE = math.sqrt(T_DF / (T_DF - 2.0))  # sd of a Student-t with df 4
LOGVOL_SD = 0.45  # stationary sd of log volatility
LOGVOL_TAU_NS = 4 * 3600 * 10**9  # log-vol mean reversion time (half-life ~2.8 h)
RANGE_SCALE = 0.6  # high/low excursion in units of the bar's volatility
MIN_NOTIONAL = 5.0

# Perpetual basis and funding (fractions; 0.0001 = 1 bp = 0.01%).
PERP_STREAM_KEY = 0x70657270  # "perp": first spawn key of every symbol's basis stream
BASIS_MEAN_RANGE = (0.00002, 0.00015)  # per-symbol mean basis, drawn uniformly
BASIS_SLOW_SD = 0.00035
BASIS_SLOW_TAU_NS = 12 * HOUR
BASIS_NOISE_SD = 0.0002  # independent per bar: the fast part of the basis
BASIS_NOISE_DF = 30.0
FUNDING_INTERVAL_NS = 8 * HOUR
INTEREST_RATE = 0.0001  # per funding interval (0.03% a day over three 8 h intervals)
FUNDING_DAMPENER = 0.0005  # the +-0.05% clamp on (I - P)
FUNDING_CAP = 0.0075


@dataclass(frozen=True, slots=True)
class SymbolParams:
    """Per-symbol parameters of the synthetic model (prices in quote units per base unit)."""

    symbol: str
    price0: float
    tick_exp: int  # tick size = 10**tick_exp
    step_exp: int  # volume step = 10**step_exp (base units)
    vol_annual: float
    r2: float  # share of variance explained by the market factor
    notional_per_minute: float  # average traded notional per minute, quote units
    h0: float  # initial idiosyncratic log-vol

    @property
    def tick_size(self) -> float:
        return _pow10(self.tick_exp)

    @property
    def step_size(self) -> float:
        return _pow10(self.step_exp)


def _pow10(exp: int) -> float:
    return float(10.0**exp) if exp >= 0 else 1.0 / float(10 ** (-exp))


def _from_ticks(ticks: I64, exp: int) -> F64:
    """Integer tick counts to prices: divide by an exact power of ten for sub-unit ticks,
    which yields the double nearest to the decimal value."""
    if exp >= 0:
        return ticks.astype(np.float64) * float(10**exp)
    return ticks.astype(np.float64) / float(10 ** (-exp))


def draw_params(symbols: Sequence[str], rng: np.random.Generator) -> list[SymbolParams]:
    """Per-symbol parameters; consumes a fixed amount of ``rng`` per symbol, in order."""
    n = len(symbols)
    levels = np.linspace(math.log10(0.05), math.log10(50_000.0), n) if n > 1 else np.zeros(1)
    out: list[SymbolParams] = []
    for i, sym in enumerate(symbols):
        u = rng.random(4)
        g = float(rng.standard_normal())
        level = float(levels[i] + 0.3 * (u[0] - 0.5))
        price0 = 10.0**level
        tick_exp = math.floor(level) - 4
        notional = 10.0 ** (4.0 + 1.5 * u[1])
        step_exp = min(0, -math.ceil(level))  # ~1 base unit at 0.05, 1e-5 at 50,000
        out.append(
            SymbolParams(
                symbol=sym,
                price0=price0,
                tick_exp=tick_exp,
                step_exp=step_exp,
                vol_annual=0.35 + 0.55 * float(u[2]),
                r2=0.3 + 0.4 * float(u[3]),
                notional_per_minute=notional,
                h0=LOGVOL_SD * g,
            )
        )
    return out


def symbol_specs(params: Sequence[SymbolParams]) -> dict[str, dict[str, float]]:
    """Trading rules for ``symbols.json`` from the synthetic parameters."""
    return {
        p.symbol: {
            "tick_size": p.tick_size,
            "step_size": p.step_size,
            "min_qty": p.step_size,
            "min_notional": MIN_NOTIONAL,
        }
        for p in params
    }


def _ar1(eps: F64, phi: float, h0: F64) -> F64:
    """AR(1) ``h_t = phi h_{t-1} + eps_t`` over axis 0 from state ``h0``, vectorised in sub-blocks
    short enough that ``phi**-S`` stays small (numerically stable)."""
    t_len = eps.shape[0]
    sub = 1 if phi <= 0.0 else int(max(1, min(256, 2.0 / -math.log(phi))))
    k = np.arange(sub, dtype=np.float64)
    fwd = phi**k  # phi^0 .. phi^(S-1)
    inv = phi**-k
    out = np.empty_like(eps)
    h = h0.astype(np.float64)
    for s in range(0, t_len, sub):
        e = eps[s : s + sub]
        m = e.shape[0]
        acc = np.cumsum(e * inv[:m, None], axis=0)
        out[s : s + m] = fwd[:m, None] * (phi * h + acc)
        h = out[s + m - 1]
    return out


@dataclass(slots=True)
class _State:
    logp: F64  # unrounded log price
    close_ticks: I64
    h_m: float
    h_i: F64


class _Generator:
    """Holds parameters and carried state; produces one full block at a time."""

    def __init__(self, symbols: Sequence[str], start_ns: int, seed: int, interval: str) -> None:
        if not symbols:
            raise DataError("synthetic: need at least one symbol")
        for sym in symbols:
            validate_symbol(sym)
        if len(set(symbols)) != len(symbols):
            raise DataError(f"synthetic: duplicate symbols in {list(symbols)}")
        self.iv = interval_ns(interval)
        if self.iv > DAY_NS:
            raise DataError(f"synthetic: interval {interval!r} longer than one day")
        self.block = DAY_NS // self.iv
        self.start_ns = int(start_ns)
        self.symbols = list(symbols)
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.params = draw_params(self.symbols, self.rng)
        p = self.params
        k = len(p)
        sigma = np.array([q.vol_annual for q in p]) * math.sqrt(self.iv / YEAR_NS)
        r2 = np.array([q.r2 for q in p])
        self.sigma = sigma
        self.load_m = np.sqrt(r2) * sigma
        self.load_i = np.sqrt(1.0 - r2) * sigma
        self.tick_exp = np.array([q.tick_exp for q in p])
        self.inv_tick = np.array([_pow10(-q.tick_exp) for q in p])
        self.step_exp = [q.step_exp for q in p]
        self.inv_step = np.array([_pow10(-q.step_exp) for q in p])
        self.notional = np.array([q.notional_per_minute for q in p]) * (self.iv / 60e9)
        self.phi = math.exp(-self.iv / LOGVOL_TAU_NS)
        self.eta_sd = LOGVOL_SD * math.sqrt(1.0 - self.phi**2)
        logp0 = np.log(np.array([q.price0 for q in p]))
        close0 = np.maximum(np.rint(np.exp(logp0) * self.inv_tick), 1).astype(np.int64)
        self.state = _State(
            logp=logp0,
            close_ticks=close0,
            h_m=0.0,
            h_i=np.array([q.h0 for q in p]),
        )
        self.k = k
        self.blocks_done = 0

    def next_block(self) -> dict[str, pa.Table]:
        """Generate the next full block (one UTC-day's worth of bars) for every symbol."""
        rng, n, k, st = self.rng, self.block, self.k, self.state
        # Fixed draw order and shapes per block: this is what makes chunking irrelevant.
        z_m = rng.standard_t(T_DF, size=n) / T_SCALE
        z_i = rng.standard_t(T_DF, size=(n, k)) / T_SCALE
        eta = rng.standard_normal(size=(n, k + 1)) * self.eta_sd
        ext = np.abs(rng.standard_normal(size=(2, n, k)))
        vol_noise = rng.standard_normal(size=(n, k))
        taker_noise = rng.standard_normal(size=(n, k))

        h = _ar1(eta, self.phi, np.concatenate(([st.h_m], st.h_i)))
        st.h_m = float(h[-1, 0])
        st.h_i = h[-1, 1:].copy()
        v = np.exp(h - LOGVOL_SD**2)
        v_m, v_i = v[:, :1], v[:, 1:]

        ret = self.load_m * v_m * z_m[:, None] + self.load_i * v_i * z_i
        inst_vol = np.sqrt((self.load_m * v_m) ** 2 + (self.load_i * v_i) ** 2)
        logp = st.logp + np.cumsum(ret, axis=0)
        st.logp = logp[-1].copy()
        price = np.exp(logp)

        close_t = np.maximum(np.rint(price * self.inv_tick), 1).astype(np.int64)
        open_t = np.empty_like(close_t)
        open_t[0] = st.close_ticks
        open_t[1:] = close_t[:-1]
        st.close_ticks = close_t[-1].copy()
        scale = RANGE_SCALE * inst_vol * price * self.inv_tick  # one bar-vol in ticks
        up = np.rint(ext[0] * scale).astype(np.int64)
        down = np.rint(ext[1] * scale).astype(np.int64)
        high_t = np.maximum(open_t, close_t) + up
        low_t = np.maximum(np.minimum(open_t, close_t) - down, 1)

        ts = self.start_ns + (self.blocks_done * n + np.arange(n, dtype=np.int64)) * self.iv
        self.blocks_done += 1
        tod = ((ts + self.iv // 2) % DAY_NS) / DAY_NS
        u_shape = (0.55 + 1.8 * (2.0 * tod - 1.0) ** 2) / 1.15
        shock = np.abs(ret) / inst_vol
        activity = u_shape[:, None] * (0.5 + 0.7 * shock) * v_i * np.exp(0.3 * vol_noise - 0.045)
        vol_steps = np.rint(self.notional * activity / price * self.inv_step).astype(np.int64)
        buy_frac = np.clip(0.5 + 0.25 * np.tanh(ret / inst_vol) + 0.08 * taker_noise, 0.02, 0.98)
        buy_steps = np.rint(vol_steps * buy_frac).astype(np.int64)

        ts_arr = pa.array(ts, type=pa.int64()).cast(TS_TYPE)
        out: dict[str, pa.Table] = {}
        for j, p in enumerate(self.params):
            o = _from_ticks(open_t[:, j], p.tick_exp)
            hi = _from_ticks(high_t[:, j], p.tick_exp)
            lo = _from_ticks(low_t[:, j], p.tick_exp)
            c = _from_ticks(close_t[:, j], p.tick_exp)
            vol = _from_ticks(vol_steps[:, j], p.step_exp)
            vwap = (o + hi + lo + c) / 4.0
            quote = vol * vwap
            trades = np.where(
                vol_steps[:, j] > 0,
                np.maximum(1, np.rint(quote / (self.notional[j] / 150.0))),
                0,
            ).astype(np.int64)
            out[p.symbol] = pa.Table.from_arrays(
                [
                    ts_arr,
                    pa.array(o),
                    pa.array(hi),
                    pa.array(lo),
                    pa.array(c),
                    pa.array(vol),
                    pa.array(quote),
                    pa.array(trades),
                    pa.array(_from_ticks(buy_steps[:, j], p.step_exp)),
                ],
                schema=BARS,
            )
        return out


def iter_generate(
    symbols: Sequence[str],
    start_ns: int,
    n_bars: int,
    seed: int,
    interval: str = "1m",
) -> Iterator[dict[str, pa.Table]]:
    """Yield ``{symbol: BARS table}`` one day-sized block at a time (the last may be shorter).

    Bar open times are ``start_ns + i * interval`` (ns, UTC) for ``i < n_bars``; output is
    identical to :func:`generate_bars` and independent of ``n_bars`` for the bars produced.
    """
    if n_bars < 0:
        raise DataError(f"synthetic: n_bars must be >= 0, got {n_bars}")
    gen = _Generator(symbols, start_ns, seed, interval)
    remaining = int(n_bars)
    while remaining > 0:
        block = gen.next_block()
        take = min(remaining, gen.block)
        remaining -= take
        yield block if take == gen.block else {s: t.slice(0, take) for s, t in block.items()}


def generate_bars(
    symbols: Sequence[str],
    start_ns: int,
    n_bars: int,
    seed: int,
    interval: str = "1m",
) -> dict[str, pa.Table]:
    """``{symbol: BARS table}`` of ``n_bars`` synthetic bars each (see module docstring)."""
    parts: dict[str, list[pa.Table]] = {s: [] for s in symbols}
    for block in iter_generate(symbols, start_ns, n_bars, seed, interval):
        for sym, table in block.items():
            parts[sym].append(table)
    return {
        sym: (pa.concat_tables(ts).combine_chunks() if ts else BARS.empty_table())
        for sym, ts in parts.items()
    }


def synthetic_params(symbols: Sequence[str], seed: int) -> list[SymbolParams]:
    """The parameters :func:`generate_bars` uses for ``symbols`` and ``seed``."""
    return draw_params(list(symbols), np.random.Generator(np.random.PCG64(seed)))


def perp_rng(seed: int, symbol_index: int) -> np.random.Generator:
    """The random stream of one symbol's perpetual basis: separate from the bars' stream."""
    if symbol_index < 0:
        raise DataError(f"synthetic: symbol_index must be >= 0, got {symbol_index}")
    seq = np.random.SeedSequence(seed, spawn_key=(PERP_STREAM_KEY, symbol_index))
    return np.random.Generator(np.random.PCG64(seq))


def funding_from_premium(avg_premium: F64, interest_rate: float, cap: float) -> F64:
    """Binance USD-M funding rate from the average premium index ``P`` of each interval:
    ``round(clamp(P + clamp(I - P, -0.0005, 0.0005), -cap, cap), 8)``."""
    damped = avg_premium + np.clip(interest_rate - avg_premium, -FUNDING_DAMPENER, FUNDING_DAMPENER)
    return np.asarray(np.round(np.clip(damped, -cap, cap), 8), dtype=np.float64)


@dataclass(slots=True)
class _OpenWindow:
    end_ns: int  # the funding time that closes the window
    weighted: F64  # weight * premium of the bars seen so far
    weights: F64


class MarkFundingStream:
    """Mark prices and funding rates for one symbol's bars, fed in time order in pieces of any
    size: the basis state and the open funding window carry over from one call to the next, so
    the rows do not depend on how the bars are split (see :func:`generate_marks_funding`)."""

    def __init__(
        self,
        seed: int,
        symbol_index: int,
        tick_exp: int,
        interval: str = "1m",
        *,
        funding_interval_ns: int = FUNDING_INTERVAL_NS,
        interest_rate: float = INTEREST_RATE,
        cap: float = FUNDING_CAP,
    ) -> None:
        if funding_interval_ns <= 0:
            raise DataError(
                f"synthetic: funding_interval_ns must be > 0, got {funding_interval_ns}"
            )
        if not (math.isfinite(interest_rate) and math.isfinite(cap) and cap >= 0.0):
            raise DataError(f"synthetic: bad interest_rate {interest_rate} or cap {cap}")
        self.iv = interval_ns(interval)
        self.fi = int(funding_interval_ns)
        self.tick_exp = int(tick_exp)
        self.inv_tick = _pow10(-self.tick_exp)
        self.interest_rate = float(interest_rate)
        self.cap = float(cap)
        self.rng = perp_rng(seed, symbol_index)
        lo, hi = BASIS_MEAN_RANGE
        self.mean = lo + (hi - lo) * float(self.rng.random())
        self.phi = math.exp(-self.iv / BASIS_SLOW_TAU_NS)
        self.eps_sd = BASIS_SLOW_SD * math.sqrt(1.0 - self.phi**2)
        self.slow = BASIS_SLOW_SD * self.rng.standard_normal(1)  # from the stationary law
        self.last_open_ns: int | None = None
        self.window: _OpenWindow | None = None

    def _basis(self, n: int) -> F64:
        """The next ``n`` values of the basis ``x_t``. Two draws per bar, in bar order (column 0
        with df 4 drives the slow part, column 1 with df 30 is the noise), so the values do not
        depend on how the bars are split."""
        df = np.array([T_DF, BASIS_NOISE_DF])
        z = self.rng.standard_t(df, size=(n, 2)) / np.sqrt(df / (df - 2.0))
        slow = _ar1(z[:, :1] * self.eps_sd, self.phi, self.slow)
        self.slow = slow[-1].copy()
        return self.mean + slow[:, 0] + BASIS_NOISE_SD * z[:, 1]

    def _funding(self, close_ns: I64, premium: F64) -> F64:
        """Funding rate at each close on a funding time, NaN elsewhere (loops once per funding
        time, not per bar: ``math.fsum`` makes each average exact, whatever the split)."""
        fi = self.fi
        end = -(-close_ns // fi) * fi  # the funding time closing each bar's window
        weights = (close_ns - (end - fi)).astype(np.float64) / self.iv
        weighted = weights * premium
        carry = self.window if self.window is not None and self.window.end_ns == end[0] else None

        def window(lo: int, hi: int) -> tuple[F64, F64]:
            if lo == 0 and carry is not None:
                return (
                    np.concatenate((carry.weighted, weighted[:hi])),
                    np.concatenate((carry.weights, weights[:hi])),
                )
            return weighted[lo:hi], weights[lo:hi]

        last = np.flatnonzero(close_ns % fi == 0)
        first = np.searchsorted(end, end[last], side="left")
        avg = np.empty(last.size, dtype=np.float64)
        for k, (lo, hi) in enumerate(zip(first.tolist(), (last + 1).tolist(), strict=True)):
            wp, w = window(lo, hi)
            avg[k] = math.fsum(wp.tolist()) / math.fsum(w.tolist())
        rate = np.full(close_ns.shape[0], np.nan)
        rate[last] = funding_from_premium(avg, self.interest_rate, self.cap)

        n = close_ns.shape[0]
        if last.size and last[-1] == n - 1:
            self.window = None
        else:
            lo = int(np.searchsorted(end, end[-1], side="left"))
            wp, w = window(lo, n)
            self.window = _OpenWindow(int(end[-1]), wp.copy(), w.copy())
        return rate

    def next_rows(self, bars: pa.Table) -> pa.Table:
        """FUNDING rows for the next ``bars`` (BARS schema, after those of earlier calls)."""
        n = bars.num_rows
        if n == 0:
            return FUNDING.empty_table()
        open_ns = ts_numpy(bars.column("ts"))
        if self.last_open_ns is not None and open_ns[0] <= self.last_open_ns:
            raise DataError("synthetic: bars must come in time order, after the previous ones")
        if n > 1 and np.any(np.diff(open_ns) <= 0):
            raise DataError("synthetic: bar times must be strictly increasing")
        self.last_open_ns = int(open_ns[-1])
        index = np.asarray(bars.column("close").to_numpy(), dtype=np.float64)
        basis = self._basis(n)
        mark_ticks = np.maximum(np.rint(index * (1.0 + basis) * self.inv_tick), 1).astype(np.int64)
        mark = _from_ticks(mark_ticks, self.tick_exp)
        close_ns = open_ns + self.iv
        rate = self._funding(close_ns, mark / index - 1.0)
        return pa.Table.from_arrays(
            [
                pa.array(close_ns, type=pa.int64()).cast(TS_TYPE),
                pa.array(rate, mask=np.isnan(rate)),
                pa.array(mark),
                pa.array(index),
            ],
            schema=FUNDING,
        )


def generate_marks_funding(
    bars: pa.Table,
    *,
    seed: int,
    symbol_index: int,
    tick_exp: int,
    interval: str = "1m",
    funding_interval_ns: int = FUNDING_INTERVAL_NS,
    interest_rate: float = INTEREST_RATE,
    cap: float = FUNDING_CAP,
) -> pa.Table:
    """Mark prices and funding rates of a USD-M perpetual on one symbol's synthetic ``bars``.

    One FUNDING row per bar, at the bar's close time (``ts`` = open + ``interval``, ns UTC):

    - ``index_price``: the bar close, standing in for the spot index;
    - ``mark_price``: ``index * (1 + x_t)`` rounded (half-even) to the tick ``10**tick_exp``,
      ``x_t`` the synthetic basis of the module docstring, drawn from :func:`perp_rng`
      ``(seed, symbol_index)`` (pass the symbol's position in the universe and its tick
      exponent, as :func:`synthetic_params` gives them, to match :func:`write_demo_dataset`).
      Binance publishes marks with more digits than the tick; keeping them on the tick grid
      quantises the premium to one tick (about 0.1-1 bp here), which the 8 h average smooths out;
    - ``funding_rate``: null except at closes ``T`` that are multiples of
      ``funding_interval_ns`` since the epoch (00:00, 08:00 and 16:00 UTC for 8 h), where it is
      Binance's USD-M rate for the interval ``(T - funding_interval_ns, T]``::

          p_t = mark_t / index_t - 1           premium index of the bar closing at t,
                                               from the stored (rounded) prices
          w_t = (t - (T - funding_interval_ns)) / interval
                                               time weight: 1, 2, ..., 480 for 1m bars
          P   = sum(w_t * p_t) / sum(w_t)      over the bars closing in the interval
          F   = round(clamp(P + clamp(I - P, -0.0005, +0.0005), -cap, +cap), 8)

      with ``I = interest_rate`` (0.01% per 8 h), so ``F = I`` whenever ``P`` is within 0.05%
      of ``I``. Binance averages a premium index sampled every 5 s with weights growing
      1, 2, ..., n; here the bars are the samples. When the bars start inside an interval, the
      average covers only the bars present; a funding time that no bar closes on (a gap) gets
      no row.

    The same arguments give the same rows; the bars are not changed.
    """
    stream = MarkFundingStream(
        seed,
        symbol_index,
        tick_exp,
        interval,
        funding_interval_ns=funding_interval_ns,
        interest_rate=interest_rate,
        cap=cap,
    )
    return stream.next_rows(bars)


def demo_symbols(n_symbols: int) -> list[str]:
    """Symbol names of the demo universe: SYN00USDT, SYN01USDT, ..."""
    return [f"SYN{i:02d}USDT" for i in range(n_symbols)]


def write_demo_dataset(
    root: str | Path,
    n_symbols: int = 8,
    days: int = 30,
    seed: int = 7,
    start: str = "2024-01-01",
    *,
    perp: bool = True,
) -> list[str]:
    """Write ``days`` of synthetic 1m bars for ``n_symbols`` into the store layout under ``root``
    plus their trading rules in ``ROOT/symbols.json``; returns the symbols.

    With ``perp`` (the default) each symbol also gets its perpetual's mark prices and funding
    rates (:func:`generate_marks_funding`, one row per bar close) as ``funding`` ticks, read
    back with ``read_ticks(root, "funding", symbol)``; the bars are the same either way.
    Memory holds at most about one month of bars (and of funding rows) per symbol.
    """
    if n_symbols < 1 or days < 0:
        raise DataError(f"synthetic: need n_symbols >= 1 and days >= 0, got {n_symbols}, {days}")
    try:
        start_ns = int(np.datetime64(start, "ns").astype(np.int64))
    except ValueError:
        raise DataError(f"synthetic: bad start date {start!r}: expected YYYY-MM-DD") from None
    symbols = demo_symbols(n_symbols)
    params = synthetic_params(symbols, seed)
    interval = "1m"
    n_bars = days * (DAY_NS // interval_ns(interval))
    buffers: dict[str, list[pa.Table]] = {s: [] for s in symbols}
    buffered_month: np.datetime64 | None = None
    streams = (
        {p.symbol: MarkFundingStream(seed, j, p.tick_exp, interval) for j, p in enumerate(params)}
        if perp
        else {}
    )
    held: dict[str, pa.Table] = {}

    def write_funding(sym: str, bars: pa.Table, final: bool) -> None:
        rows = streams[sym].next_rows(bars)
        if sym in held:
            rows = pa.concat_tables([held.pop(sym), rows])
        if not final:
            # The last close (00:00 of the next month) opens a day file the next piece
            # continues: hold it back so that every day file is written once, whole.
            days_of = ts_numpy(rows.column("ts")) // DAY_NS
            cut = int(np.searchsorted(days_of, days_of[-1], side="left"))
            held[sym] = rows.slice(cut)
            rows = rows.slice(0, cut)
        write_ticks(root, "funding", sym, rows)

    def flush(final: bool) -> None:
        for sym in symbols:
            if buffers[sym]:
                bars = pa.concat_tables(buffers[sym])
                buffers[sym].clear()
                write_bars(root, sym, interval, bars)
                if perp:
                    write_funding(sym, bars, final)

    def month_of(table: pa.Table, row: int) -> np.datetime64:
        return np.datetime64(table.column("ts")[row].value, "ns").astype("datetime64[M]")

    for block in iter_generate(symbols, start_ns, n_bars, seed, interval):
        first_table = block[symbols[0]]
        if buffered_month is not None and month_of(first_table, 0) != buffered_month:
            flush(final=False)  # the buffered months are complete: write each month file once
        for sym, table in block.items():
            buffers[sym].append(table)
        buffered_month = month_of(first_table, -1)
    flush(final=True)

    specs = read_symbol_specs(root)
    specs.update(symbol_specs(params))
    write_symbol_specs(root, specs)
    return symbols


def tick_counts(prices: F64, tick_exp: int) -> I64:
    """Prices back to integer tick counts (for checks): ``rint(price / 10**tick_exp)``."""
    return np.rint(prices * _pow10(-tick_exp)).astype(np.int64)
