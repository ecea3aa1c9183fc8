"""The checkpoint blob: everything round-trips, the state tables are read in place from
the blob (aligned, not copied), state exported as Arrow views is written as large strings,
and blobs written before the padding still decode."""

import polars as pl
import pyarrow as pa
import pytest

from dataflare_platform.bench.checkpoint import joined_encode
from dataflare_platform.engine import checkpoint as checkpoints
from dataflare_platform.engine.checkpoint import Checkpoint, state_table

STATE = pl.DataFrame(
    {"key": [3, 1, 2], "url": ["https://a/1", None, "x" * 40], "price": [1.5, 2.5, None]}
).to_arrow()


def checkpoint(pad_key: str = "bids/0") -> Checkpoint:
    return Checkpoint(
        offsets={pad_key: 12, "bids/1": 7},
        watermark={"emitted": 1_700_000_000_000},
        counters={"dead_letters": 2},
        states={
            "1:KeyedTopN": {"store": STATE, "empty": STATE.slice(0, 0)},
            "2:Window": {"panes": STATE.slice(1)},
        },
        batches=40,
    )


def same(a: Checkpoint, b: Checkpoint) -> bool:
    return (
        (a.offsets, a.watermark, a.counters, a.batches)
        == (b.offsets, b.watermark, b.counters, b.batches)
        and {n: sorted(t) for n, t in a.states.items()}
        == {n: sorted(t) for n, t in b.states.items()}
        and all(a.states[n][t].equals(b.states[n][t]) for n in a.states for t in a.states[n])
    )


@pytest.mark.parametrize("pad", range(8))
def test_a_checkpoint_round_trips_with_its_streams_aligned_and_read_in_place(pad):
    original = checkpoint("b" * pad)  # every length of metadata modulo 8
    blob = original.encode()
    decoded = Checkpoint.decode(blob)
    assert same(decoded, original)
    start = pa.py_buffer(blob).address
    for tables in decoded.states.values():
        for table in tables.values():
            for column in table.columns:
                for chunk in column.chunks:
                    for buffer in chunk.buffers():
                        if buffer is None or buffer.size == 0:
                            continue
                        # Inside the blob (no copy), at an 8-byte boundary of it.
                        assert start <= buffer.address < start + len(blob)
                        assert (buffer.address - start) % 8 == 0


def test_a_checkpoint_without_state_round_trips():
    empty = Checkpoint(offsets={"s/0": 1}, batches=1)
    assert same(Checkpoint.decode(empty.encode()), empty)
    assert same(Checkpoint.decode(bytearray(empty.encode())), empty)  # any bytes-like


def test_blobs_written_before_the_padding_still_decode():
    padded = 0
    for pad in range(8):
        original = checkpoint("b" * pad)
        old = joined_encode(original)
        padded += old != original.encode()
        assert same(Checkpoint.decode(old), original)
    assert padded == 8  # the metadata's room always ends in spaces now


def test_a_blob_that_is_not_a_checkpoint_is_refused():
    with pytest.raises(ValueError, match="not a DataFlare checkpoint"):
        Checkpoint.decode(b"PAR1" + bytes(20))


def frame_of_every_kind(rows: int) -> pl.DataFrame:
    """Columns that Polars exports as views, at the top level and nested: short strings
    (inline in the view), long ones (in a data buffer), nulls, categoricals, enums,
    lists, structs and binaries."""
    words = ["a", "bb", None, "a string longer than twelve bytes", "x" * 100]
    return pl.DataFrame(
        {
            "key": list(range(rows)),
            "s": [words[i % 5] for i in range(rows)],
            "c": pl.Series([words[i % 2] for i in range(rows)], dtype=pl.Categorical),
            "e": pl.Series([words[i % 2] for i in range(rows)], dtype=pl.Enum(["a", "bb"])),
            "l": [None if i % 7 == 0 else [words[i % 5], words[(i + 1) % 5]] for i in range(rows)],
            "st": [{"u": words[i % 5], "n": i} for i in range(rows)],
            "b": [None if i % 3 == 0 else (words[i % 2] or "").encode() * 9 for i in range(rows)],
        }
    )


def test_state_exported_as_views_is_written_as_its_large_string_export():
    frame = frame_of_every_kind(1_000)
    views = state_table(frame)
    assert pa.types.is_string_view(views.schema.field("s").type)  # not copied out
    large = frame.to_arrow()  # Polars' default export: every string copied
    as_views = Checkpoint(offsets={"s/0": 1}, states={"n": {"t": views}}).encode()
    as_large = Checkpoint(offsets={"s/0": 1}, states={"n": {"t": large}}).encode()
    assert as_views == as_large  # the same blob, byte for byte
    decoded = Checkpoint.decode(as_views).states["n"]["t"]
    assert decoded.schema == large.schema
    assert pl.from_arrow(decoded).equals(frame)


def test_a_large_state_of_views_is_converted_a_slice_at_a_time(monkeypatch):
    monkeypatch.setattr(checkpoints, "_CAST_ROWS", 64)
    frame = pl.concat([frame_of_every_kind(300), frame_of_every_kind(50)], rechunk=False)
    views = state_table(frame)
    assert views.num_rows == 350 and len(views.column("s").chunks) == 2
    blob = Checkpoint(states={"n": {"t": views}}).encode()
    decoded = Checkpoint.decode(blob).states["n"]["t"]
    assert decoded.equals(frame.to_arrow())
    assert [len(c) for c in decoded.column("s").chunks] == [64] * 4 + [44, 50]


@pytest.mark.parametrize("compression", ["zstd", "lz4"])
def test_a_compressed_checkpoint_round_trips_smaller(compression):
    frame = pl.concat([frame_of_every_kind(5_000)] * 4, rechunk=False)  # repetitive
    original = Checkpoint(
        offsets={"s/0": 9}, watermark={"emitted": 1}, states={"n": {"t": state_table(frame)}}
    )
    blob = original.encode(compression)
    assert len(blob) < len(original.encode()) / 3
    decoded = Checkpoint.decode(blob)
    assert decoded.offsets == {"s/0": 9} and decoded.watermark == {"emitted": 1}
    assert decoded.states["n"]["t"].equals(frame.to_arrow())
