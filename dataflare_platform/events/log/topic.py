"""A topic: named, N partitions, one Arrow schema, rows routed by key or in turn."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa

from dataflare_platform.engine import arrays
from dataflare_platform.errors import InvalidInputError, NotFoundError
from dataflare_platform.events.codec import conform
from dataflare_platform.events.log.commits import read_commit
from dataflare_platform.events.log.config import TopicConfig
from dataflare_platform.events.log.partition import Partition
from dataflare_platform.events.log.segments import NO_TIME
from dataflare_platform.observability import instruments

if TYPE_CHECKING:
    import pyarrow.dataset as ds


class TopicNotFoundError(NotFoundError):
    """``TopicNotFoundError(name)``: the message is made from the topic's name."""

    def __str__(self) -> str:
        return f"no topic {self.args[0]!r}"


class Topic:
    def __init__(self, root: Path, config: TopicConfig) -> None:
        self.config = config
        self.name = config.name
        self.dir = Path(root) / config.name
        self.schema = config.schema
        self.parts = [Partition(self.dir, config, i) for i in range(config.partitions)]
        self._next = 0

    def __repr__(self) -> str:
        return f"Topic({self.name!r}, partitions={len(self.parts)})"

    @property
    def time_column(self) -> str:
        return self.config.time_column

    def partition(self, index: int | str) -> Partition:
        i = int(index)
        if not 0 <= i < len(self.parts):
            raise InvalidInputError(f"topic {self.name!r} has no partition {index}")
        return self.parts[i]

    # -- writes --------------------------------------------------------------------------
    def append(
        self,
        data: pa.Table | pa.RecordBatch | pl.DataFrame,
        partition: int | None = None,
        metadata: dict[str, str] | None = None,
    ) -> dict[int, tuple[int, int]]:
        """Append rows; returns {partition: (first offset, end offset)}.

        Rows go to ``partition`` if given, else by hash of the key column, else the whole
        batch to the next partition in turn. Rows that do not fit the schema or have no
        event time are refused with a ValueError (decode and dead-letter before appending).
        """
        table = self._conform(data)
        if table.num_rows == 0:
            return {}
        ranges = self._append(table, partition, metadata)
        exported = instruments()
        if exported is not None:
            appended = exported["dataflare_log_records_appended_total"]
            for p, (first, end) in ranges.items():
                appended.record(end - first, (self.name, str(p)))
        return ranges

    def _append(
        self, table: pa.Table, partition: int | None, metadata: dict[str, str] | None
    ) -> dict[int, tuple[int, int]]:
        n = len(self.parts)
        if partition is not None or n == 1:
            target = 0 if partition is None else partition
            return {target: self.partition(target).append(table, metadata)}
        if self.config.key is None:
            target, self._next = self._next % n, self._next + 1
            return {target: self.parts[target].append(table, metadata)}
        df = pl.from_arrow(table)
        assert isinstance(df, pl.DataFrame)
        ids = (df.get_column(self.config.key).hash(seed=0) % n).to_numpy()
        out = {}
        for i in range(n):
            mask = ids == i
            if mask.any():
                out[i] = self.parts[i].append(table.filter(arrays.booleans(mask)), metadata)
        return out

    def conform(self, data: pa.Table | pa.RecordBatch | pl.DataFrame) -> pa.Table:
        """``data`` in the topic's schema, or ``InvalidInputError`` (what ``append``
        would refuse), without appending: callers check a whole input before writing."""
        return self._conform(data)

    def _conform(self, data: pa.Table | pa.RecordBatch | pl.DataFrame) -> pa.Table:
        if isinstance(data, pl.DataFrame):
            data = data.to_arrow()
        if isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        try:
            table = conform(data, self.schema)
        except ValueError as err:
            raise InvalidInputError(f"topic {self.name!r}: {err}") from err
        nulls = table.column(self.time_column).null_count
        if nulls:
            raise InvalidInputError(f"topic {self.name!r}: {nulls} rows without event time")
        return table

    # -- reads and state -----------------------------------------------------------------
    def start_offsets(self) -> dict[int, int]:
        return {p.index: p.start_offset() for p in self.parts}

    def end_offsets(self) -> dict[int, int]:
        """Physical end per partition (including any uncommitted transactional tail)."""
        return {p.index: p.end_offset() for p in self.parts}

    def committed_ends(self) -> dict[int, int]:
        """What readers may see: the physical end, or for a transactional topic what its
        writer last committed."""
        if not self.config.transactional:
            return self.end_offsets()
        if self.config.commit_topic is not None:
            # A side topic: one partition, its end kept under -1 in the parent's record.
            commit = read_commit(self.dir.parent / self.config.commit_topic)
            return {0: commit.ends.get(-1, 0) if commit else 0}
        commit = read_commit(self.dir)
        return {p.index: commit.ends.get(p.index, 0) if commit else 0 for p in self.parts}

    def read(
        self, partition: int | str, offset: int, max_rows: int, columns: list[str] | None = None
    ) -> pa.Table:
        end = None
        if self.config.transactional:
            end = self.committed_ends()[int(partition)]
        table = self.partition(partition).read(offset, max_rows, columns, end=end)
        exported = instruments()
        if exported is not None and table.num_rows:
            exported["dataflare_log_records_read_total"].record(
                table.num_rows, (self.name, str(partition))
            )
        return table

    def read_all(self, columns: list[str] | None = None) -> pa.Table:
        """Every visible row, partition by partition (small topics, tests, the CLI)."""
        ends = self.committed_ends()
        tables = []
        for p in self.parts:
            start = p.start_offset()
            if ends[p.index] > start:
                tables.append(p.read(start, ends[p.index] - start, columns, end=ends[p.index]))
        if not tables:
            schema = self.schema
            return (
                arrays.empty_table(schema)
                if columns is None
                else arrays.empty_table(pa.schema([schema.field(c) for c in columns]))
            )
        return pa.concat_tables(tables)

    def segment_paths(self, check: bool = True) -> list[Path]:
        """Live segment files of every partition (what ad-hoc scans read). With
        ``check``, each file's checksum is checked (once per process per unchanged file)
        and a damaged one raises ``SegmentDamagedError``: Polars and DuckDB read the
        files directly and can crash or return garbage on damaged bytes."""
        paths = []
        for p in self.parts:
            for seg in p.segments():
                if check:
                    p.checked(seg)
                paths.append(seg.path)
        return paths

    def scan(self) -> pl.LazyFrame:
        """A Polars lazy scan over the topic's files (an ad-hoc query, not a consumer:
        a transactional topic's uncommitted tail is included)."""
        paths = self.segment_paths()
        if not paths:
            return pl.LazyFrame(schema=pl.Schema(self.schema))
        return pl.scan_ipc([str(p) for p in paths])

    def dataset(self) -> ds.Dataset:
        """A pyarrow dataset over the topic's files; DuckDB queries it after
        ``conn.register(name, topic.dataset())``. ``pyarrow.dataset`` is imported here,
        not with the log: it imports pandas (about 1 s), which every code-location load
        (every Dagster run) would pay without using it."""
        import pyarrow.dataset as ds

        return ds.dataset([str(p) for p in self.segment_paths()], schema=self.schema, format="ipc")

    def offsets_for_time(self, start_ms: int, end_ms: int) -> dict[int, tuple[int, int]]:
        """Per partition, the offset range of the segments whose event times overlap
        [start_ms, end_ms): every event of that interval lies inside it (events arrive out
        of order, so the range can hold a few from outside; filter by time after reading)."""
        out: dict[int, tuple[int, int]] = {}
        for p in self.parts:
            hits = [s for s in p.segments() if s.max_time >= start_ms and s.min_time < end_ms]
            if hits:
                out[p.index] = (hits[0].base, hits[-1].end)
        return out

    def describe(self, verify: bool = True) -> dict[str, object]:
        """Offsets, sizes and times per partition, with any gap (offsets with no segment),
        damaged segment (``verify``: each segment's checksum is checked once per
        process) and segments moved aside into the quarantine by recovery."""
        cfg = self.config
        parts = []
        for p in self.parts:
            segs = p.segments()
            timed = [s for s in segs if s.min_time != NO_TIME]
            parts.append(
                {
                    "partition": p.index,
                    "start_offset": segs[0].base if segs else 0,
                    "end_offset": segs[-1].end if segs else 0,
                    "rows": sum(s.rows for s in segs),
                    "segments": len(segs),
                    "bytes": sum(s.size for s in segs),
                    "min_time": min((s.min_time for s in timed), default=None),
                    "max_time": max((s.max_time for s in timed), default=None),
                    "gaps": [list(g) for g in p.gaps()],
                    "damaged": p.damage() if verify else None,
                    "quarantined": [q.relative_to(self.dir).as_posix() for q in p.quarantined()],
                }
            )
        problems = [
            f"partition {p['partition']}: {what}"
            for p in parts
            for what in (
                [f"offsets {a} to {b - 1} missing" for a, b in p["gaps"]]  # type: ignore[attr-defined]
                + [f"{d['segment']} damaged: {d['reason']}" for d in p["damaged"] or []]  # type: ignore[attr-defined]
                + (
                    [f"{len(p['quarantined'])} segment(s) in quarantine"]  # type: ignore[arg-type]
                    if p["quarantined"]
                    else []
                )
            )
        ]
        return {
            "topic": self.name,
            "partitions": cfg.partitions,
            "time_column": cfg.time_column,
            "key": cfg.key,
            "schema": {f.name: str(f.type) for f in self.schema},
            "retention_ms": cfg.retention_ms,
            "retention_bytes": cfg.retention_bytes,
            "transactional": cfg.transactional,
            "rows": sum(p["rows"] for p in parts),  # type: ignore[misc]
            "bytes": sum(p["bytes"] for p in parts),  # type: ignore[misc]
            "problems": problems,
            "partition_details": parts,
        }

    def enforce_retention(self, now_ms: int | None = None) -> int:
        return sum(len(p.enforce_retention(now_ms)) for p in self.parts)

    def compact(self) -> int:
        return sum(p.compact() for p in self.parts)

    def recover(self, full: bool = False) -> list[str]:
        """Recovery of every partition (see :meth:`Partition.recover`)."""
        return [w for p in self.parts for w in p.recover(full)]

    def restore_quarantine(self) -> dict[int, list[dict[str, object]]]:
        """Put intact quarantined segments back (see :meth:`Partition.restore_quarantine`)."""
        return {p.index: p.restore_quarantine() for p in self.parts}
