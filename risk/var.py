"""Value at risk, expected shortfall and exposure correlation of a portfolio.

Inputs are a window of per-symbol **simple returns** ``returns`` (2-D, one row
per bar, oldest first, one column per symbol: ``p[t] / p[t-1] - 1``) and the
portfolio's signed **position notionals** ``notionals`` (quote currency, one per
column: quantity times price, negative for a short). A row's portfolio P&L is
``returns[t] @ notionals``: what the positions held now would have made over
that bar. The **loss** is minus the P&L.

Sign convention: VaR and CVaR are **losses, reported as positive quote
amounts**. ``var = 1200.0`` at 0.99 reads "a bar's loss exceeds 1200 with
probability at most 1%". A tail that is a gain (a portfolio that made money
even in its worst bars) has a VaR of 0.0, never a negative one; CVaR is
likewise floored at 0 and is never below VaR.

Historical quantile: the VaR at confidence ``c`` over ``n`` bars is the order
statistic ``L(k)`` of the ascending losses with ``k = ceil(n * c)`` (1-based),
without interpolation: Hyndman and Fan's definition 1, the inverse of the
empirical distribution function, ``numpy.quantile(losses, c,
method="inverted_cdf")``, which is what computes it here. With 250 bars at
0.99 that is the 248th smallest loss, the third largest.

Historical CVaR (expected shortfall) is the mean of the quantile function above
``c``, ``1 / (1 - c) * integral from c to 1 of VaR_u du``, computed exactly for
the empirical distribution by the Rockafellar-Uryasev form ``VaR + mean((L -
VaR)+) / (1 - c)``. When ``n * (1 - c)`` is a whole number ``m`` it is the mean
of the ``m`` largest losses; otherwise the boundary loss gets a fractional
weight (10 bars at 0.75: ``0.2 L(8) + 0.4 L(9) + 0.4 L(10)``).

Parametric (Gaussian) VaR and CVaR assume the P&L is normal with the window's
sample covariance (``ddof = 1``): ``sigma = sqrt(w' S w)``, ``VaR = z sigma - mu``
and ``CVaR = sigma phi(z) / (1 - c) - mu``, ``z`` the standard normal
``c``-quantile and ``phi`` its density. The mean ``mu`` is zero by default (the
RiskMetrics convention: a short window's mean return is noise, and ignoring it
errs on the side of caution for a portfolio that has been winning); pass
``with_mean=True`` for the sample mean of the P&L.

Missing data: columns whose notional is zero are not read, so a symbol without
history yet (NaN returns) does not matter until it is held. A NaN in a column
that is held, or fewer than two rows, gives NaN: the measure has no opinion,
and it is the caller's choice what that means (the limit checks pass).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tickray.engine.riskconfig import VAR_METHODS as METHODS

"""The VaR methods :func:`var_cvar` accepts."""


def _held(
    returns: ArrayLike, notionals: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The columns of ``returns`` that are held (nonzero notional) and their notionals."""
    r = np.asarray(returns, dtype=np.float64)
    w = np.asarray(notionals, dtype=np.float64)
    if r.ndim != 2 or w.ndim != 1 or r.shape[1] != w.shape[0]:
        raise ValueError(
            f"returns must be (bars x symbols) and notionals (symbols,), got {r.shape} and {w.shape}"
        )
    held = w != 0.0
    return r[:, held], w[held]


def portfolio_pnl(returns: ArrayLike, notionals: ArrayLike) -> NDArray[np.float64]:
    """Per-bar P&L of the positions ``notionals`` over the window: ``returns @ notionals``.

    Columns with zero notional are skipped, so their NaN do not spread. A
    window with no held column is all zeros.
    """
    r, w = _held(returns, notionals)
    out: NDArray[np.float64] = r @ w
    return out


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def _usable(pnl: NDArray[np.float64]) -> bool:
    return pnl.shape[0] >= 2 and bool(np.isfinite(pnl).all())


def historical_var(returns: ArrayLike, notionals: ArrayLike, confidence: float) -> float:
    """Historical VaR: the ``ceil(n c)``-th smallest of the ``n`` losses, floored at 0.

    ``numpy.quantile(-pnl, confidence, method="inverted_cdf")``; NaN when the
    window has fewer than two rows or a held column has NaN.
    """
    _check_confidence(confidence)
    return _historical(portfolio_pnl(returns, notionals), confidence)[0]


def historical_cvar(returns: ArrayLike, notionals: ArrayLike, confidence: float) -> float:
    """Historical CVaR (expected shortfall): the mean loss beyond the VaR quantile.

    Exactly ``1 / (1 - c)`` times the integral of the empirical quantile
    function from ``c`` to 1 (see the module's notes), floored at 0.
    """
    _check_confidence(confidence)
    return _historical(portfolio_pnl(returns, notionals), confidence)[1]


