"""Joins: windowed stream–stream, incremental (symmetric hash), interval-join aggregate,
and stream–table enrichment. Port 0 is the left input, port 1 the right."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

from dataflare_platform.engine.aggregations import Agg, final_exprs, merge_exprs, partial_exprs
from dataflare_platform.engine.operators import WM_COL, Emit, Operator, event_ms
from dataflare_platform.engine.windows import WINDOW_END, WINDOW_START, Tumbling


def _concat(a: pl.DataFrame | None, b: pl.DataFrame) -> pl.DataFrame:
    return b if a is None else pl.concat([a, b], how="vertical_relaxed")


def _table(df: pl.DataFrame | None) -> dict[str, pa.Table]:
    return {} if df is None else {"rows": df.to_arrow()}


@dataclass
class WindowJoin(Operator):
    uses_watermark = True

    """Inner join of rows that share a key and a tumbling window; a window's pairs are
    emitted together when the watermark closes it, and its rows are then dropped."""

    window: Tumbling
    left_on: list[str]
    right_on: list[str]
    lateness_ms: int = 0
    suffix: str = "_right"
    inputs: int = 2
    _sides: list[pl.DataFrame | None] = field(default_factory=lambda: [None, None], init=False)

    def output_time_column(self) -> str:
        return WINDOW_END

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        batch, late = self.split_late(batch, self.lateness_ms)
        if batch.height:
            ts = event_ms(self.time_column)
            size = self.window.size_ms
            tagged = batch.drop(WM_COL).with_columns((ts - ts.mod(size)).alias(WINDOW_START))
            self._sides[port] = _concat(self._sides[port], tagged)
        return None, late

    def advance(self, watermark: int) -> pl.DataFrame | None:
        left, right = self._sides
        if left is None or right is None:
            # Still evict closed windows on the side that has rows.
            self._sides = [self._evict(s, watermark)[1] for s in self._sides]
            return None
        left_done, self._sides[0] = self._evict(left, watermark)
        right_done, self._sides[1] = self._evict(right, watermark)
        if left_done.height == 0 or right_done.height == 0:
            return None
        joined = left_done.join(
            right_done,
            left_on=[WINDOW_START, *self.left_on],
            right_on=[WINDOW_START, *self.right_on],
            how="inner",
            suffix=self.suffix,
        )
        return joined.with_columns(
            pl.col(WINDOW_START).cast(pl.Datetime("ms")),
            (pl.col(WINDOW_START) + self.window.size_ms).cast(pl.Datetime("ms")).alias(WINDOW_END),
        )

    def _evict(self, side: pl.DataFrame | None, watermark: int):
        if side is None:
            return pl.DataFrame(), None
        done = pl.col(WINDOW_START) + self.window.size_ms + self.lateness_ms <= watermark
        return side.filter(done), side.filter(~done)

    def snapshot(self) -> dict[str, pa.Table]:
        return {f"side{i}": s.to_arrow() for i, s in enumerate(self._sides) if s is not None}

    def restore(self, state: dict[str, pa.Table]) -> None:
        self._sides = [
            pl.from_arrow(state[f"side{i}"]) if f"side{i}" in state else None for i in (0, 1)
        ]

    def state_rows(self) -> int:
        return sum(s.height for s in self._sides if s is not None)


@dataclass
class IncrementalJoin(Operator):
    """Unwindowed inner join that emits every matching pair once, whichever side comes
    first. With ``right_unique`` (the right key is a primary key, like a person id) a
    left row is dropped from state as soon as it has matched, since nothing else can."""

    left_on: list[str]
    right_on: list[str]
    right_unique: bool = False
    suffix: str = "_right"
    inputs: int = 2
    _left: pl.DataFrame | None = field(default=None, init=False)
    _right: pl.DataFrame | None = field(default=None, init=False)

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        rows = batch.drop(WM_COL, strict=False)
        if rows.height == 0:
            return None, None
        if port == 0:
            out = None
            if self._right is not None:
                out = rows.join(
                    self._right,
                    left_on=self.left_on,
                    right_on=self.right_on,
                    how="inner",
                    suffix=self.suffix,
                )
            keep = rows
            if self.right_unique and self._right is not None:
                keep = rows.join(
                    self._right, left_on=self.left_on, right_on=self.right_on, how="anti"
                )
            self._left = _concat(self._left, keep)
            return out, None
        out = None
        if self._left is not None:
            out = self._left.join(
                rows, left_on=self.left_on, right_on=self.right_on, how="inner", suffix=self.suffix
            )
            if self.right_unique:
                self._left = self._left.join(
                    rows, left_on=self.left_on, right_on=self.right_on, how="anti"
                )
        self._right = _concat(self._right, rows)
        return out, None

    def snapshot(self) -> dict[str, pa.Table]:
        state = {}
        if self._left is not None:
            state["left"] = self._left.to_arrow()
        if self._right is not None:
            state["right"] = self._right.to_arrow()
        return state

    def restore(self, state: dict[str, pa.Table]) -> None:
        self._left = pl.from_arrow(state["left"]) if "left" in state else None
        self._right = pl.from_arrow(state["right"]) if "right" in state else None

    def state_rows(self) -> int:
        return sum(s.height for s in (self._left, self._right) if s is not None)


@dataclass
class IntervalJoinAggregate(Operator):
    uses_watermark = True

    """Aggregate right rows over each left row's own time interval, e.g. the winning
    (maximum) bid of an auction between its creation and its expiry (Nexmark q4).

    Left rows (port 0) are unique by ``left_key`` and open an interval
    ``[left time, left[end_column]]``; right rows (port 1) whose time falls inside it
    update its partial aggregates. A left row is emitted, with the final aggregates,
    once the watermark passes its end; right rows whose left row has not arrived yet
    wait until the watermark makes a match impossible.
    """

    left_key: str
    right_key: str
    end_column: str
    left_columns: list[str]
    aggs: list[Agg]
    lateness_ms: int = 0
    inputs: int = 2
    _open: pl.DataFrame | None = field(default=None, init=False)
    _pending: pl.DataFrame | None = field(default=None, init=False)

    def _match(self, left: pl.DataFrame, right: pl.DataFrame) -> pl.DataFrame:
        """Partial aggregates of ``right`` rows inside ``left`` intervals, per left key."""
        joined = left.select(self.left_key, "__start", "__end").join(
            right, left_on=self.left_key, right_on=self.right_key, how="inner"
        )
        joined = joined.filter(
            (pl.col("__t") >= pl.col("__start")) & (pl.col("__t") <= pl.col("__end"))
        )
        return joined.group_by(self.left_key).agg(partial_exprs(self.aggs))

    def _merge_into_open(self, partial: pl.DataFrame) -> None:
        if partial.height == 0 or self._open is None:
            return
        names = [c for a in self.aggs for c in a.partial_columns()]
        base = self._open.drop(names)
        merged = (
            pl.concat([self._open.select(self.left_key, *names), partial], how="vertical_relaxed")
            .group_by(self.left_key)
            .agg(merge_exprs(self.aggs))
        )
        self._open = base.join(merged, on=self.left_key, how="left")

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        batch, late = self.split_late(batch, self.lateness_ms)
        if batch.height == 0:
            return None, late
        t = event_ms(self.time_column)
        if port == 0:
            left = batch.select(
                *self.left_columns,
                t.alias("__start"),
                pl.col(self.end_column).cast(pl.Int64).alias("__end"),
            )
            empty = left.select(self.left_key).with_columns(
                [
                    pl.lit(None).cast(pl.Float64).alias(c)
                    for a in self.aggs
                    for c in a.partial_columns()
                ]
            )
            if self._open is None:
                self._open = left.join(empty, on=self.left_key, how="left")
            else:
                fresh = left.join(empty, on=self.left_key, how="left")
                self._open = pl.concat([self._open, fresh], how="vertical_relaxed")
            if self._pending is not None and self._pending.height:
                self._merge_into_open(self._match(left, self._pending))
                self._pending = self._pending.join(
                    left.select(self.left_key),
                    left_on=self.right_key,
                    right_on=self.left_key,
                    how="anti",
                )
            return None, late
        right = batch.drop(WM_COL).with_columns(t.alias("__t"))
        if self._open is not None:
            self._merge_into_open(self._match(self._open, right))
            right = right.join(
                self._open.select(self.left_key),
                left_on=self.right_key,
                right_on=self.left_key,
                how="anti",
            )
        if right.height:
            self._pending = _concat(self._pending, right)
        return None, late

    def advance(self, watermark: int) -> pl.DataFrame | None:
        limit = watermark - self.lateness_ms
        if self._pending is not None:
            self._pending = self._pending.filter(pl.col("__t") >= limit)
        if self._open is None or self._open.height == 0:
            return None
        done = pl.col("__end") < limit
        closed = self._open.filter(done)
        self._open = self._open.filter(~done)
        first = self.aggs[0].partial_columns()[0]
        closed = closed.filter(pl.col(first).is_not_null())
        if closed.height == 0:
            return None
        return closed.select(
            *self.left_columns,
            pl.col("__end").cast(pl.Datetime("ms")).alias(WINDOW_END),
            *final_exprs(self.aggs),
        )

    def output_time_column(self) -> str:
        return WINDOW_END

    def snapshot(self) -> dict[str, pa.Table]:
        state = {}
        if self._open is not None:
            state["open"] = self._open.to_arrow()
        if self._pending is not None:
            state["pending"] = self._pending.to_arrow()
        return state

    def restore(self, state: dict[str, pa.Table]) -> None:
        self._open = pl.from_arrow(state["open"]) if "open" in state else None
        self._pending = pl.from_arrow(state["pending"]) if "pending" in state else None

    def state_rows(self) -> int:
        return sum(s.height for s in (self._open, self._pending) if s is not None)


class EnrichJoin(Operator):
    """Stream–table join: each row looks up a (small) table by key, vectorised."""

    def __init__(
        self, table: pl.DataFrame, left_on: list[str], right_on: list[str], how: str = "left"
    ) -> None:
        self.table = table
        self.left_on = left_on
        self.right_on = right_on
        self.how = how

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        return batch.join(
            self.table, left_on=self.left_on, right_on=self.right_on, how=self.how
        ), None


class Unique(Operator):
    """Distinct rows within each batch; exact for window outputs, which fire whole."""

    def __init__(self, subset: list[str] | None = None) -> None:
        self.subset = subset

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        return batch.unique(subset=self.subset, maintain_order=True), None
