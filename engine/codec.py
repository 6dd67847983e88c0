"""The one msgpack codec for everything that crosses actors.

A frame is the msgpack array ``["tkr", SCHEMA_VERSION, kind, body]``. Messages
are encoded as arrays in their field order (never dicts), enums as their int
values, and the per-boundary marks of an :class:`~tickray.engine.events.Outbox`
as raw little-endian numpy bytes. Decoding checks the frame, the version and
every field's type, and raises :class:`CodecError` with one line saying what is
wrong; it never returns a half-decoded message.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import Any, Final, TypeVar

import msgpack
import numpy as np
import numpy.typing as npt

from tickray.engine.events import (
    EMPTY_FILLS,
    EMPTY_FUNDING,
    EMPTY_UPDATES,
    FILL_DTYPE,
    FUNDING_DTYPE,
    UPDATE_DTYPE,
    Control,
    ControlKind,
    FillBatch,
    Inbox,
    Liquidity,
    OrderIntent,
    OrderStatus,
    OrderType,
    Outbox,
    PositionSide,
    RiskAction,
    RiskDecision,
    Side,
    TimeInForce,
    UpdateBatch,
)

MAGIC: Final = "tkr"
SCHEMA_VERSION: Final = 3

KIND_OUTBOXES: Final = 1
KIND_INBOXES: Final = 2

_KIND_NAMES = {KIND_OUTBOXES: "outboxes", KIND_INBOXES: "inboxes"}

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


class CodecError(ValueError):
    """Raised for bytes that are not a valid tickray frame."""


def _str(v: object) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {type(v).__name__}")
    return v


def _int(v: object) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"expected an integer, got {type(v).__name__}")
    if not _INT64_MIN <= v <= _INT64_MAX:
        raise TypeError(f"integer {v} outside int64")
    return v


def _float(v: object) -> float:
    if isinstance(v, float):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    raise TypeError(f"expected a number, got {type(v).__name__}")


def _opt_float(v: object) -> float | None:
    return None if v is None else _float(v)


def _bool(v: object) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"expected a boolean, got {type(v).__name__}")
    return v


E = TypeVar("E", bound=int)


def _enum(cls: Callable[[int], E]) -> Callable[[object], E]:
    def conv(v: object) -> E:
        return cls(_int(v))

    return conv


# Field kinds: "s" str, "i" int64, "f" float, "F" optional float, "b" bool, or an IntEnum.
_Kind = str | type[IntEnum]
_TYPES: dict[str, tuple[type, ...]] = {
    "s": (str,),
    "i": (int,),
    "f": (float,),
    "F": (float, type(None)),
    "b": (bool,),
}
_CONVS: dict[str, Callable[[object], Any]] = {
    "s": _str,
    "i": _int,
    "f": _float,
    "F": _opt_float,
    "b": _bool,
}

T = TypeVar("T")


class _MessageSpec:
    """How to check and build one message type from its msgpack array.

    The fast path accepts an array whose field types match exactly and whose
    enum values are known; anything else goes through the field-by-field path,
    which either converts it (an int where a float is expected) or names the
    field that is wrong.
    """

    def __init__(self, cls: type, kinds: tuple[_Kind, ...]) -> None:
        self.cls = cls
        self.name = cls.__name__
        self.n = len(kinds)
        self.types = set(
            itertools.product(*[(int,) if not isinstance(k, str) else _TYPES[k] for k in kinds])
        )
        self.enums = [
            (i, {m.value: m for m in k}) for i, k in enumerate(kinds) if not isinstance(k, str)
        ]
        self.ints = [i for i, k in enumerate(kinds) if k == "i"]
        self.convs = tuple(_CONVS[k] if isinstance(k, str) else _enum(k) for k in kinds)
        self.make = cls._make  # type: ignore[attr-defined]

    def decode(self, raw: object, where: str, index: int) -> Any:
        if type(raw) is list and len(raw) == self.n and tuple(map(type, raw)) in self.types:
            try:
                for i, table in self.enums:
                    raw[i] = table[raw[i]]
                if all(_INT64_MIN <= raw[i] <= _INT64_MAX for i in self.ints):
                    return self.make(raw)
            except KeyError:
                pass
        where = f"{where}[{index}]"
        if not isinstance(raw, list) or len(raw) != self.n:
            got = len(raw) if isinstance(raw, list) else type(raw).__name__
            raise CodecError(f"{where}: {self.name} needs {self.n} fields, got {got}")
        try:
            return self.make([c(v) for c, v in zip(self.convs, raw, strict=True)])
        except (TypeError, ValueError) as exc:
            raise CodecError(f"{where}: bad {self.name}: {exc}") from None


_SPECS: dict[type, _MessageSpec] = {
    OrderIntent: _MessageSpec(
        OrderIntent,
        (
            "s",
            "i",
            "i",
            Side,
            OrderType,
            "f",
            "F",
            "F",
            TimeInForce,
            "b",
            "f",
            "s",
            PositionSide,
        ),
    ),
    RiskDecision: _MessageSpec(RiskDecision, ("s", "i", "i", RiskAction, "f", "s")),
    Control: _MessageSpec(Control, (ControlKind, "i", "s", "s", "f")),
}


def _decode_list(cls: Callable[..., T], items: object, where: str) -> list[T]:
    if not isinstance(items, list):
        raise CodecError(f"{where}: expected an array, got {type(items).__name__}")
    spec = _SPECS[cls]  # type: ignore[index]
    return [spec.decode(raw, where, i) for i, raw in enumerate(items)]


def _array(raw: object, dtype: type, where: str) -> np.ndarray[Any, Any]:
    """A read-only numpy view of raw little-endian bytes (no copy on little-endian hosts)."""
    if not isinstance(raw, bytes):
        raise CodecError(f"{where}: expected raw bytes, got {type(raw).__name__}")
    dt = np.dtype(dtype).newbyteorder("<")
    if len(raw) % dt.itemsize:
        raise CodecError(
            f"{where}: {len(raw)} bytes is not a whole number of {dt.itemsize}-byte items"
        )
    arr = np.frombuffer(raw, dtype=dt)
    return arr if dt.isnative else arr.astype(np.dtype(dtype))


def _pack(kind: int, body: list[Any]) -> bytes:
    data: bytes = msgpack.packb([MAGIC, SCHEMA_VERSION, kind, body], use_bin_type=True)
    return data


def _unpack(data: bytes, kind: int) -> list[Any]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    try:
        frame = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise CodecError(f"not a tickray frame (truncated or corrupt bytes): {exc}") from None
    if not isinstance(frame, list) or len(frame) != 4 or frame[0] != MAGIC:
        raise CodecError("not a tickray frame: missing the 'tkr' header")
    version = frame[1]
    if version != SCHEMA_VERSION:
        raise CodecError(
            f"unsupported schema version {version!r}: this build reads version {SCHEMA_VERSION}"
        )
    if frame[2] != kind:
        want = _KIND_NAMES.get(kind, str(kind))
        got = _KIND_NAMES.get(frame[2], repr(frame[2]))
        raise CodecError(f"expected a frame of {want}, got {got}")
    body = frame[3]
    if not isinstance(body, list):
        raise CodecError(f"frame body must be an array, got {type(body).__name__}")
    return body


# Fills and order updates of one outbox travel as one structured numpy array each
# (raw little-endian bytes; the update reasons as one msgpack array), not one
# msgpack array per message.
def _valid(enum: type[IntEnum]) -> npt.NDArray[np.bool_]:
    """Which int8 values (offset by 128) are members of ``enum``."""
    table = np.zeros(256, dtype=bool)
    table[[m.value + 128 for m in enum]] = True
    return table


_ENUM_VALUES: dict[str, npt.NDArray[np.bool_]] = {
    "side": _valid(Side),
    "liquidity": _valid(Liquidity),
    "position_side": _valid(PositionSide),
    "status": _valid(OrderStatus),
    "order_type": _valid(OrderType),
}


def _encode_batch(batch: FillBatch | UpdateBatch) -> list[Any]:
    if not batch.size:
        return [0]
    extra = [batch.reason] if isinstance(batch, UpdateBatch) else []
    return [batch.size, batch.data.tobytes(), *extra]


def _decode_records(raw: object, dtype: np.dtype[Any], extra: int, where: str) -> list[Any]:
    """[count, bytes, extras...] -> [structured array, extras...]; [] for an empty batch."""
    if not isinstance(raw, list) or not raw or not isinstance(raw[0], int) or raw[0] < 0:
        raise CodecError(f"{where}: expected [count, records, ...]")
    n = raw[0]
    if n == 0 and len(raw) == 1:
        return []
    if len(raw) != 2 + extra or not isinstance(raw[1], bytes):
        raise CodecError(f"{where}: expected [count, records bytes{', reasons' if extra else ''}]")
    if len(raw[1]) != n * dtype.itemsize:
        raise CodecError(f"{where}: {len(raw[1])} bytes for {n} records of {dtype.itemsize} bytes")
    data = np.frombuffer(raw[1], dtype=dtype)
    for name in dtype.names or ():
        valid = _ENUM_VALUES.get(name)
        if valid is not None:
            ok = valid[data[name].astype(np.int64) + 128]
            if not ok.all():
                raise CodecError(f"{where}.{name}: unknown value {int(data[name][~ok][0])}")
    return [data, *raw[2:]]


def _decode_fills(raw: object, where: str) -> FillBatch:
    parts = _decode_records(raw, FILL_DTYPE, 0, where)
    return FillBatch(parts[0]) if parts else EMPTY_FILLS


def _decode_updates(raw: object, where: str) -> UpdateBatch:
    parts = _decode_records(raw, UPDATE_DTYPE, 1, where)
    if not parts:
        return EMPTY_UPDATES
    data, reasons = parts
    n = len(data)
    if (
        not isinstance(reasons, list)
        or len(reasons) != n
        or not all(isinstance(r, str) for r in reasons)
    ):
        raise CodecError(f"{where}.reason: expected {n} strings")
    return UpdateBatch(data, reasons)


def _decode_funding(raw: object, where: str) -> npt.NDArray[np.void]:
    parts = _decode_records(raw, FUNDING_DTYPE, 0, where)
    if not parts:
        return EMPTY_FUNDING
    data: npt.NDArray[np.void] = parts[0]
    if not np.isfinite(data["payment"]).all() or not np.isfinite(data["mark"]).all():
        raise CodecError(f"{where}: non-finite mark or payment")
    return data


def encode_outboxes(outboxes: Sequence[Outbox]) -> bytes:
    """Encode one step's outboxes (one per symbol) as a single frame."""
    body = [
        [
            o.symbol,
            o.reached,
            o.intents,
            _encode_batch(o.updates),
            _encode_batch(o.fills),
            np.ascontiguousarray(o.mark_ts, dtype="<i8").tobytes(),
            np.ascontiguousarray(o.mark_px, dtype="<f8").tobytes(),
            float(o.position),
            [len(o.funding), o.funding.tobytes()] if len(o.funding) else [0],
        ]
        for o in outboxes
    ]
    return _pack(KIND_OUTBOXES, body)


