"""The msgpack codec: lossless round trips and clear errors on bad bytes."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickray.engine.codec import (
    SCHEMA_VERSION,
    CodecError,
    decode_inboxes,
    decode_outboxes,
    encode_inboxes,
    encode_outboxes,
)
from tickray.engine.events import (
    EMPTY_FILLS,
    EMPTY_UPDATES,
    FUNDING_DTYPE,
    Control,
    ControlKind,
    Fill,
    FillBatch,
    Inbox,
    Liquidity,
    OrderIntent,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Outbox,
    RiskAction,
    RiskDecision,
    Side,
    TimeInForce,
    UpdateBatch,
    fill_batch,
    update_batch,
)

i64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
ts = st.integers(min_value=0, max_value=2**62)
fl = st.floats(allow_nan=False, allow_infinity=True, width=64)
opt_fl = st.none() | fl
sym = st.text(min_size=1, max_size=12)
text = st.text(max_size=40)

intents = st.builds(
    OrderIntent,
    sym,
    i64,
    ts,
    st.sampled_from(Side),
    st.sampled_from(OrderType),
    fl,
    opt_fl,
    opt_fl,
    st.sampled_from(TimeInForce),
    st.booleans(),
    fl,
    text,
)
updates = st.builds(
    OrderUpdate,
    sym,
    i64,
    ts,
    st.sampled_from(OrderStatus),
    st.sampled_from(Side),
    st.sampled_from(OrderType),
    fl,
    fl,
    opt_fl,
    text,
)
fills = st.builds(
    Fill, sym, i64, i64, ts, st.sampled_from(Side), fl, fl, fl, st.sampled_from(Liquidity)
)
decisions = st.builds(RiskDecision, sym, i64, ts, st.sampled_from(RiskAction), fl, text)
controls = st.builds(
    Control, st.sampled_from(ControlKind), ts, sym, text, st.floats(allow_nan=False)
)


@st.composite
def outboxes(draw: st.DrawFn) -> Outbox:
    n = draw(st.integers(0, 20))
    mts = np.array(draw(st.lists(ts, min_size=n, max_size=n)), dtype=np.int64)
    mpx = np.array(draw(st.lists(st.floats(width=64), min_size=n, max_size=n)), dtype=np.float64)
    name = draw(sym)
    # an outbox's fills and updates are its own symbol's; they travel as columns
    ups = [u._replace(symbol=name) for u in draw(st.lists(updates, max_size=6))]
    fs = [f._replace(symbol=name) for f in draw(st.lists(fills, max_size=6))]
    pnl = draw(st.lists(fl, min_size=len(fs), max_size=len(fs)))
    pos = draw(st.lists(fl, min_size=len(fs), max_size=len(fs)))
    return Outbox(
        name,
        draw(ts),
        draw(st.lists(intents, max_size=4)),
        update_batch(ups),
        fill_batch(fs, pnl, pos),
        mts,
        mpx,
        draw(fl),
        funding_records(draw),
    )


def funding_records(draw: st.DrawFn) -> np.ndarray:
    n = draw(st.integers(0, 4))
    real = st.floats(allow_nan=False, allow_infinity=False)
    rows = [(draw(ts), draw(ts), draw(real), draw(real), draw(real), draw(real)) for _ in range(n)]
    return np.array(rows, dtype=FUNDING_DTYPE)


inboxes = st.builds(Inbox, sym, ts, st.lists(decisions, max_size=5), st.lists(controls, max_size=3))


def _same_batch(a: FillBatch | UpdateBatch, b: FillBatch | UpdateBatch) -> bool:
    same = a.data.tobytes() == b.data.tobytes()  # NaN survives bit for bit
    return same and getattr(a, "reason", None) == getattr(b, "reason", None)


def _same_outbox(a: Outbox, b: Outbox) -> bool:
    return (
        a[:3] == b[:3]
        and _same_batch(a.updates, b.updates)
        and _same_batch(a.fills, b.fills)
        and a.position == b.position
        and a.mark_ts.tobytes() == b.mark_ts.tobytes()
        and a.mark_px.tobytes() == b.mark_px.tobytes()  # NaN marks survive bit for bit
        and a.funding.tobytes() == b.funding.tobytes()
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(outboxes(), max_size=4))
def test_outboxes_round_trip_losslessly(boxes: list[Outbox]) -> None:
    back = decode_outboxes(encode_outboxes(boxes))
    assert len(back) == len(boxes)
    assert all(_same_outbox(a, b) for a, b in zip(boxes, back, strict=True))
    # enums come back as enums, not bare ints; batches give back their typed events
    for box, orig in zip(back, boxes, strict=True):
        assert all(isinstance(i.side, Side) and isinstance(i.tif, TimeInForce) for i in box.intents)
        assert box.fills.events(box.symbol) == orig.fills.events(orig.symbol)
        assert box.updates.events(box.symbol) == orig.updates.events(orig.symbol)


@settings(max_examples=150, deadline=None)
@given(st.lists(inboxes, max_size=4))
def test_inboxes_round_trip_losslessly(boxes: list[Inbox]) -> None:
    assert decode_inboxes(encode_inboxes(boxes)) == boxes


def test_messages_are_arrays_not_maps() -> None:
    it = OrderIntent(
        "X", 1, 2, Side.BUY, OrderType.MARKET, 1.0, None, None, TimeInForce.GTC, False, 3.0, "t"
    )
    box = Outbox("X", 5, [it], EMPTY_UPDATES, EMPTY_FILLS, np.empty(0, np.int64), np.empty(0), 0.0)
    frame = msgpack.unpackb(encode_outboxes([box]), raw=False)
    assert frame[:3] == ["tkr", SCHEMA_VERSION, 1]
    assert frame[3][0][2][0] == ["X", 1, 2, 1, 1, 1.0, None, None, 1, False, 3.0, "t", 0]


def test_fills_travel_as_one_record_array() -> None:
    f = Fill("X", 1, 1, 5, Side.BUY, 1.0, 2.0, 0.1, Liquidity.TAKER)
    batch = fill_batch([f], [0.0], [1.0])
    box = Outbox("X", 5, [], EMPTY_UPDATES, batch, np.empty(0, np.int64), np.empty(0), 1.0)
    frame = msgpack.unpackb(encode_outboxes([box]), raw=False)
    assert frame[3][0][4][0] == 1 and isinstance(frame[3][0][4][1], bytes)
    bad = batch.data.copy()
    bad["side"][0] = 7  # no such side
    box = box._replace(fills=FillBatch(bad))
    with pytest.raises(CodecError, match=r"outbox\[0\].fills.side: unknown value 7"):
        decode_outboxes(encode_outboxes([box]))
    raw = msgpack.unpackb(encode_outboxes([box]), raw=False)
    raw[3][0][4][1] = raw[3][0][4][1][:-3]
    with pytest.raises(CodecError, match="bytes for 1 records of"):
        decode_outboxes(msgpack.packb(raw, use_bin_type=True))


def _frame() -> bytes:
    d = RiskDecision("BTCUSDT", 7, 100, RiskAction.RESIZE, 0.5, "cash")
    return encode_inboxes([Inbox("BTCUSDT", 100, [d], [])])


def test_garbage_bytes_raise_a_clear_error() -> None:
    with pytest.raises(CodecError, match="not a tickray frame"):
        decode_inboxes(b"\xc1\xff\x00garbage")
    with pytest.raises(CodecError, match="missing the 'tkr' header"):
        decode_inboxes(msgpack.packb([1, 2, 3]))


@pytest.mark.parametrize("cut", [1, 5, 20, -1])
def test_truncated_bytes_raise_a_clear_error(cut: int) -> None:
    data = _frame()
    with pytest.raises(CodecError, match="truncated or corrupt"):
        decode_inboxes(data[:cut])


def test_wrong_version_is_refused_with_both_versions_named() -> None:
    raw = msgpack.unpackb(_frame(), raw=False)
    raw[1] = SCHEMA_VERSION + 1
    with pytest.raises(
        CodecError, match=f"version {SCHEMA_VERSION + 1}.*reads version {SCHEMA_VERSION}"
    ):
        decode_inboxes(msgpack.packb(raw))


def test_wrong_kind_and_bad_fields_are_named() -> None:
    with pytest.raises(CodecError, match="expected a frame of outboxes, got inboxes"):
        decode_outboxes(_frame())
    raw = msgpack.unpackb(_frame(), raw=False)
    raw[3][0][2][0][3] = 9  # not a RiskAction
    with pytest.raises(CodecError, match=r"inbox\[0\].decisions\[0\]: bad RiskDecision"):
        decode_inboxes(msgpack.packb(raw))
    raw[3][0][2][0] = ["BTCUSDT", 7]
    with pytest.raises(CodecError, match="RiskDecision needs 6 fields, got 2"):
        decode_inboxes(msgpack.packb(raw))


def test_mark_arrays_must_be_whole_items() -> None:
    box = Outbox(
        "X", 5, [], EMPTY_UPDATES, EMPTY_FILLS, np.array([1], np.int64), np.array([1.0]), 0.0
    )
    raw = msgpack.unpackb(encode_outboxes([box]), raw=False)
    raw[3][0][5] = raw[3][0][5][:-1]
    with pytest.raises(CodecError, match="mark_ts: 7 bytes"):
        decode_outboxes(msgpack.packb(raw, use_bin_type=True))
