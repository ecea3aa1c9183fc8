"""Integer key -> array slot, for the numpy states (:mod:`last_rows`, :mod:`reduce_arrays`).

A numpy state keeps one entry per key in arrays indexed by slot (slots given out in the
order keys first arrive). Mapping a batch's keys to slots is the one part whose cost
could grow with the number of keys held, so it has two forms:

- a direct-address table (``table[key] = slot``, -1 for none) while keys are small
  non-negative integers, as sequential ids (Nexmark's auction and person ids) are: one
  gather per batch, whatever the number of keys (a batch closing 300 k auctions at once
  costs a gather, not 300 k binary searches);
- sorted keys and ``np.searchsorted`` once a key is negative or too large for a table of
  at most ``DENSE_FACTOR`` x the key count (plus ``DENSE_SLACK``) entries; the map stays
  sorted from then on.

Savepoints: arrays replaced when they grow are saved by reference (:meth:`state`), and
table entries written in place are journalled in the owner's :class:`undo.Journal`.
"""

from __future__ import annotations

import numpy as np

from dataflare_platform.engine import arrays
from dataflare_platform.engine.operators.undo import Journal

DENSE_FACTOR = 8  # keys below this many times the key count (plus slack): a table
DENSE_SLACK = 1 << 20  # a table of at most 8 MB however few keys


class KeySlots:
    """Slots of 64-bit integer keys; ``used`` slots are given out, ``0..used-1``."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._by_slot = np.zeros(1024, np.int64)  # key of each slot (capacity grows)
        self._table: np.ndarray | None = np.full(1024, -1, np.int64)  # grows with the keys
        self._sorted = np.zeros(0, np.int64)  # sorted keys (no table)
        self._sorted_slots = np.zeros(0, np.int64)  # slot of each sorted key (no table)
        self.used = 0

    # -- savepoints -------------------------------------------------------------------------
    def state(self) -> tuple:
        """References to the arrays replaced when they grow, and the count of slots:
        with the journalled table writes, what :meth:`restore` needs."""
        return self._by_slot, self._table, self._sorted, self._sorted_slots, self.used

    def restore(self, state: tuple) -> None:
        self._by_slot, self._table, self._sorted, self._sorted_slots, self.used = state

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
            self._to_sorted()
        return self._search(keys)

    def keys_of(self, slots: np.ndarray) -> np.ndarray:
        """The key of each slot."""
        return self._by_slot[slots]

    def in_key_order(self) -> tuple[np.ndarray, np.ndarray]:
        """All keys ascending and the slot of each (checkpoints: one form in either mode)."""
        if self._table is None:
            return self._sorted, self._sorted_slots
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

    def _to_sorted(self) -> None:
        """Leave the table for sorted keys (a key too large or negative), for good."""
        keys = self._by_slot[: self.used]
        order = np.argsort(keys, kind="stable")
        self._sorted, self._sorted_slots = keys[order], order.astype(np.int64)
        self._table = None

    def _search(self, keys: np.ndarray) -> np.ndarray:
        """Binary search in the sorted keys (new keys merged in: O(keys) per batch with
        new keys)."""
        at = np.searchsorted(self._sorted, keys)
        found = np.zeros(keys.size, bool)
        inside = at < self._sorted.size
        found[inside] = self._sorted[at[inside]] == keys[inside]
        if not found.all():
            fresh = arrays.unique_sorted(keys[~found])
            where = np.searchsorted(self._sorted, fresh)
            slots = self._give(fresh)
            self._sorted = np.insert(self._sorted, where, fresh)
            self._sorted_slots = np.insert(self._sorted_slots, where, slots)
            at = np.searchsorted(self._sorted, keys)
        return self._sorted_slots[at]

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
