"""A landing directory: Parquet / CSV / NDJSON files dropped into a folder, each ingested
exactly once (see ``directory``).

    sources:
      orders:
        kind: landing
        directory: /data/landing/orders
        schema: {order_id: int64, amount: float64, date_time: "timestamp[ms]"}
        on_schema_mismatch: dead_letter   # or refuse_file, allow_extra
        max_file_bytes: 268435456         # larger files (or .gz inflating past it) fail

Offsets are dense, but they are *assigned* when a file is taken (a write to the ledger),
so there is no end to read without ingesting: landing sources run continuously (new
files are picked up every ``scan_interval_s``) or bounded by hand, not in sensor ranges.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, NonNegativeFloat, PositiveInt

from dataflare_platform.connectors.landing.decode import DEFAULT_MAX_FILE_BYTES
from dataflare_platform.connectors.landing.directory import (
    Format,
    LandingDirectory,
    LandingDirectorySource,
)
from dataflare_platform.connectors.settings import ConnectorSettings, OpenContext, RowSchema
from dataflare_platform.events.schema_policy import DEFAULT_SCHEMA_POLICY, SchemaPolicy

__all__ = [
    "LandingDirectory",
    "LandingDirectorySource",
    "LandingSourceSettings",
    "open_source",
]


class LandingSourceSettings(ConnectorSettings, RowSchema):
    kind: Literal["landing"] = "landing"
    directory: Path
    ledger: Path | None = Field(None, description="SQLite ledger; default in _dataflare/.")
    settle_s: NonNegativeFloat = Field(2.0, description="Quiet period before a file is taken.")
    scan_interval_s: NonNegativeFloat = 1.0
    formats: list[Format] | None = Field(None, min_length=1)
    max_payload_bytes: PositiveInt = 1 << 20
    on_schema_mismatch: SchemaPolicy = Field(
        DEFAULT_SCHEMA_POLICY,
        description="Records with unknown or missing fields: dead_letter, refuse_file (the"
        " whole file) or allow_extra (ignore unknown fields, dead-letter missing ones).",
    )
    max_file_bytes: PositiveInt = Field(
        DEFAULT_MAX_FILE_BYTES,
        description="Largest file, and largest a .gz may inflate to (decoded in memory);"
        " a larger one is recorded failed with a dead letter and left in place.",
    )


def open_source(settings: LandingSourceSettings, context: OpenContext) -> LandingDirectorySource:
    s = settings
    return LandingDirectorySource(
        context.name or s.directory.name,
        s.directory,
        s.arrow_schema,
        s.time_column,
        ledger=s.ledger,
        settle_s=s.settle_s,
        follow=not context.bounded,
        scan_interval_s=s.scan_interval_s,
        formats=set(s.formats) if s.formats else None,
        max_payload_bytes=s.max_payload_bytes,
        on_schema_mismatch=s.on_schema_mismatch,
        max_file_bytes=s.max_file_bytes,
    )
