"""IncrementalJoin against a plain model: whatever the batches, ports, savepoints,
rollbacks and checkpoint round trips, the pairs emitted so far are those of a one-shot
inner join (then the right filter) of the rows accepted so far, each pair once. Run with
integer, string and two-column keys, key types that differ between the sides, and with
hash collisions forced in the stores; the pairs have the columns and types of a Polars
join whichever path made them."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflare_platform.engine.operators.append_store import AppendStore
from dataflare_platform.engine.operators.incremental_join import IncrementalJoin
from dataflare_platform.engine.operators.keyed_store import KeyedStore

KINDS = ["int", "str", "pair", "mixed"]


def _colliding_hash(self: KeyedStore, frame: pl.DataFrame) -> np.ndarray:
    """Four hash values in all: lookups meet other keys' rows all the time."""
    first = frame.get_column(self.keys[0]).cast(pl.String).fill_null("")
    return (first.str.len_bytes().to_numpy().astype(np.int64) % 4) * 7


def _colliding_codes(self: AppendStore, frame: pl.DataFrame) -> tuple:
    """Keys hashed (``_colliding_hash``), never their own codes."""
    return _colliding_hash(self, frame), False, None


def _strings(keys: list[int | None], make) -> pl.Series:
    return pl.Series([None if k is None else make(k) for k in keys], dtype=pl.String)


def _ints(keys: list[int | None], make=lambda k: k, dtype=pl.Int64) -> pl.Series:
    return pl.Series([None if k is None else make(k) for k in keys], dtype=dtype)


def _frame(kind: str, side: int, rows: list[tuple[int | None, int]], start: int) -> pl.DataFrame:
    """Rows ``(key, tag)`` of one side as a frame of the key ``kind`` (``mixed``: Int32
    keys on the left, Int64 on the right); values are made unique by ``start`` so that
    every emitted pair is told apart."""
    keys = [k for k, _ in rows]
    values = pl.Series([start + i for i in range(len(rows))], dtype=pl.Int64)
    tags = pl.Series([v for _, v in rows], dtype=pl.Int64)
    first, second, value = ("k", "k2", "lv") if side == 0 else ("id", "id2", "rv")
    if kind == "str":
        cols = {first: _strings(keys, lambda k: f"key{k}")}
    elif kind == "pair":
        cols = {first: _ints(keys, lambda k: k % 3), second: _strings(keys, lambda k: f"p{k // 3}")}
    else:
        cols = {first: _ints(keys, dtype=pl.Int32 if kind == "mixed" and side == 0 else pl.Int64)}
    return pl.DataFrame({**cols, value: values, "tag": tags})


def _on(kind: str) -> tuple[list[str], list[str]]:
    return (["k", "k2"], ["id", "id2"]) if kind == "pair" else (["k"], ["id"])


def _pairs(frame: pl.DataFrame | None) -> list[tuple[int, int]]:
    if frame is None or frame.height == 0:
        return []
    return sorted(zip(frame["lv"].to_list(), frame["rv"].to_list(), strict=True))


