"""The commit record of a transactional topic: what makes output into a topic exactly once.

A pipeline writing a topic through :class:`~dataflare_platform.events.engine_io.LogSink`
appends its output segments, then publishes one commit file (atomic rename) holding the
committed end offset of every partition and the engine's checkpoint. Readers of a
transactional topic stop at the committed ends, so they never see output whose
checkpoint was not stored; on restart the writer truncates the uncommitted tail. One
writer per transactional topic (an exclusive lock enforces it).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from dataflare_platform.durable import write_atomic
from dataflare_platform.errors import CorruptInputError

COMMIT_FILE = "_commit.bin"
_MAGIC = b"DFTX1"


@dataclass
class Commit:
    writer: str
    sequence: int
    ends: dict[int, int]
    checkpoint: bytes

    def encode(self) -> bytes:
        head = json.dumps(
            {"writer": self.writer, "sequence": self.sequence, "ends": self.ends}
        ).encode()
        return _MAGIC + struct.pack("<I", len(head)) + head + self.checkpoint

    @classmethod
    def decode(cls, data: bytes) -> Commit:
        if not data.startswith(_MAGIC):
            raise ValueError("not a DataFlare commit record")
        (n,) = struct.unpack_from("<I", data, len(_MAGIC))
        start = len(_MAGIC) + 4
        if len(data) < start + n:
            raise ValueError(f"truncated: header of {n} bytes, {len(data) - start} present")
        head = json.loads(data[start : start + n])
        return cls(
            writer=head["writer"],
            sequence=int(head["sequence"]),
            ends={int(k): int(v) for k, v in head["ends"].items()},
            checkpoint=data[start + n :],
        )


def read_commit(directory: Path) -> Commit | None:
    """The commit record in a topic's directory (which may not be created yet): the log
    stores it, the writer (``LogSink``) decides what goes in it."""
    try:
        data = (directory / COMMIT_FILE).read_bytes()
    except FileNotFoundError:
        return None
    try:
        return Commit.decode(data)
    except (ValueError, struct.error, KeyError, TypeError, AttributeError) as err:
        # A torn copy or an edit: one line naming the file, not the decoder's traceback.
        raise CorruptInputError(
            directory / COMMIT_FILE, f"not a valid commit record ({len(data)} bytes): {err}"
        ) from None


def write_commit(directory: Path, commit: Commit, fsync: bool = False) -> None:
    write_atomic(directory / COMMIT_FILE, commit.encode(), fsync=fsync)
