"""Integer key -> array slot, for the numpy states (:mod:`last_rows`, :mod:`reduce_arrays`).

A numpy state keeps one entry per key in arrays indexed by slot (slots given out in the
order keys first arrive). Mapping a batch's keys to slots is the one part whose cost
could grow with the number of keys held, so it has two forms:

- a direct-address table (``table[key] = slot``, -1 for none) while keys are small
  non-negative integers, as sequential ids (Nexmark's auction and person ids) are: one
  gather per batch, whatever the number of keys (a batch closing 300 k auctions at once
  costs a gather, not 300 k binary searches);
- a hash table once a key is negative or too large for a table of at most
  ``DENSE_FACTOR`` x the key count (plus ``DENSE_SLACK``) entries (sparse or scattered
  ids), for good: open addressing with linear probing, at most half full, probed for a
  whole batch at once (each round a few numpy steps over the keys not yet resolved; the
  rounds end after the longest probe run, and most keys resolve in the first). A batch
  costs its own size, whatever the number of keys held: the sorted map this replaced
  inserted new keys with ``np.insert``, a copy of the whole map per batch (q17 on 40-bit
  auction ids: 4 s of a 10 s run).

Savepoints: arrays replaced when they grow are saved by reference (:meth:`state`), and
entries written in place (table or hash slots) are journalled in the owner's
:class:`undo.Journal`.
"""

from __future__ import annotations

import secrets
from functools import partial

import numpy as np

from dataflare_platform.engine import arrays
from dataflare_platform.engine.operators.spare_arrays import SpareArrays
from dataflare_platform.engine.operators.undo import Journal

DENSE_FACTOR = 8  # keys below this many times the key count (plus slack): a table
DENSE_SLACK = 1 << 20  # a table of at most 8 MB however few keys
# Probe rounds end with the longest probe run, a few keys going on for many rounds;
# these last few are probed one by one in Python, cheaper than a round of numpy steps.
SCALAR_TAIL = 16
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)  # splitmix64's finalizer constants
_MIX_2 = np.uint64(0x94D049BB133111EB)


_BUCKET_KINDS = (("int64", 0), ("int64", -1))  # keys, slots (-1: empty)


