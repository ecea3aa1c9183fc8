"""Where a tumbling/sliding window keeps its per-pane partial aggregates.

Two stores with one interface. ``FramePanes`` holds Polars frames and takes any key and
aggregate column types. ``ArrayPanes`` holds, per pane, the sorted distinct keys and one
numpy array per partial aggregate, for the common shape of one integer key (or none) and
numeric or temporal aggregate columns (Nexmark q5: bids per auction): a batch is folded
into its panes by grouping keys (a ``bincount`` when they are dense, a sort otherwise)
and ``ufunc.at`` scatters, a window merges its panes
the same way, and only the merged partials of a firing window become a (small) frame.
That takes the per-batch cost of a 10k-row batch from several Polars queries to tens of
microseconds of numpy, which is what keeps batch latency low at a steady offered load.

Both stores read and write the same frame shape (keys, pane, partial columns), so a
checkpoint taken with one restores into the other, and a window can move from arrays to
frames in the middle of a stream (e.g. when a null key appears).
"""

from __future__ import annotations

from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from dataflare_platform.engine import arrays
from dataflare_platform.engine.aggregations import (
    Agg,
    final_exprs,
    merge_exprs,
    partial_exprs,
    partial_names,
)
from dataflare_platform.engine.operators.distinct_lists import union_by_group
from dataflare_platform.engine.operators.interval_tiers import DENSE_FACTOR, DENSE_SLACK, extreme
from dataflare_platform.engine.operators.key_slots import KeySlots
from dataflare_platform.engine.operators.keyed_store import merge_executor
from dataflare_platform.engine.operators.physical import physical_numpy
from dataflare_platform.engine.operators.spare_arrays import SpareArrays
from dataflare_platform.engine.operators.undo import Journal

PANE = "__pane"
_ROW = "__compact_row"  # row numbers while merging (not a partial column)
SPARE_ROOM = 1 << 16  # rooms this large get their next one made on the merge thread
WINDOW_START = "window_start"
WINDOW_END = "window_end"


@dataclass(frozen=True)
class TopN:
    """Keep, per window, the rows ranking in the top ``n`` by ``by`` (ties kept)."""

    by: str
    n: int = 1
    descending: bool = True


class _Panes:
    """Pane start -> the pane's state; evicted once no unfired window needs the pane."""

    _panes: dict

    def starts(self) -> list[int]:
        return list(self._panes)

    def evict(self, before: int) -> None:
        for pane in [p for p in self._panes if p < before]:
            del self._panes[pane]

    def mark(self) -> dict:
        """The panes as they are now, for ``reset`` (a batch failing at run time must
        leave no trace). Pane values are replaced, never changed in place, so a copy of
        the index (and of each pane's frame list) is enough."""
        return {p: list(v) if isinstance(v, list) else v for p, v in self._panes.items()}

    def reset(self, mark: dict) -> None:
        self._panes = dict(mark)


