"""KeyedStore against a plain dict model: every sequence of takes, puts, expiries,
savepoints, rollbacks and checkpoint round trips returns what the model holds, with hash
collisions forced, and the structure stays logarithmic."""

from __future__ import annotations

import math
import os
import select
import signal
import sys
import threading
from concurrent.futures import Executor, Future

import numpy as np
import polars as pl
import pyarrow.types as pa_types
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflare_platform.engine.operators import code_sets, keyed_store
from dataflare_platform.engine.operators.keyed import Dedup, KeyedTopN
from dataflare_platform.engine.operators.keyed_store import AgeIndex, KeyedStore, StoreFilter
from dataflare_platform_tests import waits


class CollidingStore(KeyedStore):
    """Eight hash values for every key: most lookups meet other keys' rows."""

    def _hash(self, frame: pl.DataFrame) -> np.ndarray:
        return (frame.get_column("k").fill_null(-1).to_numpy().astype(np.int64) % 8) * 1000


class ManualExecutor(Executor):
    """Runs a submitted merge only when the test says: a merge that finishes at any
    point between batches, or never."""

    def __init__(self) -> None:
        self.queue: list = []

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        self.queue.append((future, fn, args, kwargs))
        return future

    def run_all(self) -> None:
        while self.queue:
            future, fn, args, kwargs = self.queue.pop(0)
            future.set_result(fn(*args, **kwargs))


def make_store(colliding: bool, executor: Executor | None, fan_in: int = 2) -> KeyedStore:
    """Merges above 8 rows go to ``executor`` when given (so the background path runs)."""
    cls = CollidingStore if colliding else KeyedStore
    if executor is None:
        return cls(["k"], age_column="age", fan_in=fan_in)
    return cls(["k"], age_column="age", background_rows=8, executor=executor, fan_in=fan_in)


def rows_of(model: dict, keys: list) -> pl.DataFrame:
    data = [(k, v, age) for k in keys for v, age in model.get(k, [])]
    return pl.DataFrame(data, schema={"k": pl.Int64, "v": pl.Int64, "age": pl.Int64}, orient="row")


def as_model(frame: pl.DataFrame | None) -> dict:
    out: dict = {}
    for k, v, age in frame.rows() if frame is not None else []:
        out.setdefault(k, []).append((v, age))
    return out


step = st.one_of(
    st.tuples(st.just("batch"), st.lists(st.one_of(st.none(), st.integers(0, 40)), max_size=30)),
    st.tuples(st.just("read"), st.lists(st.one_of(st.none(), st.integers(0, 40)), max_size=30)),
    st.tuples(st.just("expire"), st.integers(0, 5)),
    st.tuples(st.just("savepoint"), st.none()),
    st.tuples(st.just("rollback"), st.none()),
    st.tuples(st.just("checkpoint"), st.none()),
    st.tuples(st.just("merges"), st.none()),
)


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(step, max_size=40),
    colliding=st.booleans(),
    background=st.booleans(),
    fan_in=st.sampled_from([2, 3, 8]),
    small_filter=st.booleans(),
)
def test_store_matches_a_dict_model(
    steps: list, colliding: bool, background: bool, fan_in: int, small_filter: bool
) -> None:
    """Each batch takes its keys, then puts back 1-3 rows per key (the previous rows'
    values appended to, keeping the last three: order within a key matters, as for the
    last-n operator) with a new age; expiry drops keys below the floor. With
    ``background``, merges finish only at the "merges" steps; ``fan_in`` segments merge
    at once; with ``small_filter``, the store filter is rebuilt every few puts (savepoints
    and rollbacks across rebuilds)."""
    with pytest.MonkeyPatch.context() as patch:
        if small_filter:
            patch.setattr(keyed_store, "FILTER_MIN_SLOTS", 8)
        _run_model(steps, colliding, background, fan_in)


