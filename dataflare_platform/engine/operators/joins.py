"""Joins: windowed stream–stream, incremental (symmetric hash), interval-join aggregate,
and stream–table enrichment. Port 0 is the left input, port 1 the right."""

from __future__ import annotations

from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import polars as pl
import pyarrow as pa

from dataflare_platform.engine.aggregations import Agg
from dataflare_platform.engine.checkpoint import state_table
from dataflare_platform.engine.operators.base import WM_COL, Emit, Operator, concat_rows, event_ms
from dataflare_platform.engine.operators.interval_tiers import (
    RightRows,
    Tier,
    Winner,
    fill_merged,
    frame_of,
    merge_rows,
    merge_tiers,
)
from dataflare_platform.engine.operators.keyed_store import merge_executor
from dataflare_platform.engine.operators.windows import WINDOW_END, WINDOW_START, Tumbling
from dataflare_platform.errors import InvalidInputError


@dataclass
class WindowJoin(Operator):
    """Inner join of rows that share a key and a tumbling window; a window's pairs are
    emitted together when the watermark closes it, and its rows are then dropped.

    Each side is held as window start → row frames, so closing a window pops its frames
    and joins just them."""

    uses_watermark = True
    stateful = True
    windowed = True

    window: Tumbling = field(default_factory=lambda: Tumbling(1000))
    left_on: list[str] = field(default_factory=list)
    right_on: list[str] = field(default_factory=list)
    lateness_ms: int = 0
    suffix: str = "_right"
    inputs: int = 2
    _sides: list[dict[int, list[pl.DataFrame]]] = field(
        default_factory=lambda: [{}, {}], init=False
    )

    def output_time_column(self) -> str:
        return WINDOW_END

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        batch, late = self.split_late(batch, self.lateness_ms)
        if batch.height:
            ts = pl.col(self.time_column).to_physical()
            size = self.window.size_ms
            tagged = batch.drop(WM_COL, strict=False).with_columns(
                (ts - ts % size).alias(WINDOW_START)
            )
            side = self._sides[port]
            for (start,), rows in tagged.partition_by(WINDOW_START, as_dict=True).items():
                side.setdefault(start, []).append(rows)
        return None, late

    def advance(self, watermark: int) -> pl.DataFrame | None:
        size = self.window.size_ms
        limit = watermark - self.lateness_ms - size
        closing = sorted({s for side in self._sides for s in side if s <= limit})
        results = []
        for start in closing:
            left, right = (side.pop(start, None) for side in self._sides)
            if not left or not right:
                continue
            results.append(
                pl.concat(left).join(
                    pl.concat(right),
                    left_on=[WINDOW_START, *self.left_on],
                    right_on=[WINDOW_START, *self.right_on],
                    how="inner",
                    suffix=self.suffix,
                )
            )
        if not results:
            return None
        joined = pl.concat(results, how="vertical_relaxed")
        return joined.with_columns(
            pl.col(WINDOW_START).cast(pl.Datetime("ms")),
            (pl.col(WINDOW_START) + size).cast(pl.Datetime("ms")).alias(WINDOW_END),
        )

    def savepoint(self) -> object:
        return [{start: list(frames) for start, frames in side.items()} for side in self._sides]

    def rollback(self, saved: object) -> None:
        self._sides = [dict(side) for side in saved]  # type: ignore[attr-defined]

    def snapshot(self) -> dict[str, pa.Table]:
        return {
            f"side{i}": state_table(pl.concat([f for frames in side.values() for f in frames]))
            for i, side in enumerate(self._sides)
            if side
        }

    def restore(self, state: dict[str, pa.Table]) -> None:
        self._sides = [{}, {}]
        for i in (0, 1):
            if f"side{i}" in state:
                rows = pl.from_arrow(state[f"side{i}"])
                for (start,), frame in rows.partition_by(WINDOW_START, as_dict=True).items():
                    self._sides[i][start] = [frame]

    def state_rows(self) -> int:
        return sum(f.height for side in self._sides for frames in side.values() for f in frames)


