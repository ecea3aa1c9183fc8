"""Rows that are only ever added, found by key: the right side of a join whose right key
is unique (``IncrementalJoin`` with ``right_unique``), and the keys it rejected.

A :class:`KeyedStore` keeps a key's rows together and merges its segments row by row, so
every merge copies whole rows. For rows that never leave that is wasted work, and with
wide rows it is the slow batch: Nexmark q20 holds every category-10 auction, strings and
all, and a merge of its auctions stalled a batch 20-70 ms (issue 21 §5).

Here a row is written once, into a payload chunk, in the order it came, and never
moved. What merges is an index: runs of (key hash, row number) pairs, two int64 numpy
arrays sorted by hash, merged like a binary counter (a run merges with the one above
while it is no longer), so a lookup searches O(log) runs and a merge is numpy work only.
Merges of more entries than ``background_rows`` run on the keyed stores' merge thread
(numpy's sort releases the GIL) and are installed by a later call. Payload chunks are
concatenated the same way (a chunk with the one after it while it is no longer), which
keeps row numbers (a row's number is its place in the concatenation of all chunks) and
the chunk count O(log). Every chunk concatenation runs on the merge thread: it copies
whole rows (q20's auctions, strings and all: up to 8 ms of a batch, measured), and a
batch reads the chunks as they are until it is installed. A chunk as put still points
into its batch's buffers; a concatenation copies its strings out (``_own_strings``).

A key's code is the key itself when it is one integer column (q20's auction id, q3's
person id), else a 64-bit hash. A lookup codes its keys once (the caller may pass the
codes, to share them between stores), looks each distinct code up in every run, and for
hashes compares the keys of the rows found with the keys looked up, so rows of another
key with the same hash are dropped. A key held twice finds both rows: the result is
exactly an inner join's pairs (a null key matches nothing).

Everything is immutable: a savepoint is the tuple of runs and chunks, a rollback puts it
back (a running merge whose inputs it removed is dropped when done). Hashes are never
checkpointed (Polars' hash is stable within one version only): ``frame`` gives the rows
and ``load`` indexes them again.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import polars as pl
import pyarrow as pa

from dataflare_platform.engine import arrays
from dataflare_platform.engine.checkpoint import state_table
from dataflare_platform.engine.operators.keyed_store import HASH_SEED, merge_executor

_EMPTY = np.empty(0, dtype=np.int64)
# A lookup's key codes, whether they are exact (the key itself) and which rows have a key.
Codes = tuple[np.ndarray, bool, np.ndarray | None]


@dataclass(frozen=True)
class IndexRun:
    """Row numbers sorted by their key hash (stable: equal hashes in row order)."""

    hashes: np.ndarray  # int64, ascending
    ids: np.ndarray  # int64 row numbers, aligned with ``hashes``

    @property
    def size(self) -> int:
        return int(self.hashes.size)


def merge_runs(older: IndexRun, newer: IndexRun) -> IndexRun:
    """Two runs as one. Numpy only: on the merge thread it holds the GIL briefly."""
    hashes = np.concatenate([older.hashes, newer.hashes])
    order = np.argsort(hashes, kind="stable")  # two sorted runs: a linear merge
    return IndexRun(hashes[order], np.concatenate([older.ids, newer.ids])[order])


@dataclass(frozen=True, eq=False)
class Chunk:
    """Rows as put, or several puts' rows concatenated. ``owned``: its strings are its
    own (``_own_strings``); a chunk as put may still point into its batch's buffers."""

    frame: pl.DataFrame
    owned: bool

    @property
    def size(self) -> int:
        return self.frame.height


def merge_chunks(older: Chunk, newer: Chunk) -> Chunk:
    """Two adjacent chunks as one, strings copied out of batch buffers. On the merge
    thread: Polars releases the GIL for the copies."""
    parts = [c.frame if c.owned else _own_strings(c.frame) for c in (older, newer)]
    return Chunk(pl.concat(parts, how="vertical_relaxed", rechunk=True), True)


@dataclass(frozen=True)
class PendingMerge:
    """A merge of two adjacent runs or chunks running on the merge thread, with its
    inputs (``compacted`` / ``installed``)."""

    older: IndexRun | Chunk | np.ndarray
    newer: IndexRun | Chunk | np.ndarray
    future: Future


# Index runs and payload chunks here, sorted code runs in ``code_sets.CodeSet``.
Item = TypeVar("Item", IndexRun, Chunk, np.ndarray)


