"""Exactly-once output into a topic: the commit record of a transactional topic.

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
from typing import TYPE_CHECKING

from dataflare_platform.durable import write_atomic

if TYPE_CHECKING:
    from dataflare_platform.events.log import Topic

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
        head = json.loads(data[start : start + n])
        return cls(
            writer=head["writer"],
            sequence=int(head["sequence"]),
            ends={int(k): int(v) for k, v in head["ends"].items()},
            checkpoint=data[start + n :],
        )


def read_commit(topic: Topic | Path) -> Commit | None:
    """The commit record of a topic (or of a topic directory not created yet)."""
    directory = topic if isinstance(topic, Path) else topic.dir
    try:
        data = (directory / COMMIT_FILE).read_bytes()
    except FileNotFoundError:
        return None
    return Commit.decode(data)


def write_commit(topic: Topic | Path, commit: Commit) -> None:
    directory = topic if isinstance(topic, Path) else topic.dir
    fsync = False if isinstance(topic, Path) else topic.config.fsync
    write_atomic(directory / COMMIT_FILE, commit.encode(), fsync=fsync)
