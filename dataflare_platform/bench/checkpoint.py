"""``dataflare bench checkpoint``: encoding and decoding a large operator state (like q18's
without a TTL: integer and string columns, millions of rows) with ``Checkpoint`` against
the layout's straightforward encoder in the same process — one IPC stream per table into
its own buffer, then header and streams joined — and a decode that copies each stream's
slice out of the blob, which is what ``Checkpoint`` did before 2026-12-07."""

from __future__ import annotations

import io
import json
import struct
import time

import numpy as np
import polars as pl
import pyarrow as pa

from dataflare_platform.bench.common import machine, peak_rss_mb
from dataflare_platform.engine.checkpoint import _MAGIC, Checkpoint, _write_ipc


def state(rows: int, seed: int = 0) -> pa.Table:
    """A keyed store's rows: three integer columns and three string columns whose values
    repeat (URLs and channel names drawn from 10 k and 4 values, as the generators do)."""
    rng = np.random.default_rng(seed)
    urls = pl.Series(
        [f"https://www.nexmark.com/item.htm?query=1&channel_id={i}" for i in range(10_000)]
    )
    channels = pl.Series(["Google", "Facebook", "Baidu", "Apple"])
    return pl.DataFrame(
        {
            "auction": rng.integers(0, 1_000_000, rows),
            "bidder": rng.integers(0, 1_000_000, rows),
            "price": rng.integers(0, 1_000_000, rows),
            "url": urls.gather(rng.integers(0, urls.len(), rows)),
            "channel": channels.gather(rng.integers(0, channels.len(), rows)),
            "extra": urls.gather(rng.integers(0, urls.len(), rows)).str.slice(0, 20),
        }
    ).to_arrow()


def joined_encode(cp: Checkpoint) -> bytes:
    """The baseline: each stream in its own buffer, then everything joined (a copy)."""
    blobs, index = [], []
    for node, tables in cp.states.items():
        for name, table in tables.items():
            sink = io.BytesIO()
            _write_ipc(sink, table)
            blobs.append(sink.getvalue())
            index.append([node, name, len(blobs[-1])])
    meta = json.dumps(
        {
            "offsets": cp.offsets,
            "watermark": cp.watermark,
            "counters": cp.counters,
            "batches": cp.batches,
            "index": index,
        }
    ).encode()
    return _MAGIC + struct.pack("<I", len(meta)) + meta + b"".join(blobs)


def copying_decode(data: bytes) -> dict[str, pa.Table]:
    """The baseline: each stream's slice copied out of the blob, then read."""
    (meta_len,) = struct.unpack_from("<I", data, len(_MAGIC))
    pos = len(_MAGIC) + 4
    meta = json.loads(data[pos : pos + meta_len])
    pos += meta_len
    tables = {}
    for _, name, length in meta["index"]:
        tables[name] = pa.ipc.open_stream(pa.py_buffer(data[pos : pos + length])).read_all()
        pos += length
    return tables


def _timed(fn) -> float:
    started = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - started
    del result  # freed before the next side runs: neither finds the other's memory held
    return elapsed


def run(rows: int = 6_000_000, repeat: int = 3) -> dict[str, object]:
    """Both sides in alternating rounds (the best round of each counts), each result
    dropped before the next side runs."""
    cp = Checkpoint(offsets={"bids/0": rows}, states={"1:KeyedTopN": {"store": state(rows)}})
    table = cp.states["1:KeyedTopN"]["store"]
    blob, old = cp.encode(), joined_encode(cp)
    assert Checkpoint.decode(blob).states["1:KeyedTopN"]["store"].equals(table)
    assert copying_decode(old)["store"].equals(table)
    times: dict[str, list[float]] = {"encode": [], "joined": [], "decode": [], "copying": []}
    for _ in range(repeat):
        times["encode"].append(_timed(cp.encode))
        times["joined"].append(_timed(lambda: joined_encode(cp)))
        times["decode"].append(_timed(lambda: Checkpoint.decode(blob)))
        times["copying"].append(_timed(lambda: copying_decode(old)))
    best = {side: min(values) for side, values in times.items()}
    return {
        "benchmark": "checkpoint",
        "rows": rows,
        "blob_mb": round(len(blob) / 2**20, 1),
        "repeat": repeat,
        "encode_s": round(best["encode"], 4),
        "baseline_encode_s": round(best["joined"], 4),
        "encode_ratio": round(best["joined"] / best["encode"], 2),
        "decode_s": round(best["decode"], 4),
        "baseline_decode_s": round(best["copying"], 4),
        "baseline": "joined-parts encode and copying decode (the layout's plain encoder)",
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "machine": machine(),
    }
