"""Files as a source: one partition over an ordered list of Parquet or Arrow IPC files.

An offset is a row's position in the concatenation of the files, so a checkpoint is the
next offset and a restart resumes exactly there.

Parquet is decoded ahead of the reader (issue 21 §4): decoding a 1 M-row row group on
the runner's source thread, one row group at a time, left the operators waiting on it
(q2 over one Parquet file ran at 0.2-0.3x one-shot DuckDB). A small pool of daemon
threads decodes the next row groups while the runner consumes the current one; each
row group is decoded once, in slices of about the batch size (``iter_batches``), only
the projected columns, and each worker hands its slices over through a short bounded
queue, so read-ahead memory is bounded by ``workers x (depth + 1)`` slices whatever the
row-group size. pyarrow decodes without the GIL, so the workers run beside the
operators. Arrow IPC pieces are memory-mapped record batches (nothing to decode): among
Parquet files they go through the same ordered stream, and a source of IPC files alone
reads them on the caller's thread.
"""

from __future__ import annotations

import bisect
import collections
import queue
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dataflare_platform.engine import arrays
from dataflare_platform.errors import (
    CorruptInputError,
    DataflareError,
    MissingPathError,
    UserPathError,
    user_file,
    user_path,
)

# Row groups (or IPC record batches) decoded at once, ahead of the reader.
READ_AHEAD_WORKERS = 2
# Decoded slices each worker may hold before the reader takes them.
READ_AHEAD_DEPTH = 4
# Slices are the reader's batch size, but never so small that the per-slice overhead of
# the Parquet reader dominates (batch size 1), nor unbounded.
MIN_SLICE_ROWS = 8_192
MAX_SLICE_ROWS = 1 << 20


@dataclass
class _FilePiece:
    path: Path
    start: int  # partition offset of the piece's first row
    rows: int
    index: int  # row group (Parquet) or record batch (IPC) within the file


