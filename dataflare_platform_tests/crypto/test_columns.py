"""Column encryption: round trips, nulls, the header, and the bindings that make a moved
ciphertext fail."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from dataflare_platform.crypto.columns import (
    FORMAT_GCM,
    FORMAT_SIV,
    TYPE_INT64,
    TYPE_UTF8,
    Binding,
    ColumnCipher,
    DecryptionError,
    key_versions,
    parse_headers,
)
from dataflare_platform.errors import WrongTypeError

EMAILS = Binding("customers", "email")


def test_strings_round_trip_with_nulls_kept(cipher: ColumnCipher) -> None:
    values = pa.array(["ann@example.com", None, "", "bob@example.org", None, "é ünïcode"])
    sealed = cipher.encrypt(values, EMAILS)
    assert sealed.type == pa.large_binary()
    assert sealed.null_count == 2
    assert sealed.is_null().to_pylist() == values.is_null().to_pylist()
    for plain, item in zip(values.to_pylist(), sealed.to_pylist(), strict=True):
        if plain:
            assert plain.encode() not in item
    assert cipher.decrypt(sealed, EMAILS).to_pylist() == values.to_pylist()


def test_int64_and_float64_round_trip(cipher: ColumnCipher) -> None:
    ints = pa.array([0, -1, 2**63 - 1, None, 256], pa.int64())
    floats = pa.array([1.5, None, -0.0, float("inf")], pa.float64())
    back = cipher.decrypt(cipher.encrypt(ints, Binding("d", "i")), Binding("d", "i"))
    assert back.type == pa.int64() and back.to_pylist() == ints.to_pylist()
    back = cipher.decrypt(cipher.encrypt(floats, Binding("d", "f")), Binding("d", "f"))
    assert back.to_pylist() == floats.to_pylist()


def test_polars_series_and_string_views(cipher: ColumnCipher) -> None:
    series = pl.Series("email", ["a@b.io", None, "c@d.io"])
    sealed = cipher.encrypt(series, EMAILS)
    assert pl.Series(cipher.decrypt(sealed, EMAILS)).to_list() == series.to_list()


def test_header_carries_format_type_and_version(cipher: ColumnCipher) -> None:
    random = parse_headers(cipher.encrypt(pa.array(["x", "y"]), EMAILS))
    assert random["format"].tolist() == [FORMAT_GCM, FORMAT_GCM]
    assert random["type"].tolist() == [TYPE_UTF8, TYPE_UTF8]
    assert random["version"].tolist() == [1, 1]
    det = parse_headers(cipher.encrypt(pa.array([7]), Binding("d", "n"), deterministic=True))
    assert det["format"].tolist() == [FORMAT_SIV] and det["type"].tolist() == [TYPE_INT64]


def test_randomized_mode_hides_equal_values(cipher: ColumnCipher) -> None:
    sealed = cipher.encrypt(pa.array(["same"] * 3), EMAILS).to_pylist()
    assert len(set(sealed)) == 3


def test_deterministic_mode_gives_equal_ciphertexts_for_equal_values(
    cipher: ColumnCipher,
) -> None:
    binding = Binding("orders", "customer_id")
    sealed = cipher.encrypt(pa.array(["c1", "c2", "c1", None]), binding, deterministic=True)
    items = sealed.to_pylist()
    assert items[0] == items[2] != items[1] and items[3] is None
    again = cipher.encrypt(pa.array(["c1"]), binding, deterministic=True).to_pylist()
    assert again[0] == items[0]
    assert cipher.decrypt(sealed, binding).to_pylist() == ["c1", "c2", "c1", None]


@pytest.mark.parametrize("deterministic", [False, True])
def test_a_ciphertext_moved_to_another_column_or_dataset_fails(
    cipher: ColumnCipher, deterministic: bool
) -> None:
    sealed = cipher.encrypt(pa.array(["ann@example.com"]), EMAILS, deterministic=deterministic)
    with pytest.raises(DecryptionError, match="'phone'"):
        cipher.decrypt(sealed, Binding("customers", "phone"))
    with pytest.raises(DecryptionError):
        # same key name (a tenant key), other dataset: the binding still differs
        cipher.decrypt(sealed, Binding("suppliers", "email", key="customers"))


def test_a_flipped_bit_or_a_changed_version_byte_fails(cipher: ColumnCipher) -> None:
    (item,) = cipher.encrypt(pa.array(["secret value"]), EMAILS).to_pylist()
    flipped = bytearray(item)
    flipped[-1] ^= 1
    with pytest.raises(DecryptionError):
        cipher.decrypt(pa.array([bytes(flipped)], pa.large_binary()), EMAILS)
    typed = bytearray(item)
    typed[1] = 2  # utf8 -> binary: bound by the associated data too
    with pytest.raises(DecryptionError):
        cipher.decrypt(pa.array([bytes(typed)], pa.large_binary()), EMAILS)


def test_plain_values_are_not_ciphertext(cipher: ColumnCipher) -> None:
    with pytest.raises(DecryptionError, match=r"header|short"):
        cipher.decrypt(pa.array([b"plain text that is long enough!"]), EMAILS)
    with pytest.raises(WrongTypeError):
        cipher.decrypt(pa.array(["a string"]), EMAILS)
    with pytest.raises(WrongTypeError):
        cipher.encrypt(pa.array([[1]]), EMAILS)


def test_key_versions_vectorised(cipher: ColumnCipher) -> None:
    sealed = cipher.encrypt(pa.array(np.arange(5)), Binding("d", "n"))
    versions = key_versions(pa.concat_arrays([sealed, pa.nulls(1, pa.large_binary())]))
    assert versions.tolist() == [1, 1, 1, 1, 1, -1]


def test_sliced_and_chunked_inputs(cipher: ColumnCipher) -> None:
    values = pa.array([f"v{i}" for i in range(10)])
    sliced = values.slice(3, 4)
    assert cipher.decrypt(cipher.encrypt(sliced, EMAILS), EMAILS).to_pylist() == [
        "v3",
        "v4",
        "v5",
        "v6",
    ]
    sealed = cipher.encrypt(values, EMAILS)
    assert cipher.decrypt(sealed.slice(2, 3), EMAILS).to_pylist() == ["v2", "v3", "v4"]
    chunked = pa.chunked_array([values.slice(0, 5), values.slice(5)])
    assert cipher.decrypt(cipher.encrypt(chunked, EMAILS), EMAILS).to_pylist() == values.to_pylist()


def test_a_binding_name_with_a_nul_or_empty_is_refused() -> None:
    from dataflare_platform.errors import InvalidInputError

    for dataset, column in (("a\x00b", "c"), ("a", ""), ("", "c")):
        with pytest.raises(InvalidInputError):
            Binding(dataset, column)
