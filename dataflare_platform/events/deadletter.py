"""Dead-letter topics: topic ``T`` keeps the records that could not be decoded into it (or
that a router could not place) in ``T.dlq``, raw, so that they can be read, fixed and
re-driven instead of being lost or blocking the stream.

A dead-letter topic is an ordinary topic (``DEAD_LETTER_SCHEMA``, event time
``received_at``, one partition): several processes append to it safely, retention
applies, and Polars or DuckDB scan it like any other. It is created on the first write.

Re-drive decodes the raw payloads again (after an optional user ``fix``) and appends the
ones that now decode to ``T``. It is idempotent: the DLQ offsets already re-driven are
recorded in a ledger (``_redriven.sqlite`` beside the DLQ's segments), so re-driving the
same range twice appends nothing the second time, and concurrent re-drives serialise on
a lock. The ledger is written right after the append: a crash between the two re-drives
those rows again on the next run (at-least-once, like the rest of the log). Dead
letters are never deleted by a re-drive; the ledger only marks them done, so that

    rows in T + dead letters not re-driven == records produced.
"""

from __future__ import annotations

import fcntl
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from dataflare_platform.durable import open_lock_file
from dataflare_platform.engine import arrays
from dataflare_platform.errors import InvalidInputError, NotFoundError
from dataflare_platform.events.codec import (
    DEAD_LETTER_SCHEMA,
    Decoded,
    JsonDecoder,
    dead_letters,
)
from dataflare_platform.events.log import EventLog, Topic