class FramePanes(_Panes):
    """Pane start -> partial-aggregate frames (keys, pane, partials). A pane's frames are
    merged into one once the ones added since the last merge hold more than half
    of what that merge gave (and more than ``MAX_FRAMES`` of them): merging costs the
    whole pane, so merging every ``MAX_FRAMES`` batches made a long window's cost grow
    with its state (q16's exact distinct counts of a day: lists of every bidder and
    auction per channel), where growing the interval keeps it linear overall. The size
    of partials is their rows, and for exact distinct counts the values in their lists.

    A merge of more than ``background`` (rows + list values) runs on the keyed stores'
    merge thread (Polars releases the GIL while it works), so the batch that triggers it
    does not wait: q15's one-day distinct lists made every few hundredth batch take
    15-40 ms of merging on the batch thread. With distinct lists every merge goes there
    (``background`` 0): even small ones cost 5-8 ms (q15's eight lists, a few thousand
    values each), and their integer lists merge in numpy (``distinct_lists``), which
    does not hold the Polars pool the batches' own queries need. New frames are appended
    meanwhile, and the merged frame replaces the frames it was made of when it is done
    (checked at each batch; firing or checkpointing a pane waits for it). A rollback never
    changes a frame: it drops frames from a pane's list, so a merge is installed only if
    the pane still starts with the very frames it merged (identity), and is discarded
    otherwise.
    """

    MAX_FRAMES = 8
    GROWTH = 2  # merge once the new frames hold 1/GROWTH of the merged one's size
    BACKGROUND = 200_000  # merges of more (rows + list values) go to the merge thread

    def __init__(
        self,
        keys: list[str],
        aggs: list[Agg],
        background: int | None = None,  # None: ``BACKGROUND``, or 0 with distinct lists
        executor: Executor | None = None,  # None: ``merge_executor()``; tests pass their own
    ) -> None:
        self.keys, self.aggs = keys, aggs
        self._lists = [c for a in aggs if a.kind == "count_distinct" for c in a.partial_columns()]
        if background is None:
            background = 0 if self._lists else self.BACKGROUND
        self.background, self.executor = background, executor
        self._panes: dict[int, list[pl.DataFrame]] = {}
        self._sizes: dict[int, tuple[int, int]] = {}  # pane -> (merged size, added since)
        self._pending: dict[int, tuple[list[pl.DataFrame], Future]] = {}  # pane -> merge

    def _size(self, frame: pl.DataFrame) -> int:
        if not self._lists:
            return frame.height
        return frame.height + int(
            frame.select(pl.sum_horizontal(pl.col(c).list.len().sum() for c in self._lists)).item()
        )

    def add(self, batch: pl.DataFrame, time_column: str, slide: int) -> None:
        ts = pl.col(time_column).to_physical()
        partial = batch.group_by([*self.keys, (ts - ts % slide).alias(PANE)]).agg(
            partial_exprs(self.aggs)
        )
        for pane in [p for p, (_, f) in self._pending.items() if f.done()]:
            self._install(pane)
        for (pane,), frame in partial.partition_by(PANE, as_dict=True).items():
            frames = self._panes.setdefault(pane, [])
            frames.append(frame)
            merged, added = self._sizes.get(pane, (0, 0))
            added += self._size(frame)
            self._sizes[pane] = (merged, added)
            if pane in self._pending or len(frames) <= self.MAX_FRAMES:
                continue
            if added * self.GROWTH <= merged:
                continue
            if merged + added > self.background:
                executor = self.executor or merge_executor()
                snapshot = list(frames)  # the list itself grows while the merge runs
                self._pending[pane] = (snapshot, executor.submit(self._compact, snapshot, pane))
            else:
                compact = self._compact(frames, pane)
                self._panes[pane] = [compact]
                self._sizes[pane] = (self._size(compact), 0)

    def _install(self, pane: int) -> None:
        """Put a background merge of ``pane`` in place of the frames it merged (waiting
        for it if it runs), if the pane still starts with them (see the class doc)."""
        merged_from, future = self._pending.pop(pane)
        compact = future.result()
        frames = self._panes.get(pane)
        n = len(merged_from)
        if (
            frames is None
            or len(frames) < n
            or any(a is not b for a, b in zip(frames, merged_from, strict=False))
        ):
            return  # rolled back past the merge's frames (or evicted): discarded
        rest = frames[n:]
        self._panes[pane] = [compact, *rest]
        self._sizes[pane] = (self._size(compact), sum(self._size(f) for f in rest))

    def _settle(self, panes) -> None:
        """Wait for and install the pending merges of ``panes`` (before reading them)."""
        for pane in set(panes) & self._pending.keys():
            self._install(pane)

    def evict(self, before: int) -> None:
        super().evict(before)
        for pane in [p for p in self._sizes if p < before]:
            del self._sizes[pane]
        for pane in [p for p in self._pending if p < before]:
            del self._pending[pane]  # its result is dropped when it finishes

    def mark(self) -> dict:
        return {"panes": super().mark(), "sizes": dict(self._sizes)}

    def reset(self, mark: dict) -> None:
        super().reset(mark["panes"])
        self._sizes = dict(mark["sizes"])

    def _compact(self, frames: list[pl.DataFrame], pane: int) -> pl.DataFrame:
        if len(frames) == 1:
            return frames[0]
        whole = pl.concat(frames, how="vertical_relaxed")
        lists = [a for a in self.aggs if a.kind == "count_distinct"]
        if not lists:
            merged = whole.group_by(self.keys).agg(merge_exprs(self.aggs))
            return merged.select(
                *self.keys, pl.lit(pane, pl.Int64).alias(PANE), *partial_names(self.aggs)
            )
        # The distinct lists are merged one at a time (all at once held every column's
        # values together: the peak memory of q16's day window), in numpy where they are
        # integers (``distinct_lists``: off Polars' pool, which the batches share).
        # ``group`` numbers the rows of ``whole`` by their keys' first appearance, the
        # order of the merged rows.
        others = [a for a in self.aggs if a.kind != "count_distinct"]
        if self.keys:
            merged = (
                whole.select(*self.keys, *(c for a in others for c in a.partial_columns()))
                .group_by(self.keys, maintain_order=True)
                .agg(merge_exprs(others))
            )
            group = _first_appearance(whole, self.keys, merged.height)
            if group is None:
                numbered = (
                    whole.select(*self.keys)
                    .with_row_index(_ROW)
                    .group_by(self.keys, maintain_order=True)
                    .agg(pl.col(_ROW))
                    .get_column(_ROW)
                )
                group = np.empty(whole.height, dtype=np.int64)
                group[numbered.explode().to_numpy()] = arrays.repeated(
                    np.arange(len(numbered), dtype=np.int64),
                    numbered.list.len().to_numpy().astype(np.int64),
                )
        else:
            merged = whole.select(pl.len().alias(_ROW), *merge_exprs(others))
            group = np.zeros(whole.height, dtype=np.int64)
        for agg in lists:
            (name,) = agg.partial_columns()
            column = union_by_group(whole.get_column(name), group, merged.height)
            if column is None:  # not integers that pack: Polars, in the same group order
                column = (
                    whole.select(*self.keys, name)
                    .group_by(self.keys, maintain_order=True)
                    .agg(agg.merge())
                    .get_column(name)
                    if self.keys
                    else whole.select(agg.merge()[0].implode()).get_column(name)
                )
            merged = merged.with_columns(column)
        return merged.select(
            *self.keys, pl.lit(pane, pl.Int64).alias(PANE), *partial_names(self.aggs)
        )

    def fire(
        self, starts: list[int], size: int, slide: int, top: TopN | None
    ) -> pl.DataFrame | None:
        """The rows of the windows beginning at ``starts``: window bounds, keys, final
        aggregates (only each window's top-N rows with ``top``), sorted by window and key.
        """
        results = []
        self._settle(p for start in starts for p in range(start, start + size, slide))
        for start in starts:
            frames = [
                f for pane in range(start, start + size, slide) for f in self._panes.get(pane, ())
            ]
            if not frames:
                continue
            # Eager calls: on frames this small they beat a lazy plan (measured). The
            # merge is a compaction's (one distinct list at a time).
            window = self._compact(frames, start).with_columns(final_exprs(self.aggs))
            if top is not None:
                rank = pl.col(top.by).rank("min", descending=top.descending)
                window = window.filter(rank <= top.n)
            results.append(
                window.select(
                    pl.lit(start).cast(pl.Datetime("ms")).alias(WINDOW_START),
                    pl.lit(start + size).cast(pl.Datetime("ms")).alias(WINDOW_END),
                    *self.keys,
                    *[a.alias for a in self.aggs],
                )
            )
        if not results:
            return None
        return pl.concat(results, how="vertical_relaxed").sort([WINDOW_START, *self.keys])

    def to_frame(self) -> pl.DataFrame | None:
        self._settle(list(self._pending))
        frames = [self._compact(f, pane) for pane, f in sorted(self._panes.items())]
        return pl.concat(frames, how="vertical_relaxed") if frames else None

    def load(self, frame: pl.DataFrame) -> None:
        self._panes, self._sizes, self._pending = {}, {}, {}
        for (pane,), part in frame.partition_by(PANE, as_dict=True).items():
            self._panes[pane] = [part]
            self._sizes[pane] = (self._size(part), 0)

    def rows(self) -> int:
        return sum(f.height for frames in self._panes.values() for f in frames)