@dataclass
class FileSource:
    """One partition over an ordered list of Parquet or Arrow IPC files.

    ``columns`` limits what is decoded (projection pushdown), which matters for wide
    Nexmark rows. ``read_ahead`` row groups are decoded at once on worker threads
    (0: decode on the caller's thread, one piece at a time, as a reference path). Arrow
    IPC alone has nothing to decode (memory-mapped, zero-copy batches): it is read on
    the caller's thread, where handing batches over between threads only cost time."""

    name: str
    paths: Sequence[Path]
    time_column: str = "date_time"
    columns: Sequence[str] | None = None
    read_ahead: int = READ_AHEAD_WORKERS
    _pieces: list[_FilePiece] = field(default_factory=list, init=False, repr=False)
    _starts: list[int] = field(default_factory=list, init=False, repr=False)
    _schema: pa.Schema | None = field(default=None, init=False, repr=False)
    _metadata: dict[Path, pq.FileMetaData] = field(default_factory=dict, init=False, repr=False)
    _stream: _ReadAhead | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.paths = [Path(p) for p in self.paths]
        if not self.paths:
            raise MissingPathError(f"source {self.name!r}: no input files")
        offset = 0
        for path in self.paths:
            with user_file(path, f"source {self.name!r}:"):
                counts = list(self._piece_rows(path))
            for index, rows in enumerate(counts):
                self._pieces.append(_FilePiece(path, offset, rows, index))
                self._starts.append(offset)
                offset += rows
        self._end = offset
        with user_file(self.paths[0], f"source {self.name!r}:"):
            schema = _file_schema(self.paths[0])
        if self.columns is not None:
            self.columns = list(self.columns)
            with user_file(self.paths[0], f"source {self.name!r}:"):
                schema = pa.schema([schema.field(c) for c in self.columns])
        self._schema = schema

    def _piece_rows(self, path: Path) -> Iterator[int]:
        if _is_parquet(path):
            # Kept: each row group's reader is opened from it, not from the footer again.
            meta = self._metadata[path] = pq.ParquetFile(path).metadata
            for i in range(meta.num_row_groups):
                yield meta.row_group(i).num_rows
        else:
            # Memory-mapped only to count: batch headers are read, column buffers untouched.
            with pa.memory_map(str(path)) as f:
                reader = pa.ipc.open_file(f)
                counts = [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]
            yield from counts

    @property
    def schema(self) -> pa.Schema:
        assert self._schema is not None
        return self._schema

    def partitions(self) -> list[str]:
        return ["0"]

    def end_offset(self, partition: str) -> int | None:
        return self._end

    def read(self, partition: str, offset: int, max_rows: int) -> pa.Table:
        wanted = min(max_rows, self._end - offset)
        if wanted <= 0:
            return arrays.empty_table(self.schema)
        stream = self._stream
        if stream is None or stream.offset != offset:
            # First read, or a read elsewhere than where the stream stands (a resume, a
            # re-read): start decoding from there.
            self.close()
            stream = self._stream = self._open_stream(offset, max_rows)
        parts = stream.take(wanted)
        if not parts:
            return arrays.empty_table(self.schema)
        return pa.Table.from_batches(parts)

    def _open_stream(self, offset: int, max_rows: int) -> _ReadAhead:
        first = bisect.bisect_right(self._starts, offset) - 1
        slice_rows = max(MIN_SLICE_ROWS, min(max_rows, MAX_SLICE_ROWS))
        return _ReadAhead(
            f"source {self.name!r}:",
            self._pieces[first:],
            offset,
            offset - self._pieces[first].start,
            self.columns,
            slice_rows,
            self._metadata,
            self.read_ahead if any(_is_parquet(p) for p in self.paths) else 0,
        )

    def close(self) -> None:
        """Stop the read-ahead workers (also done when the source is garbage-collected)."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def _is_parquet(path: Path) -> bool:
    return path.suffix == ".parquet"


def _file_schema(path: Path) -> pa.Schema:
    if _is_parquet(path):
        return pq.read_schema(path)
    with pa.OSFile(str(path)) as f:
        return pa.ipc.open_file(f).schema


def _decode(
    piece: _FilePiece,
    skip: int,
    columns: list[str] | None,
    slice_rows: int,
    metadata: pq.FileMetaData | None,
) -> Iterator[pa.RecordBatch]:
    """The piece's rows from ``skip`` on, in slices of at most ``slice_rows``, each
    decoded once; only ``columns``, in that order."""
    if _is_parquet(piece.path):
        # The row group is decoded page by page into slices, never as a whole; rows
        # before ``skip`` (a resume inside the row group) are decoded and dropped.
        reader = pq.ParquetFile(piece.path, metadata=metadata)
        try:
            batches = reader.iter_batches(
                batch_size=slice_rows, row_groups=[piece.index], columns=columns, use_threads=False
            )
            for batch in batches:
                if skip >= batch.num_rows:
                    skip -= batch.num_rows
                    continue
                if skip:
                    batch, skip = batch.slice(skip), 0
                yield batch.select(columns) if columns is not None else batch
        finally:
            reader.close()
        return
    # Memory-mapped and zero-copy: only the pages of the projected columns are touched,
    # and they are released when the batch is dropped.
    batch = pa.ipc.open_file(pa.memory_map(str(piece.path))).get_batch(piece.index)
    if columns is not None:
        batch = batch.select(columns)
    yield batch.slice(skip) if skip else batch


_DONE = object()  # a piece's last slice has been handed over


class _Failed:
    """What a worker hands over instead of a slice when decoding failed."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _ReadAhead:
    """An ordered stream of decoded slices over ``pieces``, starting ``skip`` rows into
    the first, decoded ahead by ``workers`` daemon threads (each decoding one whole piece
    at a time into its own queue of ``READ_AHEAD_DEPTH`` slices); ``workers=0`` decodes
    on the caller's thread.

    The workers hold no reference to the stream or its source: a source dropped without
    ``close`` (the runner does not close sources) is collected, and its finalizer stops
    them."""

    def __init__(
        self,
        what: str,
        pieces: list[_FilePiece],
        offset: int,
        skip: int,
        columns: list[str] | None,
        slice_rows: int,
        metadata: dict[Path, pq.FileMetaData],
        workers: int,
    ) -> None:
        self.offset = offset  # the next row take() returns
        self._what = what
        self._pieces = collections.deque(pieces)
        self._skip = skip
        self._columns = columns
        self._slice_rows = slice_rows
        self._metadata = metadata
        self._head: pa.RecordBatch | None = None
        # (piece, queue of its slices) for each piece handed to a worker, in order.
        self._pending: collections.deque[tuple[_FilePiece, queue.Queue]] = collections.deque()
        self._stop = threading.Event()
        self._tasks: queue.Queue = queue.Queue()
        self._threads = [
            threading.Thread(
                target=_work, args=(self._tasks, self._stop), name="df-file-decode", daemon=True
            )
            for _ in range(workers)
        ]
        for thread in self._threads:
            thread.start()
        self._inline: Iterator[pa.RecordBatch] | None = None
        self._inline_piece: _FilePiece | None = None
        self._finalizer = weakref.finalize(self, _shutdown, self._stop, self._tasks, workers)
        self._fill()

    def _next_task(self) -> tuple[_FilePiece, Iterator[pa.RecordBatch]]:
        piece = self._pieces.popleft()
        decode = _decode(
            piece, self._skip, self._columns, self._slice_rows, self._metadata.get(piece.path)
        )
        self._skip = 0
        return piece, decode

    def _fill(self) -> None:
        while self._threads and self._pieces and len(self._pending) < len(self._threads):
            piece, decode = self._next_task()
            slices: queue.Queue = queue.Queue(READ_AHEAD_DEPTH)
            self._pending.append((piece, slices))
            self._tasks.put((decode, slices))

    def _next_slice(self) -> pa.RecordBatch | None:
        """The next decoded slice, or None at the end of the pieces."""
        if not self._threads:
            while True:
                if self._inline is None:
                    if not self._pieces:
                        return None
                    self._inline_piece, self._inline = self._next_task()
                assert self._inline_piece is not None
                with _reading(self._what, self._inline_piece):
                    batch = next(self._inline, None)
                if batch is not None:
                    return batch
                self._inline = None
        while self._pending:
            piece, slices = self._pending[0]
            item = slices.get()
            if item is _DONE:
                self._pending.popleft()
                self._fill()
                continue
            if isinstance(item, _Failed):
                self.close()
                with _reading(self._what, piece):
                    raise item.error
            return item
        return None

    def take(self, rows: int) -> list[pa.RecordBatch]:
        """The next ``rows`` rows (fewer at the end), as slices of the decoded ones."""
        parts: list[pa.RecordBatch] = []
        while rows > 0:
            if self._head is None or self._head.num_rows == 0:
                self._head = self._next_slice()
                if self._head is None:
                    break
            n = min(rows, self._head.num_rows)
            parts.append(self._head.slice(0, n))
            self._head = self._head.slice(n)
            rows -= n
            self.offset += n
        return parts

    def close(self) -> None:
        self._finalizer()