def _run_model(steps: list, colliding: bool, background: bool, fan_in: int) -> None:
    executor = ManualExecutor() if background else None
    store = make_store(colliding, executor, fan_in)
    model: dict = {}
    floor = None
    saved = None
    clock = 0
    for kind, arg in steps:
        if kind == "batch":
            clock += 1
            keys = list(dict.fromkeys(arg))
            touched = pl.DataFrame({"k": keys}, schema={"k": pl.Int64})
            got = store.take(touched)
            live = {
                k: rows
                for k in keys
                if (rows := model.get(k)) and (floor is None or rows[0][1] >= floor)
            }
            assert as_model(got) == live
            for k in keys:
                previous = [v for v, _ in live.get(k, [])]
                model[k] = [(v, clock) for v in [*previous, clock * 100 + len(previous)][-3:]]
            store.put(rows_of(model, keys))
        elif kind == "read":  # ``get``: the same rows as ``take``, and the store keeps them
            keys = list(dict.fromkeys(arg))
            got = store.get(pl.DataFrame({"k": keys}, schema={"k": pl.Int64}))
            live = {
                k: rows
                for k in keys
                if (rows := model.get(k)) and (floor is None or rows[0][1] >= floor)
            }
            assert as_model(got) == live
        elif kind == "expire":
            floor = max(floor or 0, clock - arg)
            store.expire(floor)
        elif kind == "savepoint":
            saved = (store.savepoint(), {k: list(v) for k, v in model.items()}, floor, clock)
        elif kind == "rollback" and saved is not None:
            store.rollback(saved[0])
            model, floor, clock = {k: list(v) for k, v in saved[1].items()}, saved[2], saved[3]
        elif kind == "merges" and executor is not None:
            executor.run_all()
        elif kind == "checkpoint":
            frame = store.frame()
            store = make_store(colliding, executor, fan_in)
            store.load(frame)
            saved = None
            if floor is not None:
                store.expire(floor)
    live = {k: rows for k, rows in model.items() if floor is None or rows[0][1] >= floor}
    assert as_model(store.frame()) == live
    assert store.rows >= sum(len(r) for r in live.values())


def test_two_key_columns_and_null_keys_are_keys() -> None:
    store = KeyedStore(["a", "b"])
    first = pl.DataFrame({"a": [1, 1, None, None], "b": ["x", None, "x", None], "v": [1, 2, 3, 4]})
    store.put(first)
    touched = pl.DataFrame({"a": [None, 1, 2], "b": [None, None, "x"]})
    got = store.take(touched)
    assert sorted(got.rows(), key=str) == sorted([(None, None, 4), (1, None, 2)], key=str)
    store.put(got.with_columns(pl.col("v") * 10))
    assert sorted(store.frame().rows(), key=str) == sorted(
        [(1, "x", 1), (None, "x", 3), (None, None, 40), (1, None, 20)], key=str
    )


@pytest.mark.parametrize("fan_in", [2, 8])
def test_segments_stay_logarithmic_and_dead_rows_are_reclaimed(fan_in: int) -> None:
    """1000 batches of 100 new keys, each also updating up to 100 old keys: the store
    keeps O(log(batches)) segments ((fan_in - 1) per doubling tier at most) and exactly
    the live rows once asked for them."""
    store = KeyedStore(["k"], fan_in=fan_in)
    rng = np.random.default_rng(7)
    updates = 0
    for i in range(1000):
        new = np.arange(i * 100, (i + 1) * 100)
        old = rng.integers(0, (i + 1) * 100, 100)
        keys = pl.DataFrame({"k": np.unique(np.concatenate([new, old]))})
        held = store.take(keys)
        fresh = keys.join(held, on="k", how="anti") if held is not None else keys
        fresh = fresh.with_columns(pl.lit(0, dtype=pl.Int64).alias("v"))
        put = fresh if held is None else pl.concat([held.with_columns(pl.col("v") + 1), fresh])
        updates += 0 if held is None else held.height
        store.put(put)
        assert store.segments <= fan_in * math.log2(i + 2) + 2
    frame = store.frame()
    assert frame.height == 100_000 == frame.get_column("k").n_unique()
    assert store.rows == 100_000
    assert updates > 50_000 and frame.get_column("v").sum() == updates


