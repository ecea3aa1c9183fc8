"""One partition of a topic: a directory of segments with dense offsets.

Concurrency: appenders serialise on an ``flock`` of the partition's lock file (the next
offset is read from the directory under the lock); readers take no lock, because a
segment appears by atomic rename, whole or not at all. Retention and compaction take the
same lock. A torn or corrupt segment (a power loss before the bytes reached the disk) is
found by its checksum in :meth:`Partition.recover`: it and everything after it are moved
into the topic's quarantine folder with a warning (never served, never deleted;
:meth:`Partition.restore_quarantine` puts intact ones back). Readers check each
segment's checksum the first time this process reads it (``Segment.read_checked``), so
damage after recovery is a ``SegmentDamagedError`` naming the offsets, and a segment
missing in the middle an ``OffsetGapError``.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from dataflare_platform import times
from dataflare_platform.durable import fsync_dir, fsync_file, open_lock_file, write_atomic
from dataflare_platform.engine import arrays
from dataflare_platform.errors import DataflareError, InvalidInputError
from dataflare_platform.events.log.config import TopicConfig
from dataflare_platform.events.log.segments import (
    _VERIFIED,
    NO_TIME,
    SUFFIX,
    Segment,
    SegmentDamagedError,
    list_segments,
    segment_name,
    write_segment,
)
from dataflare_platform.observability.logs import report_dropped

log = logging.getLogger(__name__)

_SETTLE_NS = 50_000_000


QUARANTINE_DIR = "_quarantine"  # <topic>/_quarantine/p00000/<when>/: segments moved aside


class OffsetOutOfRangeError(DataflareError, ValueError):
    pass


class OffsetGapError(DataflareError):
    """Offsets in the middle of a partition have no segment (a file deleted by hand)."""


def _stat_key(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def time_bounds(table: pa.Table, time_column: str) -> tuple[int, int]:
    column = table.column(time_column)
    if column.null_count == len(column):
        return NO_TIME, NO_TIME
    bounds = pc.min_max(column.cast(pa.timestamp("ms")).cast(pa.int64()))
    return bounds["min"].as_py(), bounds["max"].as_py()


class Partition:
    """One partition directory; safe to use from several processes at once."""

    def __init__(self, topic_dir: Path, config: TopicConfig, index: int) -> None:
        self.config = config
        self.schema = config.schema
        self.index = index
        self.dir = topic_dir / f"p{index:05d}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._segments: list[Segment] = []
        self._listed_at = -1
        self._cache: tuple[Path, pa.Table, tuple[int, int, int]] | None = None

    @property
    def name(self) -> str:
        return str(self.index)

    @contextmanager
    def locked(self) -> Iterator[None]:
        with open_lock_file(self.dir / ".lock") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -- index ---------------------------------------------------------------------------
    def segments(self, refresh: bool = True) -> list[Segment]:
        """The live segments. Listing is skipped while the directory's change time
        stands still (every publish, truncation and deletion moves it), so polling the
        tail costs one ``stat``."""
        if refresh or not self._segments:
            stamp = self.dir.stat().st_mtime_ns
            if stamp != self._listed_at or not self._segments:
                self._segments = self._relist()
                # File times tick coarsely (a few ms): a change in the same tick as this
                # listing would not move the stamp, so a listing made while the stamp
                # was recent is not trusted next time.
                settled = time.time_ns() - stamp > _SETTLE_NS
                self._listed_at = stamp if settled else -1
        return self._segments

    def _relist(self) -> list[Segment]:
        """Only names from the newest known segment on are read, when that segment is
        still there unchanged; anything else (truncation, retention) lists everything.
        Older segments replaced by compaction are found when a read misses them."""
        known = self._segments
        if known:
            tail = list_segments(self.dir, from_base=known[-1].base)
            if tail and tail[0] == known[-1]:
                return known[:-1] + tail
        return list_segments(self.dir)

    def start_offset(self) -> int:
        segs = self.segments()
        if segs and not segs[0].path.exists():
            # Retention or compaction elsewhere: the incremental listing only looks
            # forward, so look again from the start.
            self._segments = []
            segs = self.segments()
        return segs[0].base if segs else 0

    def end_offset(self) -> int:
        segs = self.segments()
        return segs[-1].end if segs else 0

    def size_bytes(self) -> int:
        return sum(s.size for s in self.segments())

    # -- writes --------------------------------------------------------------------------
    def append(self, table: pa.Table, metadata: dict[str, str] | None = None) -> tuple[int, int]:
        """Append rows already conformed to the topic schema; returns (first, end)."""
        bounds = time_bounds(table, self.config.time_column)
        with self.locked():
            base = self.end_offset()
            seg = write_segment(self.dir, base, table, bounds, self.config.fsync, metadata=metadata)
        self._segments.append(seg)
        self._listed_at = -1
        return base, seg.end

    def truncate(self, end: int) -> int:
        """Drop every segment at or after ``end`` (used to discard an uncommitted tail;
        ``end`` must be a segment boundary). Returns rows removed."""
        removed = 0
        with self.locked():
            for seg in self.segments():
                if seg.base >= end:
                    seg.path.unlink(missing_ok=True)
                    removed += seg.rows
                elif seg.end > end:
                    raise ValueError(f"offset {end} is inside segment {seg.path.name}")
        self._segments = []
        return removed

    def recover(self, full: bool = False) -> list[str]:
        """Check segments not yet verified (``full``: every segment); move the first bad
        one and every segment after it aside into the quarantine (offsets stay dense:
        the log goes on where the damage began). Returns warnings, including gaps. The
        verified mark only moves past segments flushed to disk."""
        warnings: list[str] = []
        mark_file = self.dir / ".verified"
        with self.locked():
            for tmp in self.dir.glob(".tmp-*"):
                pid = int(tmp.name.split("-")[1]) if tmp.name.split("-")[1].isdigit() else 0
                if not _alive(pid):
                    tmp.unlink(missing_ok=True)
            try:
                mark = int(mark_file.read_text())
            except (OSError, ValueError):
                mark = -1
            segs = list_segments(self.dir)
            verified = -1 if full else mark
            for i, seg in enumerate(segs):
                if not full and seg.base <= mark:
                    continue
                reason = seg.verify()
                if reason is None:
                    fsync_file(seg.path)
                    verified = seg.base
                    continue
                folder = self._quarantine(segs[i:], reason)
                message = (
                    f"topic {self.config.name!r} partition {self.index}: segment"
                    f" {seg.path.name} (offsets {seg.base} to {seg.end - 1}) is damaged"
                    f" ({reason}); moved it and {len(segs) - i - 1} later segment(s), offsets"
                    f" {seg.base} to {segs[-1].end - 1}, aside to {folder}; the log goes on"
                    f" at offset {seg.base}. Intact ones can be put back with"
                    f" `dataflare topics restore-quarantine {self.config.name}`"
                )
                report_dropped(
                    log,
                    "event_log",
                    "segment_quarantined",
                    segs[-1].end - seg.base,
                    "%s",
                    message,
                    topic=self.config.name,
                    partition=self.index,
                )
                warnings.append(message)
                segs = segs[:i]
                break
            for start, end in [
                (a.end, b.base) for a, b in itertools.pairwise(segs) if b.base > a.end
            ]:
                message = (
                    f"topic {self.config.name!r} partition {self.index}: offsets {start} to"
                    f" {end - 1} are missing (a segment file was deleted or moved)"
                )
                # A gap is a state met at every open, not an event: logged with its size
                # each time, never added to dataflare_data_dropped_total (it would grow
                # at every open for one loss).
                log.warning(
                    "%s",
                    message,
                    extra={
                        "missing": end - start,
                        "component": "event_log",
                        "reason": "offsets_missing",
                        "topic": self.config.name,
                        "partition": self.index,
                    },
                )
                warnings.append(message)
            if verified != mark:
                tmp = self.dir / ".verified.tmp"
                tmp.write_text(str(verified))
                tmp.replace(mark_file)
        self._segments = []
        self._cache = None
        return warnings

    # -- reads ---------------------------------------------------------------------------
    def read(
        self,
        offset: int,
        max_rows: int,
        columns: list[str] | None = None,
        end: int | None = None,
    ) -> pa.Table:
        """Up to ``max_rows`` rows from ``offset`` (fewer at the end; empty if none)."""
        limit = offset + max_rows if end is None else min(offset + max_rows, end)
        segs = self._segments
        if not segs or segs[-1].end < limit:
            segs = self.segments()
        if segs and offset < segs[0].base:
            raise OffsetOutOfRangeError(
                f"offset {offset} of topic {self.config.name!r} partition {self.index} was"
                f" removed by retention; the log now starts at {segs[0].base}"
            )
        parts = []
        pos = offset
        for seg in segs:
            if pos >= limit:
                break
            if seg.end <= pos:
                continue
            if seg.base > pos:
                self._gap(pos, seg.base)  # raises, unless the listing was stale:
                return self.read(offset, max_rows, columns, end)  # then with the fresh one
            table = self._read_segment(seg, columns)
            take = min(limit, seg.end) - pos
            parts.append(table.slice(pos - seg.base, take))
            pos += take
        if not parts:
            schema = self.schema
            if columns is not None:
                schema = pa.schema([schema.field(c) for c in columns])
            return arrays.empty_table(schema)
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts)

    def _where(self) -> str:
        return f"topic {self.config.name!r} partition {self.index}: "

    def _gap(self, start: int, end: int) -> None:
        """Offsets [start, end) have no segment: raise, after a full listing confirms it
        (an incremental listing can miss a merged segment published meanwhile)."""
        self._segments = []
        for seg in self.segments():
            if seg.base <= start < seg.end:
                return  # a compaction merged it: the caller's listing was stale
        raise OffsetGapError(
            f"{self._where()}offsets {start} to {end - 1} are missing (a segment file"
            f" was deleted or moved); the log goes on at offset {end}"
        )

    def gaps(self) -> list[tuple[int, int]]:
        """[start, end) ranges with no segment between the first and the last."""
        segs = self.segments()
        return [(a.end, b.base) for a, b in itertools.pairwise(segs) if b.base > a.end]

    def _read_segment(self, seg: Segment, columns: list[str] | None) -> pa.Table:
        if self._cache is not None and self._cache[0] == seg.path:
            table = self._cache[1]
            # A file changed in place since it was read is checked again.
            try:
                changed = self._cache[2] != _stat_key(seg.path)
            except FileNotFoundError:
                changed = False  # compacted or retained: the cached rows are still right
            if changed:
                self._cache = None
                return self._read_segment(seg, columns)
        else:
            try:
                table = self.checked(seg)
                key = _stat_key(seg.path)
            except FileNotFoundError:
                # Replaced by compaction since it was listed (a merged segment holds the
                # same offsets), deleted by retention (the offsets are gone), or deleted
                # by someone else in the middle (a gap).
                self._segments = []
                segs = self.segments()
                merged = next((s for s in segs if s.base <= seg.base < s.end), None)
                if merged is None:
                    if segs and seg.base >= segs[0].base:
                        self._gap(
                            seg.base,
                            min((s.base for s in segs if s.base > seg.base), default=seg.end),
                        )
                    raise OffsetOutOfRangeError(
                        f"offset {seg.base} of topic {self.config.name!r} partition"
                        f" {self.index} was removed by retention; the log now starts at"
                        f" {self.start_offset()}"
                    ) from None
                table = self.checked(merged).slice(seg.base - merged.base, seg.rows)
                key = (-1, -1, -1)
            self._cache = (seg.path, table, key)
        return table.select(columns) if columns is not None else table

    def checked(self, seg: Segment) -> pa.Table:
        try:
            return seg.read_checked()
        except SegmentDamagedError as err:
            raise SegmentDamagedError(
                seg,
                f"{err.reason}; `dataflare topics recover {self.config.name} --all` moves it"
                " and the later segments aside into quarantine",
                self._where(),
            ) from None

    def damage(self) -> list[dict[str, object]]:
        """Segments whose bytes do not match their checksum (each checked once per
        process), with the offsets they hold."""
        out: list[dict[str, object]] = []
        for seg in self.segments():
            reason = seg.check()
            if reason is not None:
                out.append(
                    {"segment": seg.path.name, "offsets": [seg.base, seg.end], "reason": reason}
                )
        return out

    # -- quarantine ----------------------------------------------------------------------
    @property
    def quarantine_dir(self) -> Path:
        return self.dir.parent / QUARANTINE_DIR / self.dir.name

    def quarantined(self) -> list[Path]:
        """Segment files moved aside by recovery, oldest move first."""
        if not self.quarantine_dir.is_dir():
            return []
        return sorted(self.quarantine_dir.glob(f"*/*{SUFFIX}"))

    def _quarantine(self, segs: list[Segment], reason: str) -> Path:
        """Move ``segs`` (the damaged one first) into a new folder of the quarantine,
        with a note of why; never deletes them."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        folder = self.quarantine_dir / f"{stamp}-{os.getpid()}-{segs[0].base:020d}"
        for d in (self.dir.parent / QUARANTINE_DIR, self.quarantine_dir, folder):
            d.mkdir(mode=0o700, exist_ok=True)
            d.chmod(0o700)
        for seg in segs:
            seg.path.replace(folder / seg.path.name)
            _VERIFIED.pop(str(seg.path), None)
        note = {
            "topic": self.config.name,
            "partition": self.index,
            "damaged": segs[0].path.name,
            "reason": reason,
            "moved": [seg.path.name for seg in segs],
            "restore": f"dataflare topics restore-quarantine {self.config.name}",
        }
        write_atomic(folder / "REASON.json", json.dumps(note, indent=2).encode())
        (folder / "REASON.json").chmod(0o600)
        fsync_dir(folder)
        fsync_dir(self.dir)
        return folder

    def restore_quarantine(self) -> list[dict[str, object]]:
        """Put intact quarantined segments back at the end of the partition, oldest
        first. A segment goes back under its own offsets when the partition still ends
        where it began (nothing was appended since), else under the next free offsets
        (its rows are the same, their offsets move: reported). Damaged segments stay in
        the quarantine. Refused for a transactional topic: its writer owns its offsets."""
        if self.config.transactional:
            raise InvalidInputError(
                f"topic {self.config.name!r} is transactional: its quarantined segments"
                " are not restored into it (its pipeline owns its offsets); read them"
                f" from {self.quarantine_dir} with any Arrow IPC reader"
            )
        report: list[dict[str, object]] = []
        with self.locked():
            for path in self.quarantined():
                old = Segment.parse(path)
                if old is None:
                    continue
                reason = old.verify()
                if reason is not None:
                    report.append({"segment": path.name, "restored": False, "reason": reason})
                    continue
                segs = list_segments(self.dir)
                base = segs[-1].end if segs else old.base
                new = segment_name(base, old.rows, old.min_time, old.max_time, old.crc)
                path.replace(self.dir / new)
                report.append(
                    {
                        "segment": path.name,
                        "restored": True,
                        "offsets": [base, base + old.rows],
                        "original_offsets": [old.base, old.end],
                    }
                )
            for folder in (
                sorted(self.quarantine_dir.glob("*")) if self.quarantine_dir.is_dir() else []
            ):
                if folder.is_dir() and not any(folder.glob(f"*{SUFFIX}")):
                    shutil.rmtree(folder)
            fsync_dir(self.dir)
        self._segments = []
        self._cache = None
        return report

    # -- maintenance ---------------------------------------------------------------------
    def enforce_retention(self, now_ms: int | None = None) -> list[Segment]:
        """Delete the oldest segments past the age or size limit. The newest segment is
        always kept: it carries the partition's end offset."""
        cfg = self.config
        now_ms = times.now_ms() if now_ms is None else now_ms
        deleted: list[Segment] = []
        with self.locked():
            segs = list_segments(self.dir)
            total = sum(s.size for s in segs)
            for seg in segs[:-1]:
                too_old = cfg.retention_ms is not None and seg.max_time < now_ms - cfg.retention_ms
                too_big = cfg.retention_bytes is not None and total > cfg.retention_bytes
                if not (too_old or too_big):
                    break
                total -= seg.size
                seg.path.unlink(missing_ok=True)
                deleted.append(seg)
        self._segments = []
        return deleted

    def compact(self) -> int:
        """Merge runs of adjacent small segments into segments of up to ``segment_rows``
        rows. Publish the merged file first, then delete the small ones: readers in
        between see both and prefer the merged one. Returns segments removed."""
        target = self.config.segment_rows
        removed = 0
        with self.locked():
            segs = list_segments(self.dir)
            # Never the newest segment: an appender's next base is read from it.
            run: list[Segment] = []
            for seg in [*segs[:-1], None]:
                if (
                    seg is not None
                    and seg.rows < target
                    and (sum(s.rows for s in run) + seg.rows <= target)
                ):
                    run.append(seg)
                    continue
                if len(run) > 1:
                    self._merge(run)
                    removed += len(run)
                run = [seg] if seg is not None and seg.rows < target else []
        self._segments = []
        self._cache = None
        return removed

    def _merge(self, run: list[Segment]) -> None:
        table = pa.concat_tables([self.checked(s) for s in run]).combine_chunks()
        spans = [(s.min_time, s.max_time) for s in run if s.min_time != NO_TIME]
        bounds = (
            (min(t[0] for t in spans), max(t[1] for t in spans)) if spans else (NO_TIME, NO_TIME)
        )
        write_segment(self.dir, run[0].base, table, bounds, fsync=True)
        for seg in run:
            seg.path.unlink(missing_ok=True)
        fsync_dir(self.dir)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
