"""Arrow arrays built without pyarrow's pandas shim.

Why this module exists: ``pa.array(...)``, ``pa.scalar(...)`` and ``Table.filter`` /
``take`` given a numpy array or a Python list ask pyarrow's pandas shim whether the
input is a pandas object (``_is_array_like``, ``is_categorical``), and the shim imports
pandas to answer -- about 0.9 s and 340 modules, paid by the first batch or the first
checkpoint of every run (issue 21 §1). Converting a numpy array does not avoid it: the
numpy path asks ``is_categorical`` too. What does not consult the shim is
``pa.Array.from_buffers`` over memory we hand it, so every constructor here builds the
buffers itself (numpy for fixed-width values, offsets plus concatenated bytes for
strings and binaries) and returns exactly the Arrow type asked for, with nulls where the
input says. ``dataflare_platform_tests/engine/test_cold_start.py`` runs every Nexmark
query and a stream pipeline in a fresh process and fails if pandas gets imported.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa

from dataflare_platform.errors import InvalidInputError

_BINARY_LIKE = {
    pa.string(): np.int32,
    pa.binary(): np.int32,
    pa.large_string(): np.int64,
    pa.large_binary(): np.int64,
}


def unique_sorted(values: np.ndarray) -> np.ndarray:
    """The distinct integers of ``values`` ascending, as ``np.unique(values)`` gives them,
    by one sort: numpy 2.4's ``np.unique`` without ``return_*`` hashes first and costs
    10-35x more (100 int64: 0.36 ms against 0.01 ms; 100 000: 15.6 ms against 1.1 ms,
    measured on this machine). Integers only (NaNs are not collapsed)."""
    ordered = np.sort(values.ravel())
    if ordered.size < 2:
        return ordered
    keep = np.empty(ordered.size, bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def _validity(valid: np.ndarray | None, n: int) -> tuple[pa.Buffer | None, int]:
    """Arrow's validity bitmap (LSB first) and null count; no bitmap when nothing is null."""
    if valid is None:
        return None, 0
    valid = np.asarray(valid, dtype=np.bool_)
    if len(valid) != n:
        raise InvalidInputError(f"validity of length {len(valid)} for {n} values")
    nulls = n - int(np.count_nonzero(valid))
    if nulls == 0:
        return None, 0
    return pa.py_buffer(np.packbits(valid, bitorder="little")), nulls


def booleans(values: np.ndarray | Sequence[bool], valid: np.ndarray | None = None) -> pa.Array:
    """A ``bool`` array (e.g. a filter mask) from numpy booleans."""
    bits = np.asarray(values, dtype=np.bool_)
    n = len(bits)
    validity, nulls = _validity(valid, n)
    data = pa.py_buffer(np.packbits(bits, bitorder="little"))
    return pa.Array.from_buffers(pa.bool_(), n, [validity, data], null_count=nulls)


def from_numpy(
    values: np.ndarray | Sequence[int] | Sequence[float],
    type: pa.DataType,
    valid: np.ndarray | None = None,
) -> pa.Array:
    """A fixed-width array (integers, floats, timestamps, dates, durations) of ``type``
    from numpy values of the same width; null where ``valid`` is False. Values are
    converted to the width ``type`` stores (``int64`` for ``timestamp("ms")``), so
    ``from_numpy([1, 2], pa.int64())`` works on plain lists too."""
    if pa.types.is_boolean(type):
        return booleans(values, valid)
    if not (pa.types.is_integer(type) or pa.types.is_floating(type) or _is_temporal(type)):
        raise InvalidInputError(f"from_numpy builds fixed-width arrays, not {type}")
    dtype = _fixed_width_dtype(type)
    data = np.ascontiguousarray(np.asarray(values), dtype=dtype)
    if data.ndim != 1:
        raise InvalidInputError(f"expected one-dimensional values, got shape {data.shape}")
    validity, nulls = _validity(valid, len(data))
    return pa.Array.from_buffers(type, len(data), [validity, pa.py_buffer(data)], null_count=nulls)


def _is_temporal(type: pa.DataType) -> bool:
    return (
        pa.types.is_timestamp(type)
        or pa.types.is_date(type)
        or pa.types.is_duration(type)
        or pa.types.is_time(type)
    )


def from_pylist(values: Iterable[object], type: pa.DataType) -> pa.Array:
    """An array of ``type`` from Python values (``None`` is null): fixed-width types go
    through :func:`from_numpy`, strings and binaries through :func:`strings`. Other types
    (nested, decimal) are refused rather than silently handed to ``pa.array``."""
    items = values if isinstance(values, list) else list(values)
    if type in _BINARY_LIKE:
        return strings(items, type)
    valid = np.fromiter((v is not None for v in items), dtype=np.bool_, count=len(items))
    if valid.all():
        return from_numpy(items, type)
    filler = False if pa.types.is_boolean(type) else 0
    return from_numpy([filler if v is None else v for v in items], type, valid)