def test_rows_replaced_while_a_merge_runs_stay_replaced_after_it_is_installed() -> None:
    executor = ManualExecutor()
    store = KeyedStore(["k"], background_rows=8, executor=executor)
    store.put(pl.DataFrame({"k": range(10), "v": [0] * 10}))
    store.put(pl.DataFrame({"k": range(10, 20), "v": [0] * 10}))
    assert len(executor.queue) == 1 and store.segments == 2  # the merge waits on its thread
    held = store.take(pl.DataFrame({"k": range(5)}))
    store.put(held.with_columns(pl.lit(1).alias("v")))  # replaces rows of the merge's input
    executor.run_all()
    assert store.take(pl.DataFrame({"k": [99]})) is None  # installs the merge
    assert store.segments == 2  # the merged pair, and the replacement rows above it
    frame = store.frame().sort("k")
    assert frame.get_column("k").to_list() == list(range(20))
    assert frame.get_column("v").to_list() == [1] * 5 + [0] * 15
    assert store.rows == 20


@settings(max_examples=200, deadline=None)
@given(
    ages=st.lists(st.integers(-5, 5), min_size=1, max_size=40),
    floors=st.lists(st.integers(-7, 7), max_size=6),
)
def test_age_index_counts_the_ages_below_a_floor(ages: list, floors: list) -> None:
    """Expiry counts a segment's expired rows with a binary search of its sorted ages."""
    index = AgeIndex(np.array(ages, dtype=np.int64))
    assert (index.low, index.high) == (min(ages), max(ages))
    for floor in floors:
        assert index.below(floor) == sum(a < floor for a in ages)


def test_age_index_estimates_the_count_of_a_large_segment_from_a_sample() -> None:
    """Beyond ``AGE_SAMPLE`` rows the count is estimated from every k-th age (rows are in
    key-hash order, unrelated to age): within 2 % of the rows here, exact at the ends."""
    rng = np.random.default_rng(7)
    ages = rng.integers(0, 1_000_000, keyed_store.AGE_SAMPLE * 25)
    index = AgeIndex(ages)
    assert index.ordered.size <= keyed_store.AGE_SAMPLE
    for floor in [1, 1_000, 250_000, 500_000, 999_000]:
        assert abs(index.below(floor) - int((ages < floor).sum())) <= 0.02 * ages.size
    assert index.below(int(ages.min())) == 0
    assert index.below(int(ages.max()) + 1) == ages.size


@pytest.mark.parametrize("cause", ["expired", "dead"])
def test_a_large_segment_mostly_gone_is_rewritten_on_the_merge_thread(cause: str) -> None:
    """A segment more than half expired or replaced is rewritten without those rows; a
    large one on the merge thread (a batch of q18 waited 20-30 ms for it inline), and
    meanwhile it answers as before: expired rows absent, rows taken since stay taken."""
    executor = ManualExecutor()
    store = KeyedStore(["k"], age_column="age", background_rows=8, executor=executor, fan_in=8)
    store.put(pl.DataFrame({"k": range(20), "v": [0] * 20, "age": range(20)}))
    if cause == "expired":
        store.expire(15)  # 15 of 20 rows expired
        gone = list(range(15))
    else:
        store.put(store.take(pl.DataFrame({"k": range(12)})).with_columns(v=pl.lit(1)))
        gone = []
    assert len(executor.queue) == 1  # the rewrite waits on the merge thread (no merge: fan-in 8)
    held = store.take(pl.DataFrame({"k": [3, 17]}))
    assert held.sort("k").get_column("k").to_list() == ([17] if cause == "expired" else [3, 17])
    store.put(held.with_columns(v=pl.lit(2)))
    executor.run_all()
    assert store.take(pl.DataFrame({"k": [99]})) is None  # installs the rewrite
    frame = store.frame().sort("k")
    expected = {k: 0 for k in range(20) if k not in gone}
    if cause == "dead":
        expected.update({k: 1 for k in range(12)})
    expected.update({k: 2 for k in held.get_column("k")})
    assert dict(zip(frame.get_column("k"), frame.get_column("v"), strict=True)) == expected
    assert store.rows == len(expected)
    assert all(s.dead_rows * 2 <= s.frame.height for s in store._segments)


