"""Checkpoint encoding: JSON metadata plus operator state tables as Arrow IPC streams.

One self-describing blob, so a sink can store it in the same transaction as its output.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from dataclasses import dataclass, field

import pyarrow as pa

_MAGIC = b"DFCK1"
# Counter of a checkpoint retired by a split into partition units (``streams.split``):
# how many units took its progress over. Such a checkpoint is no place to resume from.
SPLIT_COUNTER = "split_into_units"


@dataclass
class Checkpoint:
    offsets: dict[str, int] = field(default_factory=dict)  # "source/partition" → next offset
    watermark: dict = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    states: dict[str, dict[str, pa.Table]] = field(default_factory=dict)  # node → tables
    batches: int = 0

    def encode(self) -> bytes:
        """The blob: magic, the metadata's length and JSON (with each state stream's
        length), then the state tables' Arrow IPC streams. Written once into one buffer:
        each stream is sized first by a writer that keeps nothing (``MockOutputStream``),
        so the header can go first and the streams after it without joining parts. Joining
        copied the whole state once more: for q18's 6 M-row state (an 804 MB blob) on a
        2-core VM, encoding took 2.4 s and peaked at 2.85 GB RSS joined, 0.64 s and
        2.05 GB written once (``dataflare bench checkpoint`` repeats the comparison)."""
        streams = [
            (node, name, table)
            for node, tables in self.states.items()
            for name, table in tables.items()
        ]
        meta = json.dumps(
            {
                "offsets": self.offsets,
                "watermark": self.watermark,
                "counters": self.counters,
                "batches": self.batches,
                "index": [[node, name, _ipc_size(table)] for node, name, table in streams],
            }
        ).encode()
        # JSON may end in spaces: padded so that every stream starts 8-byte aligned in the
        # blob (IPC streams are multiples of 8 long), as Arrow lays buffers out for reading
        # in place.
        meta += b" " * (-(len(_MAGIC) + 4 + len(meta)) % 8)
        out = io.BytesIO()
        out.write(_MAGIC + struct.pack("<I", len(meta)) + meta)
        for _, _, table in streams:
            _write_ipc(out, table)
        return out.getvalue()  # the buffer itself, not a copy (CPython shares it)

    @classmethod
    def decode(cls, data: bytes) -> Checkpoint:
        """The checkpoint in ``data`` (any bytes-like object). The state tables read the
        blob in place (their buffers keep it alive) instead of each copying its slice."""
        view = memoryview(data)
        if bytes(view[: len(_MAGIC)]) != _MAGIC:
            raise ValueError("not a DataFlare checkpoint")
        pos = len(_MAGIC)
        (meta_len,) = struct.unpack_from("<I", data, pos)
        pos += 4
        meta = json.loads(bytes(view[pos : pos + meta_len]))
        pos += meta_len
        states: dict[str, dict[str, pa.Table]] = {}
        for node, name, length in meta["index"]:
            reader = pa.ipc.open_stream(pa.py_buffer(view[pos : pos + length]))
            states.setdefault(node, {})[name] = reader.read_all()
            pos += length
        return cls(
            offsets={k: int(v) for k, v in meta["offsets"].items()},
            watermark=meta["watermark"],
            counters={k: int(v) for k, v in meta["counters"].items()},
            states=states,
            batches=int(meta["batches"]),
        )


def state_digest(tables: dict[str, pa.Table]) -> str:
    """SHA-256 over a step's state tables (name, then its Arrow IPC stream, by name): a
    fingerprint for audit entries and messages, never the state itself."""
    digest = hashlib.sha256()
    for name in sorted(tables):
        sink = io.BytesIO()
        _write_ipc(sink, tables[name])
        digest.update(name.encode() + b"\0" + sink.getvalue())
    return digest.hexdigest()


def _write_ipc(sink, table: pa.Table) -> None:
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


def _ipc_size(table: pa.Table) -> int:
    """The length of ``table``'s IPC stream, counted without writing it anywhere."""
    counter = pa.MockOutputStream()
    _write_ipc(counter, table)
    return counter.size()


def without_step(checkpoint: Checkpoint, step: str) -> Checkpoint:
    """The same checkpoint (offsets, watermark, counters, the other steps' state) with
    ``step``'s state left out: that step restores empty, everything else as before."""
    return Checkpoint(
        offsets=dict(checkpoint.offsets),
        watermark=dict(checkpoint.watermark),
        counters=dict(checkpoint.counters),
        states={k: v for k, v in checkpoint.states.items() if k != step},
        batches=checkpoint.batches,
    )


def split_into(checkpoint: Checkpoint | None) -> int:
    """How many partition units a retired single-run checkpoint was split into (0: it
    was not, or there is no checkpoint)."""
    return 0 if checkpoint is None else int(checkpoint.counters.get(SPLIT_COUNTER, 0))
