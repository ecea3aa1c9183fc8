"""A landing directory of Parquet / CSV / NDJSON files, each ingested exactly once.

Two ways to consume it:

(a) by hand: ``scan()`` lists new complete files, ``ingest(file)`` decodes one into the
    declared schema plus dead letters, ``mark_done(file, result)`` records it in the
    ledger. Crash between handing the result on and ``mark_done`` and the file comes
    back on the next scan (at-least-once): make the consumer idempotent, or use (b).

(b) as an engine ``Source`` (``LandingDirectorySource``): one partition whose offsets
    are the rows of the files in the order the source first took them. When a file is
    taken, its decoded rows are saved as an Arrow segment in the state folder and the
    ledger records, in one SQLite transaction, the file with its first offset, row
    count, segment and dead letters. Offsets are thus assigned once and stored: after a
    restart the same offset is the same row, new files are appended after the last one
    (dense: each file starts where the previous ends; files taken in one scan are taken
    in name order), and the runner's checkpoint in a transactional sink makes the whole
    path exactly-once. Reads come from the segments, so a landed file may be archived
    or deleted once it is in the ledger. Dead letters of (b) are kept in the ledger
    (``dead_letters()``): the engine's Source protocol carries rows only.

State: ``<landing>/_dataflare/ledger.sqlite`` with ``ledger.segments/`` and
``ledger.lock`` beside it (or beside a ledger path given). The lock lets one process at a
time take files and assign offsets; any number may read. One consumer per ledger: (a)
and (b) on the same ledger would each see the other's files as done.

What counts as a new file: identity is (relative name, size, SHA-256), see the ledger.
The same name with new content is a new file and is ingested again; identical bytes
under a new name are a new file too (landing names are usually unique per delivery).

Half-written files are not taken, by two rules:
- naming: hidden or ``_``-prefixed names and in-progress suffixes (``.tmp``, ``.part``,
  ``._COPYING_`` ...) are ignored: writers should write under such a name and rename,
  which is atomic, when done;
- quiet period: a file modified less than ``settle_s`` ago is left for a later scan, and
  one whose size or mtime changes while it is hashed or read is skipped and retried.

A file is read twice: streamed to hash it when scanned, then whole into memory to
decode it, so landing files should be of batch size (MBs to a few GBs).

Bad input: see ``decode`` (a dead letter per bad record; a file unreadable as a
whole becomes one dead letter and is recorded as ``failed``, so it is not retried; fix
it by landing a corrected file, which has other bytes and so is new).
"""

from __future__ import annotations

import bisect
import errno
import hashlib
import io
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import pyarrow as pa
from pydantic import (
    ConfigDict,
    DirectoryPath,
    Field,
    NonNegativeFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
)

from dataflare_platform.connectors.landing.decode import (
    DEFAULT_MAX_FILE_BYTES,
    FileDecoder,
    file_format,
)
from dataflare_platform.connectors.landing.ledger import Ledger, LedgerEntry
from dataflare_platform.durable import WriterLock, write_atomic
from dataflare_platform.engine import arrays
from dataflare_platform.errors import DataflareError, NotFoundError
from dataflare_platform.events.codec import dead_letters
from dataflare_platform.events.schema_policy import DEFAULT_SCHEMA_POLICY, SchemaPolicy
from dataflare_platform.models import StrictModel, validated
from dataflare_platform.observability.logs import report_dropped

