"""Per-key state of the keyed operators whose state outlives windows (dedup, reduce, last
rows, top-N): take the rows of the keys a batch touches, put back their new rows, in time
that grows with the batch rather than with the state.

Keeping the state as one frame costs O(state) per batch: finding the touched keys' rows
is a join over all of it, and the new state is the untouched rest copied beside the new
rows. Nexmark q18 (latest bid per bidder and auction) ran at 78 k events/s on 10 M
events that way, with a state of millions of keys.

Here the rows live in segments, each sorted by a 64-bit hash of the key (the hashes kept
beside as a numpy array). Taking a batch's keys is a binary search of their hashes in
every segment (``np.searchsorted``, behind a one-hash filter per segment that most absent
keys fail) and a gather of the rows found; rows of another key
that share a hash are dropped by comparing the keys themselves. Putting rows back
appends a new segment; the rows they replace are only marked dead (positions recorded
per segment), so no segment is rewritten per batch. A key lives in the newest segment
holding it; older copies are dead. Segments merge like a binary counter (the newest two
while the older holds no more live rows than the newer), dropping dead and expired rows,
so a row is copied O(log(state / batch)) times over its life and there are O(log)
segments to search. With a ``fan_in`` k above two, k segments of like sizes merge at
once: log_k copies of each row and up to (k - 1) segments per tier (the top-N's rows carry
strings, and copying them cost more than searching more segments). A segment whose rows
are mostly dead is rewritten alone.

Expiry (a TTL, a dedup horizon) is a floor on one integer column: rows below it are
treated as absent at once (``take`` filters them) and dropped from memory when their
segment is merged, checked or found wholly expired. A key's rows share that column's
value and it only grows, so an expired newest copy means every older copy is expired too.

Segments are immutable: a savepoint is the tuple of segments, and a rollback puts it back.
Polars' hash is stable within one Polars version only, so hashes are never checkpointed:
``frame`` gives the live rows and ``load`` hashes them again.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from dataflare_platform.engine import arrays
from dataflare_platform.engine.checkpoint import state_table
from dataflare_platform.engine.operators.frames import keep_columns, without
from dataflare_platform.engine.operators.physical import int64_values
from dataflare_platform.errors import InvalidInputError
from dataflare_platform.forks import reset_in_forked_child

GEN = "__store_gen"
POS = "__store_pos"
HASH_SEED = 0x5EED
# Merges of more rows than this run on a thread while batches go on (``_compact``); while
# a merge thread has nothing queued, merges of more than QUIET_BACKGROUND_ROWS do
# (``KeyedStore._helper_for``). q19's
# tier merges (8 x 5 k rows) took 7-11 ms on the batch thread: q19 with a 60 s TTL at
# 1 M events/s, three pairs per stream, p99 16-21 -> 13-14 ms (skewed) and 16-47 -> 13-14
# ms (reference), q18 TTL and q4 as good or better, RSS the same; as fast as possible
# (the thread lagging) q18 keeps its throughput, which a fixed 16 k cost (-15 %).
BACKGROUND_ROWS = 65_536
QUIET_BACKGROUND_ROWS = 16_384
# Rows dropped from a segment whose strings may stay in its buffers, as a share of its
# live rows, before a merge copies the strings out (``merge_many``): the strings held stay
# within 1 + GARBAGE_SHARE times the live ones.
GARBAGE_SHARE = 0.25
NULL_AGE = np.iinfo(np.int64).min  # the stored age of a row whose age column is null
FILTER_MIN_SLOTS = 1 << 16  # the store filter's least size (``StoreFilter``)
AGE_SAMPLE = 4096  # ages sorted per segment for expiry's count (``AgeIndex``)
MERGE_NICENESS = 10  # the helper threads' scheduling priority below the batch thread's
CAP_SYS_NICE = 23  # its bit in /proc/self/status' CapEff
LIFT_BACKLOG = 2  # jobs queued on an idle-class helper thread past which it is lifted


class HelperThread:
    """One worker thread, started on first use at a lower priority (``lower_priority``),
    for work that runs beside the batches. A forked child has none of its parent's
    threads (an inherited executor would take jobs and never run them): it starts its
    own on first use (``dataflare_platform.forks``).

    Where the thread may be lifted back (``_may_leave_idle``) it runs in the idle class
    (``SCHED_IDLE``): it gets a core only when no batch work wants one, and a waking batch
    thread or Polars worker takes the core from it at once, which nice +10 alone did not
    do (q18 with a 60 s TTL on the skewed stream at 1 M events/s, three pairs: p99
    15.6 / 15.6 / 18.3 -> 10.3 / 12.5 / 14.1 ms; the same as fast as possible).
    A caller that waits for its result (a future's ``result()`` before it is done) lifts it
    to the normal class for the wait (``lifted``): the batch thread waiting for a thread
    that only gets leftover time would be priority inversion (q16 as fast as possible
    lost 10 % so). So is a thread with more than ``LIFT_BACKLOG`` jobs queued, until they
    drain (``_count``)."""

    def __init__(self, name: str, idle: bool = True) -> None:
        self.name = name
        self.idle = idle
        self._executor: Executor | None = None
        self._lock = threading.Lock()
        self._tid: int | None = None
        self._in_idle_class = False  # set once the thread is there (it may leave it)
        self._waiters = 0  # callers waiting for a result
        self._queued = 0  # jobs submitted and not finished
        self._lifted = False
        reset_in_forked_child(self)

    def __call__(self) -> Executor:
        with self._lock:
            if self._executor is None:
                inner = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix=self.name, initializer=self._started
                )
                self._executor = _LiftingExecutor(self, inner)
            return self._executor

    def _started(self) -> None:
        self._tid = threading.get_native_id()
        lower_priority()
        if self.idle and _may_leave_idle(self._tid):
            self._in_idle_class = _set_policy(self._tid, idle=True)

    @contextmanager
    def lifted(self) -> Iterator[None]:
        """The thread in the normal class (still niced) while the caller waits for it."""
        self._count(waiters=1)
        try:
            yield
        finally:
            self._count(waiters=-1)

    def _count(self, waiters: int = 0, queued: int = 0) -> None:
        """Track who waits and what is queued; the thread is lifted while a caller waits
        or more than ``LIFT_BACKLOG`` jobs are queued. A thread left to idle time with
        work piling up holds every queued merge's inputs, which cannot expire meanwhile
        (with merges of 32 k rows sent to the thread, q19 with a TTL peaked at 1.0 GB of
        RSS without this, 0.57-0.90 GB with it, 0.50 GB in the normal class)."""
        with self._lock:
            self._waiters += waiters
            self._queued += queued
            want = self._waiters > 0 or self._queued > LIFT_BACKLOG
            if self._in_idle_class and self._tid is not None and want != self._lifted:
                self._lifted = want
                _set_policy(self._tid, idle=not want)

    @property
    def queued(self) -> int:
        """Jobs submitted and not finished (the one running included)."""
        return self._queued

    def _after_fork(self) -> None:
        self._executor, self._lock = None, threading.Lock()
        self._tid, self._in_idle_class, self._waiters, self._queued = None, False, 0, 0
        self._lifted = False


class _LiftingFuture(Future):
    """A helper thread's future: waiting for it (its result or its exception) lifts the
    thread (``lifted``)."""

    def __init__(self, helper: HelperThread) -> None:
        super().__init__()
        self._helper = helper

    def result(self, timeout: float | None = None):
        if self.done():
            return super().result(timeout)
        with self._helper.lifted():
            return super().result(timeout)

    def exception(self, timeout: float | None = None):
        if self.done():
            return super().exception(timeout)
        with self._helper.lifted():
            return super().exception(timeout)


class _LiftingExecutor(Executor):
    """The helper's one-thread pool, handing out ``_LiftingFuture`` s."""

    def __init__(self, helper: HelperThread, inner: ThreadPoolExecutor) -> None:
        self._helper = helper
        self._inner = inner

    def submit(self, fn, /, *args, **kwargs) -> Future:
        helper = self._helper
        outer = _LiftingFuture(helper)

        def run() -> None:
            try:
                if not outer.set_running_or_notify_cancel():
                    return
                try:
                    outer.set_result(fn(*args, **kwargs))
                except BaseException as exc:  # as ThreadPoolExecutor's own work items
                    outer.set_exception(exc)
            finally:
                helper._count(queued=-1)

        helper._count(queued=1)
        self._inner.submit(run)
        return outer

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._inner.shutdown(wait, cancel_futures=cancel_futures)


def lower_priority() -> None:
    """Lower the calling thread's priority: on Linux ``setpriority`` takes a thread id and
    sets that thread's nice value alone. Elsewhere (where it would set the whole
    process's) and where it is refused, the thread keeps its priority."""
    if sys.platform != "linux":
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + MERGE_NICENESS)
    except OSError:
        pass


