"""KeyedTopN against a plain Python model, batch by batch: two key columns (nulls are
keys), many ties on ``by`` (broken by the other columns), nulls in ``by`` now and then (the
Polars path), a TTL, savepoints and rollbacks, and hash
collisions forced (the keys' dense ids fall back to grouping on the keys). Also the
numpy ranking (``top_rows``) and the dense ids on their own."""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflare_platform.engine.operators.keyed import KeyedTopN
from dataflare_platform.engine.operators.keyed_store import KeyedStore
from dataflare_platform.engine.operators.top_n_rank import dense_ids, top_rows

SCHEMA = {"a": pl.Int64, "b": pl.Int64, "v": pl.Int64, "s": pl.String, "date_time": pl.Int64}
# The order: v, then the other columns as they come (the keys a and b are not in it).
# With ``s`` before ``date_time``, numpy ranks on v only; with ``late_string`` (s last),
# on v and date_time, and rows equal on both go to Polars.


class CollidingStore(KeyedStore):
    """Four hash values in all: most keys of a batch share one with another key."""

    def _hash(self, frame: pl.DataFrame) -> np.ndarray:
        return (frame.get_column("a").fill_null(7).to_numpy().astype(np.int64) % 4) * 1000


def _sort_key(row: tuple, descending: bool, late_string: bool) -> tuple:
    """The operator's order: ``v`` (nulls last), then ``s`` and the time ascending
    (nulls last; the time first with ``late_string``), as DuckDB's ``row_number()``."""
    _, _, v, s, t = row
    by = (v is None, 0 if v is None else (-v if descending else v))
    return (by, t, s is None, s or "") if late_string else (by, s is None, s or "", t)


class Model:
    """Every row of every live key; a key's newest time ages it out under a TTL."""

    def __init__(self, n: int, descending: bool, late_string: bool) -> None:
        self.n, self.descending, self.late_string = n, descending, late_string
        self.rows: dict[tuple, list[tuple]] = {}
        self.seen: dict[tuple, int | None] = {}

    def add(self, batch: list[tuple]) -> None:
        for row in batch:
            key = row[:2]
            self.rows.setdefault(key, []).append(row)
            t = row[4]
            old = self.seen.get(key)
            self.seen[key] = t if old is None else (old if t is None else max(old, t))

    def expire(self, floor: int) -> None:
        gone = [k for k, t in self.seen.items() if t is None or t < floor]
        for key in gone:
            del self.rows[key], self.seen[key]

    def top(self) -> dict[tuple, tuple]:
        out = {}
        for key, rows in self.rows.items():
            ranked = sorted(rows, key=lambda r: _sort_key(r, self.descending, self.late_string))
            for rank, row in enumerate(ranked[: self.n], start=1):
                out[(*key, rank)] = row
        return out


value = st.one_of(st.none(), st.integers(0, 3)) | st.integers(0, 3)
row = st.tuples(
    st.one_of(st.none(), st.integers(0, 5)),  # a
    st.integers(0, 2),  # b
    value,  # v: few values, many ties; null now and then
    st.one_of(st.none(), st.sampled_from(["x", "y", "z"])),
    st.integers(0, 50),  # date_time
)
step = st.one_of(
    st.tuples(st.just("batch"), st.lists(row, min_size=1, max_size=25)),
    st.tuples(st.just("advance"), st.integers(0, 60)),
    st.tuples(st.just("savepoint"), st.none()),
    st.tuples(st.just("rollback"), st.none()),
    st.tuples(st.just("checkpoint"), st.sampled_from([2, 8])),
)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(step, max_size=25),
    n=st.integers(1, 3),
    descending=st.booleans(),
    ttl=st.one_of(st.none(), st.integers(1, 30)),
    colliding=st.booleans(),
    late_string=st.booleans(),
    gather_held=st.booleans(),
)
def test_top_n_matches_a_model(
    steps, n, descending, ttl, colliding, late_string, gather_held
) -> None:
    """After every batch, the upsert stream (keyed by keys and rank) applied to a table
    holds the model's top rows of every key the batch touched; only touched keys are
    emitted, each with all its top rows. ``gather_held``: the held rows gathered before
    ranking (as after a batch that kept most of them), or only the ones kept."""
    op = KeyedTopN(["a", "b"], ["v"], [descending], n, "r", ttl)
    op.bind("date_time")
    if colliding:
        op._store = CollidingStore(["a", "b"], age_column="__seen")
    model = Model(n, descending, late_string)
    columns = ["a", "b", "v", "date_time", "s"] if late_string else list(SCHEMA)
    table: dict[tuple, tuple] = {}
    floor: int | None = None
    saved = None
    watermark = None
    for kind, arg in steps:
        if kind == "batch":
            frame = pl.DataFrame(arg, schema=SCHEMA, orient="row").select(columns)
            op._kept_share = 1.0 if gather_held else 0.0  # the hint the last batch left
            out, late = op.process(frame)
            assert late is None
            out = out.select(*SCHEMA, "r")
            model.add(arg)
            want = model.top()
            touched = {r[:2] for r in arg}
            emitted = {(a, b, r): (a, b, v, s, t) for a, b, v, s, t, r in out.rows()}
            assert len(emitted) == out.height
            assert {k[:2] for k in emitted} <= touched
            for key in {k[:2] for k in emitted}:
                assert {k: v for k, v in emitted.items() if k[:2] == key} == {
                    k: v for k, v in want.items() if k[:2] == key
                }
            table.update(emitted)
            for key, row in want.items():
                if key[:2] in touched:
                    assert table[key] == row
            if floor is not None:  # rows behind the floor already: their keys go at once
                model.expire(floor)
        elif kind == "advance" and ttl is not None:
            op.advance(arg)
            watermark = arg if watermark is None else max(watermark, arg)
            floor = max(floor, arg - ttl) if floor is not None else arg - ttl
            model.expire(floor)
        elif kind == "savepoint":
            rows = {k: list(v) for k, v in model.rows.items()}
            saved = (op.savepoint(), rows, dict(model.seen), dict(table), floor, watermark)
        elif kind == "checkpoint":
            # Restored into a store merging ``arg`` segments at once (2: the store's
            # default, as before the top-N used 8): the frame is the same either way.
            state = op.snapshot()
            op = KeyedTopN(["a", "b"], ["v"], [descending], n, "r", ttl)
            op.bind("date_time")
            cls = CollidingStore if colliding else KeyedStore
            op._store = cls(["a", "b"], age_column="__seen", fan_in=arg)
            op.restore(state)
            if watermark is not None:
                op.advance(watermark)  # the runner re-advances to its restored watermark
            saved = None
        elif kind == "rollback" and saved is not None:
            op.rollback(saved[0])
            model.rows = {k: list(v) for k, v in saved[1].items()}
            model.seen, table, floor = dict(saved[2]), dict(saved[3]), saved[4]
            watermark = saved[5]  # the runner rolls its watermark back with the state
    held = op._store.frame()
    assert ({r[:2] for r in held.rows()} if held is not None else set()) == set(model.rows)