def compacted(
    items: tuple[Item, ...],
    pending: tuple[PendingMerge, ...],
    merge: Callable[[Item, Item], Item],
    inline: int,
    executor: Callable[[], Executor],
) -> tuple[tuple[Item, ...], tuple[PendingMerge, ...]]:
    """``items`` with adjacent pairs merged while the older is no longer than the newer,
    newest pair first (a binary counter: O(log) items). A merge of more than ``inline``
    entries goes to the merge thread (``pending``) and its inputs stay until a later call
    installs it (``installed``); inputs of a running merge merge with nothing else. A
    merge installed in the middle can leave a pair below the top out of order, hence the
    scan over every pair (``KeyedStore._compact``)."""
    runs = list(items)
    busy = {id(r) for p in pending for r in (p.older, p.newer)}
    while True:
        pair = next(
            (
                i
                for i in range(len(runs) - 2, -1, -1)
                if runs[i].size <= runs[i + 1].size
                and id(runs[i]) not in busy
                and id(runs[i + 1]) not in busy
            ),
            None,
        )
        if pair is None:
            break
        older, newer = runs[pair], runs[pair + 1]
        if older.size + newer.size > inline:
            pending = (*pending, PendingMerge(older, newer, executor().submit(merge, older, newer)))
            busy |= {id(older), id(newer)}
            continue
        runs[pair : pair + 2] = [merge(older, newer)]
    return tuple(runs), pending


def installed(
    items: tuple[Item, ...], pending: tuple[PendingMerge, ...]
) -> tuple[tuple[Item, ...], tuple[PendingMerge, ...]]:
    """``items`` with each finished merge in place of its inputs (if they are still
    there, side by side: a rollback or load may have dropped them), and the merges still
    running."""
    done = [p for p in pending if p.future.done()]
    if not done:
        return items, pending
    pending = tuple(p for p in pending if all(p is not d for d in done))
    for p in done:
        i = next((j for j, r in enumerate(items) if r is p.older), None)
        if i is not None and i + 1 < len(items) and items[i + 1] is p.newer:
            items = (*items[:i], p.future.result(), *items[i + 2 :])
    return items, pending