def _may_leave_idle(tid: int) -> bool:
    """Whether thread ``tid`` could go back from the idle class to the normal one: with
    CAP_SYS_NICE, or where RLIMIT_NICE allows its nice value (sched(7)). Without that, it
    never enters the idle class: a batch could not lift a thread it waits for."""
    if sys.platform != "linux":
        return False
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
        if soft == resource.RLIM_INFINITY or 20 - os.getpriority(os.PRIO_PROCESS, tid) <= soft:
            return True
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_NICE & 1)
    except (OSError, ValueError):
        pass
    return False


def _set_policy(tid: int, idle: bool) -> bool:
    """Put thread ``tid`` in the idle class or back in the normal one; False if refused."""
    policy = os.SCHED_IDLE if idle else os.SCHED_OTHER
    try:
        os.sched_setscheduler(tid, policy, os.sched_param(0))
    except OSError:
        return False
    return True


# One thread for every store's large merges: they are mostly numpy and Polars work that
# releases the GIL, so batches go on beside them. It runs at the lower priority where the
# system allows it: on two cores a merge that shared a core with the batch thread or one
# of Polars' workers took half of it for its whole length, and a batch waits for the
# slowest part of a parallel query. A merge still has every idle moment, and the batch
# thread is idle whenever it waits for one (firing or checkpointing a pane). In the idle
# class where it may leave it again (``HelperThread``).
merge_executor = HelperThread("keyed-merge")
# A second one for merges of up to BACKGROUND_ROWS, so that they do not wait behind (or
# fall back to the batch thread during) a large merge on the first: see ``_helper_for``.
small_merge_executor = HelperThread("keyed-merge-small")


