"""The landing ledger: which files were ingested, in SQLite (one file, transactional,
survives a crash mid-write).

A file's identity is (relative name, size, SHA-256): the same name with different
content is a different file, ingested again; an ingested file that is merely touched
(new mtime, same bytes) is not. To avoid hashing every old file on every scan, the
ledger also remembers the mtime it saw; a file with the same name, size and mtime as
an ingested one is taken as that one without reading it.

For the engine ``Source`` view the ledger also holds each file's offset range (its
first row's offset and its row count, assigned once, when the file is first taken),
the Arrow segment its decoded rows were saved to, and its dead letters.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from dataflare_platform.events.codec import DEAD_LETTER_SCHEMA

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    mtime_ns INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    rows_in INTEGER NOT NULL,
    rows_out INTEGER NOT NULL,
    dead INTEGER NOT NULL,
    reason TEXT,
    start_offset INTEGER,
    segment TEXT,
    ingested_at REAL NOT NULL,
    UNIQUE (name, size, sha256)
);
CREATE INDEX IF NOT EXISTS files_by_offset ON files (start_offset)
    WHERE start_offset IS NOT NULL;
CREATE TABLE IF NOT EXISTS dead_letters (
    file_id INTEGER NOT NULL REFERENCES files (id),
    source TEXT NOT NULL,
    partition TEXT NOT NULL,
    "offset" INTEGER NOT NULL,
    reason TEXT NOT NULL,
    payload BLOB NOT NULL,
    received_at INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class LedgerEntry:
    name: str
    size: int
    sha256: str
    status: str
    rows_in: int
    rows_out: int
    dead: int
    reason: str | None
    start_offset: int | None
    segment: str | None


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # the runner reads from its own thread
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def known_by_stat(self, name: str, size: int, mtime_ns: int) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM files WHERE name = ? AND size = ? AND mtime_ns = ?",
                (name, size, mtime_ns),
            ).fetchone()
        return row is not None

    def known(self, name: str, size: int, sha256: str, mtime_ns: int) -> bool:
        """True if ingested; the mtime is remembered so the next scan need not hash."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE files SET mtime_ns = ? WHERE name = ? AND size = ? AND sha256 = ?",
                (mtime_ns, name, size, sha256),
            )
        return cur.rowcount > 0

    def record(
        self,
        name: str,
        size: int,
        sha256: str,
        mtime_ns: int,
        *,
        rows_in: int,
        rows_out: int,
        dead: pa.Table | None,
        dead_count: int,
        failed: str | None,
        start_offset: int | None = None,
        segment: str | None = None,
    ) -> bool:
        """Record one ingested file (and its dead letters) in one transaction; False if
        it was already recorded (the first record stands)."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                cur = db.execute(
                    "INSERT INTO files (name, size, sha256, mtime_ns, status, rows_in,"
                    " rows_out, dead, reason, start_offset, segment, ingested_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (name, size, sha256) DO NOTHING",
                    (
                        name,
                        size,
                        sha256,
                        mtime_ns,
                        "failed" if failed else "done",
                        rows_in,
                        rows_out,
                        dead_count,
                        failed,
                        start_offset,
                        segment,
                        time.time(),
                    ),
                )
                inserted = cur.rowcount > 0
                if inserted and dead is not None and dead.num_rows:
                    file_id = cur.lastrowid
                    d = dead.to_pydict()
                    d["received_at"] = dead.column("received_at").cast(pa.int64()).to_pylist()
                    db.executemany(
                        "INSERT INTO dead_letters VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [
                            (file_id, s, p, o, r, pl_, t)
                            for s, p, o, r, pl_, t in zip(
                                d["source"],
                                d["partition"],
                                d["offset"],
                                d["reason"],
                                d["payload"],
                                d["received_at"],
                                strict=True,
                            )
                        ],
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return inserted

    def entries(self) -> list[LedgerEntry]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, size, sha256, status, rows_in, rows_out, dead, reason,"
                " start_offset, segment FROM files ORDER BY id"
            ).fetchall()
        return [LedgerEntry(*row) for row in rows]

    def ranges(self) -> list[tuple[int, int, str | None]]:
        """The Source view's files: (start offset, rows, segment) in offset order (a
        file without good rows shares its start with the next file)."""
        with self._lock:
            return self._db.execute(
                "SELECT start_offset, rows_out, segment FROM files"
                " WHERE start_offset IS NOT NULL ORDER BY start_offset, id"
            ).fetchall()

    def dead_letters(self) -> pa.Table:
        with self._lock:
            rows = self._db.execute(
                'SELECT source, partition, "offset", reason, payload, received_at'
                " FROM dead_letters ORDER BY rowid"
            ).fetchall()
        columns = list(zip(*rows, strict=True)) if rows else [[] for _ in DEAD_LETTER_SCHEMA]
        arrays = [
            pa.array(list(values), pa.int64()).cast(f.type)
            if f.name == "received_at"
            else pa.array(list(values), f.type)
            for f, values in zip(DEAD_LETTER_SCHEMA, columns, strict=True)
        ]
        return pa.Table.from_arrays(arrays, schema=DEAD_LETTER_SCHEMA)
