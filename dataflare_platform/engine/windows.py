"""Event-time windows: tumbling, sliding (hopping) and session, with mergeable aggregates.

Tumbling and sliding windows keep per-pane partial aggregates (a pane is one slide
long), never raw events: a window is the merge of its ``size / slide`` panes. A window
fires once, when the watermark passes its end plus the allowed lateness; its panes are
evicted as soon as no unfired window needs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

from dataflare_platform.engine.aggregations import (
    Agg,
    final_exprs,
    merge_exprs,
    partial_exprs,
)
from dataflare_platform.engine.operators import WM_COL, Emit, Operator, event_ms

WINDOW_START = "window_start"
WINDOW_END = "window_end"
_PANE = "__pane"


@dataclass(frozen=True)
class Tumbling:
    size_ms: int

    @property
    def slide_ms(self) -> int:
        return self.size_ms


@dataclass(frozen=True)
class Sliding:
    size_ms: int
    slide_ms: int

    def __post_init__(self) -> None:
        if self.slide_ms <= 0 or self.size_ms % self.slide_ms:
            raise ValueError("sliding window: slide must be positive and divide size")


@dataclass(frozen=True)
class Session:
    gap_ms: int


@dataclass(frozen=True)
class TopN:
    """Keep, per window, the rows ranking in the top ``n`` by ``by`` (ties kept)."""

    by: str
    n: int = 1
    descending: bool = True


def _as_datetime(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.Datetime("ms"))


def _top(rows: pl.DataFrame, top: TopN | None, group: list[str]) -> pl.DataFrame:
    if top is None or rows.height == 0:
        return rows
    rank = pl.col(top.by).rank("min", descending=top.descending).over(group)
    return rows.filter(rank <= top.n)


@dataclass
class WindowAggregate(Operator):
    """Aggregates per key and tumbling/sliding window from per-pane partials, optionally
    keeping only each window's top-N rows (Nexmark q5's hottest auctions)."""

    uses_watermark = True

    window: Tumbling | Sliding = field(default_factory=lambda: Tumbling(1000))
    keys: list[str] = field(default_factory=list)
    aggs: list[Agg] = field(default_factory=list)
    lateness_ms: int = 0
    top: TopN | None = None
    _panes: pl.DataFrame | None = field(default=None, init=False)
    _pending: list[pl.LazyFrame] = field(default_factory=list, init=False)
    _first_pane: int | None = field(default=None, init=False)
    _last_pane: int | None = field(default=None, init=False)
    _fired_until: int | None = field(default=None, init=False)  # next window start to fire

    MAX_PENDING = 8  # partials kept unmerged between firings

    def output_time_column(self) -> str:
        return WINDOW_END

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        batch, late = self.split_late(batch, self.lateness_ms)
        if batch.height == 0:
            return None, late
        slide = self.window.slide_ms
        ts_np = batch.get_column(self.time_column).to_physical().to_numpy()
        lo, hi = int(ts_np.min()), int(ts_np.max())
        lo, hi = lo - lo % slide, hi - hi % slide
        self._first_pane = lo if self._first_pane is None else min(self._first_pane, lo)
        self._last_pane = hi if self._last_pane is None else max(self._last_pane, hi)
        ts = pl.col(self.time_column).to_physical()
        self._pending.append(
            batch.lazy()
            .group_by([*self.keys, (ts - ts % slide).alias(_PANE)])
            .agg(partial_exprs(self.aggs))
        )
        if len(self._pending) >= self.MAX_PENDING:
            self._panes = self._merged().collect()
            self._pending = []
        return None, late

    def _merged(self) -> pl.LazyFrame:
        parts = ([self._panes.lazy()] if self._panes is not None else []) + self._pending
        return (
            pl.concat(parts, how="vertical_relaxed")
            .group_by([*self.keys, _PANE])
            .agg(merge_exprs(self.aggs))
        )

    def advance(self, watermark: int) -> pl.DataFrame | None:
        if self._first_pane is None:
            return None
        size, slide = self.window.size_ms, self.window.slide_ms
        # Windows [s, s + size) with s + size + lateness <= watermark are complete; none
        # after the last pane holds data.
        last_start = watermark - self.lateness_ms - size
        last_start = min(last_start - last_start % slide, self._last_pane)
        first_start = self._first_pane - size + slide
        if self._fired_until is not None:
            first_start = max(first_start, self._fired_until)
        if last_start < first_start:
            return None
        self._fired_until = last_start + slide
        merged_df = self._merged().collect()
        merged = merged_df.lazy()
        pane = pl.col(_PANE)
        live = merged.filter((pane >= first_start) & (pane < last_start + size))
        # Each live pane goes to the (at most size/slide) firing windows containing it.
        expanded = pl.concat(
            [
                live.with_columns((pane - k * slide).alias(WINDOW_START)).filter(
                    pl.col(WINDOW_START).is_between(first_start, last_start)
                )
                for k in range(size // slide)
            ]
        )
        result = (
            expanded.group_by([WINDOW_START, *self.keys])
            .agg(merge_exprs(self.aggs))
            .select(
                _as_datetime(WINDOW_START),
                (pl.col(WINDOW_START) + size).cast(pl.Datetime("ms")).alias(WINDOW_END),
                *self.keys,
                *final_exprs(self.aggs),
            )
        )
        if self.top is not None:
            rank = pl.col(self.top.by).rank("min", descending=self.top.descending)
            result = result.filter(rank.over(WINDOW_START) <= self.top.n)
        result = result.sort([WINDOW_START, *self.keys])
        # Panes that no unfired window contains are done.
        out = result.collect()
        self._panes = merged_df.filter(pane >= self._fired_until)
        self._pending = []
        if self._panes.height == 0:
            self._first_pane = self._last_pane = None
        else:
            self._first_pane = max(self._first_pane, self._fired_until)
        return out if out.height else None

    def snapshot(self) -> dict[str, pa.Table]:
        if self._pending:
            self._panes = self._merged().collect()
            self._pending = []
        if self._panes is None:
            return {}
        meta = pa.table(
            {
                name: pa.array([getattr(self, f"_{name}")], pa.int64())
                for name in ("fired_until", "first_pane", "last_pane")
            }
        )
        return {"panes": self._panes.to_arrow(), "meta": meta}

    def restore(self, state: dict[str, pa.Table]) -> None:
        if "panes" in state:
            self._panes = pl.from_arrow(state["panes"])
            meta = state["meta"]
            self._fired_until = meta.column("fired_until")[0].as_py()
            self._first_pane = meta.column("first_pane")[0].as_py()
            self._last_pane = meta.column("last_pane")[0].as_py()

    def state_rows(self) -> int:
        if self._pending:
            self._panes = self._merged().collect()
            self._pending = []
        return 0 if self._panes is None else self._panes.height


@dataclass
class WindowTopRows(Operator):
    """Rows with the top ``by`` value per tumbling window (and key), ties kept, e.g.
    Nexmark q7's highest bid. State holds only each open window's current leaders."""

    uses_watermark = True

    window: Tumbling
    top: TopN
    keys: list[str] = field(default_factory=list)
    lateness_ms: int = 0
    _rows: pl.DataFrame | None = field(default=None, init=False)

    def output_time_column(self) -> str:
        return WINDOW_END

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        batch, late = self.split_late(batch, self.lateness_ms)
        if batch.height == 0:
            return None, late
        ts = event_ms(self.time_column)
        size = self.window.size_ms
        tagged = batch.drop(WM_COL).with_columns((ts - ts.mod(size)).alias(WINDOW_START))
        group = [WINDOW_START, *self.keys]
        candidates = _top(tagged, self.top, group)
        if self._rows is not None:
            candidates = _top(pl.concat([self._rows, candidates]), self.top, group)
        self._rows = candidates
        return None, late

    def advance(self, watermark: int) -> pl.DataFrame | None:
        if self._rows is None or self._rows.height == 0:
            return None
        size = self.window.size_ms
        done = pl.col(WINDOW_START) + size + self.lateness_ms <= watermark
        fired = self._rows.filter(done)
        self._rows = self._rows.filter(~done)
        if fired.height == 0:
            return None
        return fired.with_columns(
            _as_datetime(WINDOW_START),
            (pl.col(WINDOW_START) + size).cast(pl.Datetime("ms")).alias(WINDOW_END),
        ).sort([WINDOW_START, *self.keys, self.time_column])

    def snapshot(self) -> dict[str, pa.Table]:
        return {} if self._rows is None else {"rows": self._rows.to_arrow()}

    def restore(self, state: dict[str, pa.Table]) -> None:
        if "rows" in state:
            self._rows = pl.from_arrow(state["rows"])

    def state_rows(self) -> int:
        return 0 if self._rows is None else self._rows.height


@dataclass
class SessionAggregate(Operator):
    """Per-key sessions: events closer than ``gap`` belong together. Open sessions keep
    their (few) raw events until the watermark passes last event + gap + lateness."""

    uses_watermark = True

    gap_ms: int
    keys: list[str]
    aggs: list[Agg]
    lateness_ms: int = 0
    _events: pl.DataFrame | None = field(default=None, init=False)

    def output_time_column(self) -> str:
        return WINDOW_END

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        batch, late = self.split_late(batch, self.lateness_ms)
        if batch.height == 0:
            return None, late
        rows = batch.drop(WM_COL)
        self._events = rows if self._events is None else pl.concat([self._events, rows])
        return None, late

    def advance(self, watermark: int) -> pl.DataFrame | None:
        if self._events is None or self._events.height == 0:
            return None
        ts = "__ts"
        sessions = (
            self._events.with_columns(event_ms(self.time_column).alias(ts))
            .sort([*self.keys, ts])
            .with_columns(
                (pl.col(ts).diff().over(self.keys).fill_null(self.gap_ms) >= self.gap_ms)
                .cum_sum()
                .over(self.keys)
                .alias("__session")
            )
        )
        bounds = sessions.group_by([*self.keys, "__session"]).agg(
            pl.col(ts).min().alias("__start"), pl.col(ts).max().alias("__last")
        )
        closed = bounds.filter(pl.col("__last") + self.gap_ms + self.lateness_ms <= watermark)
        if closed.height == 0:
            return None
        tagged = sessions.join(closed, on=[*self.keys, "__session"], how="left", nulls_equal=True)
        done = tagged.filter(pl.col("__start").is_not_null())
        self._events = tagged.filter(pl.col("__start").is_null()).select(self._events.columns)
        return (
            done.group_by([*self.keys, "__start", "__last"])
            .agg(partial_exprs(self.aggs))
            .select(
                pl.col("__start").cast(pl.Datetime("ms")).alias(WINDOW_START),
                (pl.col("__last") + self.gap_ms).cast(pl.Datetime("ms")).alias(WINDOW_END),
                *self.keys,
                *final_exprs(self.aggs),
            )
            .sort([WINDOW_START, *self.keys])
        )

    def snapshot(self) -> dict[str, pa.Table]:
        return {} if self._events is None else {"events": self._events.to_arrow()}

    def restore(self, state: dict[str, pa.Table]) -> None:
        if "events" in state:
            self._events = pl.from_arrow(state["events"])

    def state_rows(self) -> int:
        return 0 if self._events is None else self._events.height