@dataclass(frozen=True)
class _Slot:
    """One partial column: how raw rows feed it and how partials combine."""

    name: str
    op: str  # "add" | "min" | "max"
    column: str | None  # source column of raw rows; None for count(*)
    counts: bool  # raw rows contribute 1 per (non-null) row rather than their value
    dtype: np.dtype  # accumulator type


@dataclass
class _Pane:
    keys: np.ndarray  # distinct, int64; sorted unless ``index`` is set
    values: dict[str, np.ndarray]  # slot -> accumulator aligned with keys
    seen: dict[str, np.ndarray] = field(default_factory=dict)  # min/max slot -> non-null seen
    # The arrays above are the first len(keys) entries of these, which have room to grow
    # (None: they are exactly as long as the keys). Keyed "keys", "v:<slot>", "s:<slot>".
    room: dict[str, np.ndarray] | None = None
    # A held pane whose new keys came far from its end: keys in arrival order from then
    # on, found through this index, new keys appended (``ArrayPanes._merge_into``).
    index: KeySlots | None = None
    # The next room, made on the merge thread once the pane is three quarters of the way
    # to outgrowing its room.
    spare: SpareArrays | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "keys": self.keys,
            **{f"v:{n}": v for n, v in self.values.items()},
            **{f"s:{n}": v for n, v in self.seen.items()},
        }

    def fields(self) -> tuple:
        return (self.keys, dict(self.values), dict(self.seen), self.room, self.index)

    def set_fields(self, saved: tuple) -> None:
        self.keys, values, seen, self.room, self.index = saved
        self.values, self.seen = dict(values), dict(seen)

    def view(self, length: int) -> None:
        """Point the arrays at the first ``length`` entries of ``room``."""
        assert self.room is not None
        self.keys = self.room["keys"][:length]
        self.values = {n: self.room[f"v:{n}"][:length] for n in self.values}
        self.seen = {n: self.room[f"s:{n}"][:length] for n in self.seen}

    def copy(self, order: np.ndarray | None = None) -> _Pane:
        """Its own arrays (in ``order`` if given), without room or index."""
        if order is None:
            return _Pane(
                self.keys.copy(),
                {n: v.copy() for n, v in self.values.items()},
                {n: v.copy() for n, v in self.seen.items()},
            )
        return _Pane(
            self.keys[order],
            {n: v[order] for n, v in self.values.items()},
            {n: v[order] for n, v in self.seen.items()},
        )


