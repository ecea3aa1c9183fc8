"""Nexmark q10–q14, q21 and q22 (Flink's extended suite): bids into a date/hour
partitioned Parquet dataset exactly once, user sessions, processing-time
windows, a side input refreshed from a file, a user function (as a Polars expression;
the same function as a WASM plugin is ``q14_with_plugin``), channel id extraction and
URL splitting."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import polars as pl

from dataflare_platform.connectors.files import FileSideTable, write_side_table
from dataflare_platform.connectors.parquet_dataset import ParquetDatasetSink
from dataflare_platform.engine import Pipeline, Sink, count, processing_tumbling, session
from dataflare_platform.engine.operators.plugin import BatchPlugin
from dataflare_platform.queries.nexmark.spec import NexmarkSources, QuerySpec
from dataflare_platform.queries.nexmark.spec import pipeline as _pipeline

# Flink q21: the channel's id for the four well-known channels, else the url's
# ``channel_id`` query parameter (the generator's other urls all carry one).
HOT_CHANNEL_IDS = {"apple": "0", "google": "1", "facebook": "2", "baidu": "3"}
CHANNEL_ID_PATTERN = r"(&|^)channel_id=([^&]*)"

COLUMNS = {
    "q10": {"bids": ["auction", "bidder", "price", "date_time", "extra"]},
    "q11": {"bids": ["bidder", "date_time"]},
    "q12": {"bids": ["bidder", "date_time"]},
    "q13": {"bids": ["auction", "bidder", "price", "date_time"]},
    "q14": {"bids": ["auction", "bidder", "price", "date_time", "extra"]},
    "q21": {"bids": ["auction", "bidder", "price", "channel", "url", "date_time"]},
    "q22": {"bids": ["auction", "bidder", "price", "channel", "url", "date_time"]},
}


def q10(src: NexmarkSources, sink: Sink) -> Pipeline:
    """Log to file system: every bid, written by ``q10_dataset``'s sink into a Parquet
    dataset partitioned by UTC date ``dt`` and hour ``hh`` (Flink's DATE_FORMAT
    columns, here in the folder names), exactly once across crashes."""
    return (
        _pipeline("nexmark-q10")
        .source(src.need("bids"))
        .select("auction", "bidder", "price", "date_time", "extra")
        .sink(sink)
    )


def q10_dataset(root: Path) -> ParquetDatasetSink:
    """q10's sink: ``root/dt=YYYY-MM-DD/hh=HH/part-*.parquet`` with exactly-once commits
    (``connectors.parquet_dataset``)."""
    return ParquetDatasetSink(root, "date_time", partition_by="dt", hour_partition="hh")


def q11(src: NexmarkSources, sink: Sink) -> Pipeline:
    """User sessions: bids per bidder per session (a gap of 10 s closes one)."""
    return (
        _pipeline("nexmark-q11")
        .source(src.need("bids"))
        .key_by("bidder")
        .window(session("10s"))
        .agg(count("bid_count"))
        .sink(sink)
    )


def q12(src: NexmarkSources, sink: Sink, clock: Callable[[], int] | None = None) -> Pipeline:
    """Processing-time windows: bids per bidder per 10 s tumbling window of the time the
    engine sees them (``clock``, epoch ms: the wall clock unless a test injects one)."""
    return (
        _pipeline("nexmark-q12")
        .source(src.need("bids"))
        .key_by("bidder")
        .window(processing_tumbling("10s", clock))
        .agg(count("bid_count"))
        .sink(sink)
    )


# q13's side input: Flink's is a file of 10 000 ``key,value`` lines joined on
# ``auction % 10000``. The benchmark and the generic tests use a generated one.
SIDE_KEYS = 10_000
SIDE_SCHEMA = {"key": pl.Int64, "value": pl.String}


def side_table(prefix: str = "side") -> pl.DataFrame:
    """The generated side input: ``key`` 0..9999 -> ``value`` "<prefix>-<key>"."""
    keys = pl.DataFrame({"key": pl.int_range(0, SIDE_KEYS, dtype=pl.Int64, eager=True)})
    return keys.with_columns((pl.lit(f"{prefix}-") + pl.col("key").cast(pl.String)).alias("value"))


def default_side_file() -> Path:
    """The generated side table as a CSV file in the temporary directory, written once
    (atomically, so concurrent runs at worst write the same bytes twice)."""
    path = Path(tempfile.gettempdir()) / f"dataflare-nexmark-q13-side-{SIDE_KEYS}.csv"
    if not path.exists():
        write_side_table(side_table(), path)
    return path


def q13(src: NexmarkSources, sink: Sink, side: FileSideTable | None = None) -> Pipeline:
    """Bounded side-input join: each bid with the side table's value for
    ``auction % 10000``; the table is re-read whenever its file changes, so rows after a
    change see the new values."""
    table = side or FileSideTable(default_side_file(), schema=SIDE_SCHEMA)
    return (
        _pipeline("nexmark-q13")
        .source(src.need("bids"))
        .with_columns((pl.col("auction") % SIDE_KEYS).alias("side_key"))
        .enrich(table, left_on="side_key", right_on="key", how="inner")
        .select("auction", "bidder", "price", "date_time", "value")
        .sink(sink)
    )


def _q14_filtered(src: NexmarkSources, name: str):
    """q14 up to its user function: bids worth 1 M to 50 M euros, with the time-of-day
    bucket of Flink's CASE (hours 8–18 day, 20–6 night, 7 and 19 other)."""
    hour = pl.col("date_time").dt.hour()
    euros = pl.col("price") * 0.908
    return (
        _pipeline(name)
        .source(src.need("bids"))
        .filter((euros > 1_000_000) & (euros < 50_000_000))
        .with_columns(
            euros.alias("price"),
            pl.when((hour >= 8) & (hour <= 18))
            .then(pl.lit("dayTime"))
            .when((hour <= 6) | (hour >= 20))
            .then(pl.lit("nightTime"))
            .otherwise(pl.lit("otherTime"))
            .alias("bid_time_type"),
        )
    )


