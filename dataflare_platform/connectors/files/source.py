"""Files as a source: one partition over an ordered list of Parquet or Arrow IPC files.

An offset is a row's position in the concatenation of the files, so a checkpoint is the
next offset and a restart resumes exactly there. Reads are streamed one row group /
record batch at a time (no loading of whole files), so memory stays bounded by the
batch size.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dataflare_platform.errors import MissingPathError, user_file, user_path


@dataclass
class _FilePiece:
    path: Path
    start: int  # partition offset of the piece's first row
    rows: int
    index: int  # row group (Parquet) or record batch (IPC) within the file


@dataclass
class FileSource:
    """One partition over an ordered list of Parquet or Arrow IPC files.

    Files are read one row group / record batch at a time; ``columns`` limits what is
    read (projection pushdown), which matters for wide Nexmark rows.
    """

    name: str
    paths: Sequence[Path]
    time_column: str = "date_time"
    columns: Sequence[str] | None = None
    _pieces: list[_FilePiece] = field(default_factory=list, init=False, repr=False)
    _starts: list[int] = field(default_factory=list, init=False, repr=False)
    _schema: pa.Schema | None = field(default=None, init=False, repr=False)
    _cache: tuple[int, pa.Table] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.paths = [Path(p) for p in self.paths]
        if not self.paths:
            raise MissingPathError(f"source {self.name!r}: no input files")
        offset = 0
        for path in self.paths:
            with user_file(path, f"source {self.name!r}:"):
                counts = list(_piece_rows(path))
            for index, rows in enumerate(counts):
                self._pieces.append(_FilePiece(path, offset, rows, index))
                self._starts.append(offset)
                offset += rows
        self._end = offset
        with user_file(self.paths[0], f"source {self.name!r}:"):
            schema = _file_schema(self.paths[0])
        if self.columns is not None:
            schema = pa.schema([schema.field(c) for c in self.columns])
        self._schema = schema

    @property
    def schema(self) -> pa.Schema:
        assert self._schema is not None
        return self._schema

    def partitions(self) -> list[str]:
        return ["0"]

    def end_offset(self, partition: str) -> int | None:
        return self._end

    def read(self, partition: str, offset: int, max_rows: int) -> pa.Table:
        parts: list[pa.Table] = []
        wanted = min(max_rows, self._end - offset)
        while wanted > 0:
            i = bisect.bisect_right(self._starts, offset) - 1
            piece_table = self._piece(i)
            skip = offset - self._pieces[i].start
            take = min(wanted, piece_table.num_rows - skip)
            parts.append(piece_table.slice(skip, take))
            offset += take
            wanted -= take
        if not parts:
            return self.schema.empty_table()
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts)

    def _piece(self, i: int) -> pa.Table:
        if self._cache is not None and self._cache[0] == i:
            return self._cache[1]
        piece = self._pieces[i]
        with user_file(piece.path, f"source {self.name!r}:"):
            table = _read_piece(piece.path, piece.index, self.columns)
        self._cache = (i, table)
        return table


def _is_parquet(path: Path) -> bool:
    return path.suffix == ".parquet"


def _piece_rows(path: Path) -> Iterator[int]:
    if _is_parquet(path):
        meta = pq.ParquetFile(path).metadata
        for i in range(meta.num_row_groups):
            yield meta.row_group(i).num_rows
    else:
        # Memory-mapped only to count: batch headers are read, column buffers untouched.
        with pa.memory_map(str(path)) as f:
            reader = pa.ipc.open_file(f)
            counts = [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]
        yield from counts


def _file_schema(path: Path) -> pa.Schema:
    if _is_parquet(path):
        return pq.read_schema(path)
    with pa.OSFile(str(path)) as f:
        return pa.ipc.open_file(f).schema


def _read_piece(path: Path, index: int, columns: Sequence[str] | None) -> pa.Table:
    if _is_parquet(path):
        return pq.ParquetFile(path).read_row_group(index, columns=columns)
    # Memory-mapped and zero-copy: only the pages of the projected columns are touched,
    # and they are released when the batch is dropped.
    batch = pa.ipc.open_file(pa.memory_map(str(path))).get_batch(index)
    table = pa.Table.from_batches([batch])
    return table.select(list(columns)) if columns is not None else table


def nexmark_files(directory: Path) -> list[Path]:
    """Event files of one Nexmark kind (``OUT/bids``), in order."""
    with user_path("Nexmark input directory"):
        entries = list(Path(directory).iterdir())
    return sorted(p for p in entries if p.suffix in (".parquet", ".arrow"))