@dataclass
class _Input:
    """Contributions of some rows (raw or partial) to each slot, and the key of each."""

    keys: np.ndarray
    values: dict[str, np.ndarray]
    seen: dict[str, np.ndarray | None]  # min/max: rows with a value; None = all


def _fits_int64(dtype: pl.DataType) -> bool:
    """Integers whose every value is an int64 (UInt64 is not)."""
    return dtype.is_integer() and dtype != pl.UInt64


def _agg_dtype_ok(agg: Agg, dtype: pl.DataType) -> bool:
    if agg.kind == "count":
        return True
    if agg.kind in ("sum", "mean"):
        return _fits_int64(dtype) or dtype.is_float()
    return _fits_int64(dtype) or dtype.is_float() or dtype.is_temporal()


class ArrayPanes(_Panes):
    """Pane start -> sorted distinct keys and numpy partials; see the module docstring."""

    def __init__(self, keys: list[str], aggs: list[Agg], schema: pl.Schema) -> None:
        self.keys, self.aggs = keys, aggs
        self.schema = schema  # keys and partial columns, as the Polars store types them
        self._panes: dict[int, _Pane] = {}
        self._journal = Journal()
        self._slots: list[_Slot] = []
        for agg in aggs:
            names = agg.partial_columns()
            if agg.kind == "count":
                self._slots.append(_Slot(names[0], "add", agg.column, True, np.dtype(np.int64)))
            elif agg.kind == "mean":
                self._slots.append(_Slot(names[0], "add", agg.column, False, np.dtype(np.float64)))
                self._slots.append(_Slot(names[1], "add", agg.column, True, np.dtype(np.int64)))
            else:
                dtype = np.dtype(np.float64 if schema[names[0]].is_float() else np.int64)
                op = "add" if agg.kind == "sum" else agg.kind
                self._slots.append(_Slot(names[0], op, agg.column, False, dtype))

    @staticmethod
    def accepts(batch: pl.DataFrame, keys: list[str], aggs: list[Agg]) -> bool:
        """Whether this batch fits the array store: one integer key without nulls (or
        none), and aggregate columns it can fold exactly (no NaN in a min/max column,
        where numpy and Polars disagree). Exact distinct counts keep value lists, which
        only the Polars store holds."""
        if len(keys) > 1 or any(agg.kind == "count_distinct" for agg in aggs):
            return False
        if keys:
            key = batch.get_column(keys[0])
            if not _fits_int64(key.dtype) or key.null_count():
                return False
        for agg in aggs:
            if agg.column is None:
                continue
            series = batch.get_column(agg.column)
            if not _agg_dtype_ok(agg, series.dtype):
                return False
            if agg.kind in ("min", "max") and series.dtype.is_float() and series.is_nan().any():
                return False
        return True

    # -- folding -------------------------------------------------------------------------
    def _raw(self, batch: pl.DataFrame) -> _Input:
        if self.keys:
            keys = batch.get_column(self.keys[0]).to_numpy().astype(np.int64, copy=False)
        else:
            keys = np.zeros(batch.height, np.int64)
        values: dict[str, np.ndarray] = {}
        seen: dict[str, np.ndarray | None] = {}
        cache: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        for slot in self._slots:
            if slot.column is None:
                values[slot.name] = np.ones(len(keys), np.int64)
                continue
            series = batch.get_column(slot.column)
            if slot.counts:
                valid = _validity(series)
                values[slot.name] = (
                    np.ones(len(keys), np.int64) if valid is None else valid.astype(np.int64)
                )
                continue
            if slot.column not in cache:
                cache[slot.column] = _physical_filled(series)
            raw, valid = cache[slot.column]
            if slot.op == "add":
                values[slot.name] = raw.astype(slot.dtype, copy=False)
            else:
                vals = raw.astype(slot.dtype, copy=False)
                if valid is not None:
                    vals = np.where(valid, vals, extreme(slot.dtype, slot.op))
                values[slot.name] = vals
                seen[slot.name] = valid
        return _Input(keys, values, seen)

    @staticmethod
    def _of(pane: _Pane) -> _Input:
        return _Input(pane.keys, pane.values, dict(pane.seen))

    def _fold(self, inputs: list[_Input]) -> _Pane:
        """One pane's worth of partials from several inputs, grouped by key."""
        if len(inputs) == 1 and inputs[0].keys.size and _is_sorted_distinct(inputs[0].keys):
            only = inputs[0]
            seen = {
                s.name: _all_seen(only.seen.get(s.name), len(only.keys))
                for s in self._slots
                if s.op != "add"
            }
            return _Pane(only.keys, dict(only.values), seen)
        keys, inverse = _group(np.concatenate([i.keys for i in inputs]))
        pane = _Pane(keys, {})
        for slot in self._slots:
            target = np.full(
                len(keys), 0 if slot.op == "add" else extreme(slot.dtype, slot.op), slot.dtype
            )
            contrib = np.concatenate([i.values[slot.name] for i in inputs])
            if slot.op == "add":
                np.add.at(target, inverse, contrib)
            else:
                (np.minimum if slot.op == "min" else np.maximum).at(target, inverse, contrib)
                seen = np.zeros(len(keys), bool)
                masks = [_all_seen(i.seen.get(slot.name), len(i.keys)) for i in inputs]
                seen[inverse[np.concatenate(masks)]] = True
                pane.seen[slot.name] = seen
            pane.values[slot.name] = target
        return pane

    def add(self, batch: pl.DataFrame, time_column: str, slide: int) -> None:
        # Floor division by a scalar is a multiply-and-shift in numpy (libdivide), where
        # ``%`` divides element by element: several times faster on large batches.
        panes = physical_numpy(batch.get_column(time_column)) // slide * slide
        raw = self._raw(batch)
        for start, part in self._split_by_pane(raw, panes, slide):
            held = self._panes.get(start)
            if held is None:
                # Its own arrays (a pane is changed in place; a batch's may be a view of it).
                self._panes[start] = part.copy()
            else:
                self._merge_into(held, part)

    # -- folding into a held pane in place -----------------------------------------------
    # A pane can hold most of the window's keys (a one-day window: every auction of the
    # day); refolding it with each batch costs the whole pane per batch. Instead the
    # batch's keys that the pane holds are updated where they are, and new keys are
    # merged into the pane's tail from the first position they go to (sequential ids
    # arrive near the end), in arrays with room to grow. Where new keys would go far from
    # the end (sparse or scattered ids: the tail rewrite cost the whole pane per batch,
    # q17 on a stream with 40-bit auction ids ran at 0.26 M events/s), the pane leaves key
    # order for good: a ``KeySlots`` index finds its keys and new keys are appended. Every
    # change is journaled so that ``reset`` can undo a failed batch (see ``mark``).
    TAIL_FACTOR = 4  # a tail merge rewrites at most this many held keys per new key
    TAIL_SLACK = 4096

    def mark(self) -> dict:
        return {"panes": dict(self._panes), "undo": self._journal.start()}

    def reset(self, mark: dict) -> None:
        Journal.undo(mark["undo"])
        self._panes = dict(mark["panes"])

    def _merge_into(self, held: _Pane, part: _Pane) -> None:
        n = len(held.keys)
        record = self._journal.record
        if held.index is None:
            pos = np.searchsorted(held.keys, part.keys)
            hit = np.zeros(len(part.keys), bool)
            inside = pos < n
            hit[inside] = held.keys[pos[inside]] == part.keys[inside]
            at = pos[hit]
        else:
            record(partial(held.index.restore, held.index.state()))
            slots = held.index.slots(part.keys)
            hit = slots < n
            at = slots[hit]
        for slot in self._slots:
            target, contrib = held.values[slot.name], part.values[slot.name][hit]
            old = target[at]
            record(partial(_put, target, at, old))
            if slot.op == "add":
                target[at] = old + contrib
            else:
                target[at] = (np.minimum if slot.op == "min" else np.maximum)(old, contrib)
                seen = held.seen[slot.name]
                was = seen[at]
                record(partial(_put, seen, at, was))
                seen[at] = was | part.seen[slot.name][hit]
        if hit.all():
            return
        fresh = np.flatnonzero(~hit)
        if held.index is None:
            first = int(pos[fresh].min())
            if n - first <= self.TAIL_FACTOR * len(fresh) + self.TAIL_SLACK:
                self._merge_tail(held, part, fresh, first)
                return
            record(partial(_Pane.set_fields, held, held.fields()))
            held.index = KeySlots(self._journal)
            held.index.slots(held.keys)  # slot i for the key at position i
            slots = held.index.slots(part.keys)
        self._append(held, part, fresh, slots[fresh])

    def _append(self, held: _Pane, part: _Pane, fresh: np.ndarray, slots: np.ndarray) -> None:
        """Put the new keys ``fresh`` of ``part`` at their ``slots`` (the next ones)."""
        n = len(held.keys)
        length = n + len(fresh)
        self._journal.record(partial(_Pane.set_fields, held, held.fields()))
        room = self._room(held, n, length)
        assert held.index is not None and held.index.used == length
        for name in room:
            room[name][slots] = self._part_array(part, name)[fresh]
        held.view(length)

    def _room(self, held: _Pane, keep: int, length: int) -> dict[str, np.ndarray]:
        """Buffers of at least ``length`` entries holding the pane's first ``keep`` ones
        (new buffers when the pane has none or too small: a savepoint keeps the old).
        Rooms double; past three quarters of one, the next is made on the merge thread
        (``SpareArrays``), so growing a day's pane copies into memory already faulted in
        (a pane that stops growing before it fills its room leaves the spare unused: q17's
        peak RSS 388 -> 551 MB with the spare made at half full)."""
        room = held.room
        if room is None or len(room["keys"]) < length:
            current = held.arrays()
            capacity = max(2 * (0 if room is None else len(room["keys"])), length, 1024)
            spare = None if held.spare is None else held.spare.take(capacity, _kinds(current))
            room = {}
            for at, (name, array) in enumerate(current.items()):
                buffer = np.empty(capacity, array.dtype) if spare is None else spare[at]
                buffer[:keep] = array[:keep]
                room[name] = buffer
            held.room = room
        capacity = len(room["keys"])
        if 4 * length > 3 * capacity and capacity >= SPARE_ROOM:
            if held.spare is None:
                held.spare = SpareArrays()
            held.spare.prepare(2 * capacity, _kinds(room))
        return room

    def _merge_tail(self, held: _Pane, part: _Pane, fresh: np.ndarray, first: int) -> None:
        """Merge the new keys ``fresh`` of ``part`` into the sorted pane from ``first``."""
        n = len(held.keys)
        record = self._journal.record
        # The tail from ``first`` with the new keys, in key order (both are sorted and
        # disjoint, so a stable sort of the two runs is one merge).
        tail_keys = np.concatenate([held.keys[first:], part.keys[fresh]])
        order = np.argsort(tail_keys, kind="stable")
        tails = {
            name: np.concatenate([array[first:], self._part_array(part, name)[fresh]])[order]
            for name, array in held.arrays().items()
        }
        length = n + len(fresh)
        record(partial(_Pane.set_fields, held, held.fields()))
        grows = held.room is None or len(held.room["keys"]) < length
        room = self._room(held, first, length)
        if not grows:
            for buffer in room.values():
                record(partial(_put, buffer, slice(first, n), buffer[first:n].copy()))
        for name, tail in tails.items():
            room[name][first:length] = tail
        held.view(length)

    @staticmethod
    def _part_array(part: _Pane, name: str) -> np.ndarray:
        if name == "keys":
            return part.keys
        kind, slot = name.split(":", 1)
        return part.values[slot] if kind == "v" else part.seen[slot]

    def _split_by_pane(self, raw: _Input, panes: np.ndarray, slide: int) -> list[tuple[int, _Pane]]:
        """The batch's partials per pane. One grouping over (pane, key) combined into one
        integer, pane-major, so a batch spanning a few panes costs one pass."""
        lo, hi = int(panes.min()), int(panes.max())
        if lo == hi:
            return [(lo, self._fold([raw]))]
        kmin = int(raw.keys.min())
        span = int(raw.keys.max()) - kmin + 1
        count = (hi - lo) // slide + 1
        if count * span >= 2**62:  # the combined key would overflow: pane by pane
            return [
                (start, self._fold([self._take(raw, np.flatnonzero(panes == start))]))
                for start in distinct_steps(panes, slide)
            ]
        index = (panes - lo) // slide
        combined = self._fold([_Input(index * span + (raw.keys - kmin), raw.values, raw.seen)])
        index = combined.keys // span
        cuts = (np.flatnonzero(np.diff(index)) + 1).tolist()
        parts = []
        for a, b in zip([0, *cuts], [*cuts, len(index)], strict=True):
            j = int(index[a])
            parts.append(
                (
                    lo + j * slide,
                    _Pane(
                        combined.keys[a:b] - j * span + kmin,
                        {name: v[a:b] for name, v in combined.values.items()},
                        {name: v[a:b] for name, v in combined.seen.items()},
                    ),
                )
            )
        return parts

    @staticmethod
    def _take(raw: _Input, rows: np.ndarray) -> _Input:
        return _Input(
            raw.keys[rows],
            {name: v[rows] for name, v in raw.values.items()},
            {name: None if v is None else v[rows] for name, v in raw.seen.items()},
        )

    # -- the store interface -------------------------------------------------------------
    def fire(
        self, starts: list[int], size: int, slide: int, top: TopN | None
    ) -> pl.DataFrame | None:
        """As ``FramePanes.fire``; finals and the top-N cut are computed in numpy, so only
        the rows that are output become a frame."""
        parts: list[tuple[int, np.ndarray, dict[str, tuple[np.ndarray, np.ndarray | None]]]] = []
        for start in starts:
            held = [self._panes[p] for p in range(start, start + size, slide) if p in self._panes]
            if not held:
                continue
            # A held pane changes in place: what is output must not share its arrays.
            if len(held) > 1:
                pane = self._fold([self._of(p) for p in held])
            elif held[0].index is None:
                pane = held[0].copy()
            else:  # keys in arrival order: output in key order like the others
                pane = held[0].copy(np.argsort(held[0].keys))
            finals = self._finals(pane)
            if top is not None:
                rows = _top_rows(*finals[top.by], top)
                if rows is None:  # NaN in the ranking column: Polars decides how it ranks
                    rows = _top_rows_polars(*finals[top.by], top)
                finals = {
                    name: (v[rows], None if ok is None else ok[rows])
                    for name, (v, ok) in finals.items()
                }
                pane = _Pane(pane.keys[rows], {})
            parts.append((start, pane.keys, finals))
        if not parts:
            return None
        lengths = [len(keys) for _, keys, _ in parts]
        columns: dict[str, pa.Array | np.ndarray] = {
            WINDOW_START: np.repeat([start for start, _, _ in parts], lengths),
        }
        columns[WINDOW_END] = columns[WINDOW_START] + size
        if self.keys:
            columns[self.keys[0]] = np.concatenate([keys for _, keys, _ in parts])
        for agg in self.aggs:
            values = np.concatenate([finals[agg.alias][0] for _, _, finals in parts])
            masks = [finals[agg.alias][1] for _, _, finals in parts]
            if any(m is not None and not m.all() for m in masks):
                valid = np.concatenate(
                    [
                        np.ones(n, bool) if m is None else m
                        for m, n in zip(masks, lengths, strict=True)
                    ]
                )
                columns[agg.alias] = _with_nulls(values, valid)
            else:
                columns[agg.alias] = values
        frame = pl.DataFrame(columns)
        return frame.cast(
            {
                WINDOW_START: pl.Datetime("ms"),
                WINDOW_END: pl.Datetime("ms"),
                **({self.keys[0]: self.schema[self.keys[0]]} if self.keys else {}),
                **{a.alias: self._final_dtype(a) for a in self.aggs},
            }
        )

    def _final_dtype(self, agg: Agg) -> pl.DataType:
        return pl.Float64() if agg.kind == "mean" else self.schema[agg.partial_columns()[0]]

    def _finals(self, pane: _Pane) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        """Alias -> final values and validity (None: all valid), as ``Agg.final``."""
        finals = {}
        for agg in self.aggs:
            names = agg.partial_columns()
            if agg.kind == "mean":
                with np.errstate(divide="ignore", invalid="ignore"):
                    finals[agg.alias] = (pane.values[names[0]] / pane.values[names[1]], None)
            else:
                finals[agg.alias] = (pane.values[names[0]], pane.seen.get(names[0]))
        return finals

    def _frame(self, pane: _Pane, start: int | None = None) -> pl.DataFrame:
        # A copy: a held pane changes in place, a checkpoint must not change with it.
        pane = pane.copy()
        columns: dict[str, pa.Array | np.ndarray] = {}
        if self.keys:
            columns[self.keys[0]] = pane.keys
        if start is not None:
            columns[PANE] = np.full(len(pane.keys), start, np.int64)
        for slot in self._slots:
            columns[slot.name] = _with_nulls(pane.values[slot.name], pane.seen.get(slot.name))
        frame = pl.DataFrame(columns)
        return frame.cast({name: self.schema[name] for name in frame.columns if name != PANE})

    def to_frame(self) -> pl.DataFrame | None:
        frames = [self._frame(pane, start) for start, pane in sorted(self._panes.items())]
        return pl.concat(frames) if frames else None

    def load(self, frame: pl.DataFrame) -> None:
        self._panes = {}
        for (start,), part in frame.partition_by(PANE, as_dict=True).items():
            self._panes[start] = self._fold([self._from_partials(part)])

    def _from_partials(self, part: pl.DataFrame) -> _Input:
        keys = (
            part.get_column(self.keys[0]).to_numpy().astype(np.int64)
            if self.keys
            else np.zeros(part.height, np.int64)
        )
        values, seen = {}, {}
        for slot in self._slots:
            series = part.get_column(slot.name).to_physical()
            valid = series.is_not_null().to_numpy()
            fill = 0 if slot.op == "add" else extreme(slot.dtype, slot.op)
            values[slot.name] = series.fill_null(fill).to_numpy().astype(slot.dtype)
            if slot.op != "add":
                seen[slot.name] = valid
        return _Input(keys, values, seen)

    def rows(self) -> int:
        return sum(len(p.keys) for p in self._panes.values())


