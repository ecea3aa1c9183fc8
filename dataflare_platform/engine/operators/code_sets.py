"""A set of int64 codes that a batch asks "which of mine are new?" and adds them, in time
that grows with the batch and the log of the set, never with the set itself.

Exact distinct counts over a long window (Nexmark q15/q16: a day of bidders and
auctions per channel and price rank) used to keep each group's distinct values as a
list and merge those lists when they doubled: each merge cost the whole day's state,
so batch latency grew with the day (q16: 1.6 s for the largest merge at 10k rows per
batch). Here the values seen are codes in sorted runs (``np.ndarray``, int64,
ascending, disjoint), newest last. A batch's sorted distinct codes are looked up in
every run with ``np.searchsorted``; those found nowhere are new and become a run of
their own. Runs merge like a binary counter (a run is merged into the one above it
while it is no larger), so a code is copied O(log(set / batch)) times over its life and
there are O(log) runs to search. A merge of more than ``background`` codes runs on the
keyed stores' merge thread (``keyed_store.merge_executor``; numpy's sort releases the
GIL) and is put in place by a later batch once done; meanwhile both inputs stay and are
searched, so no batch waits for a large merge.

Runs are never changed in place: a savepoint is the tuple of runs, and a rollback puts
it back (dropping any merge still running, whose result may include later runs).
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from dataflare_platform.engine.operators.append_store import PendingMerge, compacted, installed
from dataflare_platform.engine.operators.keyed_store import HelperThread, merge_executor

# Merges of more codes than this run on the merge thread (~1 ms of merging in numpy).
BACKGROUND_CODES = 262_144

# One thread on which batches' codes are looked up in (and added to) their code sets, in
# the order they were submitted, while the batch thread goes on (``DistinctPanes``): the
# lookups are numpy calls that release the GIL, and on q16 they were 1.5-3 ms of a 4-8 ms
# step with a quarter of the two cores idle. Not the merge thread: a lookup must not
# queue behind a large merge, which a firing window or a checkpoint would then wait for.
# At the merge thread's lower priority, as measured: at normal priority q16 came out
# slower than with the lookups on the batch thread in three of four pairs (the lookups
# took a core from Polars' workers that a batch was waiting for), niced faster in four of
# four. Not in the idle class, unlike the merge thread: the lookups are q16's own work,
# not upkeep, and there q16 lost 6-12 % as fast as possible (docs/engine.md).
check_executor = HelperThread("code-check", idle=False)


def merge_runs(older: np.ndarray, newer: np.ndarray) -> np.ndarray:
    """Two sorted disjoint runs as one sorted run (a stable sort of two runs is one
    linear merge in numpy's timsort)."""
    return np.sort(np.concatenate([older, newer]), kind="stable")


@dataclass
class CodeSet:
    """Sorted runs of int64 codes; see the module docstring."""

    background: int | None = None  # None: ``BACKGROUND_CODES``
    executor: Executor | None = None  # None: ``merge_executor()``; tests pass their own
    _runs: tuple[np.ndarray, ...] = field(default=(), init=False)
    _pending: tuple[PendingMerge, ...] = field(default=(), init=False)

    def add(self, codes: np.ndarray) -> np.ndarray:
        """Add ``codes`` (int64, sorted, distinct); a mask of those the set did not hold."""
        self._install()
        new = np.ones(codes.size, dtype=bool)
        need = codes
        where = np.arange(codes.size)
        for run in reversed(self._runs):
            if need.size == 0:
                break
            at = np.searchsorted(run, need)
            hit = run[np.minimum(at, run.size - 1)] == need
            if hit.any():
                new[where[hit]] = False
                need, where = need[~hit], where[~hit]
        if need.size:
            self._runs = (*self._runs, need.copy() if need is codes else need)
            self._compact()
        return new

    def _compact(self) -> None:
        """Merge adjacent runs while the older is no larger than the newer, the newest
        such pair first; a large merge goes to the merge thread (its inputs stay until it
        is put in place, and the runs above merge among themselves meanwhile)."""
        limit = BACKGROUND_CODES if self.background is None else self.background
        self._runs, self._pending = compacted(
            self._runs, self._pending, merge_runs, limit, self._executor
        )

    def _executor(self) -> Executor:
        return self.executor or merge_executor()

    def _install(self) -> None:
        """Put each finished background merge in place of its two (adjacent) inputs."""
        self._runs, self._pending = installed(self._runs, self._pending)

    def wait(self) -> None:
        """Finish and put in place every running merge, and the merges that then become
        due (a rollback drops running merges and leaves their inputs unmerged until the
        next new code), so that the runs are a binary counter again (tests; a
        checkpoint's reads)."""
        while True:
            for p in self._pending:
                p.future.result()
            self._install()
            self._compact()
            if not self._pending:
                return

    def codes(self) -> np.ndarray:
        """Every code, sorted."""
        if not self._runs:
            return np.empty(0, np.int64)
        if len(self._runs) == 1:
            return self._runs[0]
        return np.sort(np.concatenate(self._runs), kind="stable")  # runs: merged (``merge_runs``)

    def savepoint(self) -> object:
        return self._runs

    def rollback(self, saved: object) -> None:
        self._pending = ()
        self._runs = saved  # type: ignore[assignment]

    def __len__(self) -> int:
        return sum(r.size for r in self._runs)

    @property
    def runs(self) -> int:
        return len(self._runs)
