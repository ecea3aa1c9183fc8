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

Growing happens off the batch thread where it can: a rehash places every key held in
new buckets (31 and 62 ms inline at q17's last two rehashes on the skewed stream, each
stalling a run of batches), so when the buckets are 3/8 full the next ones are filled
with the keys held then on the merge thread (:class:`_Ahead`), later batches place their
new keys in them too, and the rehash takes them as they are; the slot -> key array's next
size is made there too.

Savepoints: arrays replaced when they grow are saved by reference (:meth:`state`), and
entries written in place (table or hash slots) are journalled in the owner's
:class:`undo.Journal`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from dataflare_platform.engine import arrays
from dataflare_platform.engine.operators.keyed_store import merge_executor
from dataflare_platform.engine.operators.spare_arrays import SpareArrays
from dataflare_platform.engine.operators.undo import Journal

DENSE_FACTOR = 8  # keys below this many times the key count (plus slack): a table
DENSE_SLACK = 1 << 20  # a table of at most 8 MB however few keys
# Probe rounds end with the longest probe run, a few keys going on for many rounds;
# these last few are probed one by one in Python, cheaper than a round of numpy steps.
SCALAR_TAIL = 16
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)  # splitmix64's finalizer constants
_MIX_2 = np.uint64(0x94D049BB133111EB)


_SLOT_KINDS = (("int64", 0),)  # the slot -> key array


@dataclass(frozen=True)
class _Ahead:
    """A rehash made ahead on the merge thread: buckets of ``size`` holding the keys of
    slots ``0 .. upto - 1`` (the future gives the key and slot bucket arrays)."""

    future: Future
    size: int
    upto: int


class KeySlots:
    """Slots of 64-bit integer keys; ``used`` slots are given out, ``0..used-1``."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._by_slot = np.zeros(1024, np.int64)  # key of each slot (capacity grows)
        self._table: np.ndarray | None = np.full(1024, -1, np.int64)  # grows with the keys
        self._hash_keys = np.zeros(0, np.int64)  # hash mode (no table): key per bucket
        self._hash_slots = np.zeros(0, np.int64)  # slot per bucket, -1 for an empty one
        self.used = 0
        self._salt = np.uint64(secrets.randbits(64))
        self._ahead: _Ahead | None = None  # the next buckets, being filled
        self._least_used = 0  # the least ``used`` since ``_ahead`` started (rollbacks)
        self._slot_spare = SpareArrays()  # the next slot -> key array

    # -- savepoints -------------------------------------------------------------------------
    def state(self) -> tuple:
        """References to the arrays replaced when they grow, and the count of slots:
        with the journalled table writes, what :meth:`restore` needs."""
        return self._by_slot, self._table, self._hash_keys, self._hash_slots, self.used

    def restore(self, state: tuple) -> None:
        self._by_slot, self._table, self._hash_keys, self._hash_slots, self.used = state
        # Slots from here on may be given to other keys than the buckets made ahead hold.
        self._least_used = min(self._least_used, self.used)

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
        """Each key's home bucket (``_homes``) in the current buckets."""
        return _homes(keys, self._hash_slots.size, self._salt)

    def _rehash(self, keys: int) -> None:
        """New bucket arrays for ``keys`` keys at most half full, holding every key held
        (replaced, not changed: a savepoint keeps the old ones): the ones made ahead if
        they are ready, big enough and still true (no rollback went below the slots
        they hold), with the keys given since placed here; else all of them here."""
        size = 1 << max(10, (2 * keys - 1).bit_length())
        ahead, self._ahead = self._ahead, None
        start = 0
        if (
            ahead is not None
            and ahead.size >= size
            and ahead.future.done()
            and self._least_used >= ahead.upto
        ):
            self._hash_keys, self._hash_slots = ahead.future.result()
            start = ahead.upto
        else:
            self._hash_keys = np.zeros(size, np.int64)
            self._hash_slots = np.full(size, -1, np.int64)
        fresh = np.arange(start, self.used, dtype=np.int64)
        _place(self._hash_keys, self._hash_slots, self._by_slot[fresh], fresh, self._salt, None)

    def _catch_up(self) -> None:
        """Place the keys given since the buckets made ahead were filled into them too,
        once they are ready (and still true), so the rehash has few left to place."""
        ahead = self._ahead
        if ahead is None or not ahead.future.done() or self._least_used < ahead.upto:
            return
        if ahead.upto < self.used:
            keys, slots = ahead.future.result()
            fresh = np.arange(ahead.upto, self.used, dtype=np.int64)
            _place(keys, slots, self._by_slot[fresh], fresh, self._salt, None)
            self._ahead = replace(ahead, upto=self.used)
            self._least_used = self.used

    def _fill_ahead(self) -> None:
        """Start filling the next buckets (twice the size) with the keys held now, on
        the merge thread, unless that is under way (and still true). The keys are read
        there from the slot -> key array as it is: slots below ``used`` are only
        rewritten after a rollback below them, which ``_least_used`` tells ``_rehash``
        (the result is then not used)."""
        size = 2 * self._hash_slots.size
        ahead = self._ahead
        if ahead is not None and ahead.size >= size and self._least_used >= ahead.upto:
            return
        held = self._by_slot[: self.used]
        future = merge_executor().submit(_filled_buckets, held, size, self._salt)
        self._ahead = _Ahead(future, size, self.used)
        self._least_used = self.used

    def _hashed(self, keys: np.ndarray) -> np.ndarray:
        """Find each key's slot in the buckets; new keys get new slots."""
        slot = self._find(keys)
        fresh = slot < 0
        if fresh.any():
            new_keys = arrays.unique_sorted(keys[fresh])
            if 2 * (self.used + new_keys.size) > self._hash_slots.size:
                self._rehash(self.used + new_keys.size)
            given = self._give(new_keys)
            record = self._journal.record
            _place(self._hash_keys, self._hash_slots, new_keys, given, self._salt, record)
            slot[fresh] = given[np.searchsorted(new_keys, keys[fresh])]
            if 8 * self.used > 3 * self._hash_slots.size:  # 3/4 of the way to a rehash
                self._fill_ahead()
                self._catch_up()
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

    def _give(self, new_keys: np.ndarray) -> np.ndarray:
        """New slots for ``new_keys`` (distinct, not held). Slots past ``used`` are
        written in place: no savepoint sees them (a rollback restores ``used``)."""
        start, end = self.used, self.used + new_keys.size
        if end > self._by_slot.size:
            size = max(end, 2 * self._by_slot.size)
            spare = self._slot_spare.take(size, _SLOT_KINDS)
            bigger = np.zeros(size, np.int64) if spare is None else spare[0]
            bigger[:start] = self._by_slot[:start]
            self._by_slot = bigger
        elif 4 * end > 3 * self._by_slot.size and self._by_slot.size >= 1 << 16:
            self._slot_spare.prepare(2 * self._by_slot.size, _SLOT_KINDS)
        self._by_slot[start:end] = new_keys
        self.used = end
        return np.arange(start, end, dtype=np.int64)