Q14_COLUMNS = ("auction", "bidder", "price", "bid_time_type", "date_time", "extra", "c_counts")


def q14(src: NexmarkSources, sink: Sink) -> Pipeline:
    """A user function: Flink's ``count_char(extra, 'c')`` as a Polars expression."""
    c_counts = pl.col("extra").str.count_matches("c", literal=True).cast(pl.Int64)
    return (
        _q14_filtered(src, "nexmark-q14")
        .with_columns(c_counts.alias("c_counts"))
        .select(*Q14_COLUMNS)
        .sink(sink)
    )


def q14_with_plugin(src: NexmarkSources, sink: Sink, count_char: BatchPlugin) -> Pipeline:
    """q14 with the user function as a WASM map plugin (the ``count_char`` sample: utf8
    ``extra`` in, int64 ``c_counts`` out). The plugins layer loads it; the query only
    takes it in ready."""
    return (
        _q14_filtered(src, "nexmark-q14-plugin").plugin(count_char).select(*Q14_COLUMNS).sink(sink)
    )


def channel_id() -> pl.Expr:
    """Flink q21's CASE: a known channel's id, else (a null channel too) the url's
    ``channel_id`` (null when the url has none). One lookup of the lower-cased channel,
    not a comparison per known channel: on a 10 k-row batch 2.7 ms wall against 5.4 ms
    for the ``when`` chain (measured), the same values."""
    return (
        pl.col("channel")
        .str.to_lowercase()
        .replace_strict(
            HOT_CHANNEL_IDS,
            default=pl.col("url").str.extract(CHANNEL_ID_PATTERN, 2),
            return_dtype=pl.String,
        )
    )


def q21(src: NexmarkSources, sink: Sink) -> Pipeline:
    """Channel id extraction; bids whose channel id is unknown are dropped."""
    return (
        _pipeline("nexmark-q21")
        .source(src.need("bids"))
        .select("auction", "bidder", "price", "channel", channel_id().alias("channel_id"))
        .filter(pl.col("channel_id").is_not_null())
        .sink(sink)
    )