STATE_DIR = "_dataflare"
QUARANTINE_DIR = "quarantine"  # beside the ledger: files that cannot be ingested by name
IN_PROGRESS_SUFFIXES = (
    ".tmp",
    ".temp",
    ".part",
    ".partial",
    ".crdownload",
    ".download",
    ".filepart",
    ".inprogress",
    "._copying_",
)
Format = Literal["parquet", "csv", "ndjson"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LandedFile:
    path: Path
    name: str  # POSIX path relative to the landing directory
    size: int
    mtime_ns: int
    sha256: str
    format: str
    compressed: bool  # gzip


@dataclass
class Ingested:
    """One file decoded: ``rows_in == table.num_rows + dead.num_rows``."""

    file: LandedFile
    table: pa.Table  # the declared schema
    dead: pa.Table  # DEAD_LETTER_SCHEMA: source = file name, partition = checksum prefix
    rows_in: int
    failed: str | None  # set when the file as a whole was unreadable


class FileChangedError(DataflareError, RuntimeError):
    """The file changed (or vanished) since it was scanned: it is not ingested now."""


class LandingSettings(StrictModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    directory: DirectoryPath
    table_schema: pa.Schema = Field(alias="schema")
    ledger: Path | None = Field(None, description="SQLite ledger; default in _dataflare/.")
    settle_s: NonNegativeFloat = Field(2.0, description="Quiet period before a file is taken.")
    formats: frozenset[Format] = frozenset({"parquet", "csv", "ndjson"})
    max_payload_bytes: PositiveInt = 1 << 20
    on_schema_mismatch: SchemaPolicy = DEFAULT_SCHEMA_POLICY
    max_file_bytes: PositiveInt = DEFAULT_MAX_FILE_BYTES

    @field_validator("table_schema")
    @classmethod
    def _not_empty(cls, value: pa.Schema) -> pa.Schema:
        if len(value) == 0:
            raise ValueError("the schema has no fields")
        return value


class SourceSettings(StrictModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: Annotated[str, Field(min_length=1, pattern=r"^[^/]+$")]
    table_schema: pa.Schema
    time_column: str
    follow: bool = False
    scan_interval_s: NonNegativeFloat = 1.0

    @field_validator("time_column")
    @classmethod
    def _a_timestamp_of_the_schema(cls, value: str, info: ValidationInfo) -> str:
        schema = info.data.get("table_schema")
        if schema is None:
            return value
        if value not in schema.names:
            raise ValueError(f"{value!r} is not in the schema {schema.names}")
        if not pa.types.is_timestamp(schema.field(value).type):
            raise ValueError(f"{value!r} is {schema.field(value).type}, not a timestamp")
        return value


class RefusedFileError(DataflareError, RuntimeError):
    """A landing entry that is not a regular file inside the landing folder (a symlink, a
    FIFO, a device, a socket, or a path through a linked folder): never read."""


# O_NOFOLLOW: the last component may not be a symlink (swapped in after the scan);
# O_NONBLOCK: opening a FIFO planted in place of a file must not hang the scan.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def _open_landed(path: Path, root: Path) -> io.BufferedReader:
    """``path`` opened for reading if, at the moment it is opened, it is a regular file
    whose real location is inside ``root`` (the landing folder, resolved); refused with
    ``RefusedFileError`` otherwise. Checked on the open descriptor, so a file replaced by
    a link or a FIFO between the scan and the read is refused, not followed."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise RefusedFileError(f"{path.name}: a symbolic link") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise RefusedFileError(f"{path.name}: not a regular file")
        real = Path(os.path.realpath(path))
        if not real.is_relative_to(root):
            raise RefusedFileError(f"{path.name}: outside the landing folder")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _sha256(path: Path, root: Path) -> str:
    with _open_landed(path, root) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _utf8(name: str) -> bool:
    """False for a name ``os.walk`` decoded with surrogate escapes (not valid UTF-8)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _ignored(name: str) -> bool:
    lower = name.lower()
    return name.startswith((".", "_")) or lower.endswith(IN_PROGRESS_SUFFIXES)


class LandingDirectory:
    """Scan, ingest and record landed files (see the module docstring)."""

    def __init__(
        self,
        directory: Path | str,
        schema: pa.Schema,
        *,
        ledger: Path | str | None = None,
        settle_s: float = 2.0,
        formats: set[str] | None = None,
        max_payload_bytes: int = 1 << 20,
        on_schema_mismatch: str = DEFAULT_SCHEMA_POLICY,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> None:
        values: dict = {
            "directory": directory,
            "schema": schema,
            "ledger": ledger,
            "settle_s": settle_s,
            "max_payload_bytes": max_payload_bytes,
            "on_schema_mismatch": on_schema_mismatch,
            "max_file_bytes": max_file_bytes,
        }
        if formats is not None:
            values["formats"] = formats
        self.settings = validated(LandingSettings, "landing directory settings", values)
        self.directory = Path(self.settings.directory)
        # Every file read must really be inside this folder (links are never followed).
        self.root = Path(os.path.realpath(self.directory))
        self.refused: dict[str, str] = {}  # name -> why it is not read (latest scan)
        # Files moved aside by this object (names not UTF-8): name, where, why.
        self.quarantined: list[dict[str, str]] = []
        self.schema = self.settings.table_schema
        self.ledger_path = self.settings.ledger or self.directory / STATE_DIR / "ledger.sqlite"
        self.ledger = Ledger(self.ledger_path)
        self.decoder = FileDecoder(
            self.schema,
            self.settings.max_payload_bytes,
            self.settings.on_schema_mismatch,
            self.settings.max_file_bytes,
        )

    def close(self) -> None:
        self.ledger.close()

    # -- (a) scan / ingest / mark_done ---------------------------------------------------
    def scan(self) -> list[LandedFile]:
        """New complete files not in the ledger, in name order."""
        settle_ns = int(self.settings.settle_s * 1e9)
        found = []
        for path, name in self._candidates():
            try:
                st = path.stat()
                if time.time_ns() - st.st_mtime_ns < settle_ns:
                    continue  # maybe still being written
                if self.ledger.known_by_stat(name, st.st_size, st.st_mtime_ns):
                    continue
                digest = _sha256(path, self.root)
                again = path.stat()
            except FileNotFoundError:
                continue
            except RefusedFileError as err:
                self._refuse(name, str(err))
                continue
            if (again.st_size, again.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                continue  # written to while hashed: not complete
            if self.ledger.known(name, st.st_size, digest, st.st_mtime_ns):
                continue
            fmt, compressed = file_format(name) or ("", False)
            found.append(
                LandedFile(path, name, st.st_size, st.st_mtime_ns, digest, fmt, compressed)
            )
        return found

    def ingest(self, file: LandedFile) -> Ingested:
        """Decode ``file``; raises FileChangedError if its bytes are not the scanned ones.
        A file larger than ``max_file_bytes`` is not read (it is decoded in memory): it
        is recorded as failed with one dead letter naming its size, and left in place."""
        limit = self.settings.max_file_bytes
        if file.size > limit:
            reason = (
                f"unreadable {file.format} file: {file.size} bytes exceeds max_file_bytes"
                f" ({limit} bytes), left in place"
            )
            dead = dead_letters(file.name, file.sha256[:16], [-1], [reason], [b""])
            return Ingested(file, arrays.empty_table(self.schema), dead, 1, reason)
        try:
            with _open_landed(file.path, self.root) as f:
                data = f.read()
        except FileNotFoundError as err:
            raise FileChangedError(f"{file.name} vanished after the scan") from err
        except RefusedFileError as err:
            self._refuse(file.name, str(err))
            raise FileChangedError(f"{file.name} changed after the scan: {err}") from err
        if len(data) != file.size or hashlib.sha256(data).hexdigest() != file.sha256:
            raise FileChangedError(f"{file.name} changed after the scan")
        decoded = self.decoder.decode(
            data, file.format, file.compressed, source=file.name, partition=file.sha256[:16]
        )
        return Ingested(file, decoded.table, decoded.dead, decoded.rows_in, decoded.failed)

    def mark_done(self, file: LandedFile, result: Ingested | None = None) -> bool:
        """Record ``file`` as ingested (``failed`` if it was unreadable); False if it
        already was. Dead letters stay with the caller (counted here)."""
        return self.ledger.record(
            file.name,
            file.size,
            file.sha256,
            file.mtime_ns,
            rows_in=result.rows_in if result else 0,
            rows_out=result.table.num_rows if result else 0,
            dead=None,
            dead_count=result.dead.num_rows if result else 0,
            failed=result.failed if result else None,
        )

    def entries(self) -> list[LedgerEntry]:
        return self.ledger.entries()

    def dead_letters(self) -> pa.Table:
        """Dead letters recorded by the Source view."""
        return self.ledger.dead_letters()

    def _refuse(self, name: str, reason: str) -> None:
        if self.refused.get(name) != reason:
            # Once per file and reason in this process (a scan meets it again until it is
            # fixed). A state, not an event: a new process warns again, so it is logged
            # with the count but not added to dataflare_data_dropped_total.
            log.warning(
                "landing %s: not read: %s",
                self.directory,
                reason,
                extra={
                    "skipped": 1,
                    "component": "landing",
                    "reason": "file_refused",
                    "source": str(self.directory),
                },
            )
        self.refused[name] = reason

    def _quarantine_name(self, path: Path, name: str) -> None:
        """A file whose name is not valid UTF-8 cannot be a ledger key (SQLite text is
        UTF-8), and leaving it in place would trip every scan: move it into the
        quarantine folder (``<state>/quarantine``, 0700) under a UTF-8 name, and record
        it in the ledger as a failed file with one dead letter naming it (the bytes of
        the name shown with ``\\xNN`` escapes). Rename it to a UTF-8 name and land it
        again to ingest it."""
        shown = os.fsencode(name).decode("utf-8", "backslashreplace")
        folder = self.ledger_path.parent / QUARANTINE_DIR
        try:
            st = path.stat()
            digest = _sha256(path, self.root)
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder.chmod(0o700)
            target = folder / f"{time.time_ns()}-{shown.replace('/', '%2F')}"
            path.rename(target)
        except (OSError, RefusedFileError) as err:
            self._refuse(shown, f"{shown}: file name is not valid UTF-8, not read ({err})")
            return
        reason = (
            f"file name {shown!r} is not valid UTF-8: moved to {target}; rename it to a"
            " UTF-8 name and land it again"
        )
        report_dropped(
            log,
            "landing",
            "file_quarantined",
            1,
            "landing %s: %s",
            self.directory,
            reason,
            source=str(self.directory),
        )
        dead = dead_letters(shown, digest[:16], [-1], [reason], [b""])
        self.ledger.record(
            shown,
            st.st_size,
            digest,
            st.st_mtime_ns,
            rows_in=1,
            rows_out=0,
            dead=dead,
            dead_count=1,
            failed=reason,
        )
        self.quarantined.append({"name": shown, "moved_to": str(target), "reason": reason})

    def _candidates(self) -> list[tuple[Path, str]]:
        """Regular files of the folder tree, by relative name. Symlinks (to files or to
        folders: ``os.walk`` does not follow the latter), FIFOs, devices and sockets are
        refused here by ``lstat``, and again on the open descriptor when read."""
        out = []
        for dirpath, dirnames, filenames in os.walk(self.directory):
            base = Path(dirpath)
            kept = []
            for d in sorted(dirnames):
                if _ignored(d):
                    continue
                if (base / d).is_symlink():
                    self._refuse(
                        (base / d).relative_to(self.directory).as_posix(), f"{d}: a symbolic link"
                    )
                    continue
                kept.append(d)
            dirnames[:] = kept
            for filename in filenames:
                if _ignored(filename):
                    continue
                fmt = file_format(filename)
                if fmt is None or fmt[0] not in self.settings.formats:
                    continue
                path = base / filename
                name = path.relative_to(self.directory).as_posix()
                try:
                    mode = path.lstat().st_mode
                except FileNotFoundError:
                    continue
                if stat.S_ISLNK(mode):
                    self._refuse(name, f"{filename}: a symbolic link")
                    continue
                if not stat.S_ISREG(mode):
                    self._refuse(name, f"{filename}: not a regular file")
                    continue
                if not _utf8(name):
                    self._quarantine_name(path, name)
                    continue
                out.append((path, name))
        return sorted(out, key=lambda item: item[1])


class LandingDirectorySource:
    """The landing directory as an engine ``Source`` with one partition, ``"0"``.

    ``follow=False``: ``end_offset`` takes the files present now and bounds the run to
    them. ``follow=True``: no end; ``read`` looks for new files (at most every
    ``scan_interval_s``) once it has read everything taken so far.
    """

    def __init__(
        self,
        name: str,
        directory: Path | str,
        schema: pa.Schema,
        time_column: str = "date_time",
        *,
        ledger: Path | str | None = None,
        settle_s: float = 2.0,
        follow: bool = False,
        scan_interval_s: float = 1.0,
        formats: set[str] | None = None,
        max_payload_bytes: int = 1 << 20,
        on_schema_mismatch: str = DEFAULT_SCHEMA_POLICY,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> None:
        self.settings = validated(
            SourceSettings,
            "landing source settings",
            {
                "name": name,
                "time_column": time_column,
                "table_schema": schema,
                "follow": follow,
                "scan_interval_s": scan_interval_s,
            },
        )
        self.name = name
        self.time_column = time_column
        self.landing = LandingDirectory(
            directory,
            schema,
            ledger=ledger,
            settle_s=settle_s,
            formats=formats,
            max_payload_bytes=max_payload_bytes,
            on_schema_mismatch=on_schema_mismatch,
            max_file_bytes=max_file_bytes,
        )
        ledger = self.landing.ledger_path  # the segments and lock live beside the ledger
        self.segments_dir = ledger.with_name(f"{ledger.stem}.segments")
        self._assign_lock = WriterLock(ledger.with_name(f"{ledger.stem}.lock"))
        self._mutex = threading.Lock()
        self._starts: list[int] = []  # files with rows only
        self._rows: list[int] = []
        self._segments: list[str] = []
        self._end = 0
        self._last_scan = float("-inf")
        self._cache: tuple[str, pa.Table] | None = None
        self._load()

    # -- Source --------------------------------------------------------------------------
    @property
    def schema(self) -> pa.Schema:
        return self.landing.schema

    def partitions(self) -> list[str]:
        return ["0"]

    def end_offset(self, partition: str) -> int | None:
        self._check(partition)
        if self.settings.follow:
            return None
        self._refresh()
        return self._end

    def read(self, partition: str, offset: int, max_rows: int) -> pa.Table:
        self._check(partition)
        with self._mutex:
            end = self._end
        if offset >= end and self.settings.follow:
            now = time.monotonic()
            if now - self._last_scan >= self.settings.scan_interval_s:
                self._last_scan = now
                self._refresh()
        parts = []
        with self._mutex:
            while max_rows > 0 and offset < self._end:
                i = bisect.bisect_right(self._starts, offset) - 1
                segment = self._segment(self._segments[i])
                skip = offset - self._starts[i]
                take = min(max_rows, self._rows[i] - skip)
                parts.append(segment.slice(skip, take))
                offset += take
                max_rows -= take
        if not parts:
            return arrays.empty_table(self.schema)
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts)

    def close(self) -> None:
        self.landing.close()

    def dead_letters(self) -> pa.Table:
        return self.landing.dead_letters()

    def report(self) -> dict[str, object]:
        """What the ledger says about the files taken so far, for run metadata: counts
        (``rows_in == rows_out + dead_letters``), files refused as a whole, and the
        escaped names of files moved to the quarantine (names not UTF-8)."""
        entries = self.landing.entries()
        failed = [e for e in entries if e.status == "failed"]
        return {
            "files": len(entries),
            "rows_in": sum(e.rows_in for e in entries),
            "rows_out": sum(e.rows_out for e in entries),
            "dead_letters": sum(e.dead for e in entries),
            "files_failed": len(failed),
            "quarantined": [
                e.name for e in failed if e.reason and "is not valid UTF-8: moved to" in e.reason
            ],
        }

    # -- offsets -------------------------------------------------------------------------
    def _check(self, partition: str) -> None:
        if partition != "0":
            raise NotFoundError(f"landing source {self.name!r} has one partition, '0'")

    def _load(self) -> None:
        """The offset map from the ledger; it must be dense (each file starting where
        the previous one ends) or offsets would not mean the same rows as before."""
        starts, rows, segments, end = [], [], [], 0
        for start, count, segment in self.landing.ledger.ranges():
            if start != end:
                raise RuntimeError(
                    f"ledger {self.landing.ledger.path}: a file starts at offset {start},"
                    f" expected {end}: the ledger was edited or mixed up"
                )
            if count:
                starts.append(start)
                rows.append(count)
                segments.append(segment)
            end = start + count
        with self._mutex:
            self._starts, self._rows, self._segments, self._end = starts, rows, segments, end

    def _refresh(self) -> None:
        """Take new files: decode, save the rows as a segment, then record the file and
        its offset range in the ledger (a crash in between leaves a segment that the
        next attempt overwrites, since it gets the same start offset)."""
        self._assign_lock.acquire(timeout_s=60)
        try:
            self._load()  # another process may have taken files meanwhile
            for file in self.landing.scan():
                try:
                    result = self.landing.ingest(file)
                except FileChangedError:
                    continue
                start = self._end
                rows = result.table.num_rows
                segment = f"{start:020d}.arrow" if rows else None
                if segment is not None:
                    self._write_segment(segment, result.table)
                inserted = self.landing.ledger.record(
                    file.name,
                    file.size,
                    file.sha256,
                    file.mtime_ns,
                    rows_in=result.rows_in,
                    rows_out=rows,
                    dead=result.dead,
                    dead_count=result.dead.num_rows,
                    failed=result.failed,
                    start_offset=start,
                    segment=segment,
                )
                if inserted:
                    with self._mutex:
                        if rows:
                            self._starts.append(start)
                            self._rows.append(rows)
                            self._segments.append(segment)
                        self._end = start + rows
        finally:
            self._assign_lock.release()

    def _write_segment(self, name: str, table: pa.Table) -> None:
        self.segments_dir.mkdir(parents=True, exist_ok=True)
        sink = io.BytesIO()
        options = pa.ipc.IpcWriteOptions(compression="zstd")
        with pa.ipc.new_file(sink, table.schema, options=options) as writer:
            writer.write_table(table)
        write_atomic(self.segments_dir / name, sink.getvalue())

    def _segment(self, name: str) -> pa.Table:
        if self._cache is not None and self._cache[0] == name:
            return self._cache[1]
        with pa.OSFile(str(self.segments_dir / name)) as f:
            table = pa.ipc.open_file(f).read_all()
        self._cache = (name, table)
        return table