def test_a_run_of_segments_merged_on_the_thread_keeps_rows_replaced_meanwhile() -> None:
    """Eight segments merge at once on the merge thread; rows of several of them are
    replaced before it is installed and stay replaced."""
    executor = ManualExecutor()
    store = KeyedStore(["k"], background_rows=8, executor=executor, fan_in=8)
    for i in range(8):
        store.put(pl.DataFrame({"k": range(i * 10, i * 10 + 10), "v": [0] * 10}))
    assert len(executor.queue) == 1 and store.segments == 8
    held = store.take(pl.DataFrame({"k": [3, 17, 42, 79]}))
    store.put(held.with_columns(pl.lit(1).alias("v")))
    executor.run_all()
    assert store.take(pl.DataFrame({"k": [999]})) is None  # installs the merge
    assert store.segments == 2
    frame = store.frame().sort("k")
    assert frame.get_column("k").to_list() == list(range(80))
    assert frame.filter(pl.col("v") == 1).get_column("k").to_list() == [3, 17, 42, 79]
    assert store.rows == 80


def _string_buffer_bytes(frame: pl.DataFrame) -> int:
    table = frame.to_arrow(compat_level=pl.CompatLevel.newest())
    return sum(
        buffer.size
        for column in table.columns
        if pa_types.is_string_view(column.type)
        for chunk in column.chunks
        for buffer in chunk.buffers()[2:]  # the data buffers behind the views
        if buffer is not None
    )


def test_a_merge_keeps_no_strings_of_dead_rows() -> None:
    """Merged segments hold their live rows' strings only (a Polars gather from one
    chunk would keep every buffer its views point into, merge after merge)."""
    store = KeyedStore(["k"], fan_in=2)
    text = "x" * 200  # past the 12 bytes a view holds inline
    store.put(pl.DataFrame({"k": range(1000), "s": [f"{text}{i}" for i in range(1000)]}))
    held = store.take(pl.DataFrame({"k": range(990)}))  # 990 rows die in the first segment
    assert held is not None
    store.put(held.head(10).with_columns(pl.lit("y").alias("s")))  # 980 keys dropped
    assert store.segments == 1
    frame = store.frame()
    assert frame is not None and frame.height == 20
    assert _string_buffer_bytes(frame) < 20 * (len(text) + 10)


def test_a_merge_on_the_merge_thread_gathers_column_by_column_to_the_same_rows() -> None:
    """On the merge thread (``index_ages``) a merge gathers one column at a time, off
    Polars' pool: the same rows in the same order, strings of live rows only."""
    store = KeyedStore(["k"], age_column="age", fan_in=8)
    text = "x" * 200
    for part in range(3):
        keys = range(part * 500, part * 500 + 1000)  # half of each overlaps the next
        store.put(
            pl.DataFrame(
                {"k": keys, "s": [f"{text}{k}/{part}" for k in keys], "age": [part] * 1000}
            )
        )
        store.take(pl.DataFrame({"k": range(part * 500, part * 500 + 700)}))  # dead rows
    segments = tuple(store._segments)
    serial, moved_serial = keyed_store.merge_many(segments, 1, index_ages=True)
    pooled, moved_pooled = keyed_store.merge_many(segments, 1, index_ages=False)
    assert serial.frame.equals(pooled.frame) and serial.frame.height > 0
    np.testing.assert_array_equal(serial.hashes, pooled.hashes)
    for a, b in zip(moved_serial, moved_pooled, strict=True):
        np.testing.assert_array_equal(a, b)
    assert _string_buffer_bytes(serial.frame) < serial.frame.height * (len(text) + 20)


def _owned_segments(parts: int, rows: int, text: str) -> tuple[keyed_store.Segment, ...]:
    """Adjacent segments as merges leave them (strings copied out: not ``borrowed``)."""
    store = KeyedStore(["k"], fan_in=parts + 1)  # no merge while they are put
    for part in range(parts):
        keys = range(part * rows, (part + 1) * rows)
        store.put(pl.DataFrame({"k": keys, "s": [f"{text}{k}" for k in keys]}))
    owned = []
    for segment in store._segments:
        assert segment.borrowed  # a batch's rows: views into buffers it does not own
        merged, _ = keyed_store.merge_many((segment,), None)
        assert not merged.borrowed and merged.garbage_rows == 0
        owned.append(merged)
    return tuple(owned)