def distinct_steps(starts: np.ndarray, step: int) -> list[int]:
    """The distinct values of window or pane starts (multiples of ``step``), ascending. A
    batch covers few windows: checking each step between the smallest and largest is
    linear, where ``np.unique`` sorts the whole batch (~0.3 ms per 10k rows, measured)."""
    lo, hi = int(starts.min()), int(starts.max())
    if lo == hi:
        return [lo]
    if (hi - lo) // step > 64:
        return arrays.unique_sorted(starts).tolist()
    return [s for s in range(lo, hi + 1, step) if (starts == s).any()]


def _with_nulls(values: np.ndarray, valid: np.ndarray | None) -> np.ndarray | pa.Array:
    """``values`` as a column, null where ``valid`` is False (None: none is null)."""
    if valid is None or valid.all():
        return values
    return arrays.from_numpy(values, pa.from_numpy_dtype(values.dtype), valid)


def _group(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct keys and each key's position among them. Dense integer keys (a
    range within a small multiple of their count, as sequential ids are) are grouped
    with a bincount in linear time; others with a sort."""
    lo, hi = int(keys.min()), int(keys.max())
    span = hi - lo + 1
    if span > DENSE_FACTOR * len(keys) + DENSE_SLACK:
        return np.unique(keys, return_inverse=True)
    present = np.bincount(keys - lo, minlength=span) > 0
    position = np.cumsum(present) - 1
    return np.flatnonzero(present) + lo, position[keys - lo]


def _top_rows(values: np.ndarray, valid: np.ndarray | None, top: TopN) -> np.ndarray | None:
    """Positions ranking within the top ``n`` by value, ties kept, nulls never (as a
    Polars ``rank("min") <= n`` filter); None when NaN makes the ranking Polars' call."""
    candidates = np.arange(len(values)) if valid is None else np.flatnonzero(valid)
    v = values[candidates]
    if v.size == 0:
        return candidates
    if v.dtype.kind == "f" and np.isnan(v).any():
        return None
    if top.n >= v.size:
        return candidates
    if top.descending:
        return candidates[v >= np.partition(v, v.size - top.n)[v.size - top.n]]
    return candidates[v <= np.partition(v, top.n - 1)[top.n - 1]]