DLQ_SUFFIX = ".dlq"
PREVIEW_BYTES = 80
_LEDGER = "_redriven.sqlite"
_LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS redriven (
    dlq_offset INTEGER PRIMARY KEY,
    redriven_at REAL NOT NULL
)
"""


def dlq_name(topic: str) -> str:
    return f"{topic}{DLQ_SUFFIX}"


class Decoder(Protocol):
    """What re-drive needs of a decoder (``JsonDecoder`` is one)."""

    schema: pa.Schema

    def decode(
        self, payloads: Sequence[bytes], offsets: Sequence[int], source: str, partition: str = "0"
    ) -> Decoded: ...


def decode_for_topic(
    topic: Topic,
    decoder: Decoder,
    payloads: Sequence[bytes],
    offsets: Sequence[int],
    source: str,
    partition: str,
) -> Decoded:
    """Decode, then also dead-letter the records the topic would refuse for having no
    event time (the decoder does not know which column that is, and a nullable time
    column lets them through): what is returned as good always appends.

    The decoder sees positions, not ``offsets``, so that duplicate source offsets (two
    files' line 1) cannot confuse which payload a record came from."""
    decoded = decoder.decode(payloads, range(len(payloads)), source, partition)
    table, good, dead = decoded.table, list(decoded.offsets), decoded.dead
    times = table.column(topic.time_column)
    if times.null_count:
        untimed = arrays.to_numpy(pc.is_null(times))
        late = [p for p, bad in zip(good, untimed, strict=True) if bad]
        reason = f"missing or null event time {topic.time_column!r}"
        extra = dead_letters(
            source, partition, late, [reason] * len(late), [payloads[p] for p in late]
        )
        dead = pa.concat_tables([dead, extra])
        dead = dead.take(pc.sort_indices(dead.column("offset")))
        table = table.filter(arrays.booleans(~untimed))
        good = [p for p, bad in zip(good, untimed, strict=True) if not bad]
    at = dead.schema.get_field_index("offset")
    real = arrays.from_pylist([offsets[p] for p in dead.column("offset").to_pylist()], pa.int64())
    return Decoded(
        table, dead.set_column(at, dead.schema.field(at), real), [offsets[p] for p in good]
    )


class NoSuchDeadLetterError(NotFoundError):
    """No dead letter at the offset a user gave."""


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter with its full payload (``DeadLetters.show``)."""

    dlq_offset: int
    source: str
    partition: str
    offset: int
    reason: str
    payload: bytes
    received_at: datetime
    redriven: bool


@dataclass
class RedriveResult:
    considered: int = 0  # dead letters examined (not yet re-driven, in the range)
    redriven: int = 0  # appended to the topic
    skipped: int = 0  # in the range but re-driven before
    failures: dict[int, str] = field(default_factory=dict)  # DLQ offset -> why still dead

    @property
    def still_dead(self) -> int:
        return len(self.failures)

    def as_dict(self) -> dict[str, object]:
        return {
            "considered": self.considered,
            "redriven": self.redriven,
            "still_dead": self.still_dead,
            "skipped": self.skipped,
        }


class DeadLetters:
    """The dead-letter topic of ``topic`` (which need not exist to be read: an absent
    DLQ is an empty one)."""

    def __init__(self, log: EventLog, topic: str | Topic) -> None:
        self.log = log
        self.topic_name = topic if isinstance(topic, str) else topic.name
        self.name = dlq_name(self.topic_name)

    def __repr__(self) -> str:
        return f"DeadLetters({self.name!r})"

    # -- the DLQ topic -------------------------------------------------------------------
    def exists(self) -> bool:
        return self.log.exists(self.name)

    def dlq(self) -> Topic:
        """The DLQ topic, created on first use."""
        if self.log.exists(self.name):
            return self.log.topic(self.name)
        return self.log.create_topic(
            self.name, DEAD_LETTER_SCHEMA, time_column="received_at", exist_ok=True
        )

    def write(self, dead: pa.Table | pl.DataFrame) -> range:
        """Append dead letters (``DEAD_LETTER_SCHEMA`` rows); returns their DLQ offsets."""
        rows = dead.num_rows if isinstance(dead, pa.Table) else dead.height
        if rows == 0:
            return range(0)
        ((first, end),) = self.dlq().append(dead, partition=0).values()
        return range(first, end)

    def _bounds(self) -> tuple[int, int]:
        if not self.exists():
            return 0, 0
        part = self.dlq().partition(0)
        return part.start_offset(), part.end_offset()

    # -- reading -------------------------------------------------------------------------
    def count(self, include_redriven: bool = False) -> int:
        """Dead letters still to deal with (or all of them ever written and retained)."""
        start, end = self._bounds()
        if include_redriven or start == end:
            return end - start
        with self._ledger() as conn:
            (done,) = conn.execute(
                "SELECT count(*) FROM redriven WHERE dlq_offset >= ? AND dlq_offset < ?",
                (start, end),
            ).fetchone()
        return end - start - done

    def list(
        self,
        limit: int = 20,
        reason_like: str | None = None,
        start: int | None = None,
        include_redriven: bool = True,
    ) -> pl.DataFrame:
        """Up to ``limit`` dead letters from DLQ offset ``start`` on, oldest first, with a
        preview of the payload (the first bytes, undecodable ones escaped).

        ``reason_like`` is an SQL LIKE pattern on the reason, case-insensitive (``%``
        any text, ``_`` one character); without a wildcard it matches a substring.
        """
        first, end = self._bounds()
        lo = first if start is None else max(first, start)
        if lo >= end:
            return _empty_listing()
        meta = pl.from_arrow(
            self.dlq().read(0, lo, end - lo, columns=[f.name for f in _META_FIELDS])
        )
        assert isinstance(meta, pl.DataFrame)
        meta = meta.select(
            pl.int_range(lo, lo + meta.height, dtype=pl.Int64).alias("dlq_offset"), pl.all()
        )
        if reason_like is not None:
            meta = meta.filter(pl.col("reason").str.contains(_like_regex(reason_like)))
        done = pl.Series(self._redriven_between(lo, end), dtype=pl.Int64)
        meta = meta.with_columns(pl.col("dlq_offset").is_in(done.implode()).alias("redriven"))
        if not include_redriven:
            meta = meta.filter(~pl.col("redriven"))
        meta = meta.head(limit)
        payloads = self._payloads(meta["dlq_offset"].to_list())
        return meta.with_columns(
            pl.Series("size", [len(p) for p in payloads], pl.Int64),
            pl.Series("preview", [preview(p) for p in payloads], pl.String),
        ).select(LISTING_COLUMNS)

    def show(self, dlq_offset: int) -> DeadLetter:
        first, end = self._bounds()
        if not first <= dlq_offset < end:
            raise NoSuchDeadLetterError(
                f"no dead letter at offset {dlq_offset} of {self.name!r}"
                f" (it holds offsets {first} to {end - 1})"
                if end > first
                else f"no dead letter at offset {dlq_offset}: {self.name!r} is empty"
            )
        row = self.dlq().read(0, dlq_offset, 1).to_pylist()[0]
        return DeadLetter(
            dlq_offset=dlq_offset,
            source=row["source"],
            partition=row["partition"],
            offset=row["offset"],
            reason=row["reason"],
            payload=row["payload"],
            received_at=row["received_at"],
            redriven=dlq_offset in self._redriven_between(dlq_offset, dlq_offset + 1),
        )

    def _payloads(self, dlq_offsets: Sequence[int]) -> Sequence[bytes]:
        if not dlq_offsets:
            return []
        lo, hi = min(dlq_offsets), max(dlq_offsets) + 1
        column = self.dlq().read(0, lo, hi - lo, columns=["payload"]).column("payload")
        return column.take(
            arrays.from_pylist([o - lo for o in dlq_offsets], pa.int64())
        ).to_pylist()

    # -- re-drive ------------------------------------------------------------------------
    def redrive(
        self,
        decoder: Decoder | None = None,
        offsets: range | Sequence[int] | None = None,
        fix: Callable[[bytes], bytes] | None = None,
        batch_rows: int = 10_000,
    ) -> RedriveResult:
        """Decode the dead letters at ``offsets`` (default: all) again, after ``fix``
        when given, and append those that now decode to the topic. Those that still fail
        stay dead letters (their reason now is in ``failures``); those re-driven before
        are skipped. ``decoder`` defaults to JSON in the topic's schema."""
        result = RedriveResult()
        first, end = self._bounds()
        if first == end:
            return result
        topic = self.log.topic(self.topic_name)
        if topic.config.transactional:
            raise InvalidInputError(
                f"topic {topic.name!r} is transactional (a pipeline's output): rows cannot be"
                " re-driven into it"
            )
        decoder = decoder if decoder is not None else JsonDecoder(topic.schema)
        wanted = _select(offsets, first, end)
        if wanted.size == 0:
            return result
        with self._redrive_lock():
            done = self._redriven_between(int(wanted[0]), int(wanted[-1]) + 1)
            pending = wanted[~np.isin(wanted, np.asarray(done, dtype=np.int64))]
            result.skipped = int(wanted.size - pending.size)
            for chunk in _chunks(pending, batch_rows):
                self._redrive_chunk(topic, decoder, chunk, fix, result)
        return result

    def _redrive_chunk(
        self,
        topic: Topic,
        decoder: Decoder,
        chunk: np.ndarray,
        fix: Callable[[bytes], bytes] | None,
        result: RedriveResult,
    ) -> None:
        dlq_offsets = [int(o) for o in chunk]
        raw = self._payloads(dlq_offsets)
        payloads: list[bytes] = []
        tried: list[int] = []
        for offset, payload in zip(dlq_offsets, raw, strict=True):
            fixed, error = _apply_fix(fix, payload)
            if error is not None:
                result.failures[offset] = error
                continue
            payloads.append(fixed)
            tried.append(offset)
        result.considered += len(dlq_offsets)
        if not tried:
            return
        decoded = decode_for_topic(topic, decoder, payloads, tried, self.name, "0")
        for offset, reason in zip(
            decoded.dead.column("offset").to_pylist(),
            decoded.dead.column("reason").to_pylist(),
            strict=True,
        ):
            result.failures[offset] = reason
        if decoded.table.num_rows:
            topic.append(decoded.table)
            self._mark_redriven(decoded.offsets)
            result.redriven += len(decoded.offsets)

    # -- the ledger ----------------------------------------------------------------------
    @contextmanager
    def _ledger(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.dlq().dir / _LEDGER, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_LEDGER_SCHEMA)
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _redrive_lock(self) -> Iterator[None]:
        with open_lock_file(self.dlq().dir / ".redrive.lock") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _redriven_between(self, lo: int, hi: int) -> list[int]:
        if not self.exists():
            return []
        with self._ledger() as conn:
            rows = conn.execute(
                "SELECT dlq_offset FROM redriven WHERE dlq_offset >= ? AND dlq_offset < ?"
                " ORDER BY dlq_offset",
                (lo, hi),
            ).fetchall()
        return [r[0] for r in rows]

    def _mark_redriven(self, dlq_offsets: Sequence[int]) -> None:
        now = time.time()
        with self._ledger() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT OR IGNORE INTO redriven (dlq_offset, redriven_at) VALUES (?, ?)",
                [(int(o), now) for o in dlq_offsets],
            )
            conn.execute("COMMIT")


