"""Segment files: one Arrow IPC file per append, published by atomic rename.

A segment's name carries everything a reader needs without opening it — its first
offset, row count, event-time range and the CRC-32 of its bytes:

    00000000000000000000-0000010000-1700000000000-1700000009999-1a2b3c4d.arrow

so listing a partition directory is its whole index, and the files stay plain Arrow IPC
that DuckDB (through a pyarrow dataset) and Polars (``pl.scan_ipc``) scan directly.
"""

from __future__ import annotations

import io
import os
import re
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from dataflare_platform.durable import fsync_dir
from dataflare_platform.errors import DataflareError

SUFFIX = ".arrow"
_NAME = re.compile(r"^(\d{20})-(\d{10})-(-?\d+)-(-?\d+)-([0-9a-f]{8})\.arrow$")
NO_TIME = -(2**62)  # time bounds of a segment whose time column is all null


@dataclass(frozen=True, order=True)
class Segment:
    base: int  # offset of the first row
    rows: int
    min_time: int  # event time range, epoch ms
    max_time: int
    crc: int
    path: Path

    @property
    def end(self) -> int:
        return self.base + self.rows

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    @classmethod
    def parse(cls, path: Path) -> Segment | None:
        m = _NAME.match(path.name)
        if m is None:
            return None
        base, rows, tmin, tmax, crc = m.groups()
        return cls(int(base), int(rows), int(tmin), int(tmax), int(crc, 16), path)

    def verify(self) -> str | None:
        """None if the bytes match the name's checksum and row count, else the reason.
        Checks the file every time (recovery); readers use :meth:`read_checked`."""
        _VERIFIED.pop(str(self.path), None)
        try:
            self.read_checked()
        except FileNotFoundError as err:
            return f"unreadable: {err}"
        except SegmentDamagedError as err:
            return err.reason
        return None

    def check(self) -> str | None:
        """As :meth:`verify`, but once per process while the file's inode, size and
        modification time stand still (``topics describe``)."""
        try:
            self.read_checked()
        except FileNotFoundError as err:
            return f"unreadable: {err}"
        except SegmentDamagedError as err:
            return err.reason
        return None

    def read(self, columns: list[str] | None = None) -> pa.Table:
        """Memory-mapped, zero-copy: only the pages of the columns used are touched.
        Not checked: :meth:`read_checked` is what readers of the log use."""
        with pa.memory_map(str(self.path)) as source:
            table = pa.ipc.open_file(source).read_all()
        return table.select(columns) if columns is not None else table

    def read_checked(self) -> pa.Table:
        """The segment's rows, memory-mapped, after checking its bytes against the CRC in
        its name -- once per process for a given (inode, size, mtime): later reads of an
        unchanged file cost one ``stat``. A file damaged after it was published (a disk
        error, an edit, a torn copy) raises ``SegmentDamagedError`` naming the segment
        and its offsets instead of reaching the Arrow decoder, whose errors on damaged
        bytes are unpredictable (IndexError, a Rust panic in Polars). Raises
        ``FileNotFoundError`` if the file is gone."""
        st = self.path.lstat()
        if not stat.S_ISREG(st.st_mode):
            # A FIFO would block the open forever, a directory fails inside Arrow, and a
            # link would read whatever it points to: none of them is a segment we wrote.
            raise SegmentDamagedError(self, f"not a regular file ({_file_kind(st.st_mode)})")
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        known = _VERIFIED.get(str(self.path)) == key
        with pa.memory_map(str(self.path)) as source:
            buf = source.read_buffer()
        if not known:
            crc = zlib.crc32(buf)
            if crc != self.crc:
                raise SegmentDamagedError(self, f"checksum mismatch ({buf.size} bytes)")
        try:
            table = pa.ipc.open_file(buf).read_all()
        except Exception as err:  # any decoder failure is damage here
            raise SegmentDamagedError(self, f"not a valid Arrow file: {err}") from None
        if table.num_rows != self.rows:
            raise SegmentDamagedError(self, f"{table.num_rows} rows, name says {self.rows}")
        if not known:
            _VERIFIED[str(self.path)] = key
        return table


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return kind
    return "not a file"


class SegmentDamagedError(DataflareError):
    """A segment's bytes do not match the checksum and row count in its name. The
    message names the file and the offsets it holds; the partition adds the topic."""

    def __init__(self, segment: Segment, reason: str, where: str = "") -> None:
        self.segment = segment
        self.reason = reason
        super().__init__(
            f"{where}segment {segment.path.name} (offsets {segment.base} to"
            f" {segment.end - 1}) is damaged: {reason}"
        )


# Segments whose checksum this process has checked: path -> (inode, size, mtime_ns).
# A file rewritten in place changes its mtime (and usually its size or inode) and is
# checked again; a segment is otherwise immutable once published.
_VERIFIED: dict[str, tuple[int, int, int]] = {}


def forget_verified() -> None:
    """Forget which segments this process has checked (benchmarks, tests)."""
    _VERIFIED.clear()


def segment_name(base: int, rows: int, min_time: int, max_time: int, crc: int) -> str:
    return f"{base:020d}-{rows:010d}-{min_time}-{max_time}-{crc:08x}{SUFFIX}"


def encode(table: pa.Table, metadata: dict[str, str] | None = None) -> bytes:
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    sink = io.BytesIO()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def write_segment(
    directory: Path,
    base: int,
    table: pa.Table,
    time_range: tuple[int, int],
    fsync: bool,
    metadata: dict[str, str] | None = None,
) -> Segment:
    """Write to a temporary name, then rename: a reader sees all of it or nothing."""
    data = encode(table, metadata)
    crc = zlib.crc32(data)
    final = directory / segment_name(base, table.num_rows, *time_range, crc)
    tmp = directory / f".tmp-{os.getpid()}-{base}{SUFFIX}"
    with tmp.open("wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    tmp.replace(final)
    if fsync:
        fsync_dir(directory)
    return Segment(base, table.num_rows, *time_range, crc, final)


def list_segments(directory: Path, from_base: int = 0) -> list[Segment]:
    """Live segments in offset order, from the one starting at ``from_base`` on (names
    before it are skipped on a string compare, which keeps a tail poll cheap on a long
    log). While a compaction is publishing, a merged segment and the small ones it
    replaces can both be listed: the larger one wins."""
    found = []
    first = f"{from_base:020d}"
    with os.scandir(directory) as entries:
        for entry in entries:
            name = entry.name
            if name.endswith(SUFFIX) and name[:20] >= first and not name.startswith("."):
                seg = Segment.parse(Path(entry.path))
                if seg is not None:
                    found.append(seg)
    found.sort(key=lambda s: (s.base, -s.rows))
    live: list[Segment] = []
    for seg in found:
        if live and seg.base < live[-1].end:
            continue  # covered by a merged segment
        live.append(seg)
    return live
