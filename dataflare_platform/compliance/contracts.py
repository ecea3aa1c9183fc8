"""Schema contracts: the columns a dataset promises its consumers, and the drift between
that promise and what was actually produced.

Types are written as Polars dtype names (``Int64``, ``Datetime(ms, UTC)``,
``List(String)``) and parsed by a small grammar over an allow-list, never ``eval``: a
contract file is configuration, not code. A parametric type written without parameters
(``Datetime``, ``List``, ``Decimal``) accepts any parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import polars as pl
import pyarrow as pa
from pydantic import field_validator, model_validator

from dataflare_platform.errors import InvalidInputError
from dataflare_platform.models import StrictModel

DType = pl.DataType | type[pl.DataType]

_SIMPLE: dict[str, DType] = {
    "Int8": pl.Int8(),
    "Int16": pl.Int16(),
    "Int32": pl.Int32(),
    "Int64": pl.Int64(),
    "Int128": pl.Int128(),
    "UInt8": pl.UInt8(),
    "UInt16": pl.UInt16(),
    "UInt32": pl.UInt32(),
    "UInt64": pl.UInt64(),
    "Float32": pl.Float32(),
    "Float64": pl.Float64(),
    "Boolean": pl.Boolean(),
    "String": pl.String(),
    "Utf8": pl.String(),
    "Binary": pl.Binary(),
    "Date": pl.Date(),
    "Time": pl.Time(),
    "Null": pl.Null(),
    "Categorical": pl.Categorical(),
    # Parametric types written bare: any parameters match.
    "Datetime": pl.Datetime,
    "Duration": pl.Duration,
    "Decimal": pl.Decimal,
    "List": pl.List,
    "Array": pl.Array,
    "Struct": pl.Struct,
}
_UNITS = ("ms", "us", "ns")


def _split_args(text: str) -> list[str]:
    """Split on the commas of the top nesting level only (``List(Datetime(ms, UTC))``)."""
    parts: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        depth += (char == "(") - (char == ")")
        current += char
    parts.append(current.strip())
    return [p for p in parts if p]


def parse_dtype(text: str) -> DType:
    """A Polars dtype from its name; ValueError names what was not understood."""
    text = text.strip()
    head, sep, rest = text.partition("(")
    head = head.strip()
    if not sep:
        if head in _SIMPLE:
            return _SIMPLE[head]
        raise InvalidInputError(f"unknown type {text!r} (known: {', '.join(sorted(_SIMPLE))})")
    if not rest.endswith(")"):
        raise InvalidInputError(f"unbalanced parentheses in type {text!r}")
    args = [a.strip("'\"") for a in _split_args(rest[:-1])]
    if head in ("Datetime", "Duration"):
        if not args or args[0] not in _UNITS or len(args) > (2 if head == "Datetime" else 1):
            raise InvalidInputError(
                f"{text!r}: expected {head}(ms|us|ns{', time zone' * (head == 'Datetime')})"
            )
        if head == "Duration":
            return pl.Duration(args[0])  # type: ignore[arg-type]
        return pl.Datetime(args[0], args[1] if len(args) == 2 else None)  # type: ignore[arg-type]
    if head == "Decimal":
        if len(args) != 2 or not all(a.isdigit() for a in args):
            raise InvalidInputError(f"{text!r}: expected Decimal(precision, scale)")
        return pl.Decimal(int(args[0]), int(args[1]))
    if head == "List" and len(args) == 1:
        return pl.List(parse_dtype(args[0]))
    if head == "Array" and len(args) == 2 and args[1].isdigit():
        return pl.Array(parse_dtype(args[0]), int(args[1]))
    raise InvalidInputError(f"cannot parse type {text!r}")


def dtype_name(dtype: DType) -> str:
    return dtype.__name__ if isinstance(dtype, type) else str(dtype)


class ColumnContract(StrictModel):
    name: str
    type: str
    nullable: bool = True

    @field_validator("type")
    @classmethod
    def _type_parses(cls, value: str) -> str:
        parse_dtype(value)
        return value

    @property
    def dtype(self) -> DType:
        return parse_dtype(self.type)


class SchemaContract(StrictModel):
    """The promised columns; ``allow_extra`` lets producers add columns without breaking
    the contract (consumers that select by name do not notice them)."""

    columns: list[ColumnContract]
    allow_extra: bool = False

    @model_validator(mode="after")
    def _unique_names(self) -> SchemaContract:
        names = [c.name for c in self.columns]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"columns declared twice: {duplicated}")
        return self


DriftKind = Literal["missing", "extra", "type", "nullability"]


@dataclass(frozen=True)
class SchemaDrift:
    kind: DriftKind
    column: str
    message: str
    expected: str | None = None
    actual: str | None = None
    null_rows: int = 0


SchemaLike = pl.Schema | pa.Schema | Mapping[str, pl.DataType]
DataLike = pl.DataFrame | pl.LazyFrame | pa.Table


def _schema_of(data: SchemaLike | DataLike) -> Mapping[str, pl.DataType]:
    if isinstance(data, pl.DataFrame):
        return data.schema
    if isinstance(data, pl.LazyFrame):
        return data.collect_schema()
    if isinstance(data, pa.Table):
        data = data.schema
    if isinstance(data, pa.Schema):
        empty = pl.from_arrow(data.empty_table())
        assert isinstance(empty, pl.DataFrame)
        return empty.schema
    return data


def _null_counts(data: SchemaLike | DataLike, columns: list[str]) -> dict[str, int]:
    """Nulls per column in one vectorised pass; nothing to count for a bare schema."""
    if not columns:
        return {}
    if isinstance(data, pa.Table):
        return {c: data.column(c).null_count for c in columns}
    if isinstance(data, pl.DataFrame):
        return {c: data.get_column(c).null_count() for c in columns}
    if isinstance(data, pl.LazyFrame):
        counts = data.select(pl.col(columns).null_count()).collect()
        return {c: int(counts.get_column(c)[0]) for c in columns}
    return {}


def check_contract(data: SchemaLike | DataLike, contract: SchemaContract) -> list[SchemaDrift]:
    """Everything that breaks ``contract``: missing columns, extra ones (unless allowed),
    changed types and — when given data rather than a bare schema — nulls in columns
    declared non-nullable. Empty means the data honours the contract."""
    schema = _schema_of(data)
    drift: list[SchemaDrift] = []
    declared = {c.name for c in contract.columns}
    present: list[str] = []
    for column in contract.columns:
        if column.name not in schema:
            drift.append(
                SchemaDrift(
                    "missing",
                    column.name,
                    f"column {column.name!r} ({column.type}) is missing",
                    expected=column.type,
                )
            )
            continue
        actual = schema[column.name]
        if actual != column.dtype:
            drift.append(
                SchemaDrift(
                    "type",
                    column.name,
                    f"column {column.name!r} is {dtype_name(actual)}, the contract says"
                    f" {column.type}",
                    expected=column.type,
                    actual=dtype_name(actual),
                )
            )
        if not column.nullable:
            present.append(column.name)
    if not contract.allow_extra:
        for name, dtype in schema.items():
            if name not in declared:
                drift.append(
                    SchemaDrift(
                        "extra",
                        name,
                        f"column {name!r} ({dtype_name(dtype)}) is not in the contract",
                        actual=dtype_name(dtype),
                    )
                )
    for name, nulls in _null_counts(data, present).items():
        if nulls:
            drift.append(
                SchemaDrift(
                    "nullability",
                    name,
                    f"column {name!r} is declared non-nullable but {nulls} rows are null",
                    expected="not null",
                    null_rows=nulls,
                )
            )
    return drift
