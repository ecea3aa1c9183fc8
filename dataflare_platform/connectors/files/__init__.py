"""Files: Parquet / Arrow IPC files (or a folder of them) as a source, one Parquet file
as an at-least-once sink.

    sources: {bids: {kind: file, path: data/nexmark/bids, columns: [auction, date_time]}}
    sink: {kind: file, path: out/hot_items.parquet}

Offsets are row positions in the files' concatenation: dense, with a fixed end, so a
file source suits micro-batch ranges (one range covers it) and bounded runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from dataflare_platform.connectors.files.side_table import FileSideTable, write_side_table
from dataflare_platform.connectors.files.sink import ParquetSink
from dataflare_platform.connectors.files.source import FileSource, nexmark_files
from dataflare_platform.connectors.settings import ConnectorSettings, OpenContext

__all__ = [
    "FileSideTable",
    "FileSink",
    "FileSinkSettings",
    "FileSource",
    "FileSourceSettings",
    "ParquetSink",
    "nexmark_files",
    "open_sink",
    "open_source",
    "write_side_table",
]

FileSink = ParquetSink


class FileSourceSettings(ConnectorSettings):
    kind: Literal["file"] = "file"
    path: Path = Field(
        description="A Parquet/Arrow file, or a folder of them (read in name order)."
    )
    columns: list[str] | None = Field(None, min_length=1, description="Read only these.")
    time_column: str = "date_time"


class FileSinkSettings(ConnectorSettings):
    kind: Literal["file"] = "file"
    path: Path = Field(description="The Parquet file to write (at-least-once).")


def open_source(settings: FileSourceSettings, context: OpenContext) -> FileSource:
    path = settings.path
    files = nexmark_files(path) if path.is_dir() else [path]
    return FileSource(context.name or path.stem, files, settings.time_column, settings.columns)


def open_sink(settings: FileSinkSettings, context: OpenContext) -> ParquetSink:
    return ParquetSink(settings.path)