def url_dir(index: int) -> pl.Expr:
    """Flink's ``SPLIT_INDEX(url, '/', index)``: the index-th piece, null past the end."""
    return pl.col("url").str.split("/").list.get(index, null_on_oob=True)


def q22(src: NexmarkSources, sink: Sink) -> Pipeline:
    """URL splitting: the first three directories of each bid's url."""
    return (
        _pipeline("nexmark-q22")
        .source(src.need("bids"))
        .select(
            "auction",
            "bidder",
            "price",
            "channel",
            url_dir(3).alias("dir1"),
            url_dir(4).alias("dir2"),
            url_dir(5).alias("dir3"),
        )
        .sink(sink)
    )


_CHANNEL_ID_SQL = """CASE lower(channel)
            WHEN 'apple' THEN '0' WHEN 'google' THEN '1'
            WHEN 'facebook' THEN '2' WHEN 'baidu' THEN '3'
            ELSE CASE WHEN regexp_matches(url, '(&|^)channel_id=([^&]*)')
                      THEN regexp_extract(url, '(&|^)channel_id=([^&]*)', 2) END
        END"""

GROUND_TRUTH = {
    "q10": "SELECT auction, bidder, price, date_time, extra FROM bids",
    "q11": """
        WITH b AS (SELECT bidder, ms(date_time) AS t FROM bids),
        g AS (SELECT bidder, t, CASE WHEN t - lag(t) OVER (PARTITION BY bidder ORDER BY t)
                                      < 10000 THEN 0 ELSE 1 END AS new_session FROM b),
        s AS (SELECT bidder, t, sum(new_session) OVER (PARTITION BY bidder ORDER BY t
                     ROWS UNBOUNDED PRECEDING) AS sid FROM g)
        SELECT bidder, count(*) AS bid_count, epoch_ms(min(t)) AS window_start,
               epoch_ms(max(t) + 10000) AS window_end
        FROM s GROUP BY bidder, sid""",
    # Every bid seen within one processing-time window (what a run shorter than 10 s of
    # wall time gives; window bounds differ): the baseline's work. The rows under a clock
    # the test controls are checked in dataflare_platform_tests/queries.
    "q12": "SELECT bidder, count(*) AS bid_count FROM bids GROUP BY bidder",
    "q13": f"""
        WITH side AS (SELECT range AS key, 'side-' || range AS value
                      FROM range({SIDE_KEYS}))
        SELECT B.auction, B.bidder, B.price, B.date_time, S.value
        FROM bids B JOIN side S ON B.auction % {SIDE_KEYS} = S.key""",
    "q14": """
        SELECT auction, bidder, price * 0.908::DOUBLE AS price,
               CASE WHEN hour(date_time) BETWEEN 8 AND 18 THEN 'dayTime'
                    WHEN hour(date_time) <= 6 OR hour(date_time) >= 20 THEN 'nightTime'
                    ELSE 'otherTime' END AS bid_time_type,
               date_time, extra,
               length(extra) - length(replace(extra, 'c', '')) AS c_counts
        FROM bids
        WHERE price * 0.908::DOUBLE > 1000000 AND price * 0.908::DOUBLE < 50000000""",
    "q21": f"""
        SELECT * FROM (
            SELECT auction, bidder, price, channel, {_CHANNEL_ID_SQL} AS channel_id
            FROM bids)
        WHERE channel_id IS NOT NULL""",
    "q22": """
        SELECT auction, bidder, price, channel,
               string_split(url, '/')[4] AS dir1, string_split(url, '/')[5] AS dir2,
               string_split(url, '/')[6] AS dir3
        FROM bids""",
}

SPECS = {
    name: QuerySpec(
        columns=COLUMNS[name],
        build=build,
        truth=GROUND_TRUTH[name],
        approx=("price",) if name == "q14" else (),
        event_time=name != "q12",
        dataset=q10_dataset if name == "q10" else None,
    )
    for name, build in {
        "q10": q10,
        "q11": q11,
        "q12": q12,
        "q13": q13,
        "q14": q14,
        "q21": q21,
        "q22": q22,
    }.items()
}