step = st.one_of(
    st.tuples(
        st.just("batch"),
        st.integers(0, 1),
        st.lists(st.tuples(st.none() | st.integers(0, 11), st.integers(0, 3)), max_size=6),
    ),
    st.tuples(st.just("fail"), st.integers(0, 1), st.just([])),  # batch rolled back
    st.tuples(st.just("checkpoint"), st.just(0), st.just([])),
)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("colliding", [False, True])
@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(step, max_size=25),
    unique=st.booleans(),
    filtered=st.booleans(),
    few=st.sampled_from([0, 1, 10**9]),
    data=st.data(),
)
def test_join_emits_the_pairs_of_a_one_shot_join(
    kind, colliding, steps, unique, filtered, few, data
):
    """``few``: a right batch looks up the waiting left rows' keys in itself when it
    has more than ``few`` times as many keys (0: always, 10**9: never)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(IncrementalJoin, "FEW_WAITING", few)
        if colliding:
            patch.setattr(KeyedStore, "_hash", _colliding_hash)
            patch.setattr(AppendStore, "codes", _colliding_codes)
        _check_against_model(kind, steps, unique, filtered, data)


def _check_against_model(kind, steps, unique, filtered, data):
    left_on, right_on = _on(kind)
    predicate = (pl.col("tag") != 0) if filtered else None
    op = IncrementalJoin(left_on, right_on, unique, suffix="_r", right_filter=predicate)
    accepted: list[list[pl.DataFrame]] = [[], []]
    right_keys_seen: set = set()
    emitted: list[tuple[int, int]] = []
    schemas = []
    serial = 0
    for action, port, rows in steps:
        if action == "checkpoint":
            state = op.snapshot()
            op = IncrementalJoin(left_on, right_on, unique, suffix="_r", right_filter=predicate)
            op.restore(state)
            continue
        if action == "fail":
            rows = data.draw(st.lists(st.tuples(st.integers(0, 11), st.integers(0, 3)), max_size=4))
        if port == 1 and unique:  # a primary key: each arrives at most once
            fresh, batch_keys = [], set()
            for key, tag in rows:
                if key is None or (key not in right_keys_seen and key not in batch_keys):
                    fresh.append((key, tag))
                    batch_keys.add(key)
            rows = fresh
        frame = _frame(kind, port, rows, serial)
        serial += len(rows)
        saved = op.savepoint()
        out, late = op.process(frame, port)
        assert late is None
        if action == "fail":
            op.rollback(saved)
            continue
        if port == 1 and unique:
            right_keys_seen |= {k for k, _ in rows if k is not None}
        accepted[port].append(frame)
        emitted += _pairs(out)
        if out is not None:
            schemas.append(out.schema)
    left = pl.concat(accepted[0]) if accepted[0] else _frame(kind, 0, [], 0)
    right = pl.concat(accepted[1]) if accepted[1] else _frame(kind, 1, [], 0)
    if predicate is not None:
        right = right.filter(predicate)
    truth = left.join(right, left_on=left_on, right_on=right_on, how="inner", suffix="_r")
    assert sorted(emitted) == _pairs(truth)
    assert all(schema == truth.schema for schema in schemas)  # names, order and types
    if unique:
        # Only left rows whose key has not arrived on the right wait in state.
        waiting = left.filter(pl.all_horizontal(pl.col(k).is_not_null() for k in left_on))
        arrived = pl.concat(accepted[1]) if accepted[1] else _frame(kind, 1, [], 0)
        waiting = waiting.join(arrived, left_on=left_on, right_on=right_on, how="anti")
        assert op._left.rows == waiting.height


def test_rejected_unique_keys_are_held_as_keys_only():
    op = IncrementalJoin(["auction"], ["id"], True, right_filter=pl.col("category") == 10)
    bids = pl.DataFrame({"auction": [1, 2, 3, 3], "price": [5, 6, 7, 8]})
    auctions = pl.DataFrame({"id": [1, 2, 4], "category": [10, 11, 11], "name": ["a", "b", "c"]})
    out, _ = op.process(bids, 0)
    assert out is None
    out, _ = op.process(auctions, 1)
    assert out.select("auction", "price", "name").rows() == [(1, 5, "a")]
    assert op._rejected.frame().columns == ["id"]  # the rejected auctions: ids only
    assert sorted(op._rejected.frame()["id"].to_list()) == [2, 4]
    assert op._left.rows == 2  # the bids on auction 3, still waiting
    out, _ = op.process(pl.DataFrame({"auction": [4, 1], "price": [9, 10]}), 0)
    assert out.select("auction", "price").rows() == [(1, 10)]
    assert op._left.rows == 2  # the bid on auction 4 was dropped at once


def test_a_checkpoint_of_whole_frames_restores():
    """Checkpoints before the stores held each side as one frame under "left" and
    "right": the same names, so they restore into the stores."""
    op = IncrementalJoin(["auction"], ["id"], True)
    op.restore(
        {
            "left": pl.DataFrame({"auction": [7, 7, 8], "price": [1, 2, 3]}).to_arrow(),
            "right": pl.DataFrame({"id": [9], "name": ["nine"]}).to_arrow(),
        }
    )
    out, _ = op.process(pl.DataFrame({"id": [7], "name": ["seven"]}), 1)
    pairs = sorted(out.select("auction", "price", "name").rows())
    assert pairs == [(7, 1, "seven"), (7, 2, "seven")]
    out, _ = op.process(pl.DataFrame({"auction": [9], "price": [4]}), 0)
    assert out.select("auction", "price", "name").rows() == [(9, 4, "nine")]
    assert op.state_rows() == 3  # the bid on auction 8 and auctions 7 and 9
