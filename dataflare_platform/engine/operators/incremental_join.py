"""The unwindowed inner join (``Stream.join``): every matching pair is emitted once,
whichever side arrives first. Port 0 is the left input, port 1 the right.

Each side's waiting rows live in a :class:`KeyedStore` keyed by that side's join keys,
so a batch reads (or takes) only the rows of the keys it carries: per-batch cost grows
with the batch and the log of the state, not with the state. Holding a side as one
frame made each batch join against all of it (Nexmark q20: every auction so far, p99
92.6 ms at 1 M events/s, growing with the stream).

A key's rows sit together in one segment of a store: adding rows to a key takes its
rows and puts them back with the new ones (``_add``).

``right_filter`` keeps only the right rows for which a predicate holds: the join then
equals the plain join followed by that filter on the right's columns, without holding
the rejected right rows. With ``right_unique`` (the right key is a primary key) a
rejected row's key is remembered, key columns only, so left rows of that key are dropped
on arrival rather than waiting forever for a match that cannot come (q20 keeps the full
rows of category-10 auctions and only the ids of the rest).

With ``right_unique`` the right rows are never removed, so the right side and the
rejected keys live in :class:`AppendStore` s (an index of hashes merged, the rows written
once: no batch waits for wide rows being moved), and a left batch is joined by one
lookup per store of the batch's hashed keys, with no Polars join: each left row finds
its right row number, the pairs are the left rows and the gathered right rows side by
side. A left row found in neither store waits in the left store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa

from dataflare_platform.engine.operators.append_store import AppendStore, Codes
from dataflare_platform.engine.operators.base import WM_COL, Emit, Operator, concat_rows
from dataflare_platform.engine.operators.keyed_store import KeyedStore

Store = KeyedStore | AppendStore


@dataclass
class IncrementalJoin(Operator):
    """Unwindowed inner join that emits every matching pair once, whichever side comes
    first. With ``right_unique`` (the right key is a primary key, like a person id: a
    key arrives on the right at most once) a left row is dropped from state as soon as
    it has matched, since nothing else can. ``right_filter``: see the module docstring."""

    stateful = True

    left_on: list[str]
    right_on: list[str]
    right_unique: bool = False
    suffix: str = "_right"
    inputs: int = 2
    right_filter: pl.Expr | None = None
    _left: KeyedStore = field(init=False)
    _right: Store = field(init=False)  # an AppendStore with ``right_unique``
    _rejected: Store = field(init=False)  # keys of rejected unique right rows

    # Merges of more rows than this run on the merge thread. A join holds whole rows
    # (q20: an auction's strings): with the stores' default (64k) the slowest q20 batch
    # took 50-70 ms, a merge on the batch thread; with 16k, about 20 ms (measured).
    BACKGROUND_ROWS = 16_384
    # A right batch of unique keys with this many times more keys than left rows wait
    # looks the waiting rows' keys up in the batch (a semi join), then takes only those,
    # rather than hashing and looking up every batch key in the store (q20: 3-6 k bids
    # wait against 10 k auctions a batch; the take 1.1 -> 0.65 ms CPU p50, measured).
    FEW_WAITING = 1

    def __post_init__(self) -> None:
        self._left = KeyedStore(list(self.left_on), background_rows=self.BACKGROUND_ROWS)
        if self.right_unique:  # right rows are never removed
            self._right = AppendStore(list(self.right_on))
            self._rejected = AppendStore(list(self.right_on))
        else:
            self._right = KeyedStore(list(self.right_on), background_rows=self.BACKGROUND_ROWS)
            self._rejected = KeyedStore(list(self.right_on))  # unused: nothing rejected

    # ---- batches ----

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        on = self.right_on if port else self.left_on
        rows = batch.drop(WM_COL, strict=False)
        if any(rows.get_column(k).null_count() for k in on):
            # A null key matches nothing in an inner join: such a row would only wait.
            rows = rows.filter(pl.all_horizontal(pl.col(k).is_not_null() for k in on))
        if rows.height == 0:
            return None, None
        return (self._right_rows(rows) if port else self._left_rows(rows)), None

    def _left_rows(self, rows: pl.DataFrame) -> pl.DataFrame | None:
        if self.right_unique:
            return self._left_rows_unique(rows)
        keys = rows.select(self.left_on).unique()
        matched = self._right.get(self._as(keys, self.left_on, self._right))  # type: ignore[union-attr]
        out = None if matched is None else self._pair(rows, matched)
        self._add(self._left, rows, self.left_on)
        return out

    def _left_rows_unique(self, rows: pl.DataFrame) -> pl.DataFrame | None:
        """Left rows against unique right keys: each row finds its right row (a pair),
        or its key among the rejected ones (dropped: no match can come), or waits."""
        keys = rows.select(self.left_on)
        done = None
        out = None
        coded: tuple[pl.Schema, Codes] | None = None  # shared by the stores
        for store in (self._right, self._rejected):
            if not store.rows:
                continue
            probe = self._as(keys, self.left_on, store)
            if coded is None or coded[0] != probe.schema:
                coded = (probe.schema, store.codes(probe))  # type: ignore[union-attr]
            at, ids = store.find(probe, coded[1])  # type: ignore[union-attr]
            if at.size == 0:
                continue
            if done is None:
                done = np.zeros(rows.height, dtype=bool)
            done[at] = True
            if store is self._right:
                out = self._side_by_side(rows, at, ids)
        waiting = rows if done is None else rows.filter(pl.Series(~done))
        self._add(self._left, waiting, self.left_on)
        return out

    def _side_by_side(self, left: pl.DataFrame, at: np.ndarray, ids: np.ndarray) -> pl.DataFrame:
        """The pairs (``left`` row ``at[i]``, right row ``ids[i]``), shaped as ``_pair``
        would give them: the left columns, then the right's other than its keys, a name
        the left has taking ``suffix``. In the order of the right rows' numbers, so the
        gather reads each payload chunk once, in order."""
        order = np.argsort(ids, kind="stable")
        at, ids = at[order], ids[order]
        same = at.size == left.height and bool((at == np.arange(at.size)).all())
        left = left if same else left[at]
        right = self._right.gather(ids).drop(self.right_on)  # type: ignore[union-attr]
        clash = {c: c + self.suffix for c in right.columns if c in left.columns}
        return pl.concat([left, right.rename(clash) if clash else right], how="horizontal")

    def _right_rows(self, rows: pl.DataFrame) -> pl.DataFrame | None:
        if self.right_unique:
            return self._right_rows_unique(rows)
        if self.right_filter is not None:
            rows = rows.filter(self.right_filter.fill_null(False))
        out = None
        if self._left.rows and rows.height:
            keys = self._as(rows.select(self.right_on).unique(), self.right_on, self._left)
            waiting = self._left.get(keys)
            if waiting is not None:
                out = self._pair(waiting, rows)
        if rows.height:
            self._add(self._right, rows, self.right_on)  # type: ignore[arg-type]
        return out

    def _right_rows_unique(self, rows: pl.DataFrame) -> pl.DataFrame | None:
        """Right rows of unique keys: the rows that pass the filter join the left rows
        waiting for them and are kept; the keys of the others are kept as rejected.
        A key arrives once, so no ``unique``: should one come twice, the left store's
        ``take`` and the append stores still give exactly the inner join's pairs."""
        keys = rows.select(self.right_on)
        if self.right_filter is not None:
            passes = rows.select(self.right_filter.fill_null(False)).to_series()
            if not passes.all():
                self._rejected.put(keys.filter(~passes))
                rows = rows.filter(passes)
        out = None
        if self._left.rows:
            # One lookup for the keys that pass and those that fail: a unique right key
            # ends the wait of its left rows either way.
            probe = self._as(keys, self.right_on, self._left)
            if self._left.rows * self.FEW_WAITING < probe.height:
                # Fewer left rows wait than the batch has keys: the waiting keys that
                # this batch holds (``FEW_WAITING``), dead rows' keys included (a take
                # of a key with no live row finds nothing).
                held = self._left.held_keys()
                assert held is not None  # the store holds rows
                probe = held.join(probe, on=self._left.keys, how="semi").unique()
            waiting = self._left.take(probe) if probe.height else None
            if waiting is not None and rows.height:
                out = self._pair(waiting, rows)
        if rows.height:
            self._right.put(rows)
        return out

    def _pair(self, left: pl.DataFrame, right: pl.DataFrame) -> pl.DataFrame:
        return left.join(
            right, left_on=self.left_on, right_on=self.right_on, how="inner", suffix=self.suffix
        )

    @staticmethod
    def _add(store: KeyedStore, rows: pl.DataFrame, on: list[str]) -> None:
        """Put ``rows`` beside the rows their keys already hold (a key's rows stay in
        one segment)."""
        if rows.height == 0:
            return
        held = store.take(rows.select(on).unique()) if store.rows else None
        store.put(concat_rows(held, rows))

    @staticmethod
    def _as(keys: pl.DataFrame, on: list[str], store: Store) -> pl.DataFrame:
        """``keys`` (columns ``on``) renamed to ``store``'s key columns, cast to its key
        types where they differ, so that equal values hash alike. A value the cast
        cannot represent equals no key in the store: it becomes null and finds none."""
        renamed = keys if on == store.keys else keys.rename(dict(zip(on, store.keys, strict=True)))
        schema = store.key_schema() or {}
        casts = [
            pl.col(k).cast(dtype, strict=False)
            for k, dtype in schema.items()
            if renamed.schema[k] != dtype
        ]
        return renamed.with_columns(casts) if casts else renamed

    # ---- state ----

    def savepoint(self) -> object:
        # Stores keep immutable segments: their savepoints are references.
        return tuple(s.savepoint() for s in (self._left, self._right, self._rejected))

    def rollback(self, saved: object) -> None:
        for store, point in zip((self._left, self._right, self._rejected), saved, strict=True):  # type: ignore[call-overload]
            store.rollback(point)

    def snapshot(self) -> dict[str, pa.Table]:
        state = {}
        for name, store in self._stores().items():
            table = store.to_arrow()
            if table is not None and table.num_rows:
                state[name] = table
        return state

    def restore(self, state: dict[str, pa.Table]) -> None:
        for name, store in self._stores().items():
            store.load(pl.from_arrow(state[name]) if name in state else None)

    def _stores(self) -> dict[str, Store]:
        return {"left": self._left, "right": self._right, "rejected": self._rejected}

    def state_rows(self) -> int:
        return self._left.rows + self._right.rows + self._rejected.rows