@pytest.mark.parametrize("index_ages", [False, True])
def test_a_merge_with_few_rows_gone_shares_the_strings_and_counts_them(index_ages) -> None:
    """Copying the strings is most of a merge: while the rows gone are few (at most
    ``GARBAGE_SHARE`` of the live ones, counted across merges), a merge keeps views into
    its inputs' buffers (the same rows as a copying merge) and counts what they hold for
    nothing; past the share, the merge copies the live strings out and the count restarts."""
    text = "x" * 100
    a, b = _owned_segments(2, 1000, text)
    gone = np.arange(0, 1000, 10)  # 100 of 1000 rows of the older segment
    a = keyed_store.replace(a, dead=(gone,), dead_rows=gone.size)
    shared, moved = keyed_store.merge_many((a, b), None, index_ages)
    assert shared.frame.height == 1900 and shared.garbage_rows == 100
    assert (moved[0][gone] == -1).all() and (np.delete(moved[0], gone) >= 0).all()
    held = _string_buffer_bytes(a.frame) + _string_buffer_bytes(b.frame)
    assert _string_buffer_bytes(shared.frame) == held  # no string copied
    expected = pl.concat([a.frame.filter(~pl.Series(np.isin(np.arange(1000), gone))), b.frame])
    assert shared.frame.sort("k").equals(expected.sort("k"))
    assert (np.diff(shared.hashes) >= 0).all()
    assert shared.frame.equals(shared.frame[np.argsort(shared.hashes, kind="stable")])

    # A third of the rest gone too: 100 + 633 rows held for nothing, past the share.
    more = np.arange(0, 1900, 3)
    worn = keyed_store.replace(shared, dead=(more,), dead_rows=more.size)
    compacted, _ = keyed_store.merge_many((worn,), None, index_ages)
    assert compacted.frame.height == 1900 - more.size and compacted.garbage_rows == 0
    live_bytes = compacted.frame.get_column("s").str.len_bytes().sum()
    assert _string_buffer_bytes(compacted.frame) == live_bytes < held  # the live ones only


def test_a_merge_of_a_batchs_rows_copies_their_strings_out() -> None:
    """Rows put by a batch point into its source's buffers (a whole file piece, of a
    size the store cannot know): their first merge copies the strings, rows gone or not."""
    store = KeyedStore(["k"], fan_in=8)
    source = pl.DataFrame({"k": range(10_000), "s": [f"{'y' * 100}{k}" for k in range(10_000)]})
    store.put(source.head(50))  # views into the buffers of all 10 000 rows' strings
    (segment,) = store._segments
    assert segment.borrowed and _string_buffer_bytes(segment.frame) > 100 * 10_000
    merged, _ = keyed_store.merge_many((segment,), None)
    assert not merged.borrowed and _string_buffer_bytes(merged.frame) < 50 * 110


@pytest.mark.parametrize("segments", [1, 3])
@pytest.mark.parametrize("verb", ["take", "get"])
def test_rows_read_from_the_store_own_their_strings(segments: int, verb: str) -> None:
    """A take's rows go back into the store as a segment that lives until its first
    merge: views into the segment they came from would keep all of its strings alive
    that long (q19 with merges left to the merge thread peaked near three times the
    memory so). From one segment or several, the rows read hold their own strings."""
    store = KeyedStore(["k"], fan_in=segments + 1)  # no merge while they are put
    text = "z" * 100
    for part in _owned_segments(segments, 2000, text):
        store._gen += 1
        store._segments = (*store._segments, keyed_store.replace(part, gen=store._gen))
    held = sum(_string_buffer_bytes(s.frame) for s in store._segments)
    assert held > segments * 2000 * len(text)
    wanted = [7, 1999] if segments == 1 else [7, 2500, 5999]
    rows = getattr(store, verb)(pl.DataFrame({"k": wanted}))
    assert rows is not None and sorted(rows.get_column("k").to_list()) == wanted
    assert rows.get_column("s").to_list() == [f"{text}{k}" for k in rows.get_column("k")]
    assert _string_buffer_bytes(rows) < len(wanted) * (len(text) + 10)


def test_a_checkpoint_table_holds_the_live_rows_segment_by_segment() -> None:
    """``to_arrow`` (a checkpoint's state) converts segment by segment: the rows of
    ``frame()``, as chunks side by side; a column null in one segment takes the others'
    type; an empty store has none."""
    store = KeyedStore(["k"], age_column="age", fan_in=8)
    assert store.to_arrow() is None
    store.put(pl.DataFrame({"k": [1, 2, 3], "s": [None, None, None], "age": [1, 1, 1]}))
    store.put(pl.DataFrame({"k": [4, 5], "s": ["a", "b"], "age": [2, 2]}))
    store.take(pl.DataFrame({"k": [2]}))
    store.put(pl.DataFrame({"k": [2], "s": ["c"], "age": [3]}))
    store.expire(2)  # rows of age 1 gone
    table = store.to_arrow()
    assert table is not None and table.num_rows == 3
    assert pl.from_arrow(table).sort("k").equals(store.frame().sort("k"))