class KeySlots:
    """Slots of 64-bit integer keys; ``used`` slots are given out, ``0..used-1``."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._by_slot = np.zeros(1024, np.int64)  # key of each slot (capacity grows)
        self._table: np.ndarray | None = np.full(1024, -1, np.int64)  # grows with the keys
        self._hash_keys = np.zeros(0, np.int64)  # hash mode (no table): key per bucket
        self._hash_slots = np.zeros(0, np.int64)  # slot per bucket, -1 for an empty one
        self.used = 0
        self._spare = SpareArrays()  # the next, larger buckets
        self._salt = np.uint64(secrets.randbits(64))

    # -- savepoints -------------------------------------------------------------------------
    def state(self) -> tuple:
        """References to the arrays replaced when they grow, and the count of slots:
        with the journalled table writes, what :meth:`restore` needs."""
        return self._by_slot, self._table, self._hash_keys, self._hash_slots, self.used

    def restore(self, state: tuple) -> None:
        self._by_slot, self._table, self._hash_keys, self._hash_slots, self.used = state

    # -- lookups ----------------------------------------------------------------------------
    def slots(self, keys: np.ndarray) -> np.ndarray:
        """Each key's slot, new keys getting new slots (``used`` grows: the caller grows
        its arrays to it)."""
        if keys.size == 0:
            return np.zeros(0, np.int64)
        if self._table is not None:
            high = int(keys.max())
            if int(keys.min()) >= 0 and high < DENSE_FACTOR * (self.used + keys.size) + DENSE_SLACK:
                return self._dense(keys, high)
            self._table = None
            self._rehash(self.used + keys.size)
        return self._hashed(keys)

    def keys_of(self, slots: np.ndarray) -> np.ndarray:
        """The key of each slot."""
        return self._by_slot[slots]

    def in_key_order(self) -> tuple[np.ndarray, np.ndarray]:
        """All keys ascending and the slot of each (checkpoints: one form in either mode)."""
        keys = self._by_slot[: self.used]
        order = np.argsort(keys, kind="stable")
        return keys[order], order.astype(np.int64, copy=False)

    # -- the two forms ----------------------------------------------------------------------
    def _dense(self, keys: np.ndarray, high: int) -> np.ndarray:
        table = self._table
        assert table is not None
        if high >= table.size:  # replaced, not changed: a savepoint keeps the old one
            bigger = np.full(max(high + 1, 2 * table.size), -1, np.int64)
            bigger[: table.size] = table
            self._table = table = bigger
        slot = table[keys]
        fresh = slot < 0
        if fresh.any():
            new_keys = arrays.unique_sorted(keys[fresh])
            old = table[new_keys]

            def undo() -> None:
                table[new_keys] = old

            self._journal.record(undo)
            table[new_keys] = self._give(new_keys)
            slot = table[keys]
        return slot

    def _buckets(self, keys: np.ndarray) -> np.ndarray:
        """Each key's home bucket: the top bits of splitmix64's finalizer of the key plus
        this map's random salt. A bare multiplicative hash sent keys chosen as multiples
        of its constant's inverse all to one bucket (linear probing then costs n^2: a
        stream whose ids someone picks could stall the step); the salt, drawn per map,
        keeps such keys from being worked out in advance."""
        bits = self._hash_slots.size.bit_length() - 1
        z = keys.astype(np.int64, copy=False).view(np.uint64) + self._salt
        z = (z ^ (z >> np.uint64(30))) * _MIX_1
        z = (z ^ (z >> np.uint64(27))) * _MIX_2
        z ^= z >> np.uint64(31)
        return (z >> np.uint64(64 - bits)).astype(np.int64)

    def _rehash(self, keys: int) -> None:
        """New bucket arrays for ``keys`` keys at most half full, holding every key held
        (replaced, not changed: a savepoint keeps the old ones)."""
        size = 1 << max(10, (2 * keys - 1).bit_length())
        spare = self._spare.take(size, _BUCKET_KINDS)
        if spare is None:
            self._hash_keys = np.zeros(size, np.int64)
            self._hash_slots = np.full(size, -1, np.int64)
        else:  # a power of two at least ``size``
            self._hash_keys, self._hash_slots = spare
        self._place(self._by_slot[: self.used], np.arange(self.used, dtype=np.int64), False)

    def _hashed(self, keys: np.ndarray) -> np.ndarray:
        """Find each key's slot in the buckets; new keys get new slots."""
        slot = self._find(keys)
        fresh = slot < 0
        if fresh.any():
            new_keys = arrays.unique_sorted(keys[fresh])
            if 2 * (self.used + new_keys.size) > self._hash_slots.size:
                self._rehash(self.used + new_keys.size)
            given = self._give(new_keys)
            self._place(new_keys, given, True)
            slot[fresh] = given[np.searchsorted(new_keys, keys[fresh])]
            if 8 * self.used > 3 * self._hash_slots.size:  # 3/4 of the way to a rehash
                self._spare.prepare(2 * self._hash_slots.size, _BUCKET_KINDS)
        return slot

    def _find(self, keys: np.ndarray) -> np.ndarray:
        """The slot of each key, -1 where not held: probe round by round, each round
        over the keys whose bucket so far held another key."""
        mask = self._hash_slots.size - 1
        out = np.full(keys.size, -1, np.int64)
        todo = np.arange(keys.size)
        bucket = self._buckets(keys)
        wanted = keys
        while todo.size > SCALAR_TAIL:
            slot = self._hash_slots[bucket]
            taken = slot >= 0
            hit = taken & (self._hash_keys[bucket] == wanted)
            out[todo[hit]] = slot[hit]
            go_on = taken & ~hit
            todo, wanted = todo[go_on], wanted[go_on]
            bucket = (bucket[go_on] + 1) & mask
        slots, held = self._hash_slots, self._hash_keys
        for i, key, at in zip(todo.tolist(), wanted.tolist(), bucket.tolist(), strict=True):
            while (found := int(slots[at])) >= 0:
                if held[at] == key:
                    out[i] = found
                    break
                at = (at + 1) & mask
        return out

    def _place(self, keys: np.ndarray, slots: np.ndarray, journal: bool) -> None:
        """Put distinct keys not held into empty buckets, probing round by round: every
        key whose bucket is empty writes its slot there, one write per bucket stands
        (whichever numpy keeps: slots are distinct, so reading back tells the winner),
        and the others move on. No sort: a sort per batch (or of every key at a rehash,
        30 ms for 400 k keys here) cost more than the rounds. ``journal``: the buckets
        are the live ones, written in place."""
        mask = self._hash_slots.size - 1
        bucket = self._buckets(keys)
        while keys.size > SCALAR_TAIL:
            free = self._hash_slots[bucket] < 0
            if free.any():
                tried = bucket[free]
                self._hash_slots[tried] = slots[free]
                won = np.zeros(keys.size, bool)
                won[free] = self._hash_slots[tried] == slots[free]
                claimed = bucket[won]
                if journal:
                    self._journal.record(partial(_empty, self._hash_slots, claimed))
                self._hash_keys[claimed] = keys[won]
                rest = ~won
                keys, slots, bucket = keys[rest], slots[rest], bucket[rest]
            # Every key left now sees a taken bucket (its own was, or a winner took it).
            bucket = (bucket + 1) & mask
        for key, slot, at in zip(keys.tolist(), slots.tolist(), bucket.tolist(), strict=True):
            while self._hash_slots[at] >= 0:
                at = (at + 1) & mask
            if journal:
                self._journal.record(partial(_empty, self._hash_slots, np.array([at])))
            self._hash_keys[at], self._hash_slots[at] = key, slot

    def _give(self, new_keys: np.ndarray) -> np.ndarray:
        """New slots for ``new_keys`` (distinct, not held). Slots past ``used`` are
        written in place: no savepoint sees them (a rollback restores ``used``)."""
        start, end = self.used, self.used + new_keys.size
        if end > self._by_slot.size:
            bigger = np.zeros(max(end, 2 * self._by_slot.size), np.int64)
            bigger[:start] = self._by_slot[:start]
            self._by_slot = bigger
        self._by_slot[start:end] = new_keys
        self.used = end
        return np.arange(start, end, dtype=np.int64)


def _empty(buckets: np.ndarray, at: np.ndarray) -> None:
    """An undo step: empty the buckets ``at`` again."""
    buckets[at] = -1