def decode_outboxes(data: bytes) -> list[Outbox]:
    """Decode a frame written by :func:`encode_outboxes`."""
    out: list[Outbox] = []
    for i, raw in enumerate(_unpack(data, KIND_OUTBOXES)):
        where = f"outbox[{i}]"
        if not isinstance(raw, list) or len(raw) != 9:
            raise CodecError(f"{where}: an outbox has 9 fields")
        try:
            symbol, reached, position = _str(raw[0]), _int(raw[1]), _float(raw[7])
        except TypeError as exc:
            raise CodecError(f"{where}: {exc}") from None
        mark_ts = _array(raw[5], np.int64, f"{where}.mark_ts")
        mark_px = _array(raw[6], np.float64, f"{where}.mark_px")
        if len(mark_ts) != len(mark_px):
            raise CodecError(f"{where}: {len(mark_ts)} mark times but {len(mark_px)} mark prices")
        out.append(
            Outbox(
                symbol,
                reached,
                _decode_list(OrderIntent, raw[2], f"{where}.intents"),
                _decode_updates(raw[3], f"{where}.updates"),
                _decode_fills(raw[4], f"{where}.fills"),
                mark_ts,
                mark_px,
                position,
                _decode_funding(raw[8], f"{where}.funding"),
            )
        )
    return out


def encode_inboxes(inboxes: Sequence[Inbox]) -> bytes:
    """Encode the portfolio's inboxes for the next step as a single frame."""
    body = [[b.symbol, b.ts_event, b.decisions, b.controls] for b in inboxes]
    return _pack(KIND_INBOXES, body)


def decode_inboxes(data: bytes) -> list[Inbox]:
    """Decode a frame written by :func:`encode_inboxes`."""
    out: list[Inbox] = []
    for i, raw in enumerate(_unpack(data, KIND_INBOXES)):
        where = f"inbox[{i}]"
        if not isinstance(raw, list) or len(raw) != 4:
            raise CodecError(f"{where}: an inbox has 4 fields")
        try:
            symbol, ts = _str(raw[0]), _int(raw[1])
        except TypeError as exc:
            raise CodecError(f"{where}: {exc}") from None
        out.append(
            Inbox(
                symbol,
                ts,
                _decode_list(RiskDecision, raw[2], f"{where}.decisions"),
                _decode_list(Control, raw[3], f"{where}.controls"),
            )
        )
    return out