def test_held_keys_cover_every_live_key() -> None:
    """``held_keys``: the keys of every row held, dead ones included."""
    store = KeyedStore(["k"])
    assert store.held_keys() is None
    store.put(pl.DataFrame({"k": [1, 2, 2, 3], "v": [1, 2, 3, 4]}))
    store.take(pl.DataFrame({"k": [2]}))
    store.put(pl.DataFrame({"k": [2, 4], "v": [5, 6]}))
    held = store.held_keys()
    assert held is not None and held.columns == ["k"]
    assert set(held["k"].to_list()) >= set(store.frame()["k"].to_list()) == {1, 2, 3, 4}


def test_a_null_age_is_below_every_floor() -> None:
    """A row whose age is null (its event time was nulled by a step before) is held until
    there is a floor and is expired by the first one, as the lookup's ``age >= floor``
    drops it; its age was a float NaN the age index failed on."""
    store = KeyedStore(["k"], age_column="age")
    schema = {"k": pl.Int64, "age": pl.Int64}
    store.put(pl.DataFrame({"k": [1, 2, 3], "age": [5, None, 7]}, schema=schema))
    keys = pl.DataFrame({"k": [1, 2, 3]})
    assert sorted(store.get(keys).get_column("k")) == [1, 2, 3]
    store.expire(-(2**62))
    assert sorted(store.get(keys).get_column("k")) == [1, 3]
    restored = KeyedStore(["k"], age_column="age")
    restored.load(store.frame())
    restored.expire(6)
    assert restored.get(keys).get_column("k").to_list() == [3]


@pytest.mark.parametrize("kind", ["dedup", "top_n"])
def test_keyed_operators_with_expiry_take_rows_with_a_null_event_time(kind: str) -> None:
    """Dedup and a top-N with a TTL: a row whose event time is null passes through and is
    forgotten at the first expiry (in a restored operator too), not a failed step."""

    def make() -> Dedup | KeyedTopN:
        if kind == "dedup":
            return Dedup(["k"], horizon_ms=10_000)
        return KeyedTopN(["k"], ["v"], [True], n=1, ttl_ms=5_000)

    op = make()
    times = pl.Series([1_000, None, 3_000]).cast(pl.Datetime("ms"))
    batch = pl.DataFrame({"k": [1, 2, 3], "v": [5, 6, 7], "date_time": times})
    out, _ = op.process(batch)
    assert sorted(out.get_column("k")) == [1, 2, 3]
    restored = make()
    restored.restore(op.snapshot())
    for each in (op, restored):
        each.advance(2_000)
        each.advance(10**9)
        assert each.state_rows() == 0


def test_keys_new_to_the_store_are_not_searched_for_in_its_segments() -> None:
    """The store filter turns away keys never put (most of a q18 batch on a skewed
    stream), and still passes every key put, replaced or merged, across its rebuilds
    (on the store's executor, run after each put: a merge thread that keeps up)."""
    executor = ManualExecutor()
    store = KeyedStore(["k"], age_column="age", fan_in=8, executor=executor)
    searched = []
    for i in range(40):  # 40 segments' worth of puts: rebuilt as it fills
        keys = list(range(i * 1_000, (i + 1) * 1_000))
        store.put(pl.DataFrame({"k": keys, "v": keys, "age": [i] * 1_000}))
        executor.run_all()
    original = keyed_store.Segment.find

    def find(self, wanted):
        searched.append(wanted.size)
        return original(self, wanted)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keyed_store.Segment, "find", find)
        new = pl.DataFrame({"k": list(range(10**6, 10**6 + 5_000))})
        assert store.get(new) is None
        # Without it every segment was searched for all 5 000; its flags are at most a
        # quarter set (rebuilt past that), so at most about a quarter pass.
        assert 0 < sum(searched) <= 5_000 * store.segments // 4
        held = pl.DataFrame({"k": list(range(0, 40_000, 7))})
        assert sorted(store.get(held).get_column("k")) == held.get_column("k").to_list()
    assert isinstance(store._filter, StoreFilter) and not store._filter.full


