"""A Hive-partitioned Parquet dataset sink with exactly-once commits.

Layout (readable by ``duckdb.read_parquet('root/**/*.parquet', hive_partitioning=true)``
and ``pl.scan_parquet('root/**/*.parquet', hive_partitioning=True)``)::

    root/date=2026-01-01/part-00000007-0000.parquet   # commit 7, its first file
    root/date=2026-01-02/part-00000007-0001.parquet
    root/_dataflare/manifest.json                     # the last commit: the truth
    root/_dataflare/side/side-00000007.arrow          # late rows and dead letters
    root/_dataflare/lock                              # one writer at a time

The partition value is the UTC calendar date of ``time_column`` (rows with no time go to
``date=__HIVE_DEFAULT_PARTITION__``); the partition column is in the path, not the file.
With ``hour_partition`` (say ``hh``) each date folder is split by the UTC hour, two
digits: ``root/date=2026-01-01/hh=07/part-00000007-0000.parquet``.

Commit protocol (sequence number N = last committed + 1):

1. stage: every file of the commit is written and fsynced under a hidden temporary name
   (``.part-N-k.parquet.tmp``), which no ``*.parquet`` glob matches;
2. commit point: ``manifest.json`` is replaced atomically (write temporary, fsync,
   rename, fsync the directory) with N, the checkpoint, the files N adds and the files
   N removes (only ``replace_partitions`` removes);
3. publish: the temporary files are renamed to their final names and removed files are
   deleted.

``open()`` recovers: it finishes step 3 for the committed manifest (roll forward), then
deletes every file of ours with a sequence number above N, and every temporary file
(orphans of a commit that crashed before its manifest). Readers therefore never see
output of an uncommitted commit under a final name, and after ``open()`` the dataset
holds exactly the commits up to N, the checkpoint's commits. Files not named like ours
are never touched.

Replay: ``replace_partitions(frame, dates)`` swaps whole date partitions for new content
in one commit (the manifest removes the old files and adds the new ones), which is what
a replay needs to be idempotent: replaying a day twice leaves that day's rows once.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, NonNegativeFloat, field_validator

from dataflare_platform.connectors.settings import ConnectorSettings
from dataflare_platform.durable import WriterLock, fsync_dir, fsync_file, write_atomic
from dataflare_platform.engine.checkpoint import STORED_COMPRESSION, Checkpoint
from dataflare_platform.engine.io import TransactionalSink
from dataflare_platform.engine.sinks import SIDE_SCHEMA
from dataflare_platform.errors import (
    ConflictError,
    CorruptInputError,
    InvalidInputError,
    MissingPathError,
)
from dataflare_platform.models import validated

STATE_DIR = "_dataflare"
MANIFEST = "manifest.json"
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
_PART = re.compile(r"^part-(\d{8})-(\d{4})\.parquet$")
_SIDE = re.compile(r"^side-(\d{8})\.arrow$")
_TMP = re.compile(r"^\.(part-\d{8}-\d{4}\.parquet|side-\d{8}\.arrow)\.tmp$")
_FORMAT = 1


class ParquetDatasetSettings(ConnectorSettings):
    kind: Literal["parquet_dataset"] = "parquet_dataset"
    root: Path
    time_column: str = Field("date_time", min_length=1)
    partition_by: str = Field("date", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    hour_partition: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    compression: Literal["zstd", "snappy", "lz4", "gzip", "none"] = "zstd"
    fsync: bool = True
    lock_timeout_s: NonNegativeFloat = 30.0

    @field_validator("root")
    @classmethod
    def _a_directory(cls, value: Path) -> Path:
        if value.exists() and not value.is_dir():
            raise ValueError(f"{value} exists and is not a directory")
        return value


@dataclass
class Manifest:
    """The last commit. ``added``/``removed`` are root-relative POSIX paths."""

    seq: int = 0
    pipeline: str | None = None
    schema: pa.Schema | None = None
    checkpoint: bytes | None = None
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def encode(self) -> bytes:
        schema = None if self.schema is None else self.schema.serialize().to_pybytes()
        return json.dumps(
            {
                "format": _FORMAT,
                "seq": self.seq,
                "pipeline": self.pipeline,
                "schema": _b64(schema),
                "checkpoint": _b64(self.checkpoint),
                "added": self.added,
                "removed": self.removed,
                "committed_at": dt.datetime.now(dt.UTC).isoformat(),
            },
            indent=1,
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        meta = json.loads(data)
        if meta.get("format") != _FORMAT:
            raise ValueError(f"unknown dataset manifest format {meta.get('format')!r}")
        schema = _unb64(meta["schema"])
        return cls(
            seq=int(meta["seq"]),
            pipeline=meta["pipeline"],
            schema=None if schema is None else pa.ipc.read_schema(pa.py_buffer(schema)),
            checkpoint=_unb64(meta["checkpoint"]),
            added=list(meta["added"]),
            removed=list(meta["removed"]),
        )


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


class ParquetDatasetSink(TransactionalSink):
    """Output as a date-partitioned Parquet dataset; side rows as Arrow files in the
    state folder (a ``*.parquet`` glob over the root never picks them up)."""

    def __init__(
        self,
        root: Path | str,
        time_column: str = "date_time",
        partition_by: str = "date",
        *,
        compression: str = "zstd",
        fsync: bool = True,
        lock_timeout_s: float = 30.0,
        hour_partition: str | None = None,
    ) -> None:
        self.settings = validated(
            ParquetDatasetSettings,
            "Parquet dataset sink settings",
            {
                "root": root,
                "time_column": time_column,
                "partition_by": partition_by,
                "compression": compression,
                "fsync": fsync,
                "lock_timeout_s": lock_timeout_s,
                "hour_partition": hour_partition,
            },
        )
        self.root = Path(self.settings.root)
        self.state_dir = self.root / STATE_DIR
        self._lock = WriterLock(self.state_dir / "lock")
        self._mutex = threading.Lock()  # commit() vs replace_partitions() from another thread
        self._manifest = Manifest()
        self._pipeline: str | None = None

    # -- Sink ----------------------------------------------------------------------------
    def open(self, pipeline: str) -> Checkpoint | None:
        with self._mutex:
            self.discard_pending()
            self._acquire()
            if self._manifest.pipeline not in (None, pipeline):
                self._release()
                raise InvalidInputError(
                    f"{self.root} holds the output of pipeline {self._manifest.pipeline!r},"
                    f" not {pipeline!r}: one pipeline per dataset"
                )
            self._pipeline = pipeline
            data = self._manifest.checkpoint
            return None if data is None else Checkpoint.decode(data)

    def commit_batch(
        self, output: pl.DataFrame | None, side: pl.DataFrame | None, checkpoint: Checkpoint
    ) -> None:
        with self._mutex:
            assert self._lock.held, "open() first"
            seq = self._manifest.seq + 1
            schema = self._manifest.schema
            added: list[str] = []
            if output is not None:
                table, schema = self._conform(output.to_arrow(), schema)
                added += self._stage_output(table, seq)
            if side is not None:
                added.append(self._stage_side(side.to_arrow(), seq))
            self._commit(
                Manifest(
                    seq,
                    self._pipeline,
                    schema,
                    checkpoint.encode(STORED_COMPRESSION),
                    added,
                    removed=[],
                )
            )

    def close(self) -> None:
        with self._mutex:
            self._release()

    # -- replay --------------------------------------------------------------------------
    def replace_partitions(
        self, frame: pl.DataFrame | pa.Table, dates: list[dt.date | str] | None = None
    ) -> list[str]:
        """Atomically replace whole partitions: every committed file of each date in
        ``frame`` (and of each date in ``dates``, which may end up empty) goes, and
        ``frame``'s rows come, in one commit. Idempotent, so a replay may run twice.
        The stream's checkpoint is kept as it is.

        Call it on dates the stream has finished (behind its watermark): rows the stream
        writes into a replaced date afterwards are appended to the new content. Works on
        an open sink (another thread may be committing) or a closed one. Returns the
        partition values replaced."""
        with self._mutex:
            opened_here = not self._lock.held
            if opened_here:
                self._acquire()
            try:
                table = frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame
                table, schema = self._conform(table, self._manifest.schema)
                values = set(self._partition_values(table).unique().to_list())
                values |= {d if isinstance(d, str) else d.isoformat() for d in dates or []}
                removed = [
                    p for v in sorted(values) for p in self._committed_files(v, self._manifest.seq)
                ]
                seq = self._manifest.seq + 1
                added = self._stage_output(table, seq) if table.num_rows else []
                m = self._manifest
                self._commit(Manifest(seq, m.pipeline, schema, m.checkpoint, added, removed))
                return sorted(values)
            finally:
                if opened_here:
                    self._release()

    # -- reading -------------------------------------------------------------------------
    def committed_files(self) -> list[Path]:
        """Data files of the committed dataset, in commit order (after ``open()``)."""
        return sorted(
            (p for p in self._data_entries() if _PART.match(p.name)),
            key=lambda p: p.name,
        )

    def _data_entries(self) -> list[Path]:
        """Every entry inside the partition folders (one level, or two with hours)."""
        if self.settings.hour_partition:
            return list(self.root.glob("*=*/*=*/*"))
        return list(self.root.glob("*=*/*"))

    def read_side(self) -> pl.DataFrame:
        files = sorted((self.state_dir / "side").glob("side-*.arrow"))
        frames = [_read_ipc(f) for f in files if _SIDE.match(f.name)]
        return pl.concat(frames) if frames else pl.DataFrame(schema=SIDE_SCHEMA)

    # -- protocol ------------------------------------------------------------------------
    def _acquire(self) -> None:
        """Take the writer lock (if not held) and recover to the last commit."""
        if not self._lock.held:
            self.root.mkdir(parents=True, exist_ok=True)
            self._lock.acquire(self.settings.lock_timeout_s)
        try:
            self._recover()
        except BaseException:
            self._lock.release()
            raise

    def _release(self) -> None:
        self._lock.release()

    def _recover(self) -> None:
        path = self.state_dir / MANIFEST
        if path.exists():
            try:
                self._manifest = Manifest.decode(path.read_bytes())
            except (ValueError, KeyError) as err:
                raise CorruptInputError(path, f"unreadable dataset manifest ({err})") from err
        else:
            ours = [p for p in self._data_entries() if _PART.match(p.name)]
            if ours:  # never delete files this sink did not commit
                raise ConflictError(
                    f"{self.root} holds part files ({ours[0].name}, ...) but no"
                    f" {STATE_DIR}/{MANIFEST}: not a dataset written by this sink"
                )
            self._manifest = Manifest()
        self._publish(self._manifest)  # roll the last commit forward
        committed = self._manifest.seq
        for p in [*self._data_entries(), *(self.state_dir / "side").glob("*")]:
            name = p.name
            part, side = _PART.match(name), _SIDE.match(name)
            orphan = (
                _TMP.match(name) is not None
                or (part is not None and int(part.group(1)) > committed)
                or (side is not None and int(side.group(1)) > committed)
            )
            if orphan:
                p.unlink(missing_ok=True)
        for d in [*self.root.glob("*=*/*=*"), *self.root.glob("*=*")]:
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        _tmp(path).unlink(missing_ok=True)

    def _commit(self, manifest: Manifest) -> None:
        """Step 2 (the commit point) and step 3; a failure in step 3 is finished by the
        next recovery, so the sink re-runs it before going on."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.state_dir / MANIFEST, manifest.encode(), self.settings.fsync)
        self._manifest = manifest
        try:
            self._publish(manifest)
        except BaseException:
            self._recover()
            raise

    def _publish(self, manifest: Manifest) -> None:
        touched: set[Path] = set()
        for rel in manifest.added:
            final = self.root / rel
            staged = _tmp(final)
            if staged.exists():
                staged.replace(final)
                touched.add(final.parent)
            elif not final.exists():
                raise MissingPathError(
                    f"{final}: committed by {self.state_dir / MANIFEST} (commit"
                    f" {manifest.seq}) but missing: the dataset was changed by hand"
                )
        for rel in manifest.removed:
            path = self.root / rel
            if path.exists():
                path.unlink()
                touched.add(path.parent)
        if self.settings.fsync:
            for d in touched:
                fsync_dir(d)

    def _stage_output(self, table: pa.Table, seq: int) -> list[str]:
        """Step 1 for output: one hidden file per partition value, in value order."""
        keyed = pl.DataFrame({"value": self._partition_values(table)}).with_row_index("row")
        keyed = keyed.sort("value", maintain_order=True)  # stable: rows keep their order
        table = table.take(keyed.get_column("row").to_arrow())
        added = []
        start = 0
        counts = keyed.group_by("value", maintain_order=True).len()
        for n, (value, rows) in enumerate(counts.iter_rows()):
            rel = f"{self.settings.partition_by}={value}/part-{seq:08d}-{n:04d}.parquet"
            self._stage(rel, table.slice(start, rows), parquet=True)
            added.append(rel)
            start += rows
        return added

    def _stage_side(self, table: pa.Table, seq: int) -> str:
        rel = f"{STATE_DIR}/side/side-{seq:08d}.arrow"
        self._stage(rel, table, parquet=False)
        return rel

    def _stage(self, rel: str, table: pa.Table, parquet: bool) -> None:
        final = self.root / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        staged = _tmp(final)
        if parquet:
            compression = self.settings.compression
            pq.write_table(
                table, staged, compression=None if compression == "none" else compression
            )
        else:
            with pa.OSFile(str(staged), "wb") as f, pa.ipc.new_file(f, table.schema) as w:
                w.write_table(table)
        if self.settings.fsync:
            fsync_file(staged)
            fsync_dir(final.parent)

    def _partition_values(self, table: pa.Table) -> pl.Series:
        time_col = self.settings.time_column
        column = pl.from_arrow(table.select([time_col])).to_series()
        if column.dtype == pl.Date:
            dates = column
        elif isinstance(column.dtype, pl.Datetime):
            tz = column.dtype.time_zone
            dates = (column.dt.convert_time_zone("UTC") if tz else column).dt.date()
        else:
            raise InvalidInputError(
                f"time column {time_col!r} is {column.dtype}, not a date or time"
            )
        values = dates.dt.strftime("%Y-%m-%d").fill_null(NULL_PARTITION)
        hour = self.settings.hour_partition
        if hour:  # "<date>/<hour_partition>=<HH>": the path below partition_by=
            times = column.dt.convert_time_zone("UTC") if column.dtype.time_zone else column
            hours = times.dt.strftime("%H").fill_null(NULL_PARTITION)
            values = values + f"/{hour}=" + hours
        return values.alias("partition")

    def _conform(self, table: pa.Table, schema: pa.Schema | None) -> tuple[pa.Table, pa.Schema]:
        """Every file of the dataset in one schema (the first commit's), so readers can
        union them; the partition column lives only in the path."""
        s = self.settings
        if s.time_column not in table.column_names:
            raise InvalidInputError(f"output has no time column {s.time_column!r} to partition by")
        for column in (s.partition_by, s.hour_partition):
            if column and column in table.column_names:
                raise InvalidInputError(
                    f"output has a column {column!r}: it would clash with the partition"
                )
        if schema is None:
            return table, table.schema
        if set(table.column_names) != set(schema.names):
            raise InvalidInputError(
                f"output columns {table.column_names} differ from the dataset's {schema.names}"
            )
        return table.select(schema.names).cast(schema), schema

    def _committed_files(self, value: str, seq: int) -> list[str]:
        directory = self.root / f"{self.settings.partition_by}={value}"
        if not directory.is_dir():
            return []
        # A date with hour folders: replacing the date replaces every hour of it.
        files = directory.rglob("part-*.parquet") if "/" not in value else directory.iterdir()
        return [
            p.relative_to(self.root).as_posix()
            for p in sorted(files)
            if (m := _PART.match(p.name)) and int(m.group(1)) <= seq
        ]


def _read_ipc(path: Path) -> pl.DataFrame:
    with pa.OSFile(str(path)) as f:
        return pl.from_arrow(pa.ipc.open_file(f).read_all())
