"""The pane store of tumbling windows with exact distinct counts over integer columns
(Nexmark q15/q16: a day's distinct bidders and auctions, overall and per price rank).

``FramePanes`` keeps each group's distinct values as a list and merges the lists when
they double, so the per-batch cost grows with how much of the window is held (q16 at
10k rows per batch: p99 ~100 ms, the largest merge 1.6 s). Here a pane keeps:

* its groups (the key values) in a small frame, each with a group id (``GID``);
* every (group, distinct aggregate, value) seen, encoded as one int64 code, in a
  ``CodeSet`` that tells a batch which of its codes are new in O(batch log state);
* per group and distinct aggregate, the number of distinct values so far (an int64
  array indexed by ``gid * aggregates + aggregate``), raised by the new codes;
* the other aggregates (counts, max, ...) in an inner pane store keyed by the group id:
  ``ArrayPanes`` (numpy) where the batch fits it, else ``FramePanes`` for good.

A code is ``(value + VALUE_BIAS) << TAG_BITS | tag`` with ``tag = gid * aggregates +
aggregate``: value-major, because a batch's values cluster (the bids of a few seconds
name a few hundred bidders and auctions, each in many groups), so its lookups cluster in
the code set's runs and mostly hit the cache (tag-major codes spread them over the
whole run: a few times slower on q16's day). This store takes a batch whose distinct
columns are integers within ``VALUE_BIAS`` of zero and whose groups fit the tag bits
(``accepts``); anything else (strings, huge
values) goes to ``FramePanes`` for good, as ``WindowAggregate`` does with ``ArrayPanes``.
Only tumbling windows: a sliding window's distinct count is not a sum over its panes.

A batch's lookups run on the code-check thread (``code_sets.check_executor``), in order,
while the batch thread goes on; their results (which codes were new) are added to the
counts once done, at the latest when a window fires, a checkpoint reads the sets or a
rollback needs them. A savepoint does not wait: it queues a read of each set's runs
behind its pending lookups, so it holds the set as of that point of the stream; a
rollback waits for every lookup in flight and puts the saved runs back, with the
lookups that were pending at the savepoint (their results stay valid).

The store reads and writes the frame shape of ``FramePanes`` (keys, pane, partials, with
the distinct values as lists), so checkpoints are unchanged and restore into either.
Every piece is replaced, never changed in place (the code sets have their own
savepoints), so a savepoint is a copy of the pane index.
"""

from __future__ import annotations

from concurrent.futures import Executor, Future
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa

from dataflare_platform.engine import arrays
from dataflare_platform.engine.aggregations import Agg, partial_exprs, partial_names
from dataflare_platform.engine.operators.code_sets import CodeSet, check_executor
from dataflare_platform.engine.operators.frames import keep_columns
from dataflare_platform.engine.operators.pane_stores import (
    PANE,
    WINDOW_END,
    WINDOW_START,
    ArrayPanes,
    FramePanes,
    TopN,
    distinct_steps,
)
from dataflare_platform.engine.operators.physical import physical_numpy

GID = "__gid"
TAG_BITS = 23
MAX_TAGS = 1 << TAG_BITS  # group ids times distinct aggregates
TAG_MASK = MAX_TAGS - 1
VALUE_BIAS = 1 << (62 - TAG_BITS)  # values in [-2^39, 2^39) are codes' high bits


@dataclass(frozen=True)
class _Check:
    """A batch's codes being looked up in its pane's code set on the check thread."""

    future: Future  # -> the mask of the codes the set did not hold
    codes: np.ndarray
    size: int  # the pane's tags (groups times distinct aggregates) at that batch