def _homes(keys: np.ndarray, size: int, salt: np.uint64) -> np.ndarray:
    """Each key's home bucket of ``size`` (a power of two): the top bits of
    splitmix64's finalizer of the key plus the map's random salt. A bare multiplicative
    hash sent keys chosen as multiples of its constant's inverse all to one bucket
    (linear probing then costs n^2: a stream whose ids someone picks could stall the
    step); the salt, drawn per map, keeps such keys from being worked out in advance."""
    bits = size.bit_length() - 1
    z = keys.astype(np.int64, copy=False).view(np.uint64) + salt
    z = (z ^ (z >> np.uint64(30))) * _MIX_1
    z = (z ^ (z >> np.uint64(27))) * _MIX_2
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(64 - bits)).astype(np.int64)


def _place(
    hash_keys: np.ndarray,
    hash_slots: np.ndarray,
    keys: np.ndarray,
    slots: np.ndarray,
    salt: np.uint64,
    record: Callable | None,
) -> None:
    """Put distinct keys not held into empty buckets, probing round by round: every
    key whose bucket is empty writes its slot there, one write per bucket stands
    (whichever numpy keeps: slots are distinct, so reading back tells the winner), and
    the others move on. No sort: a sort per batch (or of every key at a rehash, 30 ms
    for 400 k keys here) cost more than the rounds. ``record``: the journal's, when the
    buckets are the live ones, written in place."""
    mask = hash_slots.size - 1
    bucket = _homes(keys, hash_slots.size, salt)
    while keys.size > SCALAR_TAIL:
        free = hash_slots[bucket] < 0
        if free.any():
            tried = bucket[free]
            hash_slots[tried] = slots[free]
            won = np.zeros(keys.size, bool)
            won[free] = hash_slots[tried] == slots[free]
            claimed = bucket[won]
            if record is not None:
                record(partial(_empty, hash_slots, claimed))
            hash_keys[claimed] = keys[won]
            rest = ~won
            keys, slots, bucket = keys[rest], slots[rest], bucket[rest]
        # Every key left now sees a taken bucket (its own was, or a winner took it).
        bucket = (bucket + 1) & mask
    for key, slot, at in zip(keys.tolist(), slots.tolist(), bucket.tolist(), strict=True):
        while hash_slots[at] >= 0:
            at = (at + 1) & mask
        if record is not None:
            record(partial(_empty, hash_slots, np.array([at])))
        hash_keys[at], hash_slots[at] = key, slot


def _filled_buckets(held: np.ndarray, size: int, salt: np.uint64) -> tuple[np.ndarray, np.ndarray]:
    """Buckets of ``size`` holding ``held`` (the keys of slots 0, 1, ...): on the merge
    thread, which also faults their pages in."""
    hash_keys = np.zeros(size, np.int64)
    hash_slots = np.full(size, -1, np.int64)
    _place(hash_keys, hash_slots, held, np.arange(held.size, dtype=np.int64), salt, None)
    return hash_keys, hash_slots


def _empty(buckets: np.ndarray, at: np.ndarray) -> None:
    """An undo step: empty the buckets ``at`` again."""
    buckets[at] = -1
