"""Event-time windows: tumbling, sliding (hopping) and session, with mergeable aggregates.

Tumbling and sliding windows keep per-pane partial aggregates (a pane is one slide
long), never raw events: a window is the merge of its ``size / slide`` panes. A window
fires once, when the watermark passes its end plus the allowed lateness; its panes are
evicted as soon as no unfired window needs them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import polars as pl
import pyarrow as pa

from dataflare_platform.engine import arrays
from dataflare_platform.engine.aggregations import (
    Agg,
    final_exprs,
    merge_exprs,
    partial_exprs,
    partial_names,
)
from dataflare_platform.engine.checkpoint import state_table
from dataflare_platform.engine.durations import MAX_WINDOW_MS, MAX_WINDOWS_PER_EVENT, format_ms
from dataflare_platform.engine.operators.base import (
    WM_COL,
    Emit,
    FrameState,
    Operator,
    event_ms,
)
from dataflare_platform.engine.operators.distinct_panes import DistinctPanes
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
from dataflare_platform.engine.watermarks import MAX_WATERMARK
from dataflare_platform.errors import InvalidInputError


@dataclass(frozen=True)
class Tumbling:
    size_ms: int

    def __post_init__(self) -> None:
        _window_bound("tumbling window size", self.size_ms)

    @property
    def slide_ms(self) -> int:
        return self.size_ms


@dataclass(frozen=True)
class Sliding:
    size_ms: int
    slide_ms: int

    def __post_init__(self) -> None:
        _window_bound("sliding window size", self.size_ms)
        if self.slide_ms <= 0 or self.size_ms % self.slide_ms:
            raise InvalidInputError("sliding window: slide must be positive and divide size")
        if self.size_ms // self.slide_ms > MAX_WINDOWS_PER_EVENT:
            raise InvalidInputError(
                f"sliding window: size / slide is {self.size_ms // self.slide_ms}, over the"
                f" limit of {MAX_WINDOWS_PER_EVENT} windows per event: use a longer slide"
            )


@dataclass(frozen=True)
class Session:
    gap_ms: int

    def __post_init__(self) -> None:
        _window_bound("session gap", self.gap_ms)


def _window_bound(what: str, ms: int) -> None:
    """Sizes are positive and at most ``MAX_WINDOW_MS``: zero would divide by zero, and a
    size near 2^63 ms wraps in the pane arithmetic and silently loses every event."""
    if isinstance(ms, bool) or not isinstance(ms, int) or ms <= 0:
        raise InvalidInputError(f"{what} must be a positive number of milliseconds, not {ms!r}")
    if ms > MAX_WINDOW_MS:
        raise InvalidInputError(f"{what} {ms} ms is over the limit of {format_ms(MAX_WINDOW_MS)}")


# Where WindowAggregate keeps its panes (see each store's docstring).
Store = FramePanes | ArrayPanes | DistinctPanes

# SessionAggregate state columns: session id (while merging), first and last event time.
SID, START, LAST = "__session", "__start", "__last"

# WindowTopRows: a batch spanning fewer windows than this is split by masks (a few
# comparisons per window over the batch); more, by each row's window start.
FEW_WINDOWS = 4
ARRIVAL = "__arrival"  # a processing-time window's pane column: the clock at arrival


def _beyond(dtype: np.dtype, descending: bool) -> int | float:
    """A value every other value of ``dtype`` beats (the start of a masked max or min)."""
    if dtype.kind == "f":
        return -np.inf if descending else np.inf
    info = np.iinfo(dtype)
    return info.min if descending else info.max


def _as_datetime(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.Datetime("ms"))


@dataclass
class WindowAggregate(Operator):
    """Aggregates per key and tumbling/sliding window from per-pane partials, optionally
    keeping only each window's top-N rows (Nexmark q5's hottest auctions).

    State is a pane store (``pane_stores``): pane start -> partial aggregates per key. A
    batch is folded into the panes it touches; a firing window merges its own panes only,
    so the work per batch is proportional to the batch and the firing windows, never to
    all open state. The numpy store serves one integer key (or none); anything else, or
    a batch it cannot fold exactly, moves the state to the Polars store for good.
    """

    uses_watermark = True
    stateful = True
    windowed = True

    window: Tumbling | Sliding = field(default_factory=lambda: Tumbling(1000))
    keys: list[str] = field(default_factory=list)
    aggs: list[Agg] = field(default_factory=list)
    lateness_ms: int = 0
    top: TopN | None = None
    _store: Store | None = field(default=None, init=False)
    _frames_only: bool = field(default=False, init=False)  # a batch did not fit the arrays
    _fired_until: int | None = field(default=None, init=False)  # next window start to fire

    def output_time_column(self) -> str:
        return WINDOW_END

    def _kind(self, batch: pl.DataFrame) -> type[Store]:
        """The store this batch fits: numpy arrays (one integer key, plain aggregates),
        code sets (a tumbling window's distinct counts over integers), else frames."""
        if self._frames_only:
            return FramePanes
        if ArrayPanes.accepts(batch, self.keys, self.aggs):
            return ArrayPanes
        tumbling = self.window.size_ms == self.window.slide_ms
        if tumbling and DistinctPanes.accepts(batch, self.keys, self.aggs):
            held = self._store
            if not isinstance(held, DistinctPanes) or held.has_room(batch.height):
                return DistinctPanes
        return FramePanes

    def _store_for(self, batch: pl.DataFrame) -> Store:
        kind = self._kind(batch)
        if isinstance(self._store, kind):
            return self._store
        held = self._store.to_frame() if self._store is not None else None
        if held is not None and not self._holds(kind, held):
            kind = FramePanes
        if kind is FramePanes:
            self._frames_only = True
            if isinstance(self._store, FramePanes):
                return self._store
        store: Store
        if kind is ArrayPanes:
            ts = pl.col(self.time_column).to_physical()
            schema = (
                batch.lazy()
                .group_by([*self.keys, (ts - ts % self.window.slide_ms).alias(PANE)])
                .agg(partial_exprs(self.aggs))
                .collect_schema()
            )
            store = ArrayPanes(self.keys, self.aggs, schema)
        elif kind is DistinctPanes:
            store = DistinctPanes(self.keys, self.aggs)
        else:
            store = FramePanes(self.keys, self.aggs)
        if held is not None:
            store.load(held)
        self._store = store
        return store

    def _holds(self, kind: type[Store], held: pl.DataFrame) -> bool:
        """Whether the store ``kind`` can take the partials held so far (restored ones
        may have a null key, or distinct values beyond the code sets' range)."""
        if kind is ArrayPanes:
            return not (self.keys and held[self.keys[0]].null_count())
        if kind is DistinctPanes:
            return DistinctPanes.accepts_partials(held, self.keys, self.aggs)
        return True

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        batch, late = self.split_late(batch, self.lateness_ms)
        if batch.height == 0:
            return None, late
        self._store_for(batch).add(batch, self.time_column, self.window.slide_ms)
        return None, late

    def advance(self, watermark: int) -> pl.DataFrame | None:
        starts = self._store.starts() if self._store is not None else []
        if not starts:
            return None
        size, slide = self.window.size_ms, self.window.slide_ms
        # Windows [s, s + size) with s + size + lateness <= watermark are complete; none
        # after the last pane holds data.
        last_start = watermark - self.lateness_ms - size
        last_start = min(last_start - last_start % slide, max(starts))
        first_start = min(starts) - size + slide
        if self._fired_until is not None:
            first_start = max(first_start, self._fired_until)
        if last_start < first_start:
            return None
        fired = self._store.fire(
            list(range(first_start, last_start + 1, slide)), size, slide, self.top
        )
        self._fired_until = last_start + slide
        # Panes that no unfired window contains are done.
        self._store.evict(self._fired_until)
        return fired

    def savepoint(self) -> object:
        store = self._store
        mark = None if store is None else store.mark()
        return (store, mark, self._frames_only, self._fired_until)

    def rollback(self, saved: object) -> None:
        store, mark, self._frames_only, self._fired_until = saved  # type: ignore[misc]
        if store is not None:
            store.reset(mark)
        self._store = store

    def snapshot(self) -> dict[str, pa.Table]:
        if self._store is None and self._fired_until is None:
            return {}
        meta = pa.table({"fired_until": arrays.from_pylist([self._fired_until], pa.int64())})
        state = {"meta": meta}
        panes = self._store.to_frame() if self._store is not None else None
        if panes is not None:
            state["panes"] = state_table(panes)
        return state

    def restore(self, state: dict[str, pa.Table]) -> None:
        if "meta" in state:
            self._fired_until = state["meta"].column("fired_until")[0].as_py()
        # Restored into the Polars store, which takes any state; the first batch moves it
        # to the numpy store where that fits.
        self._store = FramePanes(self.keys, self.aggs)
        if "panes" in state:
            self._store.load(pl.from_arrow(state["panes"]))

    def state_rows(self) -> int:
        return 0 if self._store is None else self._store.rows()


@dataclass
class WindowTopRows(Operator):
    """Rows with the top ``by`` value per tumbling window (and key), ties kept, e.g.
    Nexmark q7's highest bid. State holds only each open window's current leaders, as
    window start -> (best value, leader rows); rows are tagged with their window when
    it fires (or is checkpointed), not on every change of leader.

    A batch spans few windows, so work is done per window; the common arg-max case (one
    leader, no keys, a numeric column) is decided in numpy, and a new leader is taken
    from the batch with a slice (a gather for ties), without a Polars query."""

    uses_watermark = True
    stateful = True
    windowed = True

    window: Tumbling = field(default_factory=lambda: Tumbling(1000))
    top: TopN = field(default_factory=lambda: TopN("value"))
    keys: list[str] = field(default_factory=list)
    lateness_ms: int = 0
    _leaders: dict[int, tuple[object, pl.DataFrame]] = field(default_factory=dict, init=False)

    def output_time_column(self) -> str:
        return WINDOW_END

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        batch, late = self.split_late(batch, self.lateness_ms)
        if batch.height == 0:
            return None, late
        size = self.window.size_ms
        ts = physical_numpy(batch.get_column(self.time_column))
        # A drop of an absent column still costs a Polars call (~0.2 ms, measured).
        rows = batch.drop(WM_COL) if WM_COL in batch.columns else batch
        by = rows.get_column(self.top.by)
        fast = not self.keys and self.top.n == 1 and by.dtype.is_numeric() and not by.null_count()
        values = by.to_numpy() if fast else None
        first = int(ts.min()) // size * size
        last = int(ts.max()) // size * size
        if first == last:
            # The whole batch is in one window (most are, unless batches are long next to
            # the window): no per-row window starts, no per-window selection.
            if fast:
                self._offer_best(first, rows, None, values)
            else:
                self._offer_ranked(first, rows, None)
            return None, late
        if fast and (last - first) // size < FEW_WINDOWS:
            # A few windows: each one's rows as a mask from two comparisons, its best by a
            # masked reduction; no per-row window starts (a division) and no gathers.
            for start in range(first, last + 1, size):
                inside = (ts >= start) & (ts < start + size)
                if inside.any():
                    self._offer_best(start, rows, None, values, inside)
            return None, late
        starts = ts // size * size  # as ts - ts % size; see ArrayPanes.add
        for start in distinct_steps(starts, size):
            idx = np.flatnonzero(starts == start)
            if fast:
                self._offer_best(start, rows, idx, values)
            else:
                self._offer_ranked(start, rows, idx)
        return None, late

    def _offer_best(
        self,
        start: int,
        rows: pl.DataFrame,
        idx: np.ndarray | None,
        values: np.ndarray,
        inside: np.ndarray | None = None,
    ) -> None:
        """The rows of window ``start`` are the positions ``idx``, or where the mask
        ``inside`` is set, or (neither given) all of them."""
        candidates = values if idx is None else values[idx]
        if inside is not None:
            bound = _beyond(values.dtype, self.top.descending)
            best = (
                values.max(where=inside, initial=bound)
                if self.top.descending
                else values.min(where=inside, initial=bound)
            )
        else:
            best = candidates.max() if self.top.descending else candidates.min()
        held = self._leaders.get(start)
        if held is not None:
            held_best, held_rows = held
            if (held_best > best) if self.top.descending else (held_best < best):
                return
        hit = candidates == best
        if inside is not None:
            hit &= inside
        winners = np.flatnonzero(hit)
        if idx is not None:
            winners = idx[winners]
        leaders = rows.slice(int(winners[0]), 1) if len(winners) == 1 else rows[winners]
        if held is not None and held_best == best:
            leaders = pl.concat([held_rows, leaders])
        self._leaders[start] = (best, leaders)

    def _offer_ranked(self, start: int, rows: pl.DataFrame, idx: np.ndarray | None) -> None:
        candidates = rows if idx is None else rows[idx]
        held = self._leaders.get(start)
        if held is not None:
            candidates = pl.concat([held[1], candidates])
        rank = pl.col(self.top.by).rank("min", descending=self.top.descending)
        if self.keys:
            rank = rank.over(self.keys)
        self._leaders[start] = (None, candidates.filter(rank <= self.top.n))

    def _tagged(self, starts: list[int]) -> pl.DataFrame:
        return pl.concat(
            [
                self._leaders[s][1].with_columns(pl.lit(s, pl.Int64).alias(WINDOW_START))
                for s in starts
            ]
        )

    def advance(self, watermark: int) -> pl.DataFrame | None:
        size = self.window.size_ms
        closing = sorted(s for s in self._leaders if s + size + self.lateness_ms <= watermark)
        if not closing:
            return None
        fired = self._tagged(closing)
        for s in closing:
            del self._leaders[s]
        return fired.with_columns(
            _as_datetime(WINDOW_START),
            (pl.col(WINDOW_START) + size).cast(pl.Datetime("ms")).alias(WINDOW_END),
        ).sort([WINDOW_START, *self.keys, self.time_column])

    def savepoint(self) -> object:
        return dict(self._leaders)  # values are replaced, never changed in place

    def rollback(self, saved: object) -> None:
        self._leaders = dict(saved)  # type: ignore[call-overload]

    def snapshot(self) -> dict[str, pa.Table]:
        if not self._leaders:
            return {}
        return {"rows": state_table(self._tagged(sorted(self._leaders)))}

    def restore(self, state: dict[str, pa.Table]) -> None:
        self._leaders = {}
        if "rows" in state:
            rows = pl.from_arrow(state["rows"])
            for (start,), frame in rows.partition_by(WINDOW_START, as_dict=True).items():
                by = frame.get_column(self.top.by)
                best = by.max() if self.top.descending else by.min()
                self._leaders[start] = (best, frame.drop(WINDOW_START))

    def state_rows(self) -> int:
        return sum(rows.height for _, rows in self._leaders.values())


@dataclass
class SessionAggregate(FrameState):
    """Per-key sessions: events closer than ``gap`` belong together.

    State is one row per open session: its keys, first and last event time and the
    partial aggregates of its events (``aggregations`` partials are mergeable), never
    the raw events. A batch is cut into its own per-key sessions, which are merged with
    the open ones they touch (an out-of-order event can bridge two); the work per batch
    is the batch plus the open sessions, never every event of a long session (a hot
    bidder's session may last the whole stream). A session closes when the watermark
    passes its last event + gap + lateness: any later event that is not late is then at
    least a gap after it, so closing never splits what the events would join.

    Checkpoints hold the sessions under ``sessions``; a checkpoint of the earlier format
    (the open sessions' raw events, under ``events``) is restored by folding its events
    as one batch, which gives the same sessions.
    """

    uses_watermark = True
    stateful = True
    state_key = "sessions"
    OLD_STATE_KEY: ClassVar[str] = "events"  # raw events of open sessions (old format)

    gap_ms: int
    keys: list[str]
    aggs: list[Agg]
    lateness_ms: int = 0
    _state: pl.DataFrame | None = field(default=None, init=False)  # open sessions

    def output_time_column(self) -> str:
        return WINDOW_END

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        batch, late = self.split_late(batch, self.lateness_ms)
        if batch.height == 0:
            return None, late
        self._fold(batch.drop(WM_COL, strict=False))
        return None, late

    def _fold(self, rows: pl.DataFrame) -> None:
        """Merge the sessions of ``rows`` (raw events) into the open ones."""
        if self._counts_only(rows):
            self._fold_counts(rows)
            return
        # The batch's own sessions: sorted by key and time, a new key or a gap starts one.
        events = rows.select(
            *self.keys, event_ms(self.time_column).alias(START), *self._agg_inputs()
        ).sort([*self.keys, START])
        ts = events.get_column(START).to_numpy()
        starts = self._new_key(events)
        starts[1:] |= np.diff(ts) >= self.gap_ms
        mine = self._grouped(
            events,
            starts,
            [pl.col(START).min(), pl.col(START).max().alias(LAST)],
            partial_exprs(self.aggs),
        )
        if self._state is None or self._state.height == 0:
            self._state = mine
            return
        # With the open sessions, by key and start: a session joins the one before it
        # when it starts less than a gap after the latest end so far of its key.
        both = pl.concat([self._state, mine], how="vertical_relaxed").sort([*self.keys, START])
        starts = self._new_key(both)
        first = both.get_column(START).to_numpy()
        latest = _running_max(both.get_column(LAST).to_numpy(), np.cumsum(starts))
        starts[1:] |= first[1:] - latest[:-1] >= self.gap_ms
        merged = self._grouped(
            both, starts, [pl.col(START).min(), pl.col(LAST).max()], merge_exprs(self.aggs)
        )
        self._state = merged.cast(dict(mine.schema))

    def _counts_only(self, rows: pl.DataFrame) -> bool:
        """Whether numpy can fold this batch: one integer key without nulls (in the batch
        and the open sessions) and only counts (Nexmark q11), whose partials are int64
        sums. Anything else goes through Polars, with the same state frame."""
        if len(self.keys) != 1 or not all(a.kind == "count" for a in self.aggs):
            return False
        key = rows.get_column(self.keys[0])
        if not key.dtype.is_integer() or key.dtype == pl.UInt64 or key.null_count():
            return False
        held = self._state
        return held is None or (
            held.schema[self.keys[0]] == key.dtype and not held[key.name].null_count()
        )

    def _fold_counts(self, rows: pl.DataFrame) -> None:
        """``_fold`` in numpy: sort by key and time, cut at new keys and gaps, sum the
        counts per session with ``add.reduceat``; then the same with the open sessions."""
        name = self.keys[0]
        key_series = rows.get_column(name)
        keys = key_series.to_numpy().astype(np.int64, copy=False)
        ts = physical_numpy(rows.get_column(self.time_column)).astype(np.int64, copy=False)
        order = np.lexsort((ts, keys))
        keys, ts = keys[order], ts[order]
        counts = {}
        for agg in self.aggs:
            if agg.column is None or not rows.get_column(agg.column).null_count():
                counts[agg] = np.ones(len(keys), np.int64)
            else:
                valid = rows.get_column(agg.column).is_not_null().to_numpy()
                counts[agg] = valid[order].astype(np.int64)
        cut = np.ones(len(keys), bool)
        cut[1:] = (keys[1:] != keys[:-1]) | (np.diff(ts) >= self.gap_ms)
        at = np.flatnonzero(cut)
        ends = np.append(at[1:], len(keys)) - 1
        mine = (keys[at], ts[at], ts[ends], {a: np.add.reduceat(c, at) for a, c in counts.items()})
        held = self._state
        if held is not None and held.height:
            old = (
                held.get_column(name).to_numpy().astype(np.int64, copy=False),
                held.get_column(START).to_numpy(),
                held.get_column(LAST).to_numpy(),
                {a: held.get_column(a.partial_columns()[0]).to_numpy() for a in self.aggs},
            )
            keys = np.concatenate([old[0], mine[0]])
            first = np.concatenate([old[1], mine[1]])
            last = np.concatenate([old[2], mine[2]])
            order = np.lexsort((first, keys))
            keys, first, last = keys[order], first[order], last[order]
            cut = np.ones(len(keys), bool)
            cut[1:] = keys[1:] != keys[:-1]
            latest = _running_max(last, np.cumsum(cut))
            cut[1:] |= first[1:] - latest[:-1] >= self.gap_ms
            at = np.flatnonzero(cut)
            mine = (
                keys[at],
                first[at],
                np.maximum.reduceat(last, at),
                {
                    a: np.add.reduceat(np.concatenate([old[3][a], mine[3][a]])[order], at)
                    for a in self.aggs
                },
            )
        self._state = pl.DataFrame(
            {
                name: pl.Series(mine[0]).cast(key_series.dtype),
                START: mine[1],
                LAST: mine[2],
                **{a.partial_columns()[0]: c for a, c in mine[3].items()},
            }
        )

    def _new_key(self, frame: pl.DataFrame) -> np.ndarray:
        """Rows (of a frame sorted by the keys) whose keys differ from the row before."""
        new = np.zeros(frame.height, bool)
        new[0] = True
        for key in self.keys:
            column = frame.get_column(key)
            new[1:] |= column.slice(1).ne_missing(column.slice(0, frame.height - 1)).to_numpy()
        return new

    def _grouped(
        self, frame: pl.DataFrame, starts: np.ndarray, bounds: list[pl.Expr], aggs: list[pl.Expr]
    ) -> pl.DataFrame:
        """One row per run of ``frame`` beginning where ``starts`` is set: the run's
        keys, session bounds and aggregates."""
        return (
            frame.with_columns(pl.Series(SID, np.cumsum(starts)))
            .group_by(SID)
            .agg(*[pl.col(k).first() for k in self.keys], *bounds, *aggs)
            .select(*self.keys, START, LAST, *partial_names(self.aggs))
        )

    def _agg_inputs(self) -> list[str]:
        return sorted({a.column for a in self.aggs if a.column} - {*self.keys})

    def advance(self, watermark: int) -> pl.DataFrame | None:
        if self._state is None or self._state.height == 0:
            return None
        ended = pl.col(LAST) + (self.gap_ms + self.lateness_ms) <= watermark
        done = self._state.filter(ended)
        if done.height == 0:
            return None
        self._state = self._state.filter(~ended)
        return done.select(
            pl.col(START).cast(pl.Datetime("ms")).alias(WINDOW_START),
            (pl.col(LAST) + self.gap_ms).cast(pl.Datetime("ms")).alias(WINDOW_END),
            *self.keys,
            *final_exprs(self.aggs),
        ).sort([WINDOW_START, *self.keys])

    def restore(self, state: dict[str, pa.Table]) -> None:
        self._state = None
        if self.state_key in state:
            self._state = pl.from_arrow(state[self.state_key])
        elif self.OLD_STATE_KEY in state:
            events = pl.from_arrow(state[self.OLD_STATE_KEY])
            if events.height:
                self._fold(events)


def _running_max(values: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """The running maximum of ``values`` restarting at each new ``segment`` (ascending
    ids): values are lifted by their segment's rank above every earlier segment's, so
    one ``maximum.accumulate`` does it (a Polars ``cum_max().over()`` costs ~10 ms per
    10k rows, measured)."""
    if values.size == 0:
        return values
    lo = int(values.min())
    span = int(values.max()) - lo + 1
    if int(segment[-1]) * span >= 2**62:  # the lift would overflow: Polars does it
        frame = pl.DataFrame({"v": values, "s": segment})
        return frame.select(pl.col("v").cum_max().over("s")).to_series().to_numpy()
    lift = segment.astype(np.int64) * span
    return np.maximum.accumulate(values - lo + lift) - lift + lo


def wall_clock_ms() -> int:
    """Processing time in production: the machine's clock, epoch milliseconds."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class ProcessingTumbling:
    """Tumbling windows over processing time: a row belongs to the window the ``clock``
    (epoch ms) is in when the operator sees it. Tests inject a clock they control."""

    size_ms: int
    clock: Callable[[], int] = wall_clock_ms

    def __post_init__(self) -> None:
        _window_bound("processing-time window size", self.size_ms)


@dataclass
class ProcessingTimeAggregate(Operator):
    """Per-key aggregates per processing-time tumbling window. Each batch's partials go
    into the window its arrival time falls in; a window is emitted once the clock has
    passed its end (checked at every batch and watermark move) and, at the end of a
    bounded input, whatever is open is emitted. The open windows' partials are the
    checkpointed state; a restored run keeps adding to them with the clock it is given.

    The panes are a ``WindowAggregate``'s (``pane_stores``: numpy arrays for one integer
    key and plain aggregates, else Polars frames), fed the arrival time as the pane
    column and the clock as the watermark. They replaced one frame of every batch's
    partials with a window column, merged on the batch thread each time it grew four
    times and scanned whole at every batch for a closed window: q12 (bids per bidder per
    10 s) had batches of 2 ms take 25-55 ms at those merges (on Polars' pool, so the
    step's own thread CPU hid them), p99 14 / 32 ms on the two streams."""

    stateful = True
    state_key = "processing_panes"

    size_ms: int
    keys: list[str]
    aggs: list[Agg]
    clock: Callable[[], int] = wall_clock_ms
    _panes: WindowAggregate = field(init=False)

    def __post_init__(self) -> None:
        self._panes = WindowAggregate(Tumbling(self.size_ms), list(self.keys), list(self.aggs))
        self._panes.bind(ARRIVAL)

    def output_time_column(self) -> str:
        return WINDOW_END

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        now = self.clock()
        if batch.height:
            rows = batch.drop(WM_COL) if WM_COL in batch.columns else batch
            self._panes.process(rows.with_columns(pl.lit(now, pl.Int64).alias(ARRIVAL)))
        return self._panes.advance(now), None

    def advance(self, watermark: int) -> pl.DataFrame | None:
        return self._panes.advance(MAX_WATERMARK if watermark >= MAX_WATERMARK else self.clock())

    def snapshot(self) -> dict[str, pa.Table]:
        panes = self._panes.snapshot().get("panes")
        if panes is None or panes.num_rows == 0:
            return {}
        # The checkpoint's shape from before the pane stores: window, keys, partials.
        return {self.state_key: panes.select([PANE, *self.keys, *partial_names(self.aggs)])}

    def restore(self, state: dict[str, pa.Table]) -> None:
        if self.state_key in state:
            frame = pl.from_arrow(state[self.state_key])
            self._panes.restore(
                {"panes": frame.select(*self.keys, PANE, *partial_names(self.aggs)).to_arrow()}
            )

    def savepoint(self) -> object:
        return self._panes.savepoint()

    def rollback(self, saved: object) -> None:
        self._panes.rollback(saved)

    def state_rows(self) -> int:
        return self._panes.state_rows()
