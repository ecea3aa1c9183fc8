"""KeySlots (integer key -> slot) against a dict: a key keeps its slot, new keys take
the next slots in ascending order, the same in the direct-address table and in the
hash table (moved to for good by a negative or large key), with rollbacks to a
savepoint at any batch, as the numpy states use it."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflare_platform.engine.operators.key_slots import DENSE_SLACK, KeySlots
from dataflare_platform.engine.operators.undo import Journal

_dense = st.integers(0, 3000)  # beyond the table's first 1024 entries: it grows
_sparse = st.sampled_from([-1, -(2**40), DENSE_SLACK * 64, 2**62])
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("batch"), st.lists(_dense, max_size=30)),
        st.tuples(st.just("sparse"), st.lists(st.one_of(_dense, _sparse), min_size=1, max_size=30)),
        st.tuples(st.sampled_from(["save", "back"]), st.just([])),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(steps=_steps)
def test_slots_match_a_dict(steps):
    journal = Journal()
    index = KeySlots(journal)
    model: dict[int, int] = {}
    saved = None
    for step, keys in steps:
        if step in ("batch", "sparse"):
            array = np.array(keys, np.int64)
            slots = index.slots(array)
            for key in sorted(set(keys) - model.keys()):
                model[key] = len(model)
            assert slots.tolist() == [model[k] for k in keys]
        elif step == "save":
            saved = (index.state(), journal.start(), dict(model))
        elif step == "back" and saved is not None:
            state, undo, kept = saved
            Journal.undo(undo)
            index.restore(state)
            model, saved = kept, None
        assert index.used == len(model)
        keys_sorted, slots_sorted = index.in_key_order()
        assert keys_sorted.tolist() == sorted(model)
        assert slots_sorted.tolist() == [model[k] for k in sorted(model)]
        every = np.arange(index.used)
        assert index.keys_of(every).tolist() == sorted(model, key=model.__getitem__)


def test_sequential_ids_stay_in_the_table_and_a_negative_key_leaves_it():
    index = KeySlots(Journal())
    index.slots(
        np.arange(300_000, dtype=np.int64)[::-1]
    )  # a batch closing 300 k keys (new keys: slots in key order)
    assert index._table is not None
    assert index.slots(np.array([5, 299_999], np.int64)).tolist() == [5, 299_999]
    assert index.slots(np.array([-7], np.int64)).tolist() == [300_000]
    assert index._table is None  # hashed from now on
    assert index.slots(np.array([5, -7], np.int64)).tolist() == [5, 300_000]


def test_many_sparse_keys_in_batches_with_rollbacks_match_a_dict():
    """Enough keys to rehash several times, some sharing buckets' low and high bits,
    each batch half keys seen before; every third batch is rolled back and redone."""
    rng = np.random.default_rng(3)
    universe = np.unique(
        np.concatenate(
            [
                rng.integers(-(2**62), 2**62, 30_000),
                np.arange(1, 5_000, dtype=np.int64) << 50,  # same low bits
                np.arange(1, 5_000, dtype=np.int64),  # small ones, after the move
            ]
        )
    )
    rng.shuffle(universe)
    journal = Journal()
    index = KeySlots(journal)
    model: dict[int, int] = {}
    seen = 0
    for batch in range(40):
        fresh = universe[seen : seen + 1_000]
        old = universe[rng.integers(0, max(seen, 1), 1_000)] if seen else fresh
        keys = rng.permutation(np.concatenate([fresh, old]))
        if batch % 3 == 2:
            saved = index.state(), journal.start()
            index.slots(keys)
            Journal.undo(saved[1])
            index.restore(saved[0])
        slots = index.slots(keys)
        for key in sorted(set(keys.tolist()) - model.keys()):
            model[key] = len(model)
        assert slots.tolist() == [model[k] for k in keys.tolist()]
        seen += fresh.size
    assert index._table is None and index.used == len(model) == seen
    keys_sorted, slots_sorted = index.in_key_order()
    assert keys_sorted.tolist() == sorted(model)
    assert slots_sorted.tolist() == [model[k] for k in sorted(model)]


def test_a_rehash_uses_the_buckets_filled_ahead_and_keeps_every_slot():
    """At 3/8 full the next buckets are filled on the merge thread with the keys held;
    later batches place their new keys there too, and the rehash takes them."""
    index = KeySlots(Journal())
    keys = np.arange(1, 400, dtype=np.int64) << 45  # sparse: hashed from the start
    index.slots(keys)
    size = index._hash_slots.size
    assert 8 * index.used > 3 * size and index._ahead is not None
    assert index._ahead.upto == 399
    made = index._ahead.future.result()
    between = np.arange(400, 450, dtype=np.int64) << 45  # given after it was filled
    index.slots(between)
    assert index._ahead.upto == 449  # caught up: the new keys placed in both
    more = np.arange(450, 700, dtype=np.int64) << 45  # past half full: a rehash
    slots = index.slots(np.concatenate([more, keys, between]))
    assert index._hash_slots is made[1] and index._hash_slots.size == 2 * size
    assert slots.tolist() == [*range(449, 699), *range(399), *range(399, 449)]


def test_buckets_filled_before_a_rollback_below_them_are_not_used():
    """A rollback to fewer slots than the buckets filled ahead hold lets those slots go
    to other keys: the rehash places every key itself, and every key keeps its slot."""
    journal = Journal()
    index = KeySlots(journal)
    base = np.arange(1, 300, dtype=np.int64) << 45
    index.slots(base)
    saved = index.state(), journal.start()
    index.slots(np.arange(300, 400, dtype=np.int64) << 45)  # fills ahead with 399 keys
    assert index._ahead is not None and index._ahead.upto == 399
    index._ahead.future.result()
    Journal.undo(saved[1])
    index.restore(saved[0])
    others = -(np.arange(499, 0, -1, dtype=np.int64) << 40)  # ascending: slots 299.. now
    slots = index.slots(others)
    assert index._hash_slots is not None
    assert slots.tolist() == list(range(299, 798))
    assert index.slots(base).tolist() == list(range(299))
    assert index.slots(np.array([300 << 45], np.int64)).tolist() == [798]  # new again
    keys_sorted, _ = index.in_key_order()
    assert keys_sorted.size == 799 == index.used


def test_keys_built_to_collide_under_a_multiplicative_hash_spread_out():
    """Multiples of the inverse of Fibonacci hashing's constant all had one home bucket
    (n^2 probing); the salted mixer spreads them like any keys."""
    inverse = pow(0x9E3779B97F4A7C15, -1, 2**64)
    keys = (np.arange(1, 20_001, dtype=np.uint64) * np.uint64(inverse)).view(np.int64)
    index = KeySlots(Journal())
    slots = np.concatenate([index.slots(keys[i : i + 2_000]) for i in range(0, keys.size, 2_000)])
    homes = index._buckets(keys)
    assert np.unique(homes).size > keys.size // 2  # not one crowded bucket
    assert index.keys_of(slots).tolist() == keys.tolist()
    assert index.slots(keys).tolist() == slots.tolist()
