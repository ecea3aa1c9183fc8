"""The pandas-free array constructors give what ``pa.array`` gives: same type, values and
nulls (pandas being absent is checked by test_cold_start in a fresh process); and
``unique_sorted`` gives what ``np.unique`` gives."""

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflare_platform.engine import arrays
from dataflare_platform.errors import InvalidInputError

CASES = [
    ([1, None, -3], pa.int64()),
    ([], pa.int64()),
    ([None], pa.int64()),
    ([7, 8], pa.int32()),
    ([255, None], pa.uint8()),
    ([1.5, None, float("nan")], pa.float64()),
    ([1.5, 2.0], pa.float32()),
    ([True, None, False], pa.bool_()),
    ([1_767_225_600_000, None], pa.timestamp("ms")),
    ([5, None], pa.duration("ms")),
    (["a", None, "", "éß"], pa.string()),
    (["x", None], pa.large_string()),
    ([b"\x00\xff", None, b""], pa.binary()),
    ([b"y"], pa.large_binary()),
]


@pytest.mark.parametrize(
    ("values", "type"), CASES, ids=[str(t) + str(i) for i, (_, t) in enumerate(CASES)]
)
def test_from_pylist_equals_pa_array(values, type):
    got = arrays.from_pylist(values, type)
    got.validate(full=True)
    want = pa.array(values, type)
    assert got.type == want.type
    assert got.null_count == want.null_count
    assert got.to_string() == want.to_string()  # equals() is False for NaN == NaN
    assert got.is_null().to_pylist() == want.is_null().to_pylist()


def test_from_numpy_with_validity_and_booleans():
    values = np.array([3, 4, 5, 6, 7, 8, 9, 10, 11], dtype=np.int64)
    valid = values % 3 != 0
    got = arrays.from_numpy(values, pa.int64(), valid)
    assert got.equals(pa.array(values, mask=~valid))
    mask = np.array([True, False] * 6)
    assert arrays.booleans(mask).equals(pa.array(mask))
    table = pa.table({"a": pa.array(range(12))})
    assert table.filter(arrays.booleans(mask))["a"].to_pylist() == [0, 2, 4, 6, 8, 10]


def test_repeat_and_refusals():
    assert arrays.repeat("p", 3, pa.string()).to_pylist() == ["p", "p", "p"]
    assert arrays.repeat(5, 2, pa.timestamp("ms")).type == pa.timestamp("ms")
    with pytest.raises(InvalidInputError):
        arrays.from_pylist([[1]], pa.list_(pa.int64()))
    with pytest.raises(InvalidInputError):
        arrays.from_numpy([1, 2], pa.int64(), np.array([True]))
    with pytest.raises(pa.ArrowInvalid):
        arrays.strings([b"\xff"], pa.string())  # not UTF-8


@pytest.mark.parametrize(
    ("value", "type"),
    [(0, pa.int64()), (False, pa.bool_()), ("", pa.large_string()), (None, pa.string())],
)
def test_scalar_equals_pa_scalar(value, type):
    got = arrays.scalar(value, type)
    assert got.type == type and got.equals(pa.scalar(value, type))


@pytest.mark.parametrize(
    "values, type",
    [
        ([1, None, 3, 4, -5, 6, 7, 8, 9, 10], pa.int64()),
        ([1, 2, None, 4, 5, 6, 7, 8, 9, 10], pa.int32()),
        ([1.5, 2.5, None, 4.0, 5, 6, 7, 8, 9, 10], pa.float64()),
        ([True, False, None, True, True, False, False, True, True, False], pa.bool_()),
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], pa.timestamp("ms")),
    ],
)
def test_to_numpy_equals_array_to_numpy_on_slices_and_chunks(values, type):
    whole = pa.array(values, type)
    filled = whole.fill_null(pa.scalar(False if type == pa.bool_() else 0, type))
    for arr in (filled, filled.slice(3), filled.slice(1, 5), pa.chunked_array([filled, filled])):
        # timestamps come back as their stored int64 values
        plain = arr.cast(pa.int64()) if pa.types.is_timestamp(type) else arr
        assert arrays.to_numpy(arr).tolist() == plain.to_numpy(zero_copy_only=False).tolist()
    assert arrays.to_numpy(whole.is_valid()).tolist() == [v is not None for v in values]
    with pytest.raises(InvalidInputError):
        arrays.to_numpy(pa.array(["a"]))


@pytest.mark.parametrize(
    ("values", "type"), CASES, ids=[str(t) + str(i) for i, (_, t) in enumerate(CASES)]
)
def test_validity_equals_is_valid_on_slices_and_chunks(values, type):
    whole = pa.array(values, type)
    parts = [whole, whole.slice(1), whole.slice(1, 2), pa.chunked_array([whole, whole], type)]
    for arr in parts:
        want = arr.is_valid()
        want = want.combine_chunks() if isinstance(want, pa.ChunkedArray) else want
        assert arrays.validity(arr).tolist() == want.to_pylist()


def test_validity_of_the_null_type_is_all_false():
    assert arrays.validity(pa.nulls(3)).tolist() == [False, False, False]


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=200),
    shape=st.sampled_from(["flat", "column"]),
)
def test_unique_sorted_is_np_unique(values, shape):
    array = np.array(values, np.int64)
    if shape == "column":  # np.unique flattens; so does unique_sorted
        array = array.reshape(-1, 1)
    got = arrays.unique_sorted(array)
    assert got.dtype == np.int64
    assert got.tolist() == np.unique(array).tolist()


def test_ranges_lists_each_run_in_turn():
    starts = np.array([5, 0, 9], dtype=np.int64)
    counts = np.array([2, 0, 3], dtype=np.int64)
    assert arrays.ranges(starts, counts).tolist() == [5, 6, 9, 10, 11]
    assert arrays.ranges(np.empty(0, np.int64), np.empty(0, np.int64)).tolist() == []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-(2**40), 2**40), st.integers(0, 5)), min_size=0, max_size=40)
)
def test_repeated_is_numpys_repeat(pairs):
    """Any values (repeats, negatives, unsorted), any counts (zeros first, last, runs)."""
    values = np.array([v for v, _ in pairs], dtype=np.int64)
    counts = np.array([c for _, c in pairs], dtype=np.int64)
    got = arrays.repeated(values, counts)
    assert got.dtype == np.int64
    assert got.tolist() == np.repeat(values, counts).tolist()