@dataclass
class IntervalJoinAggregate(Operator):
    """Aggregate right rows over each left row's own time interval, e.g. the winning
    (maximum) bid of an auction between its creation and its expiry (Nexmark q4).

    Left rows (port 0) are unique by ``left_key`` and open an interval
    ``[left time, left[end_column]]``; right rows (port 1) whose time falls inside it
    update its partial aggregates. A left row is emitted, with the final aggregates,
    once the watermark passes its end; right rows whose left row has not arrived yet
    wait until the watermark makes a match impossible.

    Open left rows live in tiers (:mod:`interval_tiers`), newest last: right rows are
    matched against the newest tier first and only the rows left over go on to older
    tiers. Streams whose right side refers mostly to recent left rows (bids on fresh
    auctions) so touch a small tier per batch, however many long-lived left rows are open.

    No batch pays for the whole state (issue 21 §5: a p99 that holds). Tiers are merged
    two neighbours at a time and only while the pair holds at most ``CHUNK_ROWS`` open
    rows, one merge per call, so a merge costs O(chunk), never O(open rows). A merge of
    more than ``INLINE_ROWS`` open rows builds its rows on the keyed stores' merge thread
    (``merge_rows``: a concatenation and a gather of whole left rows, strings and all:
    1-2 ms of a q9 auction batch) while batches go on folding into the two tiers; a later
    call puts the merged tier in their place with their partials as they are then
    (``fill_merged``), and the two tiers keep their closed prefixes until then. A tier drops
    its closed prefix itself (O(tier)) and a tier whose rows have all closed is dropped
    whole. The savepoint taken before each batch shares the tiers' arrays (copy on
    write), and a restored checkpoint comes back as chunks of ``CHUNK_ROWS``. With many
    open rows there are more tiers (about open rows / chunk), each a key lookup for the
    right rows that newer tiers did not have.

    With a ``winner`` the left row also carries the columns of its best right row by the
    winner's order (Nexmark q9's winning bid: highest price, then earliest): an argmax
    that, like the aggregates, keeps no right rows, only one value per column per open
    left row.
    """

    uses_watermark = True
    stateful = True

    left_key: str = ""
    right_key: str = ""
    end_column: str = ""
    left_columns: list[str] = field(default_factory=list)
    aggs: list[Agg] = field(default_factory=list)
    lateness_ms: int = 0
    winner: Winner | None = None
    inputs: int = 2
    # None: ``merge_executor()``; tests pass their own.
    executor: Executor | None = field(default=None, repr=False, compare=False)
    _tiers: list[Tier] = field(default_factory=list, init=False)
    _pending: pl.DataFrame | None = field(default=None, init=False)
    _merging: tuple[_TierMerge, ...] = field(default=(), init=False)

    MAX_TIERS = 6  # beyond this many tiers, neighbours are merged while they are small
    CHUNK_ROWS = 32_768  # no merge makes a tier of more open rows than this
    INLINE_ROWS = 2_048  # merges of more open rows build their rows on the merge thread

    def __post_init__(self) -> None:
        # Here, not in each builder method: both interval_join_agg and
        # interval_join_winner make this operator.
        if any(agg.kind == "count_distinct" for agg in self.aggs):
            # Its numpy tiers hold fixed-width partials; a value list does not fit them.
            raise InvalidInputError("an interval join cannot count distinct values")

    def _value_columns(self) -> list[str]:
        columns = [a.column for a in self.aggs if a.column is not None]
        if self.winner is not None:
            columns += self.winner.stored()
        return list(dict.fromkeys(columns))

    def _match(
        self, tiers: list[Tier], right: pl.DataFrame, as_batch: bool = False
    ) -> pl.DataFrame | None:
        """Fold ``right`` into ``tiers`` (newest first); the rows no tier has a key for,
        in the pending form (key, value columns, ``__t``). ``right`` is pending rows,
        or with ``as_batch`` a batch as it came (its time column the stream's)."""
        time = self.time_column if as_batch else "__t"
        rows = RightRows.of(right, self.right_key, self._value_columns(), time)
        left = np.arange(right.height)
        for tier in reversed(tiers):
            if left.size == 0:
                break
            left = tier.match(rows, left)
        if left.size == 0:
            return None
        leftover = right[left] if left.size < right.height else right
        return self._pending_form(leftover) if as_batch else leftover

    def _pending_form(self, right: pl.DataFrame) -> pl.DataFrame:
        """Right rows as the pending frame holds them (and its checkpoint)."""
        return right.select(
            *dict.fromkeys([self.right_key, *self._value_columns()]),
            event_ms(self.time_column).alias("__t"),
        )

    def _open_left(self, batch: pl.DataFrame) -> Tier:
        left = batch.select(
            *self.left_columns,
            event_ms(self.time_column).alias("__start"),
            pl.col(self.end_column).cast(pl.Int64).alias("__end"),
        ).sort("__end")  # closing rows is then a cursor move
        return Tier(self.left_key, left, self.aggs, winner=self.winner)

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        batch, late = self.split_late(batch, self.lateness_ms)
        if batch.height == 0:
            return None, late
        self._install()
        if port == 0:
            tier = self._open_left(batch)
            if self._pending is not None:
                self._pending = self._match([tier], self._pending)
            self._tiers.append(tier)
            self._compact()
            return None, late
        # A null key matches no left row; its row would only wait to be evicted. The
        # batch is read as it is (no select into the pending form: a Polars query per
        # batch), and only rows left over are put in that form.
        if batch.get_column(self.right_key).null_count():
            batch = batch.filter(pl.col(self.right_key).is_not_null())
            if batch.height == 0:
                return None, late
        leftover = self._match(self._tiers, batch, as_batch=True)
        if leftover is not None:
            self._pending = concat_rows(self._pending, leftover)
        return None, late

    def _compact(self) -> None:
        """Beyond ``MAX_TIERS`` tiers, merge the two neighbours with the fewest open rows
        between them, if those fit in ``CHUNK_ROWS``: at most one bounded merge per
        call. Merging the smallest pair keeps sizes even (a row is merged about
        log(chunk / batch) times), and neighbours keep the tiers in age order."""
        tiers = self._tiers
        if len(tiers) <= self.MAX_TIERS:
            return
        sizes = np.array([t.open_rows for t in tiers])
        pairs = sizes[:-1] + sizes[1:]
        if self._merging:  # the inputs of a running merge merge with nothing else
            busy = np.array([self._busy(t) for t in tiers])
            pairs[busy[:-1] | busy[1:]] = self.CHUNK_ROWS + 1
        at = int(np.argmin(pairs))
        if pairs[at] > self.CHUNK_ROWS:
            return
        if pairs[at] <= self.INLINE_ROWS:
            merged = merge_tiers(self.left_key, tiers[at : at + 2], self.aggs, self.winner)
            self._tiers = [*tiers[:at], merged, *tiers[at + 2 :]]
            return
        older, newer = tiers[at : at + 2]
        parts = [(t.rows, t._end, t.lo) for t in (older, newer)]
        executor = self.executor or merge_executor()
        future = executor.submit(merge_rows, self.left_key, parts, self.aggs, self.winner)
        self._merging = (
            *self._merging,
            _TierMerge(older.rows, newer.rows, older.lo, newer.lo, future),
        )

    def _busy(self, tier: Tier) -> bool:
        """Whether ``tier``'s rows are an input of a running merge (its twins in
        savepoints share them): they stay as they are, closed prefix included."""
        return any(tier.rows is m.older or tier.rows is m.newer for m in self._merging)

    def _install(self) -> None:
        """Put each finished merge in place of its two inputs, with their partials as
        they are now. Dropped if the inputs are gone or no longer side by side (closed
        whole, a restore) or were rolled back to before the merge started."""
        done = [m for m in self._merging if m.future.done()]
        if not done:
            return
        self._merging = tuple(m for m in self._merging if all(m is not d for d in done))
        for m in done:
            tiers = self._tiers
            at = next((i for i, t in enumerate(tiers) if t.rows is m.older), None)
            if at is None or at + 1 >= len(tiers) or tiers[at + 1].rows is not m.newer:
                continue
            older, newer = tiers[at : at + 2]
            if older.lo < m.older_lo or newer.lo < m.newer_lo:
                continue
            merged, order = m.future.result()
            merged = fill_merged(merged, order, [older, newer], [m.older_lo, m.newer_lo])
            self._tiers = [*tiers[:at], merged, *tiers[at + 2 :]]

    def advance(self, watermark: int) -> pl.DataFrame | None:
        limit = watermark - self.lateness_ms
        self._install()
        pending = self._pending
        if pending is not None:
            # A filter is a Polars query; a min is not: filter only when a row expires.
            oldest = pending.get_column("__t").min()
            if oldest is None or oldest < limit:  # type: ignore[operator]
                self._pending = pending.filter(pl.col("__t") >= limit)
        closed = [(tier, rows) for tier in self._tiers if (rows := tier.closing(limit)) is not None]
        result = frame_of(closed) if closed else None
        self._tiers = [tier for tier in self._tiers if tier.open_rows]
        for tier in self._tiers:
            if not self._merging or not self._busy(tier):
                tier.trim()
        self._compact()
        if result is None:
            return None
        won = [] if self.winner is None else self.winner.columns
        # Renames and a division per mean, on Series: the output without a Polars query.
        ends = result.get_column("__end").cast(pl.Datetime("ms")).alias(WINDOW_END)
        return pl.DataFrame(
            [
                *(result.get_column(c) for c in self.left_columns),
                ends,
                *(_final(result, agg) for agg in self.aggs),
                *(result.get_column(Winner.name(c)).alias(alias) for c, alias in won),
            ]
        )

    def output_time_column(self) -> str:
        return WINDOW_END

    def savepoint(self) -> object:
        # Tiers fold matches into their arrays in place: the savepoint holds copies.
        return [tier.copy() for tier in self._tiers], self._pending

    def rollback(self, saved: object) -> None:
        tiers, self._pending = saved  # type: ignore[misc]
        self._tiers = list(tiers)

    def snapshot(self) -> dict[str, pa.Table]:
        state = {}
        open_parts = [tier.frame() for tier in self._tiers if tier.open_rows]
        if open_parts:
            state["open"] = state_table(pl.concat(open_parts, how="diagonal_relaxed"))
        if self._pending is not None:
            state["pending"] = state_table(self._pending)
        return state

    def restore(self, state: dict[str, pa.Table]) -> None:
        self._tiers = []
        self._merging = ()
        if "open" in state:
            # In chunks, so that no later merge or prefix drop handles all of them. The
            # snapshot lists tiers oldest first: chunks in that order keep them so.
            frame = pl.from_arrow(state["open"])
            self._tiers = [
                Tier.from_frame(self.left_key, chunk, self.aggs, self.winner)
                for chunk in frame.iter_slices(self.CHUNK_ROWS)
            ]
        self._pending = pl.from_arrow(state["pending"]) if "pending" in state else None

    def state_rows(self) -> int:
        pending = 0 if self._pending is None else self._pending.height
        return pending + sum(t.open_rows for t in self._tiers)