def _work(tasks: queue.Queue, stop: threading.Event) -> None:
    """A worker: decodes one piece at a time into that piece's queue, until stopped."""
    while True:
        task = tasks.get()
        if task is None:
            return
        decode, slices = task
        try:
            for batch in decode:
                if not _hand_over(slices, batch, stop):
                    break
            else:
                _hand_over(slices, _DONE, stop)
        except BaseException as err:  # the reader re-raises it, naming the file
            _hand_over(slices, _Failed(err), stop)
        if stop.is_set():
            return


def _hand_over(slices: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put ``item`` once the reader has room for it; False if the stream was stopped."""
    while not stop.is_set():
        try:
            slices.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _shutdown(stop: threading.Event, tasks: queue.Queue, workers: int) -> None:
    stop.set()
    for _ in range(workers):
        tasks.put(None)


@contextmanager
def _reading(what: str, piece: _FilePiece) -> Iterator[None]:
    """Errors while decoding ``piece`` name its file: a file that opened but does not
    decode (a damaged page, a truncated column chunk) is a ``CorruptInputError``."""
    try:
        yield
    except DataflareError:
        raise
    except FileNotFoundError as err:  # gone since the source was opened
        raise UserPathError.from_os_error(err, what, piece.path) from err
    except (ValueError, OSError) as err:
        unit = "row group" if _is_parquet(piece.path) else "record batch"
        raise CorruptInputError(piece.path, f"{what} {unit} {piece.index}: {err}") from err


def nexmark_files(directory: Path) -> list[Path]:
    """Event files of one Nexmark kind (``OUT/bids``), in order."""
    with user_path("Nexmark input directory"):
        entries = list(Path(directory).iterdir())
    return sorted(p for p in entries if p.suffix in (".parquet", ".arrow"))
