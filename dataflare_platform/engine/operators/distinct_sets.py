"""An exact set of (key, value) integer pairs in numpy: an open-addressing hash table
that a batch of pairs goes into at once, answering which rows were new.

Exact ``count_distinct`` per key and window needs, for every batch, which of its
(key, value) pairs the window has not seen yet. Keeping the distinct values as lists
and merging them by union costs the whole window's state per merge; a hash table
answers per batch in time proportional to the batch. The insertion is vectorised by
rounds of linear probing: every pending pair looks at its slot, pairs found there are
old, pairs that find an empty slot claim it (the same pair several times in a batch
claims it once, as identical pairs probe identically), and the others move one slot
on. The table doubles when half full (each pair rehashed once per doubling).

Changes can be undone (``Journal``): the runner takes a savepoint before every batch
and a batch that fails must leave no trace, while copying the table per batch would
cost the state again. Claimed slots are recorded and released on undo; a doubling
replaces the arrays, so undoing it puts the old ones back.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

_MULT = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: odd, spreads the high bits
_MIX = np.uint64(0xBF58476D1CE4E5B9)
MIN_SLOTS = 1024


class Journal:
    """Undo steps since the last ``start``, run newest first by ``undo``."""

    def __init__(self) -> None:
        self._steps: list[Callable[[], None]] | None = None  # None: nothing to undo to

    def start(self) -> list[Callable[[], None]]:
        self._steps = []
        return self._steps

    def record(self, step: Callable[[], None]) -> None:
        if self._steps is not None:
            self._steps.append(step)

    @staticmethod
    def undo(steps: list[Callable[[], None]]) -> None:
        for step in reversed(steps):
            step()
        steps.clear()


class PairSet:
    """Distinct (key, value) int64 pairs; see the module docstring."""

    def __init__(self, journal: Journal, slots: int = MIN_SLOTS) -> None:
        self._journal = journal
        self._alloc(max(MIN_SLOTS, 1 << (int(slots) - 1).bit_length()))
        self.size = 0

    def _alloc(self, slots: int) -> None:
        self._keys = np.zeros(slots, np.int64)
        self._values = np.zeros(slots, np.int64)
        self._used = np.zeros(slots, bool)
        self._shift = np.uint64(64 - (slots.bit_length() - 1))

    def _hash(self, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            h = keys.view(np.uint64) * _MULT
            h ^= values.view(np.uint64) * _MIX
            h ^= h >> np.uint64(29)
            h *= _MULT
        return (h >> self._shift).astype(np.int64)

    def add(self, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Put the pairs in; True for each row whose pair was not in the set before (for
        one row only when the batch repeats a new pair)."""
        keys = np.ascontiguousarray(keys, np.int64)
        values = np.ascontiguousarray(values, np.int64)
        new = np.zeros(len(keys), bool)
        if len(keys) == 0:
            return new
        if 2 * (self.size + len(keys)) > len(self._used):
            self._grow(self.size + len(keys))
        mask = len(self._used) - 1
        slot = self._hash(keys, values)
        pending = np.arange(len(keys))
        claimed = []
        while pending.size:
            at = slot[pending]
            used = self._used[at]
            same = used & (self._keys[at] == keys[pending]) & (self._values[at] == values[pending])
            free = ~used
            if free.any():
                rows, into = pending[free], at[free]
                self._keys[into] = keys[rows]  # the last writer of a slot wins it
                self._values[into] = values[rows]
                won = (self._keys[into] == keys[rows]) & (self._values[into] == values[rows])
                # Rows that won the same slot hold the same pair: the first one is new.
                slots_won, first = np.unique(into[won], return_index=True)
                self._used[slots_won] = True
                new[rows[won][first]] = True
                claimed.append(slots_won)
                # Identical pairs that lost to their twin are found, not new.
                lost = rows[~won]
                onward = np.concatenate([pending[~same & used], lost])
            else:
                onward = pending[~same]
            slot[onward] = (slot[onward] + 1) & mask
            pending = onward
        if claimed:
            taken = np.concatenate(claimed)
            self.size += len(taken)
            used = self._used

            def release() -> None:
                used[taken] = False
                self.size -= len(taken)

            self._journal.record(release)
        return new

    def _grow(self, need: int) -> None:
        old = (self._keys, self._values, self._used, self._shift)
        keys, values = old[0][old[2]], old[1][old[2]]
        slots = len(self._used)
        while 2 * need > slots:
            slots *= 2
        self._alloc(slots)
        size, self.size = self.size, 0
        journal, self._journal = self._journal, Journal()  # the rehash itself is not undone
        try:
            self.add(keys, values)
        finally:
            self._journal = journal

        def shrink() -> None:
            self._keys, self._values, self._used, self._shift = old
            self.size = size

        self._journal.record(shrink)

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (key, value) pair held, in no particular order (copies)."""
        return self._keys[self._used], self._values[self._used]

    def __len__(self) -> int:
        return self.size