_META_FIELDS = [f for f in DEAD_LETTER_SCHEMA if f.name != "payload"]
LISTING_COLUMNS = [
    "dlq_offset",
    "source",
    "partition",
    "offset",
    "reason",
    "size",
    "preview",
    "received_at",
    "redriven",
]


def _empty_listing() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "dlq_offset": pl.Int64,
            "source": pl.String,
            "partition": pl.String,
            "offset": pl.Int64,
            "reason": pl.String,
            "size": pl.Int64,
            "preview": pl.String,
            "received_at": pl.Datetime("ms"),
            "redriven": pl.Boolean,
        }
    )


def preview(payload: bytes, limit: int = PREVIEW_BYTES) -> str:
    """The first ``limit`` bytes as text; bytes that are not UTF-8 shown as ``\\xNN``."""
    text = payload[:limit].decode("utf-8", errors="backslashreplace")
    return text + ("…" if len(payload) > limit else "")


def _like_regex(pattern: str) -> str:
    import re

    if "%" not in pattern and "_" not in pattern:
        return "(?i)" + re.escape(pattern)
    body = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern)
    return f"(?is)^{body}$"


def _select(offsets: range | Sequence[int] | None, first: int, end: int) -> np.ndarray:
    """The requested DLQ offsets that exist, sorted and unique."""
    if offsets is None:
        return np.arange(first, end, dtype=np.int64)
    if isinstance(offsets, range) and offsets.step == 1:
        return np.arange(max(first, offsets.start), min(end, offsets.stop), dtype=np.int64)
    wanted = arrays.unique_sorted(np.asarray(list(offsets), dtype=np.int64))
    return wanted[(wanted >= first) & (wanted < end)]


def _chunks(offsets: np.ndarray, rows: int) -> Iterator[np.ndarray]:
    for i in range(0, offsets.size, max(rows, 1)):
        yield offsets[i : i + rows]


def _apply_fix(fix: Callable[[bytes], bytes] | None, payload: bytes) -> tuple[bytes, str | None]:
    """The fixed payload, or the reason the fix could not be applied."""
    if fix is None:
        return payload, None
    try:
        fixed = fix(payload)
    except Exception as err:  # user code: any failure leaves the record dead
        return payload, f"fix failed: {type(err).__name__}: {err}"
    if isinstance(fixed, str):
        return fixed.encode(), None
    if not isinstance(fixed, bytes | bytearray | memoryview):
        return payload, f"fix returned {type(fixed).__name__}, not bytes"
    return bytes(fixed), None