class AgeIndex:
    """A segment's ages summarised for expiry, each part computed once per segment (not
    once per watermark advance): the least and greatest age, and for a segment the floor
    cuts through, a sorted sample of the ages (every age up to ``AGE_SAMPLE`` rows), so
    counting the expired rows is a binary search. Beyond that size the count is an
    estimate (about 1 % off at most rows), which is all expiry needs: it only decides
    whether a segment is worth rewriting. Sorting every age cost 17 % of the merge
    thread's time under q18 (0.58 of 3.42 s over 600 batches of the skewed stream).
    Segments that differ only in dead rows share one (``dataclasses.replace``). Plain
    attributes, not ``cached_property``: that one holds a lock shared by every instance
    while it computes, so a batch would wait for a sort on the merge thread."""

    def __init__(self, ages: np.ndarray) -> None:
        self.ages = ages
        self._low: int | None = None
        self._high: int | None = None
        self._ordered: np.ndarray | None = None

    @property
    def low(self) -> int:
        if self._low is None:
            self._low = int(self.ages.min())
        return self._low

    @property
    def high(self) -> int:
        if self._high is None:
            self._high = int(self.ages.max())
        return self._high

    @property
    def ordered(self) -> np.ndarray:
        """The sorted sample: rows are in key-hash order, so evenly spaced ones are a
        sample unrelated to age."""
        if self._ordered is None:
            ages = self.ages
            if ages.size > AGE_SAMPLE:
                ages = ages[:: -(-ages.size // AGE_SAMPLE)]
            self._ordered = np.sort(ages)
        return self._ordered

    def below(self, floor: int) -> int:
        """How many ages are below ``floor`` (exact up to ``AGE_SAMPLE`` rows, else
        estimated from the sample; exact at either end)."""
        if floor <= self.low:
            return 0
        if floor > self.high:
            return int(self.ages.size)
        sample = self.ordered
        found = int(np.searchsorted(sample, floor, "left"))
        if sample.size == self.ages.size:
            return found
        return min(int(self.ages.size) - 1, max(1, round(found * self.ages.size / sample.size)))


def _integer_keys(
    frame: pl.DataFrame, keys: list[str], like: list[np.ndarray] | None
) -> list[np.ndarray] | None:
    """The key columns as numpy arrays without a copy, when each is an integer column of
    one chunk without nulls (and of the dtypes of ``like``, when given); else None."""
    out = []
    for i, name in enumerate(keys):
        column = frame.get_column(name)
        if not column.dtype.is_integer() or column.n_chunks() != 1 or column.null_count():
            return None
        values = column.to_numpy()
        if like is not None and values.dtype != like[i].dtype:
            return None
        out.append(values)
    return out


class HashFilter:
    """A one-hash Bloom filter of a segment's key hashes (a flag byte per low-bits value,
    about eight per row, so about one in eight absent hashes passes): a batch's keys are
    mostly absent from most segments, and a binary search costs each key several times
    what the test does. Bytes, not bits: two numpy steps per test, not eight. Built on
    first use (a merge on the merge thread builds it there), shared like ``AgeIndex``."""

    def __init__(self, hashes: np.ndarray) -> None:
        self.hashes = hashes
        self._flags: np.ndarray | None = None
        self._mask = 0

    @property
    def flags(self) -> np.ndarray:
        if self._flags is None:
            slots = max(64, 1 << int(self.hashes.size * 8 - 1).bit_length())
            flags = np.zeros(slots, dtype=bool)
            flags[self.hashes & (slots - 1)] = True
            self._mask = slots - 1
            self._flags = flags
        return self._flags

    def may_hold(self, wanted: np.ndarray) -> np.ndarray:
        """Per hash of ``wanted``: False if no row has it (True: perhaps)."""
        flags = self.flags
        return flags[wanted & self._mask]


class StoreFilter:
    """``HashFilter`` for the whole store: flags of every key hash put since it was
    built, set in place as rows are put. Most of a batch's keys can be new to the store
    (q18 on the skewed stream: about 85 % of a batch's (bidder, auction) pairs), and
    each new key was tested against every segment's filter and searched in about one in
    eight segments; now one test turns most of them away. Rows replaced, merged away or
    expired keep their flags, so it only ever says "perhaps" wrongly; once more hashes
    were added than it was sized for (a quarter of its flags), the store puts a new one
    in its place, built from its segments (a new object: a savepoint keeps the one it
    had, which still covers every row a rollback restores, as flags are only ever added
    to it). ``expect``: rows to size it for beyond those of ``hashes``."""

    def __init__(self, hashes: list[np.ndarray], expect: int = 0) -> None:
        rows = max(expect, sum(h.size for h in hashes))
        slots = max(FILTER_MIN_SLOTS, 1 << int(rows * 8 - 1).bit_length())
        self.flags = np.zeros(slots, dtype=bool)
        self.mask = slots - 1
        self.room = slots // 4
        self.added = 0
        for h in hashes:
            self.add(h)

    def add(self, hashes: np.ndarray) -> None:
        self.flags[hashes & self.mask] = True
        self.added += int(hashes.size)

    @property
    def full(self) -> bool:
        return self.added > self.room

    @property
    def filling(self) -> bool:
        """Three quarters of the way to ``full``: time to build the next one."""
        return self.added * 4 > self.room * 3

    def may_hold(self, wanted: np.ndarray) -> np.ndarray:
        """Per hash of ``wanted``: False if no row put since it was built has it."""
        return self.flags[wanted & self.mask]


@dataclass(frozen=True)
class Segment:
    """Rows sorted by key hash. ``dead`` lists positions of rows replaced by newer
    segments (each row at most once, so ``dead_rows`` counts them exactly).
    ``garbage_rows`` counts rows dropped from the segment whose strings its columns'
    buffers still hold (views into a shared buffer keep all of it; see ``merge_many``).
    ``borrowed``: its strings are views into buffers of unknown size it does not own (a
    batch's rows point into the source's whole file piece), so its first merge copies
    them out."""

    gen: int
    frame: pl.DataFrame
    hashes: np.ndarray  # int64, ascending, aligned with ``frame``
    ages: np.ndarray | None  # the expiry column as int64, aligned with ``frame``
    dead: tuple[np.ndarray, ...] = ()
    dead_rows: int = 0
    garbage_rows: int = 0
    borrowed: bool = False
    age_index: AgeIndex | None = field(default=None, compare=False, repr=False)
    hash_filter: HashFilter | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.age_index is None and self.ages is not None and self.ages.size:
            object.__setattr__(self, "age_index", AgeIndex(self.ages))
        if self.hash_filter is None:
            object.__setattr__(self, "hash_filter", HashFilter(self.hashes))

    @property
    def live_rows(self) -> int:
        return self.frame.height - self.dead_rows

    def find(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Which of the sorted hashes ``wanted`` the segment holds, and the positions of
        their rows (None: none held). A key is in few segments, so the end of each run
        of equal hashes is looked up for the hits only."""
        hashes = self.hashes
        assert self.hash_filter is not None
        maybe = self.hash_filter.may_hold(wanted)
        if not maybe.any():
            return maybe, None
        candidates = wanted[maybe]
        lo = np.searchsorted(hashes, candidates, "left")
        found = hashes[np.minimum(lo, hashes.size - 1)] == candidates
        if not found.any():
            return np.zeros(wanted.size, dtype=bool), None
        hit = np.zeros(wanted.size, dtype=bool)
        hit[np.flatnonzero(maybe)[found]] = True
        lo = lo[found]
        after = np.minimum(lo + 1, hashes.size - 1)
        if not ((hashes[after] == candidates[found]) & (lo + 1 < hashes.size)).any():
            return hit, lo  # one row per hash, as for unique keys: no ranges to build
        counts = np.searchsorted(hashes, candidates[found], "right") - lo
        return hit, arrays.ranges(lo, counts)

    @property
    def max_age(self) -> int | None:
        """The newest age in the segment (None without ages): below the floor, all of
        it has expired."""
        return None if self.age_index is None else self.age_index.high

    def keep_mask(self, floor: int | None) -> np.ndarray | None:
        """Rows neither dead nor below ``floor`` (None: keep every row)."""
        keep = None
        if self.dead_rows:
            keep = np.ones(self.frame.height, dtype=bool)
            keep[np.concatenate(self.dead)] = False
        ages, index = self.ages, self.age_index
        if floor is not None and ages is not None and index is not None and index.low < floor:
            alive = ages >= floor
            keep = alive if keep is None else keep & alive
        return keep

    def live(self, floor: int | None) -> Segment:
        """This segment without its dead and expired rows."""
        keep = self.keep_mask(floor)
        if keep is None:
            return self if not self.dead else replace(self, dead=(), dead_rows=0)
        kept = int(np.count_nonzero(keep))
        return Segment(
            self.gen,
            self.frame.filter(pl.Series(keep)),  # views: the strings' buffers stay
            self.hashes[keep],
            None if self.ages is None else self.ages[keep],
            garbage_rows=self.garbage_rows + self.frame.height - kept,
            borrowed=self.borrowed,
        )


def _serial_gather(
    frame: pl.DataFrame, positions: np.ndarray, rechunk: bool = False
) -> pl.DataFrame:
    """``frame[positions]`` one column at a time on the calling thread (``rechunk``: each
    column made one chunk first). A frame's gather runs its columns on Polars' thread
    pool, which a batch's own Polars steps share: a merge of a few hundred thousand rows
    there held a batch's steps back (q18: batches of 4 ms at the median took 20-36 ms
    while a merge ran, none of it in the store)."""
    index = pl.Series(positions)
    columns = frame.iter_columns()
    return pl.DataFrame([(c.rechunk() if rechunk else c).gather(index) for c in columns])


def _two_chunks(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` as two chunks if it is one (no copy), so that a gather from it copies
    the strings. A Polars gather from ONE chunk copies only string views, which keep
    every buffer they point into alive (Polars 2.1: so do ``shrink_to_fit``, casts and
    ``str.slice``); from several chunks it copies the strings out."""
    if frame.n_chunks() != 1 or frame.height < 2:
        return frame
    half = frame.height // 2
    return pl.concat([frame[:half], frame[half:]], how="vertical", rechunk=False)


def _gather_picks(picks: list[tuple[pl.DataFrame, np.ndarray]]) -> pl.DataFrame:
    """The rows at ``positions`` of each frame (a segment's), in the order given, as one
    chunk: one gather from the frames side by side (a concat of chunks, no copy), not
    one per segment. Each gather has a fixed cost (a round on Polars' thread pool, which
    waits for a core on a busy machine) that a batch touching a dozen segments paid a
    dozen times: on synthetic segments like q18's on the skewed stream (2,200 rows from
    12 segments) 0.9-1.5 ms one per segment against 0.43 ms at once; in the q18 driver,
    warm, both came to about 1.0 ms, so the gain shows only where the pool is busy.
    Positions ascend within each segment (``find`` gives them in hash order), so the
    strings are copied in order, the fast way. Copied also from one segment
    (``_two_chunks``): views would pin its whole string buffers (after a sharing merge,
    those of every segment merged into it) for as long as the rows live, and a ``take``
    puts its rows back as a segment that keeps them until its first merge. With merges
    of 16 k rows sent to the merge thread, q19 with a 60 s TTL on the skewed stream
    peaked at 0.72-1.44 GB of RSS so, 0.50 GB with the rows copied."""
    frames = [frame for frame, _ in picks]
    offsets = np.cumsum([0, *(f.height for f in frames[:-1])])
    side_by_side = _two_chunks(pl.concat(frames, how="vertical_relaxed", rechunk=False))
    return side_by_side[
        np.concatenate([positions + o for (_, positions), o in zip(picks, offsets, strict=True)])
    ]


class Taken:
    """Rows a ``take_hashed`` found and the store forgot, not gathered yet: the positions
    of each frame's rows (``picks``: a segment's frame, or the frame a collision's
    fallback built), in the order of ``hashes`` (each row's key hash).

    A caller that keeps only some of them reads the columns it decides on as numbers
    (``numbers``) and gathers the rows it keeps (``rows``). The top-N gathered every
    taken row, strings and all, from a dozen segments and copied them again beside the
    batch; for q18's latest bid per key the batch's row replaces the held one for
    nearly every key. The frames are immutable (a merge installed meanwhile makes new
    ones), so the positions stay valid for as long as this is held."""

    def __init__(self, picks: list[tuple[pl.DataFrame, np.ndarray]], hashes: np.ndarray) -> None:
        self.picks = picks
        self.hashes = hashes
        self._sizes = np.cumsum([0, *(positions.size for _, positions in picks)])

    @property
    def height(self) -> int:
        return int(self.hashes.size)

    def numbers(self, name: str, dtype: pl.DataType) -> np.ndarray | None:
        """Column ``name`` of the taken rows as int64 (``physical.int64_values``: read in
        numpy from each frame without copying the frame's column); None unless every
        frame holds it as ``dtype``, an integer or temporal type, without nulls (and an
        unsigned 64-bit value fits int64)."""
        parts = []
        for frame, positions in self.picks:
            column = frame.get_column(name)
            values = int64_values(column, positions) if column.dtype == dtype else None
            if values is None:
                return None
            parts.append(values)
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def frame(self) -> pl.DataFrame:
        """Every taken row, gathered."""
        return _gather_picks(self.picks)

    def rows(self, taken: np.ndarray) -> pl.DataFrame:
        """The taken rows at ``taken`` (ascending positions in ``hashes``' order)."""
        if taken.size == self.height:
            return self.frame()
        which = np.searchsorted(self._sizes, taken, "right") - 1
        picks = []
        for i, (frame, positions) in enumerate(self.picks):
            mine = taken[which == i]
            if mine.size:
                picks.append((frame, positions[mine - self._sizes[i]]))
        return _gather_picks(picks)


def merge(
    older: Segment, newer: Segment, floor: int | None, index_ages: bool = False
) -> tuple[Segment, np.ndarray, np.ndarray]:
    """The live rows of two adjacent segments as one (generation of the newer), and where
    each row of ``older`` and of ``newer`` went in it (-1: dropped, dead or expired)."""
    merged, (moved_a, moved_b) = merge_many((older, newer), floor, index_ages)
    return merged, moved_a, moved_b


def merge_many(
    segments: tuple[Segment, ...], floor: int | None, index_ages: bool = False
) -> tuple[Segment, list[np.ndarray]]:
    """The live rows of adjacent segments (oldest first) as one (generation of the
    newest), and where each row of each went in it (-1: dropped, dead or expired).
    ``index_ages``: a merge on the merge thread, which sorts the merged ages now
    (``AgeIndex``) and builds the hash filter, so that no batch does it for a large
    segment, and gathers the rows column by column (``_serial_gather``)."""
    heights = [s.frame.height for s in segments]
    offsets = np.cumsum([0, *heights])
    rows = []
    for segment, height in zip(segments, heights, strict=True):
        keep = segment.keep_mask(floor)
        rows.append(np.arange(height) if keep is None else np.flatnonzero(keep))
    hashes = np.concatenate([s.hashes[r] for s, r in zip(segments, rows, strict=True)])
    live = np.concatenate([r + o for r, o in zip(rows, offsets[:-1], strict=True)])
    order: np.ndarray | None = None  # in hash order already (a rewrite of one segment)
    if len(segments) > 1 and (hashes[1:] < hashes[:-1]).any():
        order = np.argsort(hashes, kind="stable")  # sorted runs: a linear merge
        hashes = hashes[order]
    taken = live if order is None else live[order]
    # A Polars gather from one chunk copies only string views, keeping every buffer they
    # point into (dead and expired rows' strings too, merge after merge); from several
    # chunks it copies the strings, fast in ascending order and slower in any other.
    # Copying the strings is most of a merge (q18's rows, 465 k of them from 8 segments:
    # 50 of 60 ms in the string columns), and only worth it to free the strings of rows
    # gone. So while the rows dropped and not yet copied away are few (``GARBAGE_SHARE``
    # of the live ones), the merge is views only: every column one chunk (the strings'
    # buffers shared, not copied), gathered into hash order. Past that share, or with
    # an input whose buffers are not its own (``Segment.borrowed``), it compacts:
    # the live rows in place (strings copied out of the inputs' buffers), then into hash
    # order from that one chunk (views into it); in hash order already, the second gather
    # would copy every row again for nothing.
    garbage = sum(s.garbage_rows for s in segments) + int(offsets[-1]) - int(live.size)
    compact = garbage > GARBAGE_SHARE * live.size or any(s.borrowed for s in segments)
    parts = [s.frame for s in segments]
    if compact and len(parts) == 1:
        # One chunk would be gathered as views (a rewrite of one segment): two chunks of
        # it are copied, as a merge's are.
        parts = [_two_chunks(parts[0])]
    frames = pl.concat(parts, how="vertical_relaxed")
    if not compact:
        frame = (
            _serial_gather(frames, taken, rechunk=True) if index_ages else frames.rechunk()[taken]
        )
    elif index_ages:  # on the merge thread: column by column, off Polars' thread pool
        frame = _serial_gather(frames, live)
        frame = frame if order is None else _serial_gather(frame, order)
    else:
        frame = frames[live] if order is None else frames[live][order]
    ages = None
    if all(s.ages is not None for s in segments):
        ages = np.concatenate([s.ages for s in segments])[taken]  # type: ignore[misc]
    moved = np.full(int(offsets[-1]), -1, dtype=np.int64)
    moved[taken] = np.arange(taken.size, dtype=np.int64)
    merged = Segment(segments[-1].gen, frame, hashes, ages, garbage_rows=0 if compact else garbage)
    if index_ages:  # here, on the merge thread, not in a later batch
        if merged.age_index is not None:
            _ = merged.age_index.ordered
        if merged.hash_filter is not None:
            _ = merged.hash_filter.flags
    return merged, [moved[offsets[i] : offsets[i + 1]] for i in range(len(segments))]


@dataclass(frozen=True)
class _Pending:
    """A merge running on the merge thread: its inputs (adjacent, oldest first) as they
    were when it started."""

    inputs: tuple[Segment, ...]
    future: Future


@dataclass
class KeyedStore:
    """Rows grouped by ``keys``; see the module docstring. ``age_column`` names the
    integer column that expiry compares with the floor (``expire``)."""

    keys: list[str]
    age_column: str | None = None
    background_rows: int | None = None  # None: by the merge thread's queue (``_background_limit``)
    executor: Executor | None = None  # None: ``merge_executor()``; tests pass their own
    fan_in: int = 2  # segments merged at once (``_compact``)
    _segments: tuple[Segment, ...] = field(default=(), init=False)
    _gen: int = field(default=0, init=False)
    _floor: int | None = field(default=None, init=False)
    _pending: tuple[_Pending, ...] = field(default=(), init=False)
    _filter: StoreFilter | None = field(default=None, init=False)
    _next_filter: Future | None = field(default=None, init=False)  # ``_grow_filter``
    _since_next: list[np.ndarray] = field(default_factory=list, init=False)

    # ---- reading and replacing the rows of some keys ----

    def take(self, touched: pl.DataFrame) -> pl.DataFrame | None:
        """The live rows of the keys in ``touched`` (a frame of unique keys), which the
        store forgets: the caller puts back what those keys hold now. None when the store
        holds none of them."""
        return self._lookup(touched, forget=True)

    def get(self, touched: pl.DataFrame) -> pl.DataFrame | None:
        """Like ``take``, but the store keeps the rows: a read, for a lookup table (the
        build side of a join) whose rows a batch reads without replacing."""
        return self._lookup(touched, forget=False)

    def _lookup(self, touched: pl.DataFrame, forget: bool) -> pl.DataFrame | None:
        self._install()
        if not self._segments or touched.height == 0:
            return None
        hashed = self._hash(touched)
        wanted = arrays.unique_sorted(hashed)
        if wanted.size == hashed.size:  # no two touched keys share a hash
            order = np.argsort(hashed)  # touched's rows in the order of ``wanted``
            taken = self._take_by_hash(touched, wanted, forget, order)
            if taken is not False:
                return None if taken is None else taken.frame()  # type: ignore[union-attr]
        return self._take_by_key(touched, wanted, forget)

    def take_hashed(self, touched: pl.DataFrame, hashes: np.ndarray) -> Taken | None:
        """``take`` for unique keys whose hashes (``hash``) are all different, given in
        ascending order with ``touched`` in the same order. The rows come ungathered
        (``Taken``) with each row's key hash, so the caller maps rows to its keys without
        hashing them again and gathers only the rows it keeps."""
        self._install()
        if not self._segments or touched.height == 0:
            return None
        taken = self._take_by_hash(touched, hashes, True, None)
        if taken is not False:
            return taken  # type: ignore[return-value]
        rows = self._take_by_key(touched, hashes, True)
        if rows is None:
            return None
        return Taken([(rows, np.arange(rows.height))], self._hash(rows))

    def _take_by_hash(
        self, touched: pl.DataFrame, wanted: np.ndarray, forget: bool, order: np.ndarray | None
    ) -> Taken | bool | None:
        """``take`` (``forget``) or ``get`` deciding "newest copy" per hash in numpy, with
        one gather per segment and no per-row bookkeeping in Polars: a batch's fixed
        cost. Exact unless a key in the store shares a hash with a touched key, which
        shows as a found row of an untouched key: then False, nothing changed, and
        ``_take_by_key`` decides. ``order``: the rows of ``touched`` in the order of
        ``wanted`` (None: already in that order). Gives the rows, not gathered."""
        need = wanted
        if self._filter is not None:  # keys new to the store: not searched for
            maybe = self._filter.may_hold(wanted)
            if not maybe.all():
                need = wanted[maybe]
        picks: list[tuple[Segment, np.ndarray]] = []
        for segment in reversed(self._segments):  # newest first: its copy wins
            if need.size == 0:
                break
            hit, positions = segment.find(need)
            if positions is not None:
                picks.append((segment, positions))
                need = need[~hit]
        if not picks:
            return None
        if not self._all_touched(picks, touched, wanted, order):
            return False
        if self._floor is not None and self.age_column is not None:
            alive = [segment.ages[positions] >= self._floor for segment, positions in picks]  # type: ignore[index]
            picks = [(seg, pos[keep]) for (seg, pos), keep in zip(picks, alive, strict=True)]
        if forget:
            self._kill_positions({segment.gen: positions for segment, positions in picks})
        picks = [(segment, positions) for segment, positions in picks if positions.size]
        if not picks:
            return None
        hashes = np.concatenate([segment.hashes[positions] for segment, positions in picks])
        return Taken([(segment.frame, positions) for segment, positions in picks], hashes)

    def _all_touched(
        self,
        picks: list[tuple[Segment, np.ndarray]],
        touched: pl.DataFrame,
        wanted: np.ndarray,
        order: np.ndarray | None,
    ) -> bool:
        """Whether every row found (expired ones too: an expired row of another key may
        hide a touched key's older live copy) holds a touched key. Only the key columns
        are gathered, and each row is compared with the touched key of its hash (no
        join: a join's build side looks up every batch). Integer keys without nulls are
        compared in numpy (a Polars gather per segment cost more than the rest)."""
        hashes = np.concatenate([segment.hashes[positions] for segment, positions in picks])
        at = np.searchsorted(wanted, hashes)  # every found hash is one of ``wanted``
        rows = at if order is None else order[at]
        mine = _integer_keys(touched, self.keys, None)
        if mine is not None:
            held = [_integer_keys(segment.frame, self.keys, mine) for segment, _ in picks]
            if all(h is not None for h in held):
                return all(
                    bool(
                        np.array_equal(
                            np.concatenate(
                                [h[i][p] for h, (_, p) in zip(held, picks, strict=True)]  # type: ignore[index]
                            ),
                            mine[i][rows],
                        )
                    )
                    for i in range(len(self.keys))
                )
        parts = [keep_columns(segment.frame, self.keys)[positions] for segment, positions in picks]
        found = pl.concat(parts, how="vertical_relaxed") if len(parts) > 1 else parts[0]
        expected = keep_columns(touched, self.keys)[rows]
        return all(
            bool(found.get_column(k).eq_missing(expected.get_column(k)).all()) for k in self.keys
        )

    def _take_by_key(
        self, touched: pl.DataFrame, wanted: np.ndarray, forget: bool
    ) -> pl.DataFrame | None:
        """``take`` comparing the keys themselves: any hash collisions."""
        picks = [
            (segment, positions)
            for segment in self._segments
            if (positions := segment.find(wanted)[1]) is not None
        ]
        if not picks:
            return None
        rows = _gather_picks([(s.frame, p) for s, p in picks]).with_columns(
            pl.Series(GEN, np.concatenate([np.full(p.size, s.gen) for s, p in picks]), pl.Int64),
            pl.Series(POS, np.concatenate([p for _, p in picks]), pl.Int64),
        )
        # Rows of other keys with the same hash, then copies older than the key's newest.
        rows = rows.join(
            keep_columns(touched, self.keys), on=self.keys, how="semi", nulls_equal=True
        )
        if len(picks) > 1:
            rows = rows.filter(pl.col(GEN) == pl.col(GEN).max().over(self.keys))
        # Expired before killed: an expired row is never dead (see ``_kill``), so
        # ``dead_rows`` stays exact; it goes when its segment is merged or checked.
        if self._floor is not None and self.age_column is not None:
            rows = rows.filter(pl.col(self.age_column) >= self._floor)
        if rows.height == 0:
            return None
        if forget:
            self._kill(rows)
        return without(rows, GEN, POS)

    def put(
        self, rows: pl.DataFrame, hashes: np.ndarray | None = None, ages: np.ndarray | None = None
    ) -> None:
        """Add ``rows`` as the current rows of their keys (keys not held, or just taken);
        ``hashes``, when the caller has them, are the rows' key hashes (``hash``), and
        ``ages`` the age column's values as int64 (no nulls)."""
        if rows.height == 0:
            return
        if hashes is None:
            hashes = self._hash(rows)
        if self.age_column is None:
            ages = None
        elif ages is None:
            # A null age (a null event time from a step before) is older than any floor:
            # the row expires at the first one, as the lookup's ``age >= floor`` drops it
            # (it was a float NaN here, which the age index could not hold).
            ages = rows.get_column(self.age_column).cast(pl.Int64).fill_null(NULL_AGE).to_numpy()
        if hashes.size > 1 and not bool(np.all(hashes[1:] >= hashes[:-1])):
            order = np.argsort(hashes, kind="stable")  # stable: a key's rows keep their order
            rows, hashes = rows[order], hashes[order]
            ages = None if ages is None else ages[order]
        self._gen += 1
        segment = Segment(self._gen, rows, hashes, ages, borrowed=True)
        self._segments = (*self._segments, segment)
        self._grow_filter(hashes)
        self._compact()

    def _grow_filter(self, hashes: np.ndarray) -> None:
        """Add the hashes just put to the store filter, and put a larger one in its place
        as it fills. The larger one is built on the merge thread from the segments as
        they are when the filter is three quarters full (``StoreFilter.filling``), and
        the hashes put since are added to it when it replaces the full one: built on
        the batch thread, it cost that batch a scatter into tens of MB of fresh memory
        (page faults first): q19 on the skewed stream at 1 M events/s, 13-19 ms for
        3.7 M rows in one run, 100 ms in another, with the batches behind it queued for
        40 more. Until it is ready the full filter goes on (it passes more absent keys to
        the segments' own filters: slower, never wrong); past twice its room, or with no
        build under way, the batch builds it as before."""
        current = self._filter
        if current is None:
            self._filter = StoreFilter([s.hashes for s in self._segments])
            return
        current.add(hashes)
        pending = self._next_filter
        if pending is not None:
            self._since_next.append(hashes)
        elif current.filling:
            executor = self.executor or merge_executor()
            self._next_filter = executor.submit(
                StoreFilter, [s.hashes for s in self._segments], current.room
            )
            self._since_next = []
            return
        if not current.full:
            return
        if pending is not None and pending.done():
            built: StoreFilter = pending.result()
            for added in self._since_next:
                built.add(added)
            self._filter = built
        elif pending is None or current.added > 2 * current.room:
            self._filter = StoreFilter([s.hashes for s in self._segments])
        else:
            return
        self._next_filter, self._since_next = None, []

    def _kill(self, rows: pl.DataFrame) -> None:
        """Mark the store positions of ``rows`` (from ``take``) dead. They are each key's
        newest unexpired copy, never dead already: an older copy is dead only once a newer
        one exists, and the newer one leaves the store only by expiring, which the older
        one (a key's age only grows) has done too. That holds as long as the caller puts
        back every key it takes, which the keyed operators do."""
        gens = rows.get_column(GEN).to_numpy()
        positions = rows.get_column(POS).to_numpy()
        self._kill_positions({int(g): positions[gens == g] for g in arrays.unique_sorted(gens)})

    def _kill_positions(self, by_gen: dict[int, np.ndarray]) -> None:
        """Mark ``by_gen[segment.gen]`` dead in each segment (see ``_kill``)."""
        changed = []
        for segment in self._segments:
            mine = by_gen.get(segment.gen)
            if mine is not None and mine.size:
                segment = replace(
                    segment,
                    dead=(*segment.dead, mine),
                    dead_rows=segment.dead_rows + int(mine.size),
                )
                if segment.dead_rows * 2 > segment.frame.height and not self._busy(segment):
                    segment = self._rewrite(segment)
            changed.append(segment)
        self._segments = tuple(s for s in changed if s.frame.height)

    # ---- merging segments ----

    def _compact(self) -> None:
        """Merge ``fan_in`` adjacent segments while the oldest of them holds no more live
        rows than the others together (with two, a binary counter: O(log) segments and
        each row copied O(log(state / batch)) times; with k, about (k - 1) log_k
        segments and log_k copies: fewer copies of the rows, more segments to search),
        the newest such run first. A merge of more than ``background_rows`` rows runs on
        the merge thread (queued there in order) and is installed by a later call once
        done, so no batch waits for it; meanwhile its inputs stay as they are and the
        segments above merge among themselves. A merge installed in the middle can leave
        a run below the top out of order, hence the scan over every run, not just the
        newest."""
        self._install()
        k = max(2, self.fan_in)
        segments = list(self._segments)
        while True:
            run = next(
                (
                    i
                    for i in range(len(segments) - k, -1, -1)
                    if self._ripe(segments[i : i + k])
                    and not any(self._busy(s) for s in segments[i : i + k])
                ),
                None,
            )
            if run is None:
                break
            inputs = tuple(segments[run : run + k])
            helper = self._helper_for(sum(s.frame.height for s in inputs))
            if helper is not None:
                self._submit(inputs, helper)
                continue
            segments[run : run + k] = [merge_many(inputs, self._floor)[0]]
        self._segments = tuple(s for s in segments if s.frame.height)

    def _rewrite(self, segment: Segment) -> Segment:
        """``segment`` without its dead and expired rows: now when small, else on the
        merge thread like a merge of one (``segment`` stays, busy, until it is installed).
        A rewrite of a large segment inline cost the batch that caused it: q18 with a TTL
        on the skewed stream, batches of 9 ms at the median took 20-30 ms when an expiry
        rewrote a segment of a few hundred thousand rows."""
        helper = self._helper_for(segment.frame.height)
        if helper is None:
            return segment.live(self._floor)
        self._submit((segment,), helper)
        return segment

    def _helper_for(self, rows: int) -> Executor | None:
        """Where a merge of ``rows`` rows runs: None on the batch thread, else the thread
        to send it to. Above ``BACKGROUND_ROWS``, the merge thread; above
        ``QUIET_BACKGROUND_ROWS``, the first of the two merge threads with nothing
        queued (the small one first), else the batch thread. On a thread with spare time
        a merge costs the batch nothing; one queued behind others waits, and the segments
        it holds back make every lookup search more of them. With one thread, while it
        ran a merge of millions of rows (half a second) every merge of 25-50 k rows fell
        back to the batch thread and cost that batch 6-15 ms (q18, q19 at 1 M events/s).
        A store's own ``executor`` or ``background_rows`` keep one thread and one bound."""
        if self.executor is not None or self.background_rows is not None:
            limit = BACKGROUND_ROWS if self.background_rows is None else self.background_rows
            return (self.executor or merge_executor()) if rows > limit else None
        if rows > BACKGROUND_ROWS:
            return merge_executor()
        if rows > QUIET_BACKGROUND_ROWS:
            for helper in (small_merge_executor, merge_executor):
                if helper.queued == 0:
                    return helper()
        return None

    def _submit(self, inputs: tuple[Segment, ...], executor: Executor) -> None:
        """Merge ``inputs`` (adjacent, oldest first) on ``executor``'s thread; ``_install``
        puts the result in their place once done."""
        future = executor.submit(merge_many, inputs, self._floor, True)
        self._pending = (*self._pending, _Pending(inputs, future))

    def _ripe(self, run: list[Segment]) -> bool:
        """Whether the run of ``fan_in`` segments should merge: with two, when the older
        holds no more live rows than the newer (a binary counter); with more, when the
        oldest holds at most twice the newest's (a tier of like sizes: merging a big
        segment with small ones would copy its rows again for little)."""
        if len(run) == 2:
            return run[0].live_rows <= run[1].live_rows
        return run[0].live_rows <= 2 * run[-1].live_rows

    def _busy(self, segment: Segment) -> bool:
        """Whether ``segment`` is an input of a background merge: its rows keep their
        positions (no rewrite, no drop) until the merge is installed."""
        return any(segment.gen == s.gen for p in self._pending for s in p.inputs)

    def _install(self) -> None:
        """Put each finished background merge in place of its inputs."""
        done = [p for p in self._pending if p.future.done()]
        if done:
            self._pending = tuple(p for p in self._pending if all(p is not d for d in done))
            for p in done:
                self._install_one(p)

    def _install_one(self, p: _Pending) -> None:
        """Replace the inputs of ``p`` with its result, marking dead the rows killed since
        it started (their positions translated)."""
        merged, moved = p.future.result()
        gens = [s.gen for s in self._segments]
        if p.inputs[0].gen not in gens:
            return  # an input went meanwhile (a load): the merge is moot
        i = gens.index(p.inputs[0].gen)
        current = self._segments[i : i + len(p.inputs)]
        if len(current) != len(p.inputs) or any(
            now.gen != then.gen or now.frame is not then.frame
            for now, then in zip(current, p.inputs, strict=True)
        ):
            return
        # Rows killed since were live and unexpired when the merge started: all moved.
        since = [
            where[d]
            for now, then, where in zip(current, p.inputs, moved, strict=True)
            for d in now.dead[len(then.dead) :]
        ]
        dead = tuple(d[d >= 0] for d in since)
        merged = replace(merged, dead=dead, dead_rows=sum(int(d.size) for d in dead))
        put = (merged,) if merged.frame.height else ()  # wholly expired or dead: gone
        self._segments = (*self._segments[:i], *put, *self._segments[i + len(p.inputs) :])

    # ---- expiry ----

    def expire(self, floor: int) -> None:
        """Rows whose ``age_column`` is below ``floor`` are gone from now on. Whole
        segments below it are dropped now; others lose their expired rows when merged,
        or when at least half of a segment is expired or dead."""
        if self.age_column is None:
            raise InvalidInputError("this store has no age column to expire by")
        if self._floor is not None and floor <= self._floor:
            return
        self._floor = floor
        kept = []
        for segment in self._segments:
            if self._busy(segment):
                kept.append(segment)  # positions fixed until its merge is installed
                continue
            index = segment.age_index
            if index is None or index.high < floor:
                continue  # wholly expired
            expired = index.below(floor)
            if expired and (expired + segment.dead_rows) * 2 > segment.frame.height:
                segment = self._rewrite(segment)
            kept.append(segment)
        self._segments = tuple(s for s in kept if s.frame.height)

    # ---- checkpoints and savepoints ----

    def held_keys(self) -> pl.DataFrame | None:
        """The key columns of every row held, dead ones included (a superset of the
        live keys, with repeats), without copying other columns or dropping dead rows:
        for a caller that narrows a large set of keys down to those worth a ``take``."""
        if not self._segments:
            return None
        parts = [keep_columns(s.frame, self.keys) for s in self._segments]
        return pl.concat(parts, how="vertical_relaxed") if len(parts) > 1 else parts[0]

    def frame(self) -> pl.DataFrame | None:
        """Every live row (for a checkpoint), or None when the store never held any."""
        if not self._segments:
            return None
        parts = [s.live(self._floor).frame for s in self._segments]
        return pl.concat(parts, how="vertical_relaxed") if len(parts) > 1 else parts[0]

    def to_arrow(self) -> pa.Table | None:
        """Every live row as an Arrow table (a checkpoint's state), or None when the store
        never held any: each segment converted on its own and the tables put side by side
        as chunks, its strings not copied (``state_table``). ``frame().to_arrow()`` held
        every segment's live frame (its columns copied where rows were dead) and the Arrow
        copy of all of them at once: q18's final checkpoint on the skewed stream (6.4 M
        rows) raised the peak RSS by about 1 GB."""
        if not self._segments:
            return None
        tables = [state_table(s.live(self._floor).frame) for s in self._segments]
        try:
            return pa.concat_tables(tables)
        except pa.ArrowInvalid:  # a column typed differently in some segment (null, say)
            return pa.concat_tables(tables, promote_options="permissive")

    def load(self, frame: pl.DataFrame | None) -> None:
        """Replace the contents with ``frame`` (from ``frame``; one row set per key)."""
        self._segments = ()
        self._pending = ()
        self._filter, self._next_filter, self._since_next = None, None, []
        if frame is not None:
            self.put(frame.rechunk())  # one chunk: see ``merge``

    def savepoint(self) -> object:
        return (self._segments, self._gen, self._floor, self._filter)

    def rollback(self, saved: object) -> None:
        # A running merge may have started from segments newer than ``saved``: dropped;
        # so is a filter being built (from segments that may have lost keys ``saved`` holds).
        self._pending = ()
        self._next_filter, self._since_next = None, []
        self._segments, self._gen, self._floor, self._filter = saved  # type: ignore[misc]

    @property
    def rows(self) -> int:
        """Live rows, expired ones included until they are dropped, except those of
        wholly expired segments still held by a running merge."""
        floor = self._floor
        return sum(
            s.live_rows
            for s in self._segments
            if floor is None or s.max_age is None or s.max_age >= floor
        )

    def key_schema(self) -> dict[str, pl.DataType] | None:
        """The key columns' types as stored (None while the store is empty): a lookup
        casts its keys to them, since equal values of other types hash differently."""
        if not self._segments:
            return None
        schema = self._segments[-1].frame.schema
        return {k: schema[k] for k in self.keys}

    @property
    def segments(self) -> int:
        return len(self._segments)

    def hash(self, frame: pl.DataFrame) -> np.ndarray:
        """The 64-bit key hash of each row of ``frame`` (valid within this process)."""
        return self._hash(frame)

    def _hash(self, frame: pl.DataFrame) -> np.ndarray:
        if len(self.keys) == 1:
            expr = pl.col(self.keys[0]).hash(HASH_SEED)
        else:
            expr = pl.struct(self.keys).hash(HASH_SEED)
        return frame.select(expr).to_series().to_numpy().view(np.int64)
