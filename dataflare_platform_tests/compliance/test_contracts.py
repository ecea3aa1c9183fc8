from __future__ import annotations

from datetime import datetime

import polars as pl
import pytest
from pydantic import ValidationError

from dataflare_platform.compliance.contracts import (
    ColumnContract,
    SchemaContract,
    check_contract,
    parse_dtype,
)

CONTRACT = SchemaContract(
    columns=[
        ColumnContract(name="window_end", type="Datetime(ms)", nullable=False),
        ColumnContract(name="item", type="String"),
        ColumnContract(name="bids", type="Int64", nullable=False),
    ]
)


def _frame(**overrides: pl.Series) -> pl.DataFrame:
    columns = {
        "window_end": pl.Series(
            [datetime(2026, 1, 1), datetime(2026, 1, 2)], dtype=pl.Datetime("ms")
        ),
        "item": pl.Series(["a", None]),
        "bids": pl.Series([1, 2], dtype=pl.Int64),
    }
    columns.update(overrides)
    return pl.DataFrame(columns)


@pytest.mark.parametrize(
    ("text", "dtype"),
    [
        ("Int64", pl.Int64()),
        ("Utf8", pl.String()),
        ("Datetime(ms)", pl.Datetime("ms")),
        ("Datetime(us, UTC)", pl.Datetime("us", "UTC")),
        ("List(Datetime(ms, 'Europe/Paris'))", pl.List(pl.Datetime("ms", "Europe/Paris"))),
        ("Decimal(10, 2)", pl.Decimal(10, 2)),
        ("Array(Float32, 3)", pl.Array(pl.Float32, 3)),
        ("Duration(ns)", pl.Duration("ns")),
    ],
)
def test_dtype_names_parse(text: str, dtype: pl.DataType):
    assert parse_dtype(text) == dtype


@pytest.mark.parametrize(
    "text", ["Int63", "Datetime(hours)", "List(Int64", "__import__('os')", "Decimal(a, b)"]
)
def test_bad_dtype_names_are_refused(text: str):
    with pytest.raises(ValueError):
        parse_dtype(text)


def test_a_conforming_frame_has_no_drift():
    assert check_contract(_frame(), CONTRACT) == []
    assert check_contract(_frame().schema, CONTRACT) == []
    assert check_contract(_frame().to_arrow(), CONTRACT) == []


def test_missing_extra_and_changed_columns_are_reported():
    frame = _frame(bids=pl.Series([1.0, 2.0]), region=pl.Series(["eu", "us"])).drop("item")
    drift = check_contract(frame, CONTRACT)
    assert sorted((d.kind, d.column) for d in drift) == [
        ("extra", "region"),
        ("missing", "item"),
        ("type", "bids"),
    ]
    by_kind = {d.kind: d for d in drift}
    assert by_kind["type"].expected == "Int64" and by_kind["type"].actual == "Float64"
    assert "'bids' is Float64, the contract says Int64" in by_kind["type"].message
    assert "'item' (String) is missing" in by_kind["missing"].message


def test_extra_columns_pass_when_allowed():
    frame = _frame(region=pl.Series(["eu", "us"]))
    lenient = CONTRACT.model_copy(update={"allow_extra": True})
    assert check_contract(frame, lenient) == []


def test_a_timestamp_unit_or_zone_change_is_a_type_change_but_a_bare_datetime_accepts_any():
    frame = _frame(window_end=pl.Series([datetime(2026, 1, 1)] * 2, dtype=pl.Datetime("us")))
    assert [d.kind for d in check_contract(frame, CONTRACT)] == ["type"]
    loose = SchemaContract(
        columns=[
            ColumnContract(name="window_end", type="Datetime"),
            ColumnContract(name="item", type="String"),
            ColumnContract(name="bids", type="Int64"),
        ]
    )
    assert check_contract(frame, loose) == []


def test_nulls_in_non_nullable_columns_are_counted_from_frames_not_schemas():
    frame = _frame(bids=pl.Series([None, None], dtype=pl.Int64))
    drift = check_contract(frame, CONTRACT)
    assert [(d.kind, d.column, d.null_rows) for d in drift] == [("nullability", "bids", 2)]
    assert "2 rows are null" in drift[0].message
    lazy = check_contract(frame.lazy(), CONTRACT)
    assert [(d.kind, d.null_rows) for d in lazy] == [("nullability", 2)]
    assert check_contract(frame.schema, CONTRACT) == []  # a schema holds no rows


def test_contract_models_refuse_bad_types_and_duplicates_naming_the_field():
    with pytest.raises(ValidationError) as err:
        SchemaContract.model_validate({"columns": [{"name": "a", "type": "Int65"}]})
    assert err.value.errors()[0]["loc"] == ("columns", 0, "type")
    with pytest.raises(ValidationError, match="declared twice"):
        SchemaContract.model_validate(
            {"columns": [{"name": "a", "type": "Int64"}, {"name": "a", "type": "String"}]}
        )