@dataclass
class AppendStore:
    """Rows keyed by ``keys`` that are added and never removed; see the module
    docstring."""

    keys: list[str]
    # Index merges of more entries than this run on the merge thread (a merge of 32 k
    # entries took up to 1 ms of a q20 batch, measured).
    background_rows: int = 1 << 13
    executor: Executor | None = None  # None: ``merge_executor()``; tests pass their own
    _chunks: tuple[Chunk, ...] = field(default=(), init=False)
    _runs: tuple[IndexRun, ...] = field(default=(), init=False)
    _rows: int = field(default=0, init=False)
    _pending: tuple[PendingMerge, ...] = field(default=(), init=False)  # index merges
    _packing: tuple[PendingMerge, ...] = field(default=(), init=False)  # chunk merges

    # ---- adding and finding rows ----

    def put(self, rows: pl.DataFrame, owned: bool = False) -> None:
        """Add ``rows``, kept in their order. A row with a null key is kept (``frame``)
        but never found. ``owned``: ``rows`` hold their own strings (not views into a
        larger batch's buffers)."""
        if rows.height == 0:
            return
        self._install()
        codes, _, valid = self.codes(rows)
        start = self._rows
        self._rows += rows.height
        self._chunks = (*self._chunks, Chunk(rows, owned))
        at = None
        if valid is not None:  # null keys are not indexed
            at = np.flatnonzero(valid)
            codes = codes[at]
        if codes.size:
            order = np.argsort(codes, kind="stable")  # equal codes in row order
            ids = (order if at is None else at[order]) + start
            self._runs = (*self._runs, IndexRun(codes[order], ids.astype(np.int64, copy=False)))
        self._compact()

    def find(self, keys: pl.DataFrame, codes: Codes | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Every pair (row of ``keys``, row number here) whose keys are equal, as two
        aligned int64 arrays, in the order of ``keys`` (a null key matches nothing).
        ``keys`` holds this store's key columns (any number of rows, repeats allowed);
        ``codes`` are theirs (``codes``) when the caller has them."""
        self._install()
        if not self._runs or keys.height == 0:
            return _EMPTY, _EMPTY
        values, exact, valid = self.codes(keys) if codes is None else codes
        wanted, inverse, order, new = _distinct(values)
        found_at: list[np.ndarray] = []  # index into ``wanted``
        found_ids: list[np.ndarray] = []
        for run in self._runs:
            lo = np.searchsorted(run.hashes, wanted, "left")
            hit = run.hashes[np.minimum(lo, run.size - 1)] == wanted
            if not hit.any():
                continue
            lo, at = lo[hit], np.flatnonzero(hit)
            after = run.hashes[np.minimum(lo + 1, run.size - 1)]
            if not ((after == wanted[hit]) & (lo + 1 < run.size)).any():
                found_at.append(at)  # one entry per code, the rule
                found_ids.append(run.ids[lo])
                continue
            counts = np.searchsorted(run.hashes, wanted[hit], "right") - lo
            found_at.append(np.repeat(at, counts))
            found_ids.append(run.ids[arrays.ranges(lo, counts)])
        if not found_at:
            return _EMPTY, _EMPTY
        at, ids = np.concatenate(found_at), np.concatenate(found_ids)
        if exact:
            rows, ids = _pairs(at, ids, inverse, wanted.size)
        else:
            rows, ids = self._same_keys(keys, at, ids, inverse, order, new)
        if valid is not None:
            keep = valid[rows]
            rows, ids = rows[keep], ids[keep]
        return rows, ids

    def _same_keys(
        self,
        keys: pl.DataFrame,
        at: np.ndarray,
        ids: np.ndarray,
        inverse: np.ndarray,
        order: np.ndarray,
        new: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``_pairs`` for hashes: drop rows of other keys that share a hash, comparing
        the keys themselves, once per distinct hash when the keys looked up that share a
        hash are equal (no collision among them, the rule), else once per pair."""
        asked = keys.select(self.keys)
        first = order[new]  # a row of each distinct hash
        if _equal(asked[first[inverse]], asked, self.keys).all():
            same = _equal(self.gather(ids, self.keys), asked[first[at]], self.keys)
            return _pairs(at[same], ids[same], inverse, first.size)
        rows, ids = _pairs(at, ids, inverse, first.size)
        same = _equal(self.gather(ids, self.keys), asked[rows], self.keys)
        return rows[same], ids[same]

    def codes(self, frame: pl.DataFrame) -> Codes:
        """The key code of each row of ``frame``, whether equal codes mean equal keys,
        and which rows have a key (None: all). One integer key is its own code (no
        hash, nothing to compare); other keys are hashed (``hash``)."""
        column = frame.get_column(self.keys[0])
        nulls = sum(frame.get_column(k).null_count() for k in self.keys)
        valid = None
        if nulls:
            valid = np.ones(frame.height, dtype=bool)
            for k in self.keys:
                valid &= frame.get_column(k).is_not_null().to_numpy()
        if len(self.keys) == 1 and column.dtype.is_integer():
            if nulls:
                column = column.fill_null(0)
            if column.dtype == pl.UInt64:
                return column.to_numpy().view(np.int64), True, valid
            return column.cast(pl.Int64).to_numpy(), True, valid
        return self.hash(frame), False, valid

    def gather(self, ids: np.ndarray, columns: list[str] | None = None) -> pl.DataFrame:
        """The rows numbered ``ids`` (``columns`` only, when given), in that order."""
        chunks = tuple(c.frame for c in self._chunks)
        if columns is not None:
            chunks = tuple(c.select(columns) for c in chunks)
        if len(chunks) == 1 or ids.size == 0:
            return chunks[0][ids]
        starts = np.cumsum([0, *(c.height for c in chunks)])
        which = np.searchsorted(starts, ids, "right") - 1
        order = np.argsort(which, kind="stable")
        bounds = np.searchsorted(which[order], np.arange(len(chunks) + 1))
        parts = [
            chunks[c][ids[order[bounds[c] : bounds[c + 1]]] - starts[c]]
            for c in range(len(chunks))
            if bounds[c + 1] > bounds[c]
        ]
        rows = pl.concat(parts, how="vertical_relaxed") if len(parts) > 1 else parts[0]
        if len(parts) == 1 or bool(np.all(ids[1:] >= ids[:-1])):
            return rows  # already in the order of ``ids``
        back = np.empty_like(order)
        back[order] = np.arange(order.size)
        return rows[back]

    def hash(self, frame: pl.DataFrame) -> np.ndarray:
        """The 64-bit key hash of each row of ``frame`` (as ``KeyedStore.hash``)."""
        if len(self.keys) == 1:
            expr = pl.col(self.keys[0]).hash(HASH_SEED)
        else:
            expr = pl.struct(self.keys).hash(HASH_SEED)
        return frame.select(expr).to_series().to_numpy().view(np.int64)

    # ---- merges ----

    def _executor(self) -> Executor:
        return self.executor or merge_executor()

    def _compact(self) -> None:
        """Merge runs and chunks as a binary counter (``compacted``): index runs of up to
        ``background_rows`` entries here, larger ones and every chunk merge on the merge
        thread."""
        self._install()
        self._runs, self._pending = compacted(
            self._runs, self._pending, merge_runs, self.background_rows, self._executor
        )
        self._chunks, self._packing = compacted(
            self._chunks, self._packing, merge_chunks, 0, self._executor
        )

    def _install(self) -> None:
        """Put finished index and chunk merges in place of their inputs."""
        self._runs, self._pending = installed(self._runs, self._pending)
        self._chunks, self._packing = installed(self._chunks, self._packing)

    # ---- checkpoints and savepoints ----

    def frame(self) -> pl.DataFrame | None:
        """Every row (for a checkpoint), or None when the store never held any."""
        if not self._chunks:
            return None
        chunks = [c.frame for c in self._chunks]
        return pl.concat(chunks, how="vertical_relaxed") if len(chunks) > 1 else chunks[0]

    def to_arrow(self) -> pa.Table | None:
        """Every row as an Arrow table (a checkpoint's state), as ``KeyedStore.to_arrow``:
        the chunks hold no dropped rows, so one conversion of ``frame()`` copies nothing
        twice."""
        frame = self.frame()
        return None if frame is None else state_table(frame)

    def load(self, frame: pl.DataFrame | None) -> None:
        """Replace the contents with ``frame`` (from ``frame``: its strings its own)."""
        self._chunks, self._runs, self._rows, self._pending, self._packing = (), (), 0, (), ()
        if frame is not None:
            self.put(frame, owned=True)

    def savepoint(self) -> object:
        return (self._chunks, self._runs, self._rows)

    def rollback(self, saved: object) -> None:
        # A running merge of runs or chunks newer than ``saved`` finds its inputs gone:
        # dropped when done (``_install``); one of older ones is still good.
        self._chunks, self._runs, self._rows = saved  # type: ignore[misc]

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def segments(self) -> int:
        """Index runs (what a lookup searches)."""
        return len(self._runs)

    def key_schema(self) -> dict[str, pl.DataType] | None:
        """The key columns' types as stored (None while empty): a lookup casts its keys
        to them, since equal values of other types hash differently."""
        if not self._chunks:
            return None
        schema = self._chunks[-1].frame.schema
        return {k: schema[k] for k in self.keys}


def _own_strings(rows: pl.DataFrame) -> pl.DataFrame:
    """``rows`` with their string and binary columns copied. A filtered or gathered
    string column still points into its batch's buffers (for a source read from a
    memory-mapped file, the file's pages): held for good, the whole batch would stay
    (q20: every auction's strings, though only category-10 ones are kept: +210 MB of
    peak RSS on 10 M events, measured). Through Arrow the strings are copied."""
    strings = [c for c, t in rows.schema.items() if t in (pl.String, pl.Binary)]
    if not strings:
        return rows
    return rows.with_columns(pl.from_arrow(rows.select(strings).to_arrow()))  # type: ignore[arg-type]


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The distinct ``values`` sorted, each value's place among them, and (for hashes)
    the sort order of ``values`` with a mark on the first of each run of equal values.
    Stable sort: a batch's keys repeat a lot (q20: ~700 auctions in 9 k bids), which
    numpy's default quicksort handles ten times slower."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    new = np.ones(ordered.size, dtype=bool)
    new[1:] = ordered[1:] != ordered[:-1]
    inverse = np.empty(order.size, dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    return ordered[new], inverse, order, new


def _equal(a: pl.DataFrame, b: pl.DataFrame, keys: list[str]) -> np.ndarray:
    """Row by row, whether ``a`` and ``b`` hold the same ``keys`` (null equal to null:
    rows without a key are dropped by ``find`` after)."""
    same = np.ones(a.height, dtype=bool)
    for k in keys:
        same &= a.get_column(k).eq_missing(b.get_column(k)).to_numpy()
    return same


def _pairs(
    at: np.ndarray, ids: np.ndarray, inverse: np.ndarray, wanted: int
) -> tuple[np.ndarray, np.ndarray]:
    """Expand matches per distinct hash (``at``: index into the distinct hashes) to
    matches per looked-up row (``inverse``: each row's distinct hash)."""
    inverse = inverse.reshape(-1)
    if at.size == 0:
        return _EMPTY, _EMPTY
    counts = np.bincount(at, minlength=wanted)
    if counts.max() == 1:  # at most one row per key, the common case
        per_hash = np.full(wanted, -1, dtype=np.int64)
        per_hash[at] = ids
        per_row = per_hash[inverse]
        rows = np.flatnonzero(per_row >= 0)
        return rows, per_row[rows]
    order = np.argsort(at, kind="stable")
    ids = ids[order]
    starts = np.cumsum(counts) - counts
    per_row = counts[inverse]
    rows = np.repeat(np.arange(inverse.size, dtype=np.int64), per_row)
    return rows, ids[arrays.ranges(starts[inverse], per_row)]