def test_the_next_store_filter_is_built_on_the_merge_thread_and_covers_keys_put_meanwhile():
    """Three quarters full, the store filter's successor is built on the store's
    executor from the segments as they are; the full filter goes on until it is ready
    (no batch builds one), then the successor takes over with the hashes put meanwhile.
    Without it ready, a batch builds one itself only past twice the room."""
    executor = ManualExecutor()
    store = KeyedStore(["k"], background_rows=10**9, executor=executor)

    def put(first: int, count: int = 1_000) -> None:
        keys = list(range(first, first + count))
        store.put(pl.DataFrame({"k": keys, "v": keys}))

    put(0)
    first = store._filter
    assert first is not None and not executor.queue
    step = 0
    while not first.filling:
        step += 1
        put(step * 1_000)
    assert len(executor.queue) == 1  # the successor's build, nothing else
    while not first.full:
        step += 1
        put(step * 1_000)
    assert store._filter is first  # full, but the successor is not built yet
    executor.run_all()
    step += 1
    put(step * 1_000)  # put after the build: the successor takes over with it
    successor = store._filter
    assert successor is not first and not successor.full
    every = pl.DataFrame({"k": list(range(0, (step + 1) * 1_000))})
    assert successor.may_hold(store.hash(every)).all()
    assert store.get(every).height == every.height
    # With the successor's build never run, a batch builds one past twice the room.
    while not successor.filling:
        step += 1
        put(step * 1_000)
    while successor.added <= 2 * successor.room:
        assert store._filter is successor
        step += 1
        put(step * 1_000)
    assert store._filter is not successor and store._next_filter is None
    every = pl.DataFrame({"k": list(range(0, (step + 1) * 1_000))})
    assert store._filter.may_hold(store.hash(every)).all()


def test_smaller_merges_go_to_a_merge_thread_with_nothing_queued() -> None:
    """Merges of more than ``BACKGROUND_ROWS`` go to the merge thread; those of more than
    ``QUIET_BACKGROUND_ROWS`` to the small-merge thread while it has nothing queued, else
    to the merge thread while that has nothing queued, else they run on the batch thread
    (a lagging thread holds back the segments it merges). A store with its own
    ``background_rows``, or its own executor, keeps one thread and one bound."""
    store = KeyedStore(["k"])
    fixed = KeyedStore(["k"], background_rows=1000)
    big, small = keyed_store.merge_executor, keyed_store.small_merge_executor
    quiet, bound = keyed_store.QUIET_BACKGROUND_ROWS, keyed_store.BACKGROUND_ROWS
    assert quiet < bound

    def drained() -> None:
        waits.wait_until("the merge threads drained", lambda: big.queued == small.queued == 0)

    drained()
    assert store._helper_for(quiet) is None
    assert store._helper_for(quiet + 1) is small()
    assert store._helper_for(bound + 1) is big()
    assert fixed._helper_for(1000) is None and fixed._helper_for(1001) is big()
    releases = []
    try:
        for helper, then in ((small, big()), (big, None)):
            release = threading.Event()
            releases.append(release)
            helper().submit(release.wait, 60)
            assert helper.queued == 1
            assert store._helper_for(quiet + 1) is then
            assert store._helper_for(bound) is then
            assert store._helper_for(bound + 1) is big()
            assert fixed._helper_for(1001) is big()
    finally:
        for release in releases:
            release.set()
    drained()
    assert store._helper_for(quiet + 1) is small()
    own = KeyedStore(["k"], executor=ManualExecutor())
    assert own._helper_for(bound) is None and own._helper_for(bound + 1) is own.executor


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
@pytest.mark.parametrize(
    "executor",
    [keyed_store.merge_executor, keyed_store.small_merge_executor, code_sets.check_executor],
    ids=["merge", "small-merge", "check"],
)
def test_the_helper_threads_run_below_the_batch_threads_priority(executor):
    """Merges and code-set lookups yield the cores to batches (and to Polars' workers)
    when both want them; the thread that submits keeps its own priority."""

    def nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    mine = nice()
    merging = executor().submit(nice).result()
    assert merging == min(mine + keyed_store.MERGE_NICENESS, 19)
    assert nice() == mine


