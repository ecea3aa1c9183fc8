"""The numpy side of the keyed top-N (``KeyedTopN``): one dense integer id per key of a
batch, and each key's top ``n`` rows by one integer column.

Grouping Polars frames on several key columns (``over``, joins, ``is_duplicated`` on a
struct) cost most of a 10 000-row batch of Nexmark q18. Here every key of a batch gets
an int64 id from its 64-bit hash (checked against the keys themselves, so a collision
falls back rather than merges two keys), and the ranking is one ``np.lexsort`` on the
id and the leading order columns that are integers (``by``, then the tie-breaking
columns up to the first that is not). Rows equal on those inside a key's top ``n`` need
the rest of the order, strings included: those keys only are left to a Polars sort."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from dataflare_platform.engine.operators.physical import int64_values


@dataclass(frozen=True)
class KeyIds:
    """Dense ids of a batch's keys: ``ids[i]`` is row i's key, ``hashes[k]`` key k's hash
    (ascending, all different) and ``first[k]`` a row holding key k."""

    ids: np.ndarray
    hashes: np.ndarray
    first: np.ndarray

    @property
    def count(self) -> int:
        return int(self.hashes.size)


def dense_ids(keys: pl.DataFrame, hashes: np.ndarray) -> KeyIds | None:
    """Ids of the key rows ``keys`` (one column per key column) with hashes ``hashes``;
    None when two different keys share a hash (the caller groups on the keys instead).
    An unstable argsort (``np.unique`` with ``return_index`` sorts stably, about five
    times slower): ``first`` is some row of each key, not necessarily its first."""
    order = np.argsort(hashes)
    ordered = hashes[order]
    starts = np.empty(ordered.size, dtype=bool)
    starts[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    unique, first = ordered[starts], order[starts]
    ids = np.empty(ordered.size, dtype=np.int64)
    ids[order] = np.cumsum(starts) - 1
    if unique.size < hashes.size:
        rows = first[ids]
        for name in keys.columns:
            column = keys.get_column(name)
            if column.dtype.is_integer() and column.n_chunks() == 1 and not column.null_count():
                values = column.to_numpy()  # no copy
                if not np.array_equal(values, values[rows]):
                    return None
            elif not column.eq_missing(column.gather(rows)).all():
                return None
    return KeyIds(ids, unique, first)


def sortable(series: pl.Series, descending: bool) -> np.ndarray | None:
    """``series`` as int64 whose ascending order is the wanted order (None: not an
    integer or temporal column without nulls, which the numpy ranking does not handle;
    ``physical.int64_values``). Descending is the bitwise not, which cannot overflow."""
    values = int64_values(series)
    if values is None:
        return None
    return ~values if descending else values


@dataclass(frozen=True)
class Ranked:
    """Each key's top rows as found by ``top_rows``: row positions ``rows`` with their
    1-based ``ranks``, ``tied`` (per key: its top needs the other columns, so ``rows``
    holds none of its rows) and ``newest`` (per key: the greatest ``ages`` value)."""

    rows: np.ndarray
    ranks: np.ndarray
    tied: np.ndarray
    newest: np.ndarray


def top_rows(ids: np.ndarray, count: int, by: list[np.ndarray], n: int, ages: np.ndarray) -> Ranked:
    """The top ``n`` rows per key id (``count`` keys, every one with a row) in the order
    of the columns ``by`` (ascending, the first deciding first). A key whose top ``n``
    holds two rows equal on all of ``by`` (Polars' ``rank("min") <= n`` shared by two
    rows) is marked ``tied`` instead. Rows come in key order."""
    if n == 1:
        return _top_one(ids, count, by, ages)
    order = _order(ids, count, by)
    key = ids[order]
    size = key.size
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    counts = np.diff(np.r_[starts, size])
    position = np.arange(size, dtype=np.int64) - np.repeat(starts, counts)
    equal = key[1:] == key[:-1]
    for column in by:
        value = column[order]
        equal &= value[1:] == value[:-1]
    same = np.r_[False, equal]
    tied = np.zeros(count, dtype=bool)
    if same.any():
        # The position of the run a row belongs to: a tie inside the top n matters.
        run_start = np.maximum.accumulate(np.where(same, 0, np.arange(size, dtype=np.int64)))
        tied[key[same & (position[run_start] < n)]] = True
    keep = position < n
    if tied.any():
        keep &= ~tied[key]
    newest = np.maximum.reduceat(ages[order], starts)
    return Ranked(order[keep], position[keep] + 1, tied, newest)


def _top_one(ids: np.ndarray, count: int, by: list[np.ndarray], ages: np.ndarray) -> Ranked:
    """``top_rows`` for n = 1 (q18's latest row per key) without sorting: per column, each
    key's least value among its rows still equal to its least on the columns before
    (``np.minimum.at``), so the rows left are each key's first in the order; a key with
    two of them is tied. Linear where the sort was not: the two argsorts of a batch's
    14 k rows were 13 % of q18's batch thread (py-spy, skewed stream)."""
    best: np.ndarray | None = None  # rows equal to their key's least on the columns so far
    for column in by:
        keys, values = (ids, column) if best is None else (ids[best], column[best])
        least = np.full(count, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(least, keys, values)
        equal = column == least[ids]
        best = equal if best is None else best & equal
    assert best is not None  # ``by`` holds at least one column
    winners = np.flatnonzero(best)
    tied = np.bincount(ids[winners], minlength=count) > 1
    winner = np.empty(count, dtype=np.int64)
    winner[ids[winners]] = winners  # a key not tied has exactly one winner
    rows = winner[~tied]  # every key has a row, so a least: a winner
    newest = np.full(count, np.iinfo(ages.dtype).min, dtype=ages.dtype)
    np.maximum.at(newest, ids, ages)
    return Ranked(rows, np.ones(rows.size, dtype=np.int64), tied, newest)


def _order(ids: np.ndarray, count: int, by: list[np.ndarray]) -> np.ndarray:
    """Row positions ordered by ``ids``, then ``by`` (``np.lexsort``'s order up to the
    order of rows equal on all of them, which ``top_rows`` does not rely on). When the
    id and the first column's offset from its least value fit in one int64 side by side,
    one unstable argsort of that (lexsort sorts stably once per column, about ten times
    slower), then a lexsort of the rows equal on both on the other columns, if any."""
    first = by[0]
    size = first.size
    if size == 0:
        return np.zeros(0, dtype=np.int64)
    low = int(first.min())
    span_bits = (int(first.max()) - low).bit_length()
    if span_bits + max(count - 1, 1).bit_length() > 62:
        return np.lexsort((*reversed(by), ids))
    combined = (ids << span_bits) | (first - low)
    order = np.argsort(combined)
    if len(by) > 1:
        ordered = combined[order]
        same = ordered[1:] == ordered[:-1]
        if same.any():
            in_run = np.zeros(size, dtype=bool)
            in_run[1:] = same
            in_run[:-1] |= same
            slots = np.flatnonzero(in_run)  # runs of equal (id, first): sorted on the rest
            rows = order[slots]
            rest = [column[rows] for column in reversed(by[1:])]
            order[slots] = rows[np.lexsort((*rest, ordered[slots]))]
    return order