@settings(max_examples=200, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.integers(0, 6), st.integers(-3, 3), st.integers(0, 2), st.integers(0, 1)),
        min_size=1,
        max_size=60,
    ),
    n=st.integers(1, 4),
    columns=st.integers(1, 3),
    scale=st.sampled_from([1, 2**40, 2**60]),
)
def test_top_rows_matches_sorting(data, n, columns, scale) -> None:
    """Per key: the first ``n`` rows in the order of the first ``columns`` columns,
    unless two rows equal on them have a rank ("min") up to ``n``: then the key is tied
    and left out. ``scale`` widens the first column: up to 2**40 the key id and it share
    one int64 (an argsort), at 2**60 they do not (a lexsort). n = 1 is ranked without
    sorting (``_top_one``)."""
    ids_raw = np.array([k for k, *_ in data])
    _, ids = np.unique(ids_raw, return_inverse=True)
    values = [(row[1] * scale, *row[2 : 1 + columns]) for row in data]
    by = [np.array([v[c] for v in values], dtype=np.int64) for c in range(columns)]
    ages = np.arange(len(data), dtype=np.int64)
    ranked = top_rows(ids.astype(np.int64), int(ids.max()) + 1, by, n, ages)
    assert (np.diff(ids[ranked.rows]) >= 0).all()  # in key order: the store's order
    for key in range(int(ids.max()) + 1):
        rows = [i for i in range(len(data)) if ids[i] == key]
        ordered = sorted(values[i] for i in rows)
        ranks_min = [ordered.index(v) + 1 for v in ordered]
        kept = [v for v, r in zip(ordered, ranks_min, strict=True) if r <= n]
        assert ranked.tied[key] == (len(set(kept)) < len(kept))
        assert ranked.newest[key] == max(rows)
        picked = zip(ranked.rows, ranked.ranks, strict=True)
        mine = [(values[p], int(r)) for p, r in picked if ids[p] == key]
        if ranked.tied[key]:
            assert mine == []
        else:
            assert mine == [(v, i + 1) for i, v in enumerate(ordered[:n])]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-3, 3), min_size=1, max_size=40))
def test_dense_ids_number_keys_in_hash_order(raw) -> None:
    """Ids ascend with the hashes, every key's rows share its id, ``first`` holds it."""
    hashes = np.array(raw, dtype=np.int64) * (2**61)
    keys = pl.DataFrame({"a": raw})
    ids = dense_ids(keys, hashes)
    assert ids is not None
    unique, inverse = np.unique(hashes, return_inverse=True)
    assert ids.hashes.tolist() == unique.tolist()
    assert ids.ids.tolist() == inverse.tolist()
    assert hashes[ids.first].tolist() == unique.tolist()
    # Integer keys are compared in numpy: one hash for all refuses unless all are equal.
    shared = dense_ids(keys, np.zeros(len(raw), dtype=np.int64))
    assert (shared is None) == (len(set(raw)) > 1)


def test_dense_ids_refuse_a_shared_hash_and_accept_equal_keys() -> None:
    keys = pl.DataFrame({"a": [1, 2, 1, None, None], "b": ["x", "y", "x", None, None]})
    equal = np.array([5, 9, 5, 3, 3], dtype=np.int64)
    ids = dense_ids(keys, equal)
    assert ids is not None
    assert ids.ids.tolist() == [1, 2, 1, 0, 0]
    assert ids.hashes.tolist() == [3, 5, 9]
    assert keys[ids.first].rows() == [(None, None), (1, "x"), (2, "y")]
    assert dense_ids(keys, np.array([5, 5, 5, 3, 3], dtype=np.int64)) is None
