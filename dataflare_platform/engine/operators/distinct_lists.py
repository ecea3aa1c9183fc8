"""Union of exact-distinct partial lists per group, in numpy on the calling thread.

Why not Polars: ``FramePanes`` merges a pane's distinct lists (q15/q16's day of bidders
and auctions) on the merge thread so batches go on meanwhile, but a Polars query there
runs on Polars' one thread pool, which the batch thread's own small queries share: a
large ``explode().unique()`` merge held the batch thread's next Polars step until it was
done (q15 reference stream: batches of 3 ms CPU took 45-66 ms while a merge of a few
million values ran). numpy's sort runs on the thread that calls it, so the operating
system shares the cores between the merge and the batches instead. It is also less work
in all than a group-by per list (about 0.6 ms of query overhead each) for the many small
merges of a window's first hours.

Values are packed with their group number into one int64 (group in the high bits, value
minus the smallest in the low bits), sorted once (merging the sorted runs the inputs
already are) and kept where they differ from the previous one: the result is each
group's distinct values in ascending order. Integer lists whose group and value ranges
do not fit in 63 bits return ``None`` and the caller merges them with Polars, as it
does every other type.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from dataflare_platform.engine import arrays

_PACK_BITS = 63


def union_by_group(lists: pl.Series, group: np.ndarray, groups: int) -> pl.Series | None:
    """Per group ``0 .. groups - 1``, the distinct non-null values of the lists of the rows
    with that ``group`` number (one per row of ``lists``), as a list column of ``groups``
    rows in ``lists``' type; ``None`` when the values are not integers that pack."""
    inner = lists.dtype.inner if isinstance(lists.dtype, pl.List) else None
    if inner is None or not inner.is_integer() or inner == pl.UInt64:
        return None
    array = lists.to_arrow()
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    values = pc.list_flatten(array)  # null lists hold nothing
    lengths = np.diff(arrays.to_numpy(array.offsets))
    if array.null_count:
        lengths[~arrays.validity(array)] = 0
    owner = arrays.repeated(group.astype(np.int64, copy=False), lengths) if groups > 1 else None
    if values.null_count:
        keep = arrays.validity(values)
        owner = owner[keep] if owner is not None else None
        values = values.filter(arrays.booleans(keep))
    found = arrays.to_numpy(values).astype(np.int64, copy=False)
    if not len(found):
        return _lists(np.zeros(groups + 1, np.int64), found, lists)
    low = int(found.min())
    value_bits = (int(found.max()) - low).bit_length()
    if value_bits + max(groups - 1, 0).bit_length() > _PACK_BITS:
        return None
    # In place where the array is ours: each new array of a few million values costs
    # its page faults again (q16's day: 4.4 M values, ~6 ms per pass).
    if owner is not None:
        packed = np.left_shift(owner, value_bits, out=owner)
        packed += found  # the value's bits are clear: + is |
        packed -= low
    else:
        packed = found - low
    # Stable (timsort) finds the sorted runs: the pane's merged frame comes first and
    # its lists, ascending per group in group order, pack to one ascending run that is
    # most of the values. q16's day on the skewed stream, 3 M values of such a run and
    # 60 k new ones: 164 ms with the default sort, 6.5 ms so (a merge of 100 k values
    # with no run: 3.8 -> 4.9 ms).
    packed.sort(kind="stable")
    first = np.empty(len(packed), dtype=bool)
    first[0] = True
    np.not_equal(packed[1:], packed[:-1], out=first[1:])
    packed = packed[first]
    # Group g's values start at the first packed value with g in the high bits; the last
    # group's end is the end (``groups << value_bits`` itself may not fit in an int64:
    # one group of values 63 bits apart shifted 1 << 63 to the lowest int64 and came out
    # empty).
    offsets = np.empty(groups + 1, dtype=np.int64)
    offsets[0], offsets[-1] = 0, len(packed)
    offsets[1:-1] = np.searchsorted(packed, np.arange(1, groups, dtype=np.int64) << value_bits)
    distinct = np.bitwise_and(packed, (1 << value_bits) - 1, out=packed)
    distinct += low
    return _lists(offsets, distinct, lists)


def _lists(offsets: np.ndarray, values: np.ndarray, like: pl.Series) -> pl.Series:
    array = pa.LargeListArray.from_arrays(
        arrays.from_numpy(offsets, pa.int64()), arrays.from_numpy(values, pa.int64())
    )
    return pl.Series(like.name, array).cast(like.dtype)
