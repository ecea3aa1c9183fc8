"""The hand-written micro-batch baseline of ``dataflare bench nexmark --baseline
microbatch`` (issue 21 §3): what a competent user writes without the engine — a loop
over the same batches read from the same source, doing each query's work with plain
Polars.

It measures the engine's per-batch overhead, not its operators: the one-shot DuckDB
baseline sees all events at once, which a stream cannot. The loop has none of what the
engine adds per batch (checkpoints, watermarks, lateness, dead letters, metrics, a
source and a sink thread); it reads, converts to Polars and computes.

- stateless queries (q0, q1, q2): the projection/filter per batch; the output frames are
  counted and dropped, like the engine's null sink does;
- windowed queries (q5, q7): a partial aggregate per batch (counts per 2 s pane and
  auction; the top-priced rows per 10 s window), and one combine at the end. It fires
  every window at the end of the input, so it keeps all partials until then: fine for a
  bounded benchmark, not a streaming engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import polars as pl

from dataflare_platform.engine import Source

SLIDE_MS = 2_000  # q5: a 10 s window sliding by 2 s is five 2 s panes
SIZE_MS = 10_000  # q5 and q7: window size


def _batches(source: Source, batch_rows: int) -> Iterator[pl.DataFrame]:
    """The source's rows as Polars frames of ``batch_rows`` rows, read the way the
    engine's source thread reads them (same ``read`` calls, same projection)."""
    for partition in source.partitions():
        offset, end = 0, source.end_offset(partition) or 0
        while offset < end:
            table = source.read(partition, offset, min(batch_rows, end - offset))
            if table.num_rows == 0:
                break
            offset += table.num_rows
            yield pl.from_arrow(table)  # type: ignore[misc]


def _ms(column: str = "date_time") -> pl.Expr:
    return pl.col(column).cast(pl.Int64)


def _stateless(work: Callable[[pl.DataFrame], pl.DataFrame]):
    def run(frames: Iterator[pl.DataFrame], collect: bool) -> tuple[int, pl.DataFrame | None]:
        rows, kept = 0, []
        for df in frames:
            out = work(df)
            rows += out.height
            if collect:
                kept.append(out)
        return rows, (pl.concat(kept) if collect and kept else None)

    return run


def _q5(frames: Iterator[pl.DataFrame], collect: bool) -> tuple[int, pl.DataFrame | None]:
    """Hot items: bid counts per (2 s pane, auction) per batch; at the end, panes summed
    into their five 10 s windows and the top auction(s) of each window kept."""
    partials = []
    for df in frames:
        t = _ms()
        partials.append(
            df.group_by((t - t % SLIDE_MS).alias("pane"), "auction").agg(pl.len().alias("n"))
        )
    if not partials:
        return 0, None
    panes = pl.concat(partials).group_by("pane", "auction").agg(pl.col("n").sum())
    # Each pane counts in the five windows starting at it and the four panes before.
    shifted = [
        panes.select((pl.col("pane") - k * SLIDE_MS).alias("ws"), "auction", "n")
        for k in range(SIZE_MS // SLIDE_MS)
    ]
    windows = (
        pl.concat(shifted)
        .group_by("ws", "auction")
        .agg(pl.col("n").sum().alias("num"))
        .filter(pl.col("num") == pl.col("num").max().over("ws"))
        .select(
            pl.col("ws").cast(pl.Datetime("ms")).alias("window_start"),
            (pl.col("ws") + SIZE_MS).cast(pl.Datetime("ms")).alias("window_end"),
            "auction",
            pl.col("num").cast(pl.Int64),
        )
    )
    return windows.height, windows


def _q7(frames: Iterator[pl.DataFrame], collect: bool) -> tuple[int, pl.DataFrame | None]:
    """Highest bid(s) per 10 s tumbling window: each batch's top rows per window, then the
    top of those per window at the end."""
    partials = []
    for df in frames:
        t = _ms()
        df = df.with_columns((t - t % SIZE_MS).alias("ws"))
        partials.append(df.filter(pl.col("price") == pl.col("price").max().over("ws")))
    if not partials:
        return 0, None
    top = (
        pl.concat(partials)
        .filter(pl.col("price") == pl.col("price").max().over("ws"))
        .with_columns(
            pl.col("ws").cast(pl.Datetime("ms")).alias("window_start"),
            (pl.col("ws") + SIZE_MS).cast(pl.Datetime("ms")).alias("window_end"),
        )
        .drop("ws")
    )
    return top.height, top


LOOPS: dict[str, Callable[[Iterator[pl.DataFrame], bool], tuple[int, pl.DataFrame | None]]] = {
    "q0": _stateless(lambda df: df),
    "q1": _stateless(
        lambda df: df.select(
            "auction", "bidder", (pl.col("price") * 0.908).alias("price"), "date_time"
        )
    ),
    "q2": _stateless(lambda df: df.filter(pl.col("auction") % 123 == 0).select("auction", "price")),
    "q5": _q5,
    "q7": _q7,
}


def run(
    query: str, bids: Source, batch_rows: int, collect: bool = False
) -> tuple[float, int, pl.DataFrame | None]:
    """(seconds, output rows, the output if ``collect``) of the hand-written loop over
    ``bids`` in batches of ``batch_rows``. Reading is in the time, as it is in the
    engine's (there on a thread of its own)."""
    loop = LOOPS[query]
    started = time.perf_counter()
    rows, out = loop(_batches(bids, batch_rows), collect)
    return time.perf_counter() - started, rows, out
