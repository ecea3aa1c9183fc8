"""The last ``n`` rows per integer key as numpy rings, and aggregates over them: the fast
state of :class:`~dataflare_platform.engine.operators.keyed.ReduceLast` (Nexmark q6's
average of a seller's last 10 closed auctions).

The general path keeps the rows in a :class:`KeyedStore` and recomputes each touched
key with Polars ``rolling_*`` over its stored and new rows: about 2 ms per batch of a
few hundred rows, most of it fixed Polars cost (take, concat, ``over``, filter, put).
Here a key is a slot (:class:`key_slots.KeySlots`), each stored column an array
of ``slots x n`` values written at ``sequence % n``, and a batch's aggregates one
``rows x n`` matrix of window values (each row's last ``n`` values, from the batch
itself or the ring) reduced along its rows: numpy only, no per-row Python.

Only exact cases take this path: one integer key without nulls, integer value columns,
and ``count``/``sum``/``mean``/``min``/``max`` (integer sums are exact in 64 bits, and a
mean of integers is that sum over a count, as Polars' rolling mean computes it).

Savepoints: the key index and the arrays are replaced when they grow, and rows of the
rings and counts written in place are journalled (old values of the touched slots) so a
rollback writes them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from dataflare_platform.engine.aggregations import Agg
from dataflare_platform.engine.operators.key_slots import KeySlots
from dataflare_platform.engine.operators.undo import Journal

KINDS = ("count", "sum", "mean", "min", "max")
MATRIX_CELLS = 1 << 20  # rows x n of one window matrix; larger batches go in chunks
INTEGERS = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32)


def rolling_dtypes(
    schema: dict[str, pl.DataType], aggs: list[Agg], n: int
) -> dict[str, pl.DataType]:
    """The output dtype of each aggregate on the Polars path, read from an empty frame,
    so that both paths emit the same schema."""
    empty = pl.DataFrame(schema={k: v for k, v in schema.items()})
    exprs = []
    for agg in aggs:
        if agg.kind == "count":
            exprs.append(pl.lit(0, pl.Int64).alias(agg.alias))
            continue
        method = {"sum": "rolling_sum", "mean": "rolling_mean"}.get(agg.kind, f"rolling_{agg.kind}")
        exprs.append(getattr(pl.col(agg.column), method)(n, min_samples=1).alias(agg.alias))
    return dict(empty.select(exprs).schema)


def supported(
    keys: list[str], order_by: list[str], aggs: list[Agg], schema: dict[str, pl.DataType], n: int
) -> bool:
    """Whether the ring computes exactly what the Polars path does for this input."""
    if len(keys) != 1 or not schema[keys[0]].is_integer() or schema[keys[0]] == pl.UInt64:
        return False
    if any(a.kind not in KINDS for a in aggs):
        return False
    for column in order_by:  # stored as their physical integers
        dtype = schema[column]
        if not (dtype.is_integer() or dtype.is_temporal()) or dtype == pl.UInt64:
            return False
    for agg in aggs:
        if agg.column is not None and agg.column in keys:
            return False
        if agg.column is not None and schema[agg.column] not in INTEGERS:
            return False
    out = rolling_dtypes(schema, aggs, n)
    # A 64-bit integer sum is what Polars gives for 64-bit inputs; narrower sums would
    # have to wrap as Polars does: left to the Polars path.
    return all(out[a.alias] == pl.Int64 for a in aggs if a.kind == "sum")


def _physical(series: pl.Series) -> tuple[np.ndarray, np.ndarray | None]:
    """``series`` as 64-bit integers (nulls as 0) and its validity (None: no nulls);
    the Polars calls each cost a query, so only those needed are made."""
    if series.dtype.is_temporal():
        series = series.to_physical()
    valid = None
    if series.null_count():
        valid = series.is_not_null().to_numpy()
        series = series.fill_null(0)
    return series.to_numpy().astype(np.int64, copy=False), valid


@dataclass
class LastRowsRing:
    """Per key of ``key``, the last ``n`` values of ``columns`` (physical integers with
    a validity mask) in a ring, and the count of rows the key has had."""

    key: str
    n: int
    columns: list[str]  # stored: order columns and aggregated columns (checkpoint form)
    aggs: list[Agg]
    schema: dict[str, pl.DataType]  # of key and columns
    _index: KeySlots = field(init=False)  # key -> slot
    _count: np.ndarray = field(init=False)  # rows seen per slot
    _values: np.ndarray = field(init=False)  # slots x columns x n
    _valid: np.ndarray = field(init=False)  # slots x columns x n
    _at: dict[str, int] = field(init=False)  # column -> its index in the arrays
    _journal: Journal = field(init=False, default_factory=Journal)
    _out: dict[str, pl.DataType] = field(init=False)

    def __post_init__(self) -> None:
        self._out = rolling_dtypes(self.schema, self.aggs, self.n)
        self._index = KeySlots(self._journal)
        self._count = np.zeros(0, np.int64)
        self._at = {c: i for i, c in enumerate(self.columns)}
        self._values = np.zeros((0, len(self.columns), self.n), np.int64)
        self._valid = np.zeros((0, len(self.columns), self.n), bool)

    # -- state ------------------------------------------------------------------------------
    _STATE = ("_count", "_values", "_valid")

    def _state(self) -> tuple:
        return self._index.state(), *(getattr(self, name) for name in self._STATE)

    def savepoint(self) -> object:
        """The replaced arrays as they are (a reference) and the undo steps of the
        rows written in place from now on (:class:`undo.Journal`)."""
        return self._state(), self._journal.start()

    def rollback(self, saved: object) -> None:
        (index, *state), steps = saved  # type: ignore[misc]
        Journal.undo(steps)  # on the arrays they were written to, newest first
        self._index.restore(index)
        for name, value in zip(self._STATE, state, strict=True):
            setattr(self, name, value)

    def _write(self, array: np.ndarray, slots: np.ndarray) -> None:
        """Journal the rows ``slots`` of ``array`` before they are written in place."""
        old = array[slots]  # a copy (fancy indexing)

        def undo() -> None:
            array[slots] = old

        self._journal.record(undo)

    @property
    def rows(self) -> int:
        return int(np.minimum(self._count[: self._index.used], self.n).sum())

    def _slot_of(self, keys: np.ndarray) -> np.ndarray:
        """Each key's slot, new keys getting new slots (the arrays grown to them)."""
        slot = self._index.slots(keys)
        self._grow(self._index.used)
        return slot

    def _grow(self, need: int) -> None:
        have = self._count.size
        if need <= have:
            return
        size = max(need, 2 * have, 1024)

        def bigger(array: np.ndarray) -> np.ndarray:
            out = np.zeros((size, *array.shape[1:]), array.dtype)
            out[:have] = array
            return out

        self._count = bigger(self._count)
        self._values = bigger(self._values)
        self._valid = bigger(self._valid)

    # -- batches ----------------------------------------------------------------------------
    def push(self, rows: pl.DataFrame, order_by: list[str] | None = None) -> pl.DataFrame:
        """Append ``rows`` to their keys' rings, in ``order_by`` order (a stable sort;
        none: as they are); return per row, in that order, its key and the aggregates
        over its key's last ``n`` rows up to and including it. Order columns must hold
        no nulls (the caller sorts rows with nulls itself)."""
        key_series = rows.get_column(self.key)
        keys = key_series.to_numpy().astype(np.int64, copy=False)
        values, valid = {}, {}
        for column in self.columns:
            values[column], valid[column] = _physical(rows.get_column(column))
        if order_by:
            sort = np.lexsort([values[c] for c in reversed(order_by)])
            if (sort[1:] < sort[:-1]).any():  # not already in order
                keys = keys[sort]
                values = {c: v[sort] for c, v in values.items()}
                valid = {c: None if v is None else v[sort] for c, v in valid.items()}
                key_series = pl.Series(self.key, keys).cast(key_series.dtype)
        slot = self._slot_of(keys)
        # Each row's place in its key's sequence: rows before it in the batch (a stable
        # sort by slot) plus the rows the key had.
        order = np.argsort(slot, kind="stable")
        by_slot = slot[order]
        first = np.ones(by_slot.size, bool)
        first[1:] = by_slot[1:] != by_slot[:-1]
        starts = np.flatnonzero(first)
        sizes = np.diff(np.append(starts, by_slot.size))
        rank_sorted = np.arange(by_slot.size) - np.repeat(starts, sizes)
        rank = np.empty_like(rank_sorted)
        rank[order] = rank_sorted
        before = self._count[slot]
        seq = before + rank
        # Batch row holding sequence number q of a key (q >= before): its sorted
        # position is the key's group start + (q - before).
        group_start = np.empty_like(rank)
        group_start[order] = np.repeat(starts, sizes)
        group_size = np.empty_like(rank)  # rows of the batch with the row's key
        group_size[order] = np.repeat(sizes, sizes)
        out = {
            a.alias: np.zeros(keys.size, np.float64 if a.kind == "mean" else np.int64)
            for a in self.aggs
        }
        nulls = {a.alias: np.zeros(keys.size, bool) for a in self.aggs}
        step = max(1, MATRIX_CELLS // self.n)
        for lo in range(0, keys.size, step):
            part = slice(lo, min(lo + step, keys.size))
            self._aggregate(part, slot, seq, before, group_start, order, values, valid, out, nulls)
        self._store(slot, seq, before, sizes, group_size, by_slot[first], values, valid)
        series = [key_series]
        for agg in self.aggs:
            s = pl.Series(agg.alias, out[agg.alias])
            if nulls[agg.alias].any():
                s = s.scatter(np.flatnonzero(nulls[agg.alias]), None)
            series.append(s if s.dtype == self._out[agg.alias] else s.cast(self._out[agg.alias]))
        return pl.DataFrame(series)

    def _aggregate(
        self,
        part: slice,
        slot: np.ndarray,
        seq: np.ndarray,
        before: np.ndarray,
        group_start: np.ndarray,
        order: np.ndarray,
        values: dict[str, np.ndarray],
        valid: dict[str, np.ndarray | None],
        out: dict[str, np.ndarray],
        nulls: dict[str, np.ndarray],
    ) -> None:
        """The aggregates of rows ``part``: a matrix of each row's window (sequence
        numbers seq - j for j < n), read from the batch or the ring."""
        n = self.n
        q = seq[part, None] - np.arange(n)[None, :]  # rows x n sequence numbers
        present = q >= 0
        in_batch = q >= before[part, None]
        from_ring = present & ~in_batch
        batch_row = order[np.clip(group_start[part, None] + (q - before[part, None]), 0, None)]
        ring_row = np.broadcast_to(slot[part, None], q.shape)
        ring_col = q % n
        windows: dict[str | None, tuple[np.ndarray, np.ndarray]] = {}
        for agg in self.aggs:
            if agg.column in windows:
                continue
            if agg.column is None:
                windows[None] = (np.zeros(q.shape, np.int64), present)
                continue
            v = np.where(in_batch, values[agg.column][np.where(in_batch, batch_row, 0)], 0)
            ok = (
                in_batch
                if valid[agg.column] is None
                else in_batch & valid[agg.column][np.where(in_batch, batch_row, 0)]
            )
            if from_ring.any():
                at = self._at[agg.column]
                ring_v = self._values[ring_row, at, ring_col]
                ring_ok = self._valid[ring_row, at, ring_col] & from_ring
                v = np.where(from_ring, ring_v, v)
                ok = ok | ring_ok
            windows[agg.column] = (v, ok)
        for agg in self.aggs:
            v, ok = windows[agg.column]
            counted = ok.sum(axis=1)
            target, empty = out[agg.alias], nulls[agg.alias]
            match agg.kind:
                case "count":
                    target[part] = counted
                case "sum" | "mean":
                    total = np.where(ok, v, 0).sum(axis=1)
                    target[part] = total / np.maximum(counted, 1) if agg.kind == "mean" else total
                    empty[part] = counted == 0
                case "min":
                    target[part] = np.where(ok, v, np.iinfo(np.int64).max).min(axis=1)
                    empty[part] = counted == 0
                case "max":
                    target[part] = np.where(ok, v, np.iinfo(np.int64).min).max(axis=1)
                    empty[part] = counted == 0

    def _store(
        self,
        slot: np.ndarray,
        seq: np.ndarray,
        before: np.ndarray,
        sizes: np.ndarray,
        group_size: np.ndarray,
        touched: np.ndarray,
        values: dict[str, np.ndarray],
        valid: dict[str, np.ndarray | None],
    ) -> None:
        """Write the rows that stay among their key's last ``n`` into the rings (one
        write per ring cell) and count the batch's rows per key."""
        after = before + group_size
        keep = seq >= after - self.n
        at_slot, at_col = slot[keep], seq[keep] % self.n
        self._write(self._values, touched)
        self._write(self._valid, touched)
        for column, at in self._at.items():
            self._values[at_slot, at, at_col] = values[column][keep]
            ok = valid[column]
            self._valid[at_slot, at, at_col] = True if ok is None else ok[keep]
        self._write(self._count, touched)
        self._count[touched] += sizes

    # -- checkpoint form --------------------------------------------------------------------
    def frame(self) -> pl.DataFrame | None:
        """Each key's last rows, oldest first, as the Polars path stores them."""
        if not self._index.used:
            return None
        keys, slots = self._index.in_key_order()
        count = self._count[slots]
        held = np.minimum(count, self.n)
        starts = count - held
        offsets = np.repeat(np.cumsum(held) - held, held)
        q = np.repeat(starts, held) + (np.arange(int(held.sum())) - offsets)
        row = np.repeat(slots, held)
        columns = [pl.Series(self.key, np.repeat(keys, held)).cast(self.schema[self.key])]
        for column in self.columns:
            at = self._at[column]
            s = pl.Series(column, self._values[row, at, q % self.n])
            missing = ~self._valid[row, at, q % self.n]
            if missing.any():
                s = s.scatter(np.flatnonzero(missing), None)
            columns.append(s.cast(self.schema[column]))
        return pl.DataFrame(columns)

    def load(self, frame: pl.DataFrame | None) -> None:
        """Replace the contents with ``frame`` (:meth:`frame`'s form, a key's rows in
        order; more than ``n`` rows of a key keep the last ``n``)."""
        self._journal = Journal()
        self.__post_init__()
        if frame is not None and frame.height:
            self.push(frame.select(self.key, *self.columns))
