"""Which step each recorded event belongs to, and splitting an outbox at a boundary.

A step is ``(b - sync, b]`` on the epoch-aligned grid; an event belongs to the
step whose boundary ``b`` ends it:

* a fill happens at a bar's open and belongs to the step of that bar's close;
* a portfolio decision, or a cancel, taken at a boundary reaches the symbol in
  the step that starts there;
* a funding settlement happens at the close of the bar that settles it (its
  ``settled`` time) and belongs to the step that time falls in;
* anything else (an intent at a bar's close, a self-approved decision at the
  signal) belongs to the step its time falls in.

Results are recorded step by step, so these rules decide the order of rows in
the results and which fills the portfolio books at each boundary.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tickray.engine.events import FillBatch, OrderStatus, Outbox, UpdateBatch

I64 = npt.NDArray[np.int64]

_FILLED = (int(OrderStatus.FILLED), int(OrderStatus.PARTIALLY_FILLED))
_LATER = (int(OrderStatus.CANCELED), int(OrderStatus.EXPIRED))
_DECIDED = (int(OrderStatus.ACCEPTED), int(OrderStatus.REJECTED))


def _ceil(ts: I64, sync: int) -> I64:
    out: I64 = -((-ts) // sync) * sync
    return out


def bar_close(ts: I64, interval: int) -> I64:
    """The close of the bar a fill at ``ts`` happened in: bars open on the interval's
    grid, so a fill at a bar's open or inside it belongs to the bar closing at the
    next grid point."""
    out: I64 = (ts // interval + 1) * interval
    return out


def fill_steps(ts: npt.NDArray[np.int64], interval: int, sync: int) -> I64:
    """Step boundaries of fills at ``ts`` (at their bar's open, or inside the bar):
    the step holding their bar's close."""
    return _ceil(bar_close(ts.astype(np.int64), interval), sync)


def update_steps(
    ts: npt.NDArray[np.int64],
    status: npt.NDArray[np.int8],
    interval: int,
    sync: int,
    self_approval: bool,
) -> I64:
    """Step boundaries of order updates (see the module docstring for the rules)."""
    ts = ts.astype(np.int64)
    step = _ceil(ts, sync)
    filled = (status == _FILLED[0]) | (status == _FILLED[1])
    step[filled] = _ceil(bar_close(ts[filled], interval), sync)
    later = (status == _LATER[0]) | (status == _LATER[1])
    if not self_approval:
        later |= (status == _DECIDED[0]) | (status == _DECIDED[1])
    step[later] = _ceil(ts[later] + 1, sync)
    return step


def split_outbox(
    ob: Outbox,
    boundary: int,
    interval: int,
    sync: int,
    self_approval: bool,
    position_before: float,
) -> tuple[Outbox | None, Outbox]:
    """Cut off the fills and updates of ``ob`` that belong to steps up to ``boundary``.

    Returns (head, tail): the head (or None when nothing is that early) carries
    them with the position after its last fill; the tail keeps the rest, the
    intents and the marks. ``position_before`` is the (net) position before ``ob``.
    """
    f, u = ob.fills, ob.updates
    fm = fill_steps(f.ts, interval, sync) <= boundary if f.size else np.zeros(0, dtype=bool)
    um = (
        update_steps(u.ts, u.status, interval, sync, self_approval) <= boundary
        if u.size
        else np.zeros(0, dtype=bool)
    )
    pay = ob.funding
    pm = _ceil(pay["settled"], sync) <= boundary if len(pay) else np.zeros(0, dtype=bool)
    if not fm.any() and not um.any() and not pm.any():
        return None, ob
    head_fills = FillBatch(f.data[fm])
    if not head_fills.size:
        position = position_before
    elif head_fills.position_side.any():
        # hedge mode: fills carry their side's position; the net moves by their sum
        position = position_before + float((head_fills.side * head_fills.qty).sum())
    else:
        position = float(head_fills.position_after[-1])
    keep = np.flatnonzero(~um)
    head = Outbox(
        ob.symbol,
        boundary,
        [],
        UpdateBatch(u.data[um], [r for r, m in zip(u.reason, um.tolist(), strict=True) if m]),
        head_fills,
        ob.mark_ts[:0],
        ob.mark_px[:0],
        position,
        pay[pm],
    )
    tail = ob._replace(
        updates=UpdateBatch(u.data[keep], [u.reason[k] for k in keep.tolist()]),
        fills=FillBatch(f.data[~fm]),
        funding=pay[~pm],
    )
    return head, tail
