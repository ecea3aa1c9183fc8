"""Keyed operators whose state outlives any window: first row per key (dedup), running
per-key aggregates (reduce), the last rows per key and the top rows per key (top-N, a TTL
bounding it). Their output depends on every earlier event, so an interval replay cannot
rebuild it (``stateful``, not ``windowed``).

Their state is a :class:`KeyedStore`: a batch takes the rows of the keys it touches and
puts back their new rows, at a cost that grows with the batch, not with the state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import polars as pl
import pyarrow as pa

from dataflare_platform.engine.aggregations import (
    Agg,
    final_exprs,
    merge_exprs,
    partial_exprs,
)
from dataflare_platform.engine.checkpoint import state_table
from dataflare_platform.engine.operators.base import WM_COL, Emit, Operator, event_ms
from dataflare_platform.engine.operators.frames import keep_columns, without
from dataflare_platform.engine.operators.keyed_store import KeyedStore, Taken
from dataflare_platform.engine.operators.last_rows import LastRowsRing, supported
from dataflare_platform.engine.operators.physical import int64_values
from dataflare_platform.engine.operators.reduce_arrays import ReduceArrays
from dataflare_platform.engine.operators.reduce_arrays import supported as reduce_supported
from dataflare_platform.engine.operators.top_n_rank import KeyIds, dense_ids, sortable, top_rows

# The top-N's store merges four segments at once: its rows carry every input column
# (strings too), so copying them fewer times beats searching a few more segments.
STORE_FAN_IN = 8
# The top-N gathers a batch's held rows before ranking them where the last batch kept
# more than this share of its held rows; below it, only the ones kept (``_process_ids``).
GATHER_HELD_SHARE = 0.5


class StoreState(Operator):
    """A stateful operator whose state is one :class:`KeyedStore` (``_store``, made in
    ``__post_init__``), checkpointed as one frame under ``state_key``: the same frame the
    operators kept before the store, so older checkpoints restore unchanged."""

    stateful = True
    state_key: ClassVar[str]
    _store: KeyedStore

    def snapshot(self) -> dict[str, pa.Table]:
        table = self._store.to_arrow()
        return {} if table is None else {self.state_key: table}

    def restore(self, state: dict[str, pa.Table]) -> None:
        if self.state_key in state:
            self._store.load(pl.from_arrow(state[self.state_key]))

    def savepoint(self) -> object:
        return self._store.savepoint()  # immutable segments: a reference, no copy

    def rollback(self, saved: object) -> None:
        self._store.rollback(saved)

    def state_rows(self) -> int:
        return self._store.rows


@dataclass
class Dedup(StoreState):
    """Keep the first row per key; drop later rows with that key within ``horizon_ms``
    of the kept row's event time. Keys are forgotten once the watermark has passed
    their horizon plus the allowed lateness, so state stays proportional to live keys."""

    uses_watermark = True
    stateful = True
    state_key = "keys"

    keys: list[str] = field(default_factory=list)
    horizon_ms: int = 0
    lateness_ms: int = 0
    _store: KeyedStore = field(init=False)

    def __post_init__(self) -> None:
        self._store = KeyedStore(list(self.keys), age_column="__first")

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        batch, late = self.split_late(batch, self.lateness_ms)
        ts = "__dedup_ts"
        rows = batch.with_columns(event_ms(self.time_column).alias(ts)).with_row_index("__row")
        held = self._store.take(keep_columns(rows, self.keys).unique()) if rows.height else None
        if held is not None:
            rows = rows.join(held, on=self.keys, how="left", nulls_equal=True)
            fresh = pl.col("__first").is_null() | (
                pl.col(ts) >= pl.col("__first") + self.horizon_ms
            )
            rows = without(rows.filter(fresh), "__first")
        kept: list[pl.DataFrame] = []
        # Within a batch the first row per key wins; rows beyond its horizon start anew.
        while rows.height:
            first = rows.group_by(self.keys, maintain_order=True).first()
            kept.append(first)
            rows = (
                rows.join(
                    first.select([*self.keys, pl.col(ts).alias("__first")]),
                    on=self.keys,
                    how="left",
                    nulls_equal=True,
                )
                .filter(pl.col(ts) >= pl.col("__first") + self.horizon_ms)
                .drop("__first")
            )
        if not kept:
            if held is not None:
                self._store.put(held)
            return batch.clear(), late
        out = pl.concat(kept).sort("__row")
        fresh = out.group_by(self.keys).agg(pl.col(ts).max().alias("__first"))
        if held is not None:
            fresh = pl.concat([held, fresh]).group_by(self.keys).agg(pl.col("__first").max())
        self._store.put(fresh)
        return out.drop(ts, "__row").select(batch.columns), late

    def advance(self, watermark: int) -> pl.DataFrame | None:
        # A key is kept while its first row's horizon reaches the lateness bound.
        self._store.expire(watermark - self.lateness_ms - self.horizon_ms)
        return None


@dataclass
class Reduce(StoreState):
    """Running per-key aggregate without windows; emits the new value of every key a
    batch touched (an upsert stream keyed by ``keys``).

    Where it is exact (one integer key, integer values, count/sum/mean/min/max;
    :func:`reduce_arrays.supported`) the partials live in numpy arrays by key
    (:class:`ReduceArrays`, a scatter per batch instead of about 1 ms of Polars group
    by, take, concat and put); the choice is made on the first rows seen, and a later
    batch the arrays cannot take (a null key, another schema) moves their partials to
    the KeyedStore for good. Both keep the same checkpoint frame."""

    stateful = True
    state_key = "partials"

    keys: list[str]
    aggs: list[Agg]
    _store: KeyedStore = field(init=False)
    _arrays: ReduceArrays | None = field(init=False)
    _arrays_ok: bool | None = field(init=False)  # None: not chosen yet

    def __post_init__(self) -> None:
        self._store = KeyedStore(list(self.keys))
        self._arrays = None
        self._arrays_ok = None

    def _columns(self) -> list[str]:
        return list(dict.fromkeys([*self.keys, *(a.column for a in self.aggs if a.column)]))

    def _choose(self, schema: dict[str, pl.DataType]) -> None:
        """On the first rows seen (a batch or a checkpoint): the arrays where they are
        exact for this schema, the KeyedStore otherwise (for good)."""
        if self._arrays_ok is not None:
            return
        if any(c not in schema for c in self._columns()):
            return  # the Polars path reports the missing column, as it always did
        self._arrays_ok = reduce_supported(self.keys, self.aggs, schema)
        if self._arrays_ok:
            columns = {c: schema[c] for c in self._columns()}
            self._arrays = ReduceArrays(self.keys[0], self.aggs, columns)
            held = self._store.frame()  # restored partials
            if held is not None:
                if held.get_column(self.keys[0]).null_count():
                    self._arrays, self._arrays_ok = None, False
                    return
                self._arrays.load(held)
                self._store.load(None)

    def _arrays_take(self, batch: pl.DataFrame) -> bool:
        """Whether the arrays take this batch; if not, their partials move to the
        KeyedStore, which takes this batch and every later one."""
        arrays = self._arrays
        if arrays is None:
            return False
        if batch.get_column(self.keys[0]).null_count() == 0 and all(
            batch.schema.get(c) == t for c, t in arrays.schema.items()
        ):
            return True
        self._store.load(arrays.frame())
        self._arrays, self._arrays_ok = None, False
        return False

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        if batch.height == 0:
            return None, None
        self._choose(dict(batch.schema))
        if self._arrays_take(batch):
            assert self._arrays is not None
            return self._arrays.push(batch), None
        partial = batch.group_by(self.keys).agg(partial_exprs(self.aggs))
        held = self._store.take(keep_columns(partial, self.keys))
        if held is not None:
            partial = (
                pl.concat([held, partial], how="vertical_relaxed")
                .group_by(self.keys)
                .agg(merge_exprs(self.aggs))
            )
        self._store.put(partial)
        return partial.select([*self.keys, *final_exprs(self.aggs)]), None

    def snapshot(self) -> dict[str, pa.Table]:
        if self._arrays is None:
            return super().snapshot()
        frame = self._arrays.frame()
        return {} if frame is None else {self.state_key: state_table(frame)}

    def restore(self, state: dict[str, pa.Table]) -> None:
        # The partials say nothing of the input's dtypes: they go to the KeyedStore, and
        # the first batch chooses (moving them into the arrays if it chooses those).
        self._arrays, self._arrays_ok = None, None
        super().restore(state)

    def savepoint(self) -> object:
        arrays = None if self._arrays is None else (self._arrays, self._arrays.savepoint())
        return self._arrays_ok, arrays, self._store.savepoint()

    def rollback(self, saved: object) -> None:
        self._arrays_ok, arrays, store = saved  # type: ignore[misc]
        self._store.rollback(store)
        self._arrays = None
        if arrays is not None:
            self._arrays = arrays[0]
            self._arrays.rollback(arrays[1])

    def state_rows(self) -> int:
        return self._store.rows if self._arrays is None else self._arrays.rows


ROLLING = {"sum": "rolling_sum", "min": "rolling_min", "max": "rolling_max", "mean": "rolling_mean"}


@dataclass
class ReduceLast(StoreState):
    """Per key, aggregates over the key's last ``n`` rows, emitted for every input row
    (an upsert stream keyed by ``keys`` whose last row per key is the current value),
    e.g. a seller's average price over their last 10 closed auctions (Nexmark q6).

    "Last" follows the input order; within a batch rows are taken in ``order_by`` order
    first, so the output does not depend on how the input was cut into batches as long
    as the input arrives ordered by ``order_by`` across batches (closed intervals do:
    a later watermark closes later ends). State: the last ``n`` rows of every key.

    Where it is exact (one integer key, integer values; :func:`last_rows.supported`) the
    rows live in numpy rings (:class:`LastRowsRing`, about ten times cheaper per batch
    than Polars' rolling functions over a take from the KeyedStore); the choice is made
    on the first rows seen, and a later batch the rings cannot take (a null key) moves
    their rows to the KeyedStore for good. Both keep the same checkpoint frame."""

    stateful = True
    state_key = "last_rows"

    keys: list[str] = field(default_factory=list)
    n: int = 1
    aggs: list[Agg] = field(default_factory=list)
    order_by: list[str] = field(default_factory=list)
    _store: KeyedStore = field(init=False)
    _ring: LastRowsRing | None = field(init=False)
    _ring_ok: bool | None = field(init=False)  # None: not chosen yet

    def __post_init__(self) -> None:
        self._store = KeyedStore(list(self.keys))
        self._ring = None
        self._ring_ok = None

    def _values(self) -> list[str]:
        return list(dict.fromkeys(a.column for a in self.aggs if a.column is not None))

    def _stored(self) -> list[str]:
        """The non-key columns a key's last rows keep (the checkpoint frame's)."""
        return [c for c in dict.fromkeys([*self.order_by, *self._values()]) if c not in self.keys]

    def _rolling(self, agg: Agg) -> pl.Expr:
        if agg.kind == "count" and agg.column is None:  # rows so far, at most n
            return pl.int_range(1, pl.len() + 1, dtype=pl.Int64).clip(upper_bound=self.n)
        if agg.kind == "count":
            valid = pl.col(agg.column).is_not_null().cast(pl.Int64)
            return valid.rolling_sum(self.n, min_samples=1)
        method = getattr(pl.col(agg.column), ROLLING[agg.kind])
        return method(self.n, min_samples=1)

    # -- the numpy ring (last_rows.py) or the KeyedStore ---------------------------------
    def _choose(self, schema: dict[str, pl.DataType]) -> None:
        """On the first rows seen (a batch or a checkpoint): the ring where it is exact
        for this schema, the KeyedStore otherwise (for good)."""
        if self._ring_ok is not None:
            return
        if any(c not in schema for c in [*self.keys, *self._stored()]):
            return  # the Polars path reports the missing column, as it always did
        self._ring_ok = supported(self.keys, self.order_by, self.aggs, schema, self.n)
        if self._ring_ok:
            columns = [*self.keys, *self._stored()]
            self._ring = LastRowsRing(
                self.keys[0], self.n, self._stored(), self.aggs, {c: schema[c] for c in columns}
            )

    def _ring_takes(self, rows: pl.DataFrame) -> bool:
        """Whether the ring takes this batch; if not (a null key, another schema), its
        rows move to the KeyedStore, which takes this batch and every later one."""
        ring = self._ring
        if ring is None:
            return False
        if rows.get_column(self.keys[0]).null_count() == 0 and all(
            rows.schema.get(c) == t for c, t in ring.schema.items()
        ):
            return True
        self._store.load(ring.frame())
        self._ring, self._ring_ok = None, False
        return False

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        if batch.height == 0:
            return None, None
        self._choose(dict(batch.schema))
        if self._ring_takes(batch):
            ring = self._ring
            assert ring is not None
            if any(batch.get_column(c).null_count() for c in self.order_by):
                return ring.push(batch.sort(self.order_by, maintain_order=True)), None
            return ring.push(batch, self.order_by), None  # sorted in numpy
        rows = keep_columns(batch, dict.fromkeys([*self.keys, *self.order_by, *self._values()]))
        if self.order_by:
            rows = rows.sort(self.order_by, maintain_order=True)
        new = rows.with_columns(pl.lit(True).alias("__new"))
        # Only the keys this batch touches are recomputed: the others' rows stay.
        mine = self._store.take(keep_columns(rows, self.keys).unique())
        if mine is not None:
            new = pl.concat(
                [mine.with_columns(pl.lit(False).alias("__new")), new],
                how="vertical_relaxed",
            )
        # Rolling over each key's rows in arrival order (``over`` keeps row positions).
        out = new.with_columns(
            *(self._rolling(a).over(self.keys).alias(a.alias) for a in self.aggs)
        )
        # Keep each key's last n rows (lengths are unsigned: count from the end).
        from_end = pl.int_range(pl.len(), 0, -1, dtype=pl.Int64).over(self.keys)
        self._store.put(without(new.filter(from_end <= self.n), "__new"))
        emitted = out.filter(pl.col("__new")).select(*self.keys, *(a.alias for a in self.aggs))
        return emitted, None

    def snapshot(self) -> dict[str, pa.Table]:
        if self._ring is None:
            return super().snapshot()
        frame = self._ring.frame()
        return {} if frame is None else {self.state_key: state_table(frame)}

    def restore(self, state: dict[str, pa.Table]) -> None:
        self._ring, self._ring_ok = None, None
        self._store.load(None)
        if self.state_key not in state:
            return
        frame = pl.from_arrow(state[self.state_key])
        self._choose(dict(frame.schema))
        if self._ring is not None and frame.get_column(self.keys[0]).null_count() == 0:
            self._ring.load(frame)
        else:
            self._ring, self._ring_ok = None, False
            self._store.load(frame)

    def savepoint(self) -> object:
        ring = None if self._ring is None else (self._ring, self._ring.savepoint())
        return self._ring_ok, ring, self._store.savepoint()

    def rollback(self, saved: object) -> None:
        self._ring_ok, ring, store = saved  # type: ignore[misc]
        self._store.rollback(store)
        self._ring = None
        if ring is not None:
            self._ring = ring[0]
            self._ring.rollback(ring[1])

    def state_rows(self) -> int:
        return self._store.rows if self._ring is None else self._ring.rows


@dataclass
class KeyedTopN(StoreState):
    """The top ``n`` rows per key by ``by`` (Flink's ``ROW_NUMBER() OVER (PARTITION BY
    keys ORDER BY by) <= n``): Nexmark q18's latest bid per (bidder, auction) is n = 1
    by time descending, q19's ten highest bids per auction n = 10 by price. Rows rank by
    ``by`` (each ascending or ``descending``), then by every other column ascending with
    nulls last, so ties rank the same way whatever the batch cut or arrival order.

    Output is an upsert stream: after each batch, every key whose top rows changed emits
    all of them, with their 1-based rank in ``rank_column`` when given — keyed by the
    keys (n = 1) or by keys and rank. A key's top rows only improve (input is append
    only), so its ranks never shrink and an upsert on (keys, rank) stays exact.

    State is the current top rows per key and the key's newest event time (``__seen``).
    With ``ttl_ms``, a key is forgotten once the watermark passes its newest event time
    plus the TTL, which bounds state by the keys active within the TTL. That is exact
    only if keys are not revived: a row arriving for a forgotten key starts it afresh
    (its earlier rows are no longer candidates, and with n > 1 ranks past the new rows'
    count keep their old upserted values downstream).

    A batch's keys become dense int64 ids and the ranking is a numpy lexsort
    (``top_rows``): grouping frames on several key columns cost most of a batch."""

    # Rows are never late here (no window to miss); the watermark only ages keys out, in
    # ``advance``, so the per-row ``__wm`` column is not needed.
    uses_watermark = False
    stateful = True
    state_key = "top"

    keys: list[str] = field(default_factory=list)
    by: list[str] = field(default_factory=list)
    descending: list[bool] = field(default_factory=list)
    n: int = 1
    rank_column: str | None = None
    ttl_ms: int | None = None
    _store: KeyedStore = field(init=False)
    # The share of held rows the last batch kept in their key's top (``_process_ids``):
    # a hint for how to gather them, nothing the output depends on.
    _kept_share: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self._store = KeyedStore(list(self.keys), age_column="__seen", fan_in=STORE_FAN_IN)

    def _order(self, columns: list[str]) -> tuple[list[str], list[bool]]:
        rest = [c for c in columns if c not in self.keys and c not in self.by]
        return [*self.by, *rest], [*self.descending, *[False] * len(rest)]

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        rows = without(batch, WM_COL)
        if rows.height == 0:
            return None, None
        keys = keep_columns(rows, self.keys)
        ids = dense_ids(keys, self._store.hash(keys))
        if ids is None:  # two keys of the batch share a hash: group on the keys
            held = self._store.take(keys.unique())
            return self._process_frames(rows, held), None
        taken = self._store.take_hashed(keys[ids.first], ids.hashes)
        out = self._process_ids(rows, ids, taken)
        if out is not None:
            return out, None
        return self._process_frames(rows, None if taken is None else taken.frame()), None

    def _process_ids(
        self, rows: pl.DataFrame, ids: KeyIds, taken: Taken | None
    ) -> pl.DataFrame | None:
        """``process`` with the keys as dense ids and the ranking in numpy (when the first
        ``by`` column is integer or temporal without nulls; else None, nothing changed).
        Keys with a tie on the numpy-ranked columns in their top rows are ranked on every
        column by Polars.

        The candidates are the keys' held rows, then the batch's. Where the batch's rows
        replace most held ones (q18's latest bid: the last batch kept at most
        ``GATHER_HELD_SHARE`` of them), the held rows' ranked columns are read as
        numbers and only the held rows kept are gathered (``Taken.rows``); otherwise
        (q19's ten highest: most stay) all of them are gathered first, one gather
        instead of many small reads. On the skewed stream with a 60 s TTL, 4 pairs
        (``KeyedTopN`` alone on 600 batches), wall per batch p50 q18 13.8-16.4 ->
        12.4-14.6 ms; q19 read lazily was 12-25 % slower than gathered."""
        seen = int64_values(rows.get_column(self.time_column))
        if seen is None:
            return None  # a key's newest time may be null: left to Polars' max
        held = 0 if taken is None else taken.height
        key_of = ids.ids
        gathered = rows if taken is None else None  # every candidate, when gathered
        if taken is not None:
            key_of = np.concatenate([np.searchsorted(ids.hashes, taken.hashes), ids.ids])
            if self._kept_share > GATHER_HELD_SHARE:
                held_rows = taken.frame()
                held_seen = int64_values(held_rows.get_column("__seen"))
                if held_seen is None:
                    return None  # a held key's newest time is null: left to Polars' max
                seen = np.concatenate([held_seen, seen])
                parts = [keep_columns(held_rows, rows.columns), rows]
                gathered = pl.concat(parts, how="vertical_relaxed", rechunk=True)
            else:
                held_numbers = taken.numbers("__seen", pl.Int64)
                if held_numbers is None:
                    return None
                seen = np.concatenate([held_numbers, seen])
        by = self._sortable(rows.schema, self._reader(rows, taken, gathered))
        if by is None:
            return None
        ranked = top_rows(key_of, ids.count, by, self.n, seen)
        picked, ranks = ranked.rows, ranked.ranks
        if ranked.tied.any():
            if gathered is None:
                assert taken is not None
                gathered = self._candidates(rows, taken, np.arange(held))
            tied_rows, tied_ranks = self._rank_tied(gathered, key_of, ranked.tied[key_of])
            picked = np.concatenate([picked, tied_rows])
            ranks = np.concatenate([ranks, tied_ranks])
            # Back in key order (ids ascend with hashes): the store takes them unsorted.
            order = np.lexsort((ranks, key_of[picked]))
            picked, ranks = picked[order], ranks[order]
        # Rows of this batch come after the held ones: a key changed if one made its top.
        new_row = picked >= held
        changed = np.zeros(ids.count, dtype=bool)
        changed[key_of[picked[new_row]]] = True
        picked_keys = key_of[picked]
        newest = ranked.newest[picked_keys]
        self._kept_share = (picked.size - int(np.count_nonzero(new_row))) / held if held else 0.0
        if gathered is not None:
            top = gathered[picked]
        else:
            assert taken is not None
            kept = np.sort(picked[~new_row])  # the held rows that stay in their key's top
            candidates = self._candidates(rows, taken, kept)
            index = picked.copy()
            index[~new_row] = np.searchsorted(kept, picked[~new_row])
            index[new_row] += kept.size - held
            top = candidates[index]
        self._store.put(
            top.hstack([pl.Series("__seen", newest, dtype=pl.Int64)]),
            ids.hashes[picked_keys],
            newest,
        )
        if not changed.all():
            emitted = np.flatnonzero(changed[picked_keys])
            top, ranks = top[emitted], ranks[emitted]
        if self.rank_column is None:
            return top
        return top.hstack([pl.Series(self.rank_column, ranks, dtype=pl.Int64)])

    def _sortable(
        self, schema: pl.Schema, column: Callable[[str, bool], np.ndarray | None]
    ) -> list[np.ndarray] | None:
        """The leading columns of the order (``_order`` of the batch's ``schema``) as
        int64 for ``top_rows`` (``column``: the candidates' values of a column, ascending
        in the wanted order, or None), up to the first that is not an integer or temporal
        column without nulls (ties on them are left to ``_rank_tied``, so any leading
        part ranks exactly); None when the first is not one. A column is read only once
        its type says it may be one."""
        order, descending = self._order(list(schema))
        out = []
        for name, flag in zip(order, descending, strict=True):
            if not (schema[name].is_integer() or schema[name].is_temporal()):
                break
            values = column(name, flag)
            if values is None:
                break
            out.append(values)
        return out or None

    @staticmethod
    def _reader(
        rows: pl.DataFrame, taken: Taken | None, gathered: pl.DataFrame | None
    ) -> Callable[[str, bool], np.ndarray | None]:
        """How ``_sortable`` reads a column of the candidates: from them ``gathered``, or
        else the held rows' values as numbers (``Taken.numbers``) before the batch's."""
        if gathered is not None:
            return lambda name, descending: sortable(gathered.get_column(name), descending)
        assert taken is not None

        def column(name: str, descending: bool) -> np.ndarray | None:
            new = sortable(rows.get_column(name), descending)
            old = taken.numbers(name, rows.schema[name])
            if new is None or old is None:
                return None
            return np.concatenate([~old if descending else old, new])

        return column

    @staticmethod
    def _candidates(rows: pl.DataFrame, taken: Taken, kept: np.ndarray) -> pl.DataFrame:
        """The taken rows at ``kept`` (ascending), then ``rows``, as one chunk with
        ``rows``' columns (a gather from it copies only string views)."""
        if kept.size == 0:
            return rows
        held = keep_columns(taken.rows(kept), rows.columns)
        return pl.concat([held, rows], how="vertical_relaxed", rechunk=True)

    def _rank_tied(
        self, candidates: pl.DataFrame, key_of: np.ndarray, mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Positions and 1-based ranks of the top ``n`` candidates of the keys in
        ``mask`` (per candidate), ordered on every column."""
        order, descending = self._order(candidates.columns)
        positions = np.flatnonzero(mask)
        ranked = (
            candidates.filter(pl.Series(mask))
            .with_columns(pl.Series("__pos", positions), pl.Series("__key", key_of[positions]))
            .sort(order, descending=descending, nulls_last=True)
            .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("__key").alias("__r"))
            .filter(pl.col("__r") <= self.n)
        )
        return ranked.get_column("__pos").to_numpy(), ranked.get_column("__r").to_numpy()

    def _process_frames(self, rows: pl.DataFrame, held: pl.DataFrame | None) -> pl.DataFrame:
        """``process`` grouping on the key columns (``held``: the keys' taken rows): when
        two keys of the batch share a hash, or the first ``by`` column is not an integer
        or temporal column without nulls (``_process_ids`` handles the rest)."""
        columns = rows.columns
        seen = event_ms(self.time_column).max().over(self.keys).alias("__seen")
        fresh = rows.with_columns(seen, pl.lit(True).alias("__new"))
        if held is not None:
            candidates = pl.concat(
                [held.with_columns(pl.lit(False).alias("__new")), fresh], how="vertical_relaxed"
            ).with_columns(pl.col("__seen").max().over(self.keys))
        else:
            candidates = fresh
        top = self._top(candidates, columns)
        self._store.put(without(top, "__new", "__rank"))
        changed = top.filter(pl.col("__new").any().over(self.keys))
        return changed.select(
            *columns,
            *([pl.col("__rank").alias(self.rank_column)] if self.rank_column else []),
        )

    def _top(self, candidates: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
        """Each key's top ``n`` candidates with their 1-based ``__rank``.

        The full order (``by``, then every other column) is a sort on every column,
        strings included, which cost most of a batch. So the rows that can still make a
        key's top ``n`` are found first by a rank on ``by`` alone (tied rows share the
        smallest rank, so a tie across the boundary stays in); for keys where none of
        them tie on ``by``, that rank is the order, and only the other keys' rows are
        sorted on every column."""
        clean = None
        if len(self.by) == 1 and candidates.get_column(self.by[0]).null_count() == 0:
            rank = pl.col(self.by[0]).rank("min", descending=self.descending[0])
            candidates = candidates.with_columns(
                rank.over(self.keys).cast(pl.Int64).alias("__rank")
            ).filter(pl.col("__rank") <= self.n)
            tied = pl.struct(*self.keys, "__rank").is_duplicated().alias("__tied")
            candidates = candidates.with_columns(tied).with_columns(
                pl.col("__tied").any().over(self.keys)
            )
            clean = candidates.filter(~pl.col("__tied")).drop("__tied")
            if clean.height == candidates.height:
                return clean
            # Only the keys with a tie on ``by`` need the order on every column.
            candidates = candidates.filter(pl.col("__tied")).drop("__tied", "__rank")
        order, descending = self._order(columns)
        ranked = candidates.sort(order, descending=descending, nulls_last=True).with_columns(
            pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over(self.keys).alias("__rank")
        )
        top = ranked.filter(pl.col("__rank") <= self.n)
        return top if clean is None else pl.concat([clean, top])

    def advance(self, watermark: int) -> pl.DataFrame | None:
        if self.ttl_ms is not None:
            self._store.expire(watermark - self.ttl_ms)
        return None