def strings(values: Sequence[str | bytes | None], type: pa.DataType | None = None) -> pa.Array:
    """A ``string`` (the default), ``binary`` or ``large_`` variant array; ``str`` values
    are UTF-8 encoded, ``None`` is null."""
    type = pa.string() if type is None else type
    if type not in _BINARY_LIKE:
        raise InvalidInputError(f"strings builds string or binary arrays, not {type}")
    encoded = [
        b"" if v is None else (v.encode() if isinstance(v, str) else bytes(v)) for v in values
    ]
    n = len(encoded)
    offsets = np.zeros(n + 1, dtype=_BINARY_LIKE[type])
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    valid = np.fromiter((v is not None for v in values), dtype=np.bool_, count=n)
    validity, nulls = _validity(valid, n)
    data = pa.py_buffer(b"".join(encoded))
    out = pa.Array.from_buffers(type, n, [validity, pa.py_buffer(offsets), data], null_count=nulls)
    if pa.types.is_string(type) or pa.types.is_large_string(type):
        out.validate(full=True)  # bytes given for a string column must be UTF-8
    return out


def repeat(value: object, n: int, type: pa.DataType) -> pa.Array:
    """``value`` ``n`` times as an array of ``type``."""
    return from_pylist([value] * n, type)


def scalar(value: object, type: pa.DataType) -> pa.Scalar:
    """``value`` as a scalar of ``type`` (for compute functions and ``fill_null``: given a
    Python value, they convert it with ``pa.scalar``, which consults the pandas shim)."""
    return from_pylist([value], type)[0]


def empty_table(schema: pa.Schema) -> pa.Table:
    """A table of ``schema`` with no rows (``Schema.empty_table()`` builds its columns with
    ``pa.array([])``, which consults the pandas shim)."""
    return pa.Table.from_batches([], schema=schema)


def to_numpy(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The values of a fixed-width or boolean array as numpy, read from its buffers
    (``Array.to_numpy`` goes through pyarrow's pandas conversion code, which imports
    pandas, even for a plain ``int64`` array). Booleans come back as ``bool``; values
    under nulls are unspecified, so fill nulls first where they matter."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    type = arr.type
    n, offset = len(arr), arr.offset
    data = arr.buffers()[1]
    if pa.types.is_boolean(type):
        if data is None:
            return np.zeros(n, bool)
        bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
        return bits[offset : offset + n].astype(bool)
    if not (pa.types.is_integer(type) or pa.types.is_floating(type) or _is_temporal(type)):
        raise InvalidInputError(f"to_numpy reads fixed-width arrays, not {type}")
    width = type.bit_width // 8
    dtype = _fixed_width_dtype(type)
    if data is None:
        return np.zeros(n, dtype)
    return np.frombuffer(data, dtype, count=n, offset=offset * width)


def validity(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Which entries are not null, as numpy booleans, read from the validity bitmap: a
    Polars ``is_not_null()`` on a series runs a query (about 0.2 ms, measured), too much
    per column per batch on a path that folds a batch in about a millisecond."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    n = len(arr)
    if pa.types.is_null(arr.type):
        return np.zeros(n, bool)
    bitmap = arr.buffers()[0]
    if bitmap is None:
        return np.ones(n, bool)
    bits = np.unpackbits(np.frombuffer(bitmap, np.uint8), bitorder="little")
    return bits[arr.offset : arr.offset + n].astype(bool)


def _fixed_width_dtype(type: pa.DataType) -> np.dtype:
    """The numpy dtype holding ``type``'s values as stored (temporal types as their
    signed integers)."""
    width = type.bit_width // 8
    if pa.types.is_floating(type):
        return np.dtype(f"f{width}")
    if pa.types.is_unsigned_integer(type):
        return np.dtype(f"u{width}")
    return np.dtype(f"i{width}")


def ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The positions ``starts[i] .. starts[i] + counts[i] - 1`` for every i, concatenated
    (the rows of each found key's run in a sorted store). ``np.repeat`` holds the GIL:
    for the batch thread's lookups, not for large work on the merge thread."""
    total = int(counts.sum())
    offsets = np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(starts, counts) + (np.arange(total, dtype=np.int64) - offsets)


def repeated(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``np.repeat(values, counts)`` for int64 ``values``, by a cumulative sum of the
    steps between them: ``np.repeat`` holds the GIL throughout (10 ms for 5 M values,
    measured: the batch thread's Python stood still meanwhile), ``cumsum`` does not. For
    large work on the merge thread; ``np.repeat`` is faster for the batch thread's own."""
    nonempty = counts > 0
    starts = (np.cumsum(counts) - counts)[nonempty]
    steps = np.zeros(int(counts.sum()), dtype=np.int64)
    steps[starts] = np.diff(values[nonempty], prepend=0)
    return np.cumsum(steps)  # not in place: numpy holds the GIL for an overlapping out
