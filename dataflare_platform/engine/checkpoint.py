"""Checkpoint encoding: JSON metadata plus operator state tables as Arrow IPC streams.

One self-describing blob, so a sink can store it in the same transaction as its output.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

_MAGIC = b"DFCK1"
# The length written for every stream when the metadata's room is sized (``encode``):
# a real length has no more digits than this.
_LONGEST_STREAM = 10**16 - 1
# Rows of a state table converted from views at a time while it is written (``_write_ipc``):
# the converted copy held at once is one slice, not the table.
_CAST_ROWS = 65_536
# How sinks that keep checkpoints in a database, a topic or a manifest file (DuckDB,
# PostgreSQL, Kafka, the Parquet dataset) compress the blob (``Checkpoint.encode``): a
# database stores a large BLOB slowly per byte, a topic caps its records (about 1 MB by
# default), a manifest is rewritten (base64) at every commit, and zstd
# shrinks keyed state 4-7x. q18 without a TTL on the skewed stream (6.4 M rows of state):
# 868 MB in 0.8 s plain, 199 MB in 1.5 s (decoded at restart in 0.8 s, not in place);
# the DuckDB sink's run 174 -> 51 s. A 248 MB blob of synthetic keyed state into
# PostgreSQL bytea: 7.3-7.7 s plain, 34 MB and 0.8 s compressed (bytea's limit is 1 GB).
STORED_COMPRESSION = "zstd"
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

    def encode(self, compression: str | None = None) -> bytes:
        """The blob: magic, the metadata's length and JSON (with each state stream's
        length), then the state tables' Arrow IPC streams, written once into one buffer.
        The lengths are known only once the streams are written, so the metadata's room
        is reserved first (sized with every length at its largest) and the metadata
        written into it at the end, padded with spaces. Joining separately written parts
        copied the whole state once more: for q18's 6 M-row state (an 804 MB blob) on a
        2-core VM, encoding took 2.4 s and peaked at 2.85 GB RSS joined, 0.64 s and
        2.05 GB written once (``dataflare bench checkpoint`` repeats the comparison).

        String and binary columns exported as Arrow views (``state_table``) are written
        as large strings and binaries, a slice of rows at a time: the blob's layout and
        size do not depend on how the state was exported.

        ``compression`` ("zstd" or "lz4") compresses the streams' buffers (Arrow IPC's
        own body compression; any reader of the blob decompresses them): a sink whose
        store is slow per byte passes it. Without it ``decode`` reads the tables in place;
        with it each buffer is decompressed once, at restart."""
        streams = [
            (node, name, table)
            for node, tables in self.states.items()
            for name, table in tables.items()
        ]

        def meta(lengths: list[int]) -> bytes:
            index = [[node, name, n] for (node, name, _), n in zip(streams, lengths, strict=True)]
            return json.dumps(
                {
                    "offsets": self.offsets,
                    "watermark": self.watermark,
                    "counters": self.counters,
                    "batches": self.batches,
                    "index": index,
                }
            ).encode()

        # JSON may end in spaces. The room is padded so that every stream starts 8-byte
        # aligned in the blob (IPC streams are multiples of 8 long), as Arrow lays
        # buffers out for reading in place.
        room = len(meta([_LONGEST_STREAM] * len(streams)))
        room += -(len(_MAGIC) + 4 + room) % 8
        out = io.BytesIO()
        out.write(bytes(len(_MAGIC) + 4 + room))
        lengths = []
        for _, _, table in streams:
            start = out.tell()
            _write_ipc(out, table, compression)
            lengths.append(out.tell() - start)
        head = meta(lengths)
        out.seek(0)
        out.write(_MAGIC + struct.pack("<I", room) + head + b" " * (room - len(head)))
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


def state_table(frame: pl.DataFrame) -> pa.Table:
    """``frame`` as a checkpoint's state table, exported without copying its strings
    (Arrow string and binary views over Polars' own buffers) and so cheap on the batch
    thread, which snapshots the state. ``encode`` writes the views as large strings, a
    slice at a time on the sink thread. Exported as large strings instead (Polars'
    default), q18's 6.4 M-row state without a TTL took 0.39-0.51 s on the batch thread
    and held a second copy of its strings until the commit; 0.12 s as views."""
    return frame.to_arrow(compat_level=pl.CompatLevel.newest())


def _write_ipc(sink, table: pa.Table, compression: str | None = None) -> None:
    """``table`` as one IPC stream, view columns (``state_table``) written as large
    strings and binaries, ``_CAST_ROWS`` rows at a time."""
    schema = _without_views(table.schema)
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, schema, options=options) as writer:
        if schema.equals(table.schema):
            writer.write_table(table)
            return
        for batch in table.to_batches(max_chunksize=_CAST_ROWS):
            writer.write_batch(batch.cast(schema))


def _without_views(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f.with_type(_no_views(f.type)) for f in schema], metadata=schema.metadata)


def _no_views(kind: pa.DataType) -> pa.DataType:
    """``kind`` with string/binary views (nested ones too) as large strings/binaries."""
    if pa.types.is_string_view(kind):
        return pa.large_string()
    if pa.types.is_binary_view(kind):
        return pa.large_binary()
    if pa.types.is_list(kind):
        return pa.list_(kind.value_field.with_type(_no_views(kind.value_type)))
    if pa.types.is_large_list(kind):
        return pa.large_list(kind.value_field.with_type(_no_views(kind.value_type)))
    if pa.types.is_fixed_size_list(kind):
        return pa.list_(kind.value_field.with_type(_no_views(kind.value_type)), kind.list_size)
    if pa.types.is_struct(kind):
        fields = [kind.field(i) for i in range(kind.num_fields)]
        return pa.struct([f.with_type(_no_views(f.type)) for f in fields])
    if pa.types.is_dictionary(kind):
        return pa.dictionary(kind.index_type, _no_views(kind.value_type), kind.ordered)
    return kind


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