def _historical(pnl: NDArray[np.float64], confidence: float) -> tuple[float, float]:
    """(VaR, CVaR) of a P&L sample, both floored at 0; NaN when it cannot say."""
    if not _usable(pnl):
        return math.nan, math.nan
    loss = -pnl
    q = float(np.quantile(loss, confidence, method="inverted_cdf"))
    es = q + float(np.maximum(loss - q, 0.0).mean()) / (1.0 - confidence)
    return max(q, 0.0), max(es, q, 0.0)


def parametric_var(
    returns: ArrayLike, notionals: ArrayLike, confidence: float, *, with_mean: bool = False
) -> float:
    """Gaussian VaR: ``z sigma - mu``, floored at 0 (``mu = 0`` unless ``with_mean``)."""
    _check_confidence(confidence)
    return _parametric(portfolio_pnl(returns, notionals), confidence, with_mean)[0]


def parametric_cvar(
    returns: ArrayLike, notionals: ArrayLike, confidence: float, *, with_mean: bool = False
) -> float:
    """Gaussian CVaR: ``sigma phi(z) / (1 - c) - mu``, floored at 0."""
    _check_confidence(confidence)
    return _parametric(portfolio_pnl(returns, notionals), confidence, with_mean)[1]


def _parametric(
    pnl: NDArray[np.float64], confidence: float, with_mean: bool
) -> tuple[float, float]:
    """(VaR, CVaR) of a normal P&L with the sample's standard deviation (ddof 1)."""
    if not _usable(pnl):
        return math.nan, math.nan
    # var(returns @ w) with ddof 1 is w' S w for S the sample covariance matrix
    sigma = float(pnl.std(ddof=1))
    mu = float(pnl.mean()) if with_mean else 0.0
    z = NormalDist().inv_cdf(confidence)
    density = math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    var = z * sigma - mu
    es = sigma * density / (1.0 - confidence) - mu
    return max(var, 0.0), max(es, var, 0.0)


def var_cvar(
    returns: ArrayLike, notionals: ArrayLike, confidence: float, method: str = "historical"
) -> tuple[float, float]:
    """(VaR, CVaR) by ``method`` (``"historical"`` or zero-mean ``"parametric"``)."""
    _check_confidence(confidence)
    return pnl_var_cvar(portfolio_pnl(returns, notionals), confidence, method)


def pnl_var_cvar(pnl: ArrayLike, confidence: float, method: str) -> tuple[float, float]:
    """(VaR, CVaR) of a window of portfolio P&L (quote, one value per bar) directly."""
    p = np.asarray(pnl, dtype=np.float64)
    if method == "historical":
        return _historical(p, confidence)
    if method == "parametric":
        return _parametric(p, confidence, False)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def exposure_correlations(returns: ArrayLike, notionals: ArrayLike) -> NDArray[np.float64]:
    """For each symbol ``i``: the Pearson correlation, over the window, of its returns
    with the P&L of the *other* positions, ``sum over j != i of notionals[j] * returns[:, j]``.

    This is how much a position in ``i`` would move with the exposure already
    held (a long in ``i``; a short's correlation is the negative). NaN where
    it cannot say: fewer than two rows, a NaN in column ``i`` or in another
    held column, no other position, or a flat series (zero variance).
    """
    r = np.asarray(returns, dtype=np.float64)
    w = np.asarray(notionals, dtype=np.float64)
    if r.ndim != 2 or w.ndim != 1 or r.shape[1] != w.shape[0]:
        raise ValueError(
            f"returns must be (bars x symbols) and notionals (symbols,), got {r.shape} and {w.shape}"
        )
    n_rows = r.shape[0]
    out = np.full(w.shape[0], np.nan)
    if n_rows < 2:
        return out
    missing = ~np.isfinite(r)
    r0 = np.where(missing, 0.0, r)
    bad_held = missing.any(axis=0) & (w != 0.0)
    # column i of ``others`` is the P&L of the book without i: weights w with w[i] zeroed
    # (a product per column rather than total minus own share, which cancels badly)
    weights = np.where(np.eye(w.shape[0], dtype=bool), 0.0, w[:, None])
    others = r0 @ weights
    x = r0 - r0.mean(axis=0)
    y = others - others.mean(axis=0)
    sxy = (x * y).sum(axis=0)
    sxx = (x * x).sum(axis=0)
    syy = (y * y).sum(axis=0)
    n_bad_others = bad_held.sum() - bad_held
    ok = ~missing.any(axis=0) & (n_bad_others == 0) & (sxx > 0.0) & (syy > 0.0)
    out[ok] = sxy[ok] / np.sqrt(sxx[ok] * syy[ok])
    clipped: NDArray[np.float64] = np.clip(out, -1.0, 1.0)
    return clipped


def exposure_correlation(returns: ArrayLike, notionals: ArrayLike, index: int) -> float:
    """:func:`exposure_correlations` for the one symbol at column ``index``."""
    return float(exposure_correlations(returns, notionals)[index])
