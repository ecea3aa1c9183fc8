"""What the connectors' settings share: a strict base model, identifier rules, column
types written as Arrow type names, and the context a source or sink is opened in.

A bad value is refused at construction with a ``ConfigError`` naming the field
(``dataflare_platform.models.validated``), before anything is opened or written."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Self

import pyarrow as pa
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from dataflare_platform.errors import InvalidInputError
from dataflare_platform.models import StrictModel
from dataflare_platform.sql_names import SQL_COLUMN as _SQL_COLUMN
from dataflare_platform.sql_names import SQL_IDENTIFIER as _SQL_IDENTIFIER

if TYPE_CHECKING:
    from dataflare_platform.events.log import EventLog

# The patterns live with the quoting (``sql_names``); re-exported for the connectors.
SQL_IDENTIFIER = _SQL_IDENTIFIER
SQL_COLUMN = _SQL_COLUMN
PG_MAX_IDENTIFIER = 63  # NAMEDATALEN - 1: PostgreSQL silently truncates longer names


class ConnectorSettings(StrictModel):
    """Base of every ``kind:`` settings model of a pipeline's sources and sinks."""

    model_config = ConfigDict(populate_by_name=True)


def _arrow_types(columns: dict[str, str]) -> dict[str, str]:
    if not columns:
        raise InvalidInputError("give at least one column")
    for name, type_name in columns.items():
        arrow_type(type_name, name)
    return columns


def arrow_type(type_name: str, column: str = "") -> pa.DataType:
    """``int64``, ``string``, ``timestamp[ms]``, ``timestamp[us, tz=UTC]``, ... (Arrow's
    own names); ValueError naming the column otherwise."""
    text = type_name.strip()
    if text.startswith("timestamp[") and text.endswith("]") and "," in text:
        unit, _, tz = text[len("timestamp[") : -1].partition(",")
        tz = tz.strip()
        if tz.startswith("tz="):
            try:
                return pa.timestamp(unit.strip(), tz=tz[3:])
            except (ValueError, TypeError):
                pass
    else:
        try:
            return pa.type_for_alias(text)
        except (ValueError, KeyError):
            pass
    where = f"column {column!r}: " if column else ""
    raise InvalidInputError(
        f"{where}unknown type {type_name!r} (Arrow names: int64, float64, string, bool,"
        " timestamp[ms], timestamp[us, tz=UTC], ...)"
    )


# ``{column: arrow type name}``, in column order: the schema of a source that does not
# carry one (brokers, landing directories).
ColumnTypes = Annotated[dict[str, str], AfterValidator(_arrow_types), Field(min_length=1)]


def to_schema(columns: dict[str, str]) -> pa.Schema:
    return pa.schema([(name, arrow_type(t, name)) for name, t in columns.items()])


class RowSchema(BaseModel):
    """Settings of a source whose system does not carry a schema (brokers, landing
    directories): the rows' columns and which one holds event time."""

    model_config = ConfigDict(populate_by_name=True)

    table_schema: ColumnTypes = Field(alias="schema", description="{column: Arrow type}")
    time_column: str = "date_time"

    @model_validator(mode="after")
    def _time_column_in_schema(self) -> Self:
        if self.time_column not in self.table_schema:
            raise ValueError(f"time_column {self.time_column!r} is not a column of the schema")
        return self

    @property
    def arrow_schema(self) -> pa.Schema:
        return to_schema(self.table_schema)


def snapshot_ends(source: Any) -> dict[str, int]:
    """End offset of every partition of a bounded ``source``, which is then closed."""
    try:
        return {p: source.end_offset(p) or 0 for p in source.partitions()}
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


@dataclass(frozen=True)
class OpenContext:
    """Where a pipeline's source or sink is opened: what the settings alone do not say.

    ``name`` keys a source's offsets in checkpoints; ``bounded`` asks a source for a
    fixed end (a snapshot) instead of following new data; ``default_dir`` holds files a
    sink declared without a path (one DuckDB file per pipeline); ``log`` is the embedded
    event log (topic sources and sinks); ``group`` a consumer group whose offsets follow
    the commits (lag in ``dataflare topics describe``); ``partitions`` restricts a
    partitioned source to some of its partitions.
    """

    pipeline: str
    name: str = ""
    bounded: bool = False
    default_dir: Path | None = None
    log: EventLog | None = None
    group: str | None = None
    # Read only these source partitions (a partition-parallel worker's share); None: all.
    # Source kinds that cannot split by partition ignore it (streams.workers refuses them).
    partitions: tuple[int, ...] | None = None

    def for_source(self, name: str) -> OpenContext:
        return OpenContext(
            self.pipeline,
            name,
            self.bounded,
            self.default_dir,
            self.log,
            self.group,
            self.partitions,
        )