def _top_rows_polars(values: np.ndarray, valid: np.ndarray | None, top: TopN) -> np.ndarray:
    series = pl.Series(_with_nulls(values, valid))
    keep = series.rank("min", descending=top.descending) <= top.n
    return np.flatnonzero(keep.fill_null(False).to_numpy())


def _validity(series: pl.Series) -> np.ndarray | None:
    """Which rows are not null (None: all are), from the Arrow validity bitmap."""
    if not series.null_count():
        return None
    return arrays.validity(series.to_arrow())


def _physical_filled(series: pl.Series) -> tuple[np.ndarray, np.ndarray | None]:
    """A numeric or temporal column's physical values, 0 under nulls, and which rows are
    not null (None: all are), without a Polars query per column (see ``_validity``)."""
    valid = _validity(series)
    if valid is None:
        return physical_numpy(series), None
    values = arrays.to_numpy(series.to_arrow())
    return np.where(valid, values, np.zeros((), values.dtype)), valid


def _kinds(buffers: dict[str, np.ndarray]) -> tuple[tuple[str, int], ...]:
    """The (dtype, fill) of each of a pane's arrays, in order, for ``SpareArrays``."""
    return tuple((array.dtype.str, 0) for array in buffers.values())


def _put(array: np.ndarray, at: np.ndarray | slice, values: np.ndarray) -> None:
    """An undo step: put back ``values`` at ``at``."""
    array[at] = values


def _is_sorted_distinct(keys: np.ndarray) -> bool:
    return bool((keys[1:] > keys[:-1]).all())


def _all_seen(mask: np.ndarray | None, n: int) -> np.ndarray:
    return np.ones(n, bool) if mask is None else mask


def _first_appearance(frame: pl.DataFrame, keys: list[str], groups: int) -> np.ndarray | None:
    """Each row's group number, groups numbered by first appearance (the order of a
    ``maintain_order`` group-by), for one integer, string, boolean or temporal key: Arrow's
    dictionary encoding on the calling thread. The Polars way (a group-by collecting row
    numbers) ran 50-90 ms on Polars' pool for q16's day of channels (10 k groups, 324 k
    rows), holding the batches' own queries that long. ``None`` for other keys."""
    if len(keys) != 1:
        return None
    column = frame.get_column(keys[0])
    dtype = column.dtype
    if not (dtype.is_integer() or dtype.is_temporal() or dtype in (pl.String, pl.Boolean)):
        return None
    array = column.to_arrow()
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    encoded = pc.dictionary_encode(array, null_encoding="encode")
    if len(encoded.dictionary) != groups:
        return None
    return arrays.to_numpy(encoded.indices).astype(np.int64)
