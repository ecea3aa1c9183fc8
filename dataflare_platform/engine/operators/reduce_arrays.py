"""Running per-key aggregates in numpy arrays: the fast state of
:class:`~dataflare_platform.engine.operators.keyed.Reduce` (Nexmark q4's average winning
price per category).

The general path costs about 1 ms per batch even for a handful of keys, nearly all of it
fixed Polars cost (group by, take from the KeyedStore, concat, group by again, put).
Here a key is a slot (:class:`key_slots.KeySlots`: a direct-address table for
sequential ids, so a batch closing 300 k auctions at once costs one gather) and each
partial an array by slot; a batch's partials are scatters (``np.add.at``,
``np.minimum.at``) over its rows' slots, merged into the touched slots.

Only exact cases take this path: one integer key without nulls, integer value columns,
and ``count``/``sum``/``mean``/``min``/``max``. Integer sums wrap in 64 bits as Polars'
do; a mean's partial sum is the batch's integer sum cast to a float and added to the
held one, as the Polars path merges it (a sum of two floats has one result). The
checkpoint frame is the Polars path's (key, partial columns, its dtypes), so a
checkpoint restores into either.

Savepoints: the key index and the arrays are replaced when they grow, and the touched
slots written in place are journalled (:mod:`undo`) so a rollback writes them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from dataflare_platform.engine.aggregations import (
    Agg,
    final_exprs,
    merge_exprs,
    partial_exprs,
)
from dataflare_platform.engine.operators.key_slots import KeySlots
from dataflare_platform.engine.operators.undo import Journal

KINDS = ("count", "sum", "mean", "min", "max")
INTEGERS = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32)
LOW, HIGH = np.iinfo(np.int64).min, np.iinfo(np.int64).max


def polars_schemas(
    key: str, aggs: list[Agg], schema: dict[str, pl.DataType]
) -> tuple[dict[str, pl.DataType], dict[str, pl.DataType], dict[str, pl.DataType]]:
    """The Polars path's partial schema after a first batch, after a merge, and its
    output schema, read from empty frames, so that both paths store and emit the same."""
    empty = pl.DataFrame(schema=schema)
    first = empty.group_by(key).agg(partial_exprs(aggs))
    merged = pl.concat([first, first]).group_by(key).agg(merge_exprs(aggs))
    out = merged.select(key, *final_exprs(aggs))
    return dict(first.schema), dict(merged.schema), dict(out.schema)


def supported(keys: list[str], aggs: list[Agg], schema: dict[str, pl.DataType]) -> bool:
    """Whether the arrays compute exactly what the Polars path does for this input."""
    if len(keys) != 1 or keys[0] not in schema:
        return False
    key = keys[0]
    if not schema[key].is_integer() or schema[key] == pl.UInt64:
        return False
    for agg in aggs:
        if agg.kind not in KINDS or agg.column == key:
            return False
        if agg.column is not None and schema.get(agg.column) not in INTEGERS:
            return False
    columns = {key, *(a.column for a in aggs if a.column is not None)}
    first, merged, _ = polars_schemas(key, aggs, {c: schema[c] for c in columns})
    # One stored form whatever the key's history, and 64-bit integer sums (narrower
    # ones would have to wrap as Polars' do: left to the Polars path), a mean's too.
    empty = pl.DataFrame(schema={c: schema[c] for c in columns})
    summed = [a.column for a in aggs if a.kind in ("sum", "mean")]
    sums = empty.select(pl.col(c).sum() for c in dict.fromkeys(summed)).schema
    return first == merged and all(dtype == pl.Int64 for dtype in sums.values())


@dataclass
class ReduceArrays:
    """Per key of ``key``, the partials of ``aggs`` (Polars' partial columns) in one
    array each by slot, and for min/max whether a value was seen."""

    key: str
    aggs: list[Agg]
    schema: dict[str, pl.DataType]  # of the key and the aggregated columns
    _index: KeySlots = field(init=False)  # key -> slot
    _values: dict[str, np.ndarray] = field(init=False)  # partial column -> by slot
    _seen: dict[str, np.ndarray] = field(init=False)  # min/max partial -> by slot
    _journal: Journal = field(init=False, default_factory=Journal)
    _stored: dict[str, pl.DataType] = field(init=False)
    _out: dict[str, pl.DataType] = field(init=False)

    def __post_init__(self) -> None:
        _, self._stored, self._out = polars_schemas(self.key, self.aggs, self.schema)
        self._index = KeySlots(self._journal)
        self._values, self._seen = {}, {}
        for agg in self.aggs:
            names = agg.partial_columns()
            if agg.kind == "mean":
                self._values[names[0]] = np.zeros(0, np.float64)
                self._values[names[1]] = np.zeros(0, np.int64)
            else:
                self._values[names[0]] = np.zeros(0, np.int64)
            if agg.kind in ("min", "max"):
                self._seen[names[0]] = np.zeros(0, bool)

    # -- state ------------------------------------------------------------------------------
    def _state(self) -> tuple:
        values, seen = dict(self._values), dict(self._seen)
        return self._index.state(), values, seen

    def savepoint(self) -> object:
        """The replaced arrays as they are (references) and the undo steps of the slots
        written in place from now on."""
        return self._state(), self._journal.start()

    def rollback(self, saved: object) -> None:
        state, steps = saved  # type: ignore[misc]
        Journal.undo(steps)  # on the arrays they were written to, newest first
        index, values, seen = state
        self._index.restore(index)
        self._values, self._seen = dict(values), dict(seen)

    def _write(self, array: np.ndarray, slots: np.ndarray) -> None:
        """Journal the entries ``slots`` of ``array`` before they are written in place."""
        old = array[slots]

        def undo() -> None:
            array[slots] = old

        self._journal.record(undo)

    @property
    def rows(self) -> int:
        return self._index.used

    def _slot_of(self, keys: np.ndarray) -> np.ndarray:
        """Each key's slot, new keys getting new slots (arrays grown by replacing them)."""
        slot = self._index.slots(keys)
        self._grow(self._index.used)
        return slot

    def _grow(self, need: int) -> None:
        for arrays in (self._values, self._seen):
            for name, array in arrays.items():
                if array.size < need:
                    bigger = np.zeros(max(need, 2 * array.size, 64), array.dtype)
                    bigger[: array.size] = array
                    arrays[name] = bigger

    # -- batches ----------------------------------------------------------------------------
    def push(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Fold ``rows`` (no null key) into their keys' partials; return each touched
        key once (ascending) with its aggregates, as the Polars path's ``final``."""
        keys = rows.get_column(self.key).to_numpy().astype(np.int64, copy=False)
        slot = self._slot_of(keys)
        used = self._index.used
        if 8 * slot.size >= used:  # a count per slot costs less than a sort here
            touched = np.flatnonzero(np.bincount(slot, minlength=used))
            lookup = np.empty(used, np.int64)
            lookup[touched] = np.arange(touched.size)
            group = lookup[slot]
        else:
            touched, group = np.unique(slot, return_inverse=True)
        groups = touched.size
        columns: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        for agg in self.aggs:
            if agg.column is not None and agg.column not in columns:
                series = rows.get_column(agg.column)
                valid = series.is_not_null().to_numpy() if series.null_count() else None
                values = series.fill_null(0) if valid is not None else series
                columns[agg.column] = (values.to_numpy().astype(np.int64, copy=False), valid)
        for agg in self.aggs:
            names = agg.partial_columns()
            target = self._values[names[0]]
            self._write(target, touched)
            if agg.column is None:
                target[touched] += np.bincount(group, minlength=groups)
                continue
            values, valid = columns[agg.column]
            at = group if valid is None else group[valid]
            picked = values if valid is None else values[valid]
            if agg.kind == "count":
                target[touched] += np.bincount(at, minlength=groups)
            elif agg.kind in ("sum", "mean"):
                total = np.zeros(groups, np.int64)
                np.add.at(total, at, picked)  # wraps in 64 bits, as Polars' sum
                target[touched] += total if agg.kind == "sum" else total.astype(np.float64)
                if agg.kind == "mean":
                    counts = self._values[names[1]]
                    self._write(counts, touched)
                    counts[touched] += np.bincount(at, minlength=groups)
            else:
                seen = self._seen[names[0]]
                self._write(seen, touched)
                pick = np.minimum if agg.kind == "min" else np.maximum
                best = np.full(groups, HIGH if agg.kind == "min" else LOW, np.int64)
                pick.at(best, at, picked)
                hit = np.bincount(at, minlength=groups) > 0
                held = seen[touched]
                # A slot never seen holds 0, not the identity: take the batch's there.
                old = np.where(held, target[touched], best)
                target[touched] = np.where(hit, pick(old, best), old)
                seen[touched] = held | hit
        order = np.argsort(self._index.keys_of(touched))
        return self._final(touched[order])

    def _series(self, name: str, slots: np.ndarray) -> pl.Series:
        """Partial ``name`` of ``slots``: null for a min/max nothing was seen for."""
        series = pl.Series(name, self._values[name][slots])
        seen = self._seen.get(name)
        if seen is not None and not seen[slots].all():
            series = series.scatter(np.flatnonzero(~seen[slots]), None)
        return series

    def _final(self, slots: np.ndarray) -> pl.DataFrame:
        columns = [pl.Series(self.key, self._index.keys_of(slots)).cast(self.schema[self.key])]
        for agg in self.aggs:
            names = agg.partial_columns()
            if agg.kind == "mean":
                total, n = self._values[names[0]][slots], self._values[names[1]][slots]
                with np.errstate(divide="ignore", invalid="ignore"):
                    series = pl.Series(agg.alias, total / n)  # 0 / 0: NaN, as Polars'
            else:
                series = self._series(names[0], slots).alias(agg.alias)
            columns.append(series.cast(self._out[agg.alias]))
        return pl.DataFrame(columns)

    # -- checkpoint form --------------------------------------------------------------------
    def frame(self) -> pl.DataFrame | None:
        """Key and partial columns, one row per key (ascending), as the Polars path
        stores them."""
        if not self._index.used:
            return None
        keys, slots = self._index.in_key_order()
        columns = [pl.Series(self.key, keys).cast(self.schema[self.key])]
        for agg in self.aggs:
            for name in agg.partial_columns():
                columns.append(self._series(name, slots).cast(self._stored[name]))
        return pl.DataFrame(columns)

    def load(self, frame: pl.DataFrame | None) -> None:
        """Replace the contents with ``frame`` (:meth:`frame`'s form, one row per key,
        no null key)."""
        self._journal = Journal()
        self.__post_init__()
        if frame is None or frame.height == 0:
            return
        keys = frame.get_column(self.key).to_numpy().astype(np.int64, copy=False)
        slot = self._slot_of(keys)
        for name in self._values:
            series = frame.get_column(name)
            seen = self._seen.get(name)
            if seen is not None:
                seen[slot] = series.is_not_null().to_numpy()
            array = self._values[name]
            array[slot] = series.fill_null(0).to_numpy().astype(array.dtype, copy=False)
