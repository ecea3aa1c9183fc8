"""AppendStore against a plain list model: every sequence of puts, lookups, savepoints,
rollbacks, checkpoint round trips and background index merges finishing at any point
finds exactly the pairs of an inner join of the keys looked up with the rows added, with
hash collisions forced, and the runs and chunks stay logarithmic."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflare_platform.engine.operators.append_store import AppendStore, Codes, merge_runs
from dataflare_platform.engine.operators.keyed_store import merge_executor
from dataflare_platform_tests.engine.operators.test_keyed_store import ManualExecutor


class CollidingAppendStore(AppendStore):
    """Keys hashed to four values in all (not their own codes): lookups meet other keys'
    rows all the time."""

    def codes(self, frame: pl.DataFrame) -> Codes:
        hashes = (frame.get_column("k").fill_null(-1).to_numpy().astype(np.int64) % 4) * 1000
        return hashes, False, None


def make_store(colliding: bool, executor: ManualExecutor | None) -> AppendStore:
    """Index merges above 8 entries go to ``executor`` when given."""
    cls = CollidingAppendStore if colliding else AppendStore
    if executor is None:
        return cls(["k"])
    return cls(["k"], background_rows=8, executor=executor)


def frame_of(rows: list[tuple[int, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "k": pl.Series([k for k, _ in rows], dtype=pl.Int64),
            "v": pl.Series([v for _, v in rows], dtype=pl.Int64),
            "s": pl.Series([f"text{v}" * (v % 3) for _, v in rows], dtype=pl.String),
        }
    )


def found_pairs(store: AppendStore, keys: list[int]) -> list[tuple[int, int]]:
    """(position in ``keys``, value of the row found) for every match."""
    at, ids = store.find(pl.DataFrame({"k": pl.Series(keys, dtype=pl.Int64)}))
    assert np.all(np.diff(at) >= 0)  # in the order of the keys looked up
    if at.size == 0:
        return []
    rows = store.gather(ids)
    assert rows["k"].to_list() == [keys[i] for i in at]
    assert rows["s"].to_list() == [f"text{v}" * (v % 3) for v in rows["v"]]
    return sorted(zip(at.tolist(), rows["v"].to_list(), strict=True))


def model_pairs(model: list[tuple[int, int]], keys: list[int]) -> list[tuple[int, int]]:
    return sorted((i, v) for i, key in enumerate(keys) for k, v in model if k == key)


keys = st.lists(st.integers(0, 30), max_size=25)
step = st.one_of(
    st.tuples(st.just("put"), keys),
    st.tuples(st.just("find"), keys),
    st.tuples(st.just("savepoint"), st.none()),
    st.tuples(st.just("rollback"), st.none()),
    st.tuples(st.just("checkpoint"), st.none()),
    st.tuples(st.just("merges"), st.none()),
)


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(step, max_size=40), colliding=st.booleans(), background=st.booleans())
def test_store_matches_a_list_model(steps: list, colliding: bool, background: bool) -> None:
    """Keys may repeat, within a put and across puts: a key held twice finds both rows
    (an inner join), so the store is exact even when the caller's keys are not unique.
    With ``background``, index merges finish only at the "merges" steps."""
    executor = ManualExecutor() if background else None
    store = make_store(colliding, executor)
    model: list[tuple[int, int]] = []
    saved = None
    serial = 0
    for action, arg in steps:
        if action == "put":
            rows = [(k, serial + i) for i, k in enumerate(arg)]
            serial += len(rows)
            store.put(frame_of(rows))
            model += rows
        elif action == "find":
            assert found_pairs(store, arg) == model_pairs(model, arg)
        elif action == "savepoint":
            saved = (store.savepoint(), list(model))
        elif action == "rollback" and saved is not None:
            store.rollback(saved[0])
            model = list(saved[1])
        elif action == "checkpoint":
            frame = store.frame()
            store = make_store(colliding, executor)
            store.load(frame)
            saved = None
        elif action == "merges" and executor is not None:
            executor.run_all()
        assert store.rows == len(model)
        every = sorted({k for k, _ in model})
        assert found_pairs(store, every) == model_pairs(model, every)
    store.put(frame_of([]))  # nothing added: no new run either
    settle(store, executor)
    every = sorted({k for k, _ in model})
    assert found_pairs(store, every) == model_pairs(model, every)
    if model:
        bound = math.log2(len(model)) + 2
        assert len(store._chunks) <= bound
        assert store.segments <= bound


def settle(store: AppendStore, executor: ManualExecutor | None) -> None:
    """Let every merge finish and be installed, and the merges that enables run too."""
    while store._pending or store._packing:
        if executor is not None:
            executor.run_all()
        else:
            merge_executor().submit(int).result()  # one thread: after what it holds
        store._compact()


def test_merge_runs_keeps_every_entry_sorted() -> None:
    store = AppendStore(["k"])
    store.put(frame_of([(5, 0), (1, 1), (5, 2)]))
    store.put(frame_of([(3, 3), (5, 4)]))
    older, newer = store._runs if len(store._runs) == 2 else (store._runs[0], store._runs[0])
    merged = merge_runs(older, newer)
    assert np.all(np.diff(merged.hashes) >= 0)
    assert sorted(merged.ids.tolist()) == sorted([*older.ids.tolist(), *newer.ids.tolist()])


def test_a_background_merge_after_a_rollback_is_dropped() -> None:
    """A merge whose inputs a rollback removed is not installed; the store still finds
    exactly what it held at the savepoint."""
    executor = ManualExecutor()
    store = AppendStore(["k"], background_rows=2, executor=executor)
    store.put(frame_of([(1, 0), (2, 1)]))
    saved = store.savepoint()
    store.put(frame_of([(3, 2), (4, 3)]))  # merges 4 entries: queued
    assert executor.queue
    store.rollback(saved)
    executor.run_all()
    assert found_pairs(store, [1, 2, 3, 4]) == [(0, 0), (1, 1)]
    assert store.rows == 2 and store.segments == 1


def test_string_keys_and_two_columns() -> None:
    """Hashed keys; a null key is kept in the rows but matches nothing."""
    store = AppendStore(["a", "b"])
    store.put(pl.DataFrame({"a": ["x", "y", None], "b": [1, 2, 3], "v": [10, 20, 30]}))
    assert not store.codes(pl.DataFrame({"a": ["x"], "b": [1]}))[1]  # hashes, not exact
    at, ids = store.find(pl.DataFrame({"a": ["y", "x", "x", "z", None], "b": [2, 1, 2, 1, 3]}))
    assert at.tolist() == [0, 1]
    assert store.gather(ids)["v"].to_list() == [20, 10]
    assert store.key_schema() == {"a": pl.String, "b": pl.Int64}
    assert sorted(store.frame()["v"].to_list()) == [10, 20, 30]


def test_integer_keys_are_their_own_codes() -> None:
    """One integer key column is its own code, whatever its integer type (UInt64 above
    2**63 included); a null key matches nothing, not the key 0 it is coded as."""
    big = 2**64 - 1
    store = AppendStore(["k"])
    store.put(pl.DataFrame({"k": pl.Series([0, None, big], dtype=pl.UInt64), "v": [1, 2, 3]}))
    codes, exact, valid = store.codes(
        pl.DataFrame({"k": pl.Series([0, None, big], dtype=pl.UInt64)})
    )
    assert exact and valid is not None and valid.tolist() == [True, False, True]
    assert codes[[0, 2]].tolist() == [0, -1]  # UInt64 viewed as Int64: one code per key
    at, ids = store.find(pl.DataFrame({"k": pl.Series([None, big, 5, 0], dtype=pl.UInt64)}))
    assert at.tolist() == [1, 3]
    assert store.gather(ids)["v"].to_list() == [3, 1]
    small = AppendStore(["k"])
    small.put(pl.DataFrame({"k": pl.Series([7, -3], dtype=pl.Int16), "v": [1, 2]}))
    at, ids = small.find(pl.DataFrame({"k": pl.Series([-3, 7, 7], dtype=pl.Int16)}))
    assert at.tolist() == [0, 1, 2] and small.gather(ids)["v"].to_list() == [2, 1, 1]