@dataclass(frozen=True)
class _Pane:
    """One pane's groups (keys and ``GID``; None without keys), code set and counts,
    and the lookups not yet in the counts (oldest first)."""

    groups: pl.DataFrame | None
    codes: CodeSet
    counts: np.ndarray  # int64, gid * aggregates + aggregate -> distinct values so far
    checks: tuple[_Check, ...] = ()

    def settled(self, wait: bool) -> _Pane:
        """This pane with its finished lookups (all of them if ``wait``) in the counts."""
        counts, checks = self.counts, self.checks
        while checks and (wait or checks[0].future.done()):
            check, checks = checks[0], checks[1:]
            new = check.future.result()
            raised = np.bincount(check.codes[new] & TAG_MASK, minlength=check.size)
            raised[: counts.size] += counts
            counts = raised
        if checks is self.checks:
            return self
        return _Pane(self.groups, self.codes, counts, checks)

    @property
    def group_count(self) -> int:
        return 1 if self.groups is None else self.groups.height


def _fits(series: pl.Series) -> bool:
    """An integer column whose values can be a code's high bits."""
    if not series.dtype.is_integer():
        return False
    if series.len() == series.null_count():
        return True
    return series.min() >= -VALUE_BIAS and series.max() < VALUE_BIAS  # type: ignore[operator]


def _values(series: pl.Series) -> tuple[np.ndarray, np.ndarray | None]:
    """An integer column's values (under nulls: unspecified) and where it is not null
    (None: everywhere), read from its Arrow buffers: Polars' ``is_not_null`` and
    ``drop_nulls`` are a query each (~0.1 ms), and a batch has eight such columns."""
    array = series.to_arrow()
    values = arrays.to_numpy(array)
    bitmap = array.buffers()[0]
    if bitmap is None or array.null_count == 0:
        return values, None
    bits = np.unpackbits(np.frombuffer(bitmap, np.uint8), bitorder="little")
    return values, bits[array.offset : array.offset + len(array)].view(bool)