@pytest.mark.skipif(sys.platform != "linux", reason="scheduling classes are Linux's")
def test_the_merge_thread_idles_and_is_lifted_while_a_batch_waits_for_it():
    """The merge thread runs in the idle class where it may leave it again, and a caller
    waiting for its result lifts it to the normal class for the wait (no priority
    inversion), then it idles again. The code-check thread (q16's lookups, its main work,
    not upkeep) stays in the normal class, niced."""
    helper = keyed_store.merge_executor
    policy = os.sched_getscheduler
    assert code_sets.check_executor().submit(policy, 0).result() == os.SCHED_OTHER
    helper().submit(int).result()  # started
    assert helper._tid is not None
    if not keyed_store._may_leave_idle(helper._tid):
        assert policy(helper._tid) == os.SCHED_OTHER  # never idled: nothing could lift it
        return
    assert policy(helper._tid) == os.SCHED_IDLE

    def lifted_within_a_minute() -> bool:
        # Runs on the merge thread; true once the waiting caller has lifted it.
        return waits.wait_until("lifted", lambda: policy(0) == os.SCHED_OTHER, 60, poll_s=0.01)

    pending = helper().submit(lifted_within_a_minute)  # done only once lifted
    assert pending.result(timeout=120) is True
    assert waits.wait_until("idle again", lambda: policy(helper._tid) == os.SCHED_IDLE, 60)
    # Waiting for a job's exception lifts it too (``concurrent.futures.wait`` users).
    pending = helper().submit(lifted_within_a_minute)
    assert pending.exception(timeout=120) is None and pending.result() is True
    assert waits.wait_until("idle again", lambda: policy(helper._tid) == os.SCHED_IDLE, 60)


@pytest.mark.skipif(sys.platform != "linux", reason="scheduling classes are Linux's")
def test_an_idle_helper_with_work_piling_up_is_lifted_until_it_drains():
    """More than ``LIFT_BACKLOG`` jobs queued on an idle-class helper lift it with no
    caller waiting (queued merges hold their inputs, which cannot expire meanwhile); once
    the queue drains, it idles again."""
    helper = keyed_store.HelperThread("test-backlog")
    helper().submit(int).result()  # started
    assert helper._tid is not None
    policy = os.sched_getscheduler
    idles = keyed_store._may_leave_idle(helper._tid)  # else never idle: nothing to lift
    resting = os.SCHED_IDLE if idles else os.SCHED_OTHER
    assert policy(helper._tid) == resting
    release = threading.Event()
    jobs = [helper().submit(release.wait, 60) for _ in range(keyed_store.LIFT_BACKLOG + 1)]
    try:
        waits.wait_until("lifted by its backlog", lambda: policy(helper._tid) == os.SCHED_OTHER, 60)
    finally:
        release.set()
    assert all(job.result(timeout=120) for job in jobs)
    waits.wait_until("resting again", lambda: policy(helper._tid) == resting, 60)
    helper().shutdown()


@pytest.mark.skipif(sys.platform != "linux", reason="fork is the Linux start method here")
@pytest.mark.parametrize(
    "executor",
    [keyed_store.merge_executor, keyed_store.small_merge_executor, code_sets.check_executor],
    ids=["merge", "small-merge", "check"],
)
def test_a_forked_child_gets_its_own_helper_thread(executor):
    """A child forked after the parent started its merge (or code-check) thread has no
    such thread: it must start its own, not queue work on the inherited executor for
    ever. The child reports through a pipe; the parent waits with a ceiling."""
    assert executor().submit(int, "7").result() == 7  # the parent's thread exists
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery, just the answer and _exit
        try:
            os.write(write, str(executor().submit(int, "42").result(timeout=60)).encode())
        finally:
            os._exit(0)
    os.close(write)
    ready: list[int] = []
    try:
        # The child answers or gives up after 60 s; the parent's own ceiling is 120 s.
        ready, _, _ = select.select([read], [], [], 120)
        got = os.read(read, 16) if ready else b"no answer within 120 s"
    finally:
        os.close(read)
        if not ready:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert got == b"42"
