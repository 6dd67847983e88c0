"""The recorder: streams a run's fills, orders and equity curve to Parquet, atomically.

Files are written into ``<out>.partial/`` while the run goes, in row groups of
a fixed size so that the bytes do not depend on how results arrived; only a
run that finished is renamed to ``<out>/`` (with ``metrics.json`` last). A run
that failed keeps its ``.partial`` folder, with ``error.txt``, so nothing that
was recorded is lost and nothing looks complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from tickray.engine.events import (
    Liquidity,
    OrderIntent,
    OrderStatus,
    OrderType,
    OrderUpdate,
    PositionSide,
    Side,
    UpdateBatch,
    join_records,
    update_batch,
)
from tickray.engine.portfolio import SettleResult, UpdateRecords
from tickray.engine.steps import fill_steps, update_steps

ROW_GROUP_BYTES = 1 << 20
"""Rows are buffered up to about this many bytes, then written as one row group."""


def rows_per_group(schema: pa.Schema) -> int:
    """A fixed row count per row group from the schema alone (so bytes never depend
    on how results arrived), about ROW_GROUP_BYTES of buffered columns."""
    return max(1024, min(65_536, ROW_GROUP_BYTES // (16 * len(schema))))


TS = pa.timestamp("ns", tz="UTC")

FILLS = pa.schema(
    [
        ("ts", TS),
        ("symbol", pa.string()),
        ("order_id", pa.int64()),
        ("fill_id", pa.int64()),
        ("side", pa.string()),
        ("qty", pa.float64()),
        ("price", pa.float64()),
        ("fee", pa.float64()),
        ("liquidity", pa.string()),
        ("realized_pnl", pa.float64()),
        ("position_after", pa.float64()),
        ("cash_after", pa.float64()),
        ("position_side", pa.string()),
    ]
)
ORDERS = pa.schema(
    [
        ("ts", TS),
        ("symbol", pa.string()),
        ("order_id", pa.int64()),
        ("status", pa.string()),
        ("side", pa.string()),
        ("type", pa.string()),
        ("qty", pa.float64()),
        ("filled_qty", pa.float64()),
        ("price", pa.float64()),
        ("reason", pa.string()),
        ("position_side", pa.string()),
    ]
)
FUNDING = pa.schema(
    [
        ("ts", TS),
        ("settled", TS),
        ("symbol", pa.string()),
        ("funding_rate", pa.float64()),
        ("mark_price", pa.float64()),
        ("position", pa.float64()),
        ("payment", pa.float64()),
    ]
)
LIQUIDATIONS = pa.schema(
    [
        ("ts", TS),
        ("symbol", pa.string()),
        ("side", pa.string()),
        ("qty", pa.float64()),
        ("price", pa.float64()),
        ("fee", pa.float64()),
        ("realized_pnl", pa.float64()),
        ("position_side", pa.string()),
    ]
)
EQUITY = pa.schema(
    [("ts", TS), ("equity", pa.float64()), ("cash", pa.float64()), ("gross_exposure", pa.float64())]
)


class _Sink:
    """Columns buffered and flushed to one Parquet file in row groups of a fixed row count.

    Rows arrive as blocks of equal-length columns (numpy arrays; strings as
    object arrays). ``nan_is_null`` writes NaN floats as nulls (a price that is
    not set); ``names`` maps enum columns (int8 values) to the names written.
    With ``order``, each block carries the number of the settlement it came
    from, and before writing, the buffered rows are put in the order
    ``order(columns)`` gives (a stable sort that keeps settlements in sequence),
    once per row group rather than once per settlement.
    """

    def __init__(
        self,
        path: Path,
        schema: pa.Schema,
        nan_is_null: bool = False,
        names: dict[int, npt.NDArray[np.object_]] | None = None,
        order: Callable[[list[Any]], Any] | None = None,
        expand: tuple[int, Callable[[list[Any]], list[Any]]] | None = None,
    ) -> None:
        self.path = path
        self.schema = schema
        self.nan_is_null = nan_is_null
        self.names = names or {}
        self.order = order
        # Blocks may be compact (a structured array and a few columns), turned
        # into the schema's columns by ``expand`` only when written.
        self.expand = expand[1] if expand else None
        self.ncols = expand[0] if expand else len(schema) + (1 if order is not None else 0)
        self.group = rows_per_group(schema)
        self.blocks: list[Sequence[Any]] = []
        self.rows = 0
        self.writer = pq.ParquetWriter(
            path, schema, compression="zstd", write_statistics=True, store_schema=False
        )

    def add_columns(self, columns: Sequence[Any]) -> None:
        n = len(columns[0])
        if n:
            self.blocks.append(columns)
            self.rows += n
            if self.rows >= self.group:
                self._flush(final=False)
            elif len(self.blocks) >= 256:  # many small settlements: keep one block
                self.blocks = [self._concat()]

    def _concat(self) -> list[Any]:
        return [_cat([b[i] for b in self.blocks]) for i in range(self.ncols)]

    def _write(self, cols: Sequence[Any]) -> None:
        cols = [_names(c, self.names[i]) if i in self.names else c for i, c in enumerate(cols)]
        arrays = [
            pa.array(c, type=f.type, from_pandas=self.nan_is_null)
            for c, f in zip(cols, self.schema, strict=True)
        ]
        n = len(arrays[0])
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema), row_group_size=n)

    def _flush(self, final: bool) -> None:
        if not self.rows or (self.rows < self.group and not final):
            return
        cols = self._concat()
        wide = self.expand or (lambda c: c)
        if self.order is not None:  # once per flush; the sorted tail stays in order
            idx = self.order(wide(cols))
            cols = [c[idx] for c in cols]
        start = 0
        while self.rows - start >= self.group or (final and self.rows > start):
            n = min(self.rows - start, self.group)
            self._write(wide([c[start : start + n] for c in cols])[: len(self.schema)])
            start += n
        self.blocks = [[c[start:] for c in cols]] if start < self.rows else []
        self.rows -= start

    def close(self) -> None:
        self._flush(final=True)
        self.writer.close()


def _cat(arrays: list[Any]) -> Any:
    """np.concatenate, but record arrays are joined as bytes: numpy re-derives the
    common dtype of every record array it concatenates, which is slow for many
    small ones."""
    if len(arrays) == 1:
        return arrays[0]
    if arrays[0].dtype.names is not None:
        return join_records(arrays)
    return np.concatenate(arrays)


def _fill_columns(block: list[Any]) -> list[Any]:
    """[fill records, symbols, cash after, settlement] -> the FILLS columns (+ settlement)."""
    d, names, cash, settle = block
    fields = ("order_id", "fill_id", "side", "qty", "price", "fee", "liquidity")
    oid, fid, side, qty, px, fee, liq = (d[k] for k in fields)
    return [
        d["ts"],
        names,
        oid,
        fid,
        side,
        qty,
        px,
        fee,
        liq,
        d["realized_pnl"],
        d["position_after"],
        cash,
        d["position_side"],
        settle,
    ]


def _wide_columns(block: list[Any]) -> list[Any]:
    """[ts, rows x symbols matrix] -> ts and one column per symbol."""
    return [block[0], *block[1].T]


def _update_columns(block: list[Any]) -> list[Any]:
    """[update records, symbols, reasons, settlement] -> the ORDERS columns (+ settlement)."""
    d, names, reasons, settle = block
    fields = ("order_id", "status", "side", "order_type", "qty", "filled_qty", "price")
    oid, status, side, typ, qty, filled, px = (d[k] for k in fields)
    return [
        d["ts"],
        names,
        oid,
        status,
        side,
        typ,
        qty,
        filled,
        px,
        reasons,
        d["position_side"],
        settle,
    ]


def _name_table(enum: type[IntEnum]) -> npt.NDArray[np.object_]:
    """Names indexed by value + 1 (values run from -1 to a few)."""
    top = max(m.value for m in enum)
    table = np.array(["?"] * (top + 2), dtype=object)
    for m in enum:
        table[m.value + 1] = m.name
    return table


_FILLED, _PARTIAL = int(OrderStatus.FILLED), int(OrderStatus.PARTIALLY_FILLED)
_CANCELED, _EXPIRED = int(OrderStatus.CANCELED), int(OrderStatus.EXPIRED)
_ACCEPTED, _REJECTED = int(OrderStatus.ACCEPTED), int(OrderStatus.REJECTED)
_SIDE = _name_table(Side)
_LIQ = _name_table(Liquidity)
_PSIDE = _name_table(PositionSide)
_STATUS = _name_table(OrderStatus)
_TYPE = _name_table(OrderType)


def _names(values: npt.NDArray[np.int8], table: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
    out: npt.NDArray[np.object_] = table[values.astype(np.int64) + 1]
    return out


class Recorder:
    """Writes one run's results under ``out`` (see the module docstring for the layout)."""

    def __init__(
        self,
        out: str | os.PathLike[str],
        symbols: Sequence[str],
        interval_ns: int,
        sync_ns: int,
        self_approval: bool = False,
        perp: bool = False,
    ) -> None:
        self.out = Path(out)
        self.interval = interval_ns
        self.sync = sync_ns
        self.self_approval = self_approval
        if self.out.exists():
            raise FileExistsError(f"results folder {self.out} already exists")
        self.partial = self.out.with_name(self.out.name + ".partial")
        if self.partial.exists():
            shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True)
        self.symbols = list(symbols)
        self._sorted_symbols = np.array(sorted(self.symbols))
        self.settlement = 0
        self.fills = _Sink(
            self.partial / "fills.parquet",
            FILLS,
            names={4: _SIDE, 8: _LIQ, 12: _PSIDE},
            order=self._fill_order,
            expand=(4, _fill_columns),
        )
        self.orders = _Sink(
            self.partial / "orders.parquet",
            ORDERS,
            nan_is_null=True,
            names={3: _STATUS, 4: _SIDE, 5: _TYPE, 10: _PSIDE},
            order=self._update_order,
            expand=(4, _update_columns),
        )
        self.equity = _Sink(self.partial / "equity.parquet", EQUITY)
        sym_schema = pa.schema([("ts", TS)] + [(s, pa.float64()) for s in self.symbols])
        # one column per symbol, buffered as [ts, rows x symbols] blocks
        wide = (2, _wide_columns)
        self.symbol_equity = _Sink(self.partial / "symbol_equity.parquet", sym_schema, expand=wide)
        self.marks = _Sink(self.partial / "marks.parquet", sym_schema, expand=wide)
        self._sym_schema = sym_schema
        self._sinks = [
            self.fills,
            self.orders,
            self.equity,
            self.symbol_equity,
            self.marks,
        ]
        self.funding: _Sink | None = None
        self.liquidations: _Sink | None = None
        if perp:
            self.funding = _Sink(self.partial / "funding.parquet", FUNDING)
            self.liquidations = _Sink(self.partial / "liquidations.parquet", LIQUIDATIONS)
            self._sinks += [self.funding, self.liquidations]

    def _ceil(self, ts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        out: npt.NDArray[np.int64] = -((-ts) // self.sync) * self.sync
        return out

    def _rank(self, symbols: npt.NDArray[np.object_]) -> npt.NDArray[np.int64]:
        out: npt.NDArray[np.int64] = np.searchsorted(self._sorted_symbols, symbols.astype(str))
        return out

    def _fill_order(self, cols: list[Any]) -> Any:
        """(settlement, step, symbol), stable: rows keep the order they happened in."""
        step = fill_steps(cols[0], self.interval, self.sync)
        return np.lexsort((self._rank(cols[1]), step, cols[-1]))

    def _update_order(self, cols: list[Any]) -> Any:
        """(settlement, step, symbol), stable; steps by ``engine.steps.update_steps``."""
        step = update_steps(cols[0], cols[3], self.interval, self.sync, self.self_approval)
        return np.lexsort((self._rank(cols[1]), step, cols[-1]))

    def record(self, res: SettleResult) -> None:
        """One settlement's results. Fills and orders are written in (step, symbol)
        order, each symbol's as they happened, so files never depend on how steps
        were grouped into settlements (fusing, approval mode, sharding)."""
        self.settlement += 1
        f = res.fills.fills
        if f.size:
            settle = np.full(f.size, self.settlement)
            self.fills.add_columns([f.data, res.fills.symbol, res.fills.cash_after, settle])
            if self.liquidations is not None:
                liq = f.data["liquidity"] == int(Liquidity.LIQUIDATION)
                if liq.any():
                    d = f.data[liq]
                    self.liquidations.add_columns(
                        [
                            d["ts"],
                            res.fills.symbol[liq],
                            _names(d["side"], _SIDE),
                            d["qty"],
                            d["price"],
                            d["fee"],
                            d["realized_pnl"],
                            _names(d["position_side"], _PSIDE),
                        ]
                    )
        if self.funding is not None and res.funding is not None and len(res.funding.records):
            r = res.funding.records
            self.funding.add_columns(
                [
                    r["ts"],
                    r["settled"],
                    res.funding.symbol,
                    r["rate"],
                    r["mark"],
                    r["position"],
                    r["payment"],
                ]
            )
        self.record_orders(res.intents, res.updates)
        ts = res.equity_ts
        self.equity.add_columns([ts, res.equity, res.cash, res.gross])
        self.symbol_equity.add_columns([ts, res.symbol_equity])
        if res.marks is not None:
            self.marks.add_columns([ts, np.asarray(res.marks, dtype=np.float64)])

    def record_orders(self, intents: Sequence[OrderIntent], records: UpdateRecords) -> None:
        """Intents become SUBMITTED rows, then this settlement's order updates."""
        self.settlement += 1
        if intents:
            submitted = [
                OrderUpdate(
                    it.symbol,
                    it.intent_id,
                    it.ts_event,
                    OrderStatus.SUBMITTED,
                    it.side,
                    it.order_type,
                    it.qty,
                    0.0,
                    it.price,
                    "",
                    it.position_side,
                )
                for it in intents
            ]
            names = np.array([it.symbol for it in intents], dtype=object)
            self._add_updates(names, update_batch(submitted))
        if records.updates.size:
            self._add_updates(records.symbol, records.updates)

    def _add_updates(self, symbols: npt.NDArray[np.object_], u: UpdateBatch) -> None:
        reasons = np.array(u.reason, dtype=object)
        self.orders.add_columns([u.data, symbols, reasons, np.full(u.size, self.settlement)])

    def close_files(self) -> None:
        for s in self._sinks:
            s.close()
        self._write_positions()

    def _write_positions(self) -> None:
        """``positions.parquet``: every symbol's position at each boundary where one
        changed, from the fills (in booking order: by boundary, then symbol); in
        hedge mode the net of its long and short positions."""
        t = pq.read_table(
            self.partial / "fills.parquet",
            columns=["ts", "symbol", "position_after", "position_side"],
            use_threads=False,
        )
        n = t.num_rows
        sink = _Sink(
            self.partial / "positions.parquet", self._sym_schema, expand=(2, _wide_columns)
        )
        if n:
            steps = fill_steps(t.column("ts").cast(pa.int64()).to_numpy(), self.interval, self.sync)
            names = np.array(self.symbols, dtype=object)
            order = np.argsort(names, kind="stable")
            sym = order[
                np.searchsorted(names[order], t.column("symbol").to_numpy(zero_copy_only=False))
            ]
            after = t.column("position_after").to_numpy()
            short = t.column("position_side").to_numpy(zero_copy_only=False) == "SHORT"
            col = sym * 2 + short  # one column per (symbol, position side)
            width = 2 * len(self.symbols)
            bounds, row = np.unique(steps, return_inverse=True)
            # the last fill of each (boundary, column) sets that position there
            key = row * width + col
            last = n - 1 - np.unique(key[::-1], return_index=True)[1]
            table = np.full((len(bounds), width), np.nan)
            table[row[last], col[last]] = after[last]
            table[0] = np.where(np.isnan(table[0]), 0.0, table[0])
            # carry unchanged positions down: each cell takes the last row that set it
            idx = np.where(~np.isnan(table), np.arange(len(bounds))[:, None], 0)
            np.maximum.accumulate(idx, axis=0, out=idx)
            table = table[idx, np.arange(width)[None, :]]
            net = table[:, 0::2] + table[:, 1::2]
            sink.add_columns([bounds.astype(np.int64), net])
        sink.close()

    def commit(self, metrics: dict[str, Any], run_info: dict[str, Any]) -> Path:
        """Write ``run.json`` and ``metrics.json`` and publish the folder under its final name."""
        _write_json(self.partial / "run.json", run_info)
        _write_json(self.partial / "metrics.json", metrics)
        os.replace(self.partial, self.out)
        return self.out

    def fail(self, error: str) -> Path:
        """Keep what was recorded in the ``.partial`` folder and say why it stopped."""
        for s in self._sinks:
            with contextlib.suppress(Exception):  # best effort: keep the other files
                s.close()
        (self.partial / "error.txt").write_text(error + "\n", encoding="utf-8")
        return self.partial


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8"
    )
    os.replace(tmp, path)


def read_column(path: Path, name: str) -> np.ndarray[Any, Any]:
    """One column of a results file as numpy (timestamps as int64 ns)."""
    col = pq.read_table(path, columns=[name], use_threads=False).column(0)
    if pa.types.is_timestamp(col.type):
        col = col.cast(pa.int64())
    return col.to_numpy()