@dataclass
class DistinctPanes:
    """Pane start -> groups, distinct code set and counts; see the module docstring."""

    keys: list[str]
    aggs: list[Agg]
    value_types: dict[str, pl.DataType] = field(default_factory=dict)  # alias -> dtype
    checker: Executor | None = None  # None: ``check_executor()``; tests pass their own
    _panes: dict[int, _Pane] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.distinct = [a for a in self.aggs if a.kind == "count_distinct"]
        self.others = [a for a in self.aggs if a.kind != "count_distinct"]
        self._inner: ArrayPanes | FramePanes | None = None
        self._frames_only = False  # a batch did not fit the inner arrays

    def _inner_for(
        self, rows: pl.DataFrame, time_column: str, slide: int
    ) -> ArrayPanes | FramePanes:
        """The store of the other aggregates, moved to frames once a batch does not fit
        the arrays (as ``WindowAggregate`` chooses its own store)."""
        arrays = not self._frames_only and ArrayPanes.accepts(rows, [GID], self.others)
        if self._inner is not None and isinstance(
            self._inner, ArrayPanes if arrays else FramePanes
        ):
            return self._inner
        held = self._inner.to_frame() if self._inner is not None else None
        store: ArrayPanes | FramePanes
        if arrays:
            ts = pl.col(time_column).to_physical()
            schema = (
                rows.lazy()
                .group_by([GID, (ts - ts % slide).alias(PANE)])
                .agg(partial_exprs(self.others))
                .collect_schema()
            )
            store = ArrayPanes([GID], self.others, schema)
        else:
            self._frames_only = True
            store = FramePanes([GID], self.others)
        if held is not None:
            store.load(held)
        self._inner = store
        return store

    @staticmethod
    def accepts(batch: pl.DataFrame, keys: list[str], aggs: list[Agg]) -> bool:
        """Whether this batch fits: keys, distinct columns of integers within the code's
        value bits, and room for every group (a bound: the batch's rows) in the code's
        tag. Without keys a pane holds one value list per aggregate, which Polars merges
        fast and in parallel: there the code sets cost more than they save (Nexmark q15 at
        65k rows per batch: 1.4 M events/s with them, 2.7-7.3 M/s without, measured), where
        per-group lists (q16: 10k channels) are what made merges slow."""
        distinct = [a for a in aggs if a.kind == "count_distinct"]
        if not keys or not distinct:
            return False
        if batch.height * len(distinct) >= MAX_TAGS:
            return False
        return all(_fits(batch.get_column(a.column)) for a in distinct)  # type: ignore[arg-type]

    def has_room(self, rows: int) -> bool:
        """Whether every held pane's groups, plus ``rows`` new ones at most, still fit
        the codes' tag bits (a pane gathers groups batch after batch)."""
        width = len(self.distinct)
        return all((p.group_count + rows) * width < MAX_TAGS for p in self._panes.values())

    @staticmethod
    def accepts_partials(frame: pl.DataFrame, keys: list[str], aggs: list[Agg]) -> bool:
        """Whether held partials (``FramePanes`` shape) fit, as ``accepts`` for a batch."""
        distinct = [a for a in aggs if a.kind == "count_distinct"]
        if not distinct or frame.height * len(distinct) >= MAX_TAGS:
            return False
        for agg in distinct:
            column = frame.get_column(agg.partial_columns()[0])
            if not isinstance(column.dtype, pl.List) or not _fits(column.explode()):
                return False
        return True

    # -- folding -------------------------------------------------------------------------
    def starts(self) -> list[int]:
        return list(self._panes)

    def add(self, batch: pl.DataFrame, time_column: str, slide: int) -> None:
        for agg in self.distinct:
            self.value_types.setdefault(agg.alias, batch.schema[agg.column])  # type: ignore[index]
        ts = physical_numpy(batch.get_column(time_column))
        panes = ts // slide * slide
        starts = distinct_steps(panes, slide)
        gids = np.empty(batch.height, np.int64)
        for start in starts:
            part = batch if len(starts) == 1 else batch.filter(pl.Series(panes == start))
            held = self._panes.get(start)
            groups, gid = self._group_ids(None if held is None else held.groups, part)
            codes = self._codes(part, gid)
            if held is None:
                held = _Pane(groups, CodeSet(), np.zeros(0, np.int64))
            held = held.settled(wait=False)
            size = (1 if groups is None else groups.height) * len(self.distinct)
            check = _Check(self._checker().submit(held.codes.add, codes), codes, size)
            self._panes[start] = _Pane(groups, held.codes, held.counts, (*held.checks, check))
            if len(starts) == 1:
                gids = gid
            else:
                gids[panes == start] = gid
        others = [a.column for a in self.others if a.column is not None]
        rows = keep_columns(batch, dict.fromkeys([time_column, *others])).hstack(
            [pl.Series(GID, gids)]
        )
        self._inner_for(rows, time_column, slide).add(rows, time_column, slide)

    def _checker(self) -> Executor:
        return self.checker or check_executor()

    def _settled(self, start: int) -> _Pane:
        """The pane at ``start`` once every lookup of its batches is in its counts."""
        pane = self._panes[start] = self._panes[start].settled(wait=True)
        return pane

    def _quiesce(self) -> None:
        """Wait until the check thread has run everything submitted so far (it runs in
        order): no lookup is then touching any of this store's code sets."""
        if any(p.checks for p in self._panes.values()):
            self._checker().submit(int).result()

    def _group_ids(
        self, groups: pl.DataFrame | None, part: pl.DataFrame
    ) -> tuple[pl.DataFrame | None, np.ndarray]:
        """The pane's groups with those of ``part`` added, and each row's group id."""
        if not self.keys:
            return None, np.zeros(part.height, np.int64)
        keys = keep_columns(part, self.keys)
        if groups is None:
            groups = keys.clear().with_columns(pl.lit(0, pl.Int64).alias(GID)).clear()
        joined = keys.join(
            groups, on=self.keys, how="left", nulls_equal=True, maintain_order="left"
        )
        gid = joined.get_column(GID)
        if gid.null_count():
            missing = gid.is_null()
            fresh = keys.filter(missing).unique(maintain_order=True)
            n = groups.height
            fresh = fresh.with_columns(pl.int_range(n, n + fresh.height, dtype=pl.Int64).alias(GID))
            groups = pl.concat([groups, fresh], how="vertical_relaxed").rechunk()
            filled = keys.filter(missing).join(
                fresh, on=self.keys, how="left", nulls_equal=True, maintain_order="left"
            )
            values = gid.fill_null(0).to_numpy().copy()
            values[missing.to_numpy()] = filled.get_column(GID).to_numpy()
            return groups, values
        return groups, gid.to_numpy()

    def _codes(self, part: pl.DataFrame, gid: np.ndarray) -> np.ndarray:
        """The sorted distinct codes of ``part``'s non-null distinct values."""
        width = len(self.distinct)
        pieces = []
        for index, agg in enumerate(self.distinct):
            values, valid = _values(part.get_column(agg.column))  # type: ignore[arg-type]
            codes = ((values.astype(np.int64, copy=False) + VALUE_BIAS) << TAG_BITS) | (
                gid * width + index
            )
            pieces.append(codes if valid is None else codes[valid])
        return _sorted_distinct(np.concatenate(pieces))

    # -- firing --------------------------------------------------------------------------
    def fire(
        self, starts: list[int], size: int, slide: int, top: TopN | None
    ) -> pl.DataFrame | None:
        """As ``FramePanes.fire`` (tumbling windows: a window is one pane)."""
        if self._inner is None:
            return None
        inner = self._inner.fire(starts, size, slide, None)
        if inner is None:
            return None
        results = []
        for rows in inner.partition_by(WINDOW_START, maintain_order=True):
            start = int(rows.get_column(WINDOW_START).to_physical()[0])
            results.append(self._finals(self._settled(start), rows))
        window = pl.concat(results, how="vertical_relaxed")
        if top is not None:
            rank = pl.col(top.by).rank("min", descending=top.descending).over(WINDOW_START)
            window = window.filter(rank <= top.n)
        return window.select(
            WINDOW_START, WINDOW_END, *self.keys, *[a.alias for a in self.aggs]
        ).sort([WINDOW_START, *self.keys])

    def _finals(self, pane: _Pane, rows: pl.DataFrame) -> pl.DataFrame:
        """The window's rows (bounds, ``GID``, other finals) with keys and distinct counts."""
        gid = rows.get_column(GID).to_numpy()
        width = len(self.distinct)
        counts = {
            a.alias: pl.Series(a.alias, pane.counts[gid * width + i], pl.Int64)
            for i, a in enumerate(self.distinct)
        }
        rows = rows.with_columns(**counts)
        if pane.groups is not None:
            rows = rows.join(pane.groups, on=GID, how="left", maintain_order="left")
        return rows

    def evict(self, before: int) -> None:
        if self._inner is not None:
            self._inner.evict(before)
        for start in [p for p in self._panes if p < before]:
            del self._panes[start]  # a lookup still running touches only its own set

    # -- savepoints and checkpoints ------------------------------------------------------
    def mark(self) -> dict:
        panes = {}
        for start, pane in self._panes.items():
            pane = self._panes[start] = pane.settled(wait=False)
            if pane.checks:  # the runs as of this point: read after the pending lookups
                saved = self._checker().submit(pane.codes.savepoint)
            else:
                saved = Future()
                saved.set_result(pane.codes.savepoint())
            panes[start] = (pane, saved)
        return {
            "inner": self._inner,
            "inner_mark": None if self._inner is None else self._inner.mark(),
            "frames_only": self._frames_only,
            "panes": panes,
        }

    def reset(self, mark: dict) -> None:
        self._quiesce()  # lookups after the savepoint must not touch the sets put back
        self._inner, self._frames_only = mark["inner"], mark["frames_only"]
        if self._inner is not None:
            self._inner.reset(mark["inner_mark"])
        self._panes = {}
        for start, (pane, saved) in mark["panes"].items():
            pane.codes.rollback(saved.result())
            self._panes[start] = pane

    def to_frame(self) -> pl.DataFrame | None:
        """The partials in ``FramePanes``' shape: keys, pane, partials (distinct values as
        lists of the column's type)."""
        inner = None if self._inner is None else self._inner.to_frame()
        if inner is None:
            return None
        frames = []
        for (start,), part in inner.partition_by(PANE, as_dict=True).items():
            pane = self._settled(start)
            part = part.join(self._lists(pane), on=GID, how="left", maintain_order="left")
            if pane.groups is not None:
                part = part.join(pane.groups, on=GID, how="left", maintain_order="left")
            frames.append(part.select(*self.keys, PANE, *partial_names(self.aggs)))
        return pl.concat(frames, how="vertical_relaxed")

    def _lists(self, pane: _Pane) -> pl.DataFrame:
        """Per group id, each distinct aggregate's values as a list (empty if none)."""
        codes = pane.codes.codes()
        width, groups = len(self.distinct), pane.group_count
        codes = codes[np.argsort(codes & TAG_MASK, kind="stable")]  # by tag, then value
        tags = codes & TAG_MASK
        values = (codes >> TAG_BITS) - VALUE_BIAS
        columns: dict[str, pa.Array | np.ndarray] = {GID: np.arange(groups, dtype=np.int64)}
        for index, agg in enumerate(self.distinct):
            mine = tags % width == index
            gid = tags[mine] // width  # ascending: sorted by tag above
            offsets = np.searchsorted(gid, np.arange(groups + 1)).astype(np.int64)
            lists = pa.LargeListArray.from_arrays(
                arrays.from_numpy(offsets, pa.int64()), arrays.from_numpy(values[mine], pa.int64())
            )
            column = agg.partial_columns()[0]
            dtype = self.value_types.get(agg.alias, pl.Int64())
            columns[column] = pl.Series(column, lists).cast(pl.List(dtype))
        return pl.DataFrame(columns)

    def load(self, frame: pl.DataFrame) -> None:
        """From partials in ``FramePanes``' shape (``accepts_partials`` holds)."""
        self._panes = {}
        inner = []
        for (start,), part in frame.partition_by(PANE, as_dict=True).items():
            groups, gid = self._group_ids(None, part)
            width = len(self.distinct)
            pieces = []
            for index, agg in enumerate(self.distinct):
                column = part.get_column(agg.partial_columns()[0])
                self.value_types.setdefault(agg.alias, column.dtype.inner)  # type: ignore[union-attr]
                lengths = column.list.len().fill_null(0).to_numpy()
                values = column.explode().drop_nulls().to_numpy().astype(np.int64)
                tags = np.repeat(gid * width + index, lengths)
                pieces.append(((values + VALUE_BIAS) << TAG_BITS) | tags)
            codes = _sorted_distinct(np.concatenate(pieces))
            held = CodeSet()
            held.add(codes)
            size = (1 if groups is None else groups.height) * width
            counts = np.bincount(codes & TAG_MASK, minlength=size).astype(np.int64)
            self._panes[start] = _Pane(groups, held, counts)
            inner.append(
                part.select(PANE, *partial_names(self.others)).with_columns(pl.Series(GID, gid))
            )
        # Into frames, which take any partials; the next batch moves them to arrays.
        self._inner, self._frames_only = FramePanes([GID], self.others), False
        self._inner.load(pl.concat(inner, how="vertical_relaxed"))

    def rows(self) -> int:
        """The held rows and codes (codes of lookups in flight not yet among them)."""
        inner = 0 if self._inner is None else self._inner.rows()
        return inner + sum(len(p.codes) for p in self._panes.values())


def _sorted_distinct(codes: np.ndarray) -> np.ndarray:
    """The distinct codes, ascending. Polars' hash ``unique`` first: a batch repeats its
    bidders and auctions many times (q15: ~5k distinct codes of 40k per 10k rows), and
    sorting only the distinct ones is several times cheaper than numpy sorting them all
    (``np.unique`` hashes too, but is slower still, measured)."""
    if codes.size < 2:
        return np.sort(codes)
    return pl.Series(codes).unique().sort().to_numpy()