@dataclass(frozen=True)
class _TierMerge:
    """A merge of two neighbouring tiers building its rows on the merge thread: the
    tiers' rows (the same objects in their savepoint twins) and their cursors when it
    started."""

    older: pl.DataFrame
    newer: pl.DataFrame
    older_lo: int
    newer_lo: int
    future: Future


def _final(closed: pl.DataFrame, agg: Agg) -> pl.Series:
    """``agg``'s final value from its partial columns in ``closed`` (as
    :meth:`Agg.final`, on Series)."""
    names = agg.partial_columns()
    if agg.kind == "mean":
        return (closed.get_column(names[0]) / closed.get_column(names[1])).alias(agg.alias)
    return closed.get_column(names[0]).alias(agg.alias)


class SideTable(Protocol):
    """A table an enrich join reads at each batch: ``current()`` is the table as it is
    now (a file-backed one reloads when its file changed). Not checkpointed: a side
    input is the outside world's current state, not the stream's."""

    def current(self) -> pl.DataFrame: ...


class EnrichJoin(Operator):
    """Stream–table join: each row looks up a (small) table by key, vectorised. The
    table is a DataFrame, or a ``SideTable`` asked for its current content per batch."""

    def __init__(
        self,
        table: pl.DataFrame | SideTable,
        left_on: list[str],
        right_on: list[str],
        how: str = "left",
    ) -> None:
        self.table = table
        self.left_on = left_on
        self.right_on = right_on
        self.how = how

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        table = self.table if isinstance(self.table, pl.DataFrame) else self.table.current()
        return batch.join(table, left_on=self.left_on, right_on=self.right_on, how=self.how), None
