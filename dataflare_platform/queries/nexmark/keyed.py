"""Nexmark q15–q19 (the Flink Nexmark suite's additions): daily bid statistics with exact
distinct counts overall, per channel and per auction (q15, q16, q17), the latest bid per
(bidder, auction) (q18) and the ten highest bids per auction (q19).

q15–q17 are one-day tumbling windows on event time (UTC days). ``count(*) FILTER`` and
``count(DISTINCT c) FILTER`` become counts of a column that is null outside the
condition (``_ranked``), so the window's mergeable aggregates do them without a special
case. q18 and q19 are the keyed top-N operator (``Stream.top_n``), upsert streams keyed
by (bidder, auction) and (auction, rank_number); ``ttl`` bounds their state when keys
are not revived after it (see ``KeyedTopN``). Ties in the ranking are broken by the
other columns, ascending, in the ground truth as in the engine.
"""

from __future__ import annotations

import polars as pl

from dataflare_platform.engine import (
    Pipeline,
    Sink,
    count,
    max_,
    mean,
    min_,
    sum_,
    tumbling,
)
from dataflare_platform.engine.aggregations import Agg, count_distinct
from dataflare_platform.engine.operators.plugin_windows import AggregatePlugin
from dataflare_platform.engine.pipeline import Stream
from dataflare_platform.queries.nexmark.spec import NexmarkSources, QuerySpec
from dataflare_platform.queries.nexmark.spec import pipeline as _pipeline

DAY = "1d"
DAY_MS = 86_400_000
# Flink Nexmark q15–q17's price ranks: below 10 000, 10 000 up to 1 000 000, from 1 000 000.
RANK_BOUNDS = (10_000, 1_000_000)
RANKS = {
    "rank1": pl.col("price") < RANK_BOUNDS[0],
    "rank2": (pl.col("price") >= RANK_BOUNDS[0]) & (pl.col("price") < RANK_BOUNDS[1]),
    "rank3": pl.col("price") >= RANK_BOUNDS[1],
}
BID_COLUMNS = ["auction", "bidder", "price", "channel", "url", "date_time", "extra"]

COLUMNS = {
    "q15": {"bids": ["auction", "bidder", "price", "date_time"]},
    "q16": {"bids": ["auction", "bidder", "price", "channel", "date_time"]},
    "q17": {"bids": ["auction", "price", "date_time"]},
    "q18": {"bids": BID_COLUMNS},
    "q19": {"bids": BID_COLUMNS},
}


def _ranked(stream: Stream, distinct: tuple[str, ...]) -> Stream:
    """Per rank, a column ``<rank>_bid`` (1 in the rank, else null) and, for each column
    of ``distinct``, ``<rank>_<column>`` (its value in the rank, else null): counting
    them is ``count(*) FILTER`` and ``count(DISTINCT) FILTER``."""
    exprs = []
    for rank, cond in RANKS.items():
        exprs.append(pl.when(cond).then(pl.lit(1, pl.Int8)).alias(f"{rank}_bid"))
        exprs += [pl.when(cond).then(pl.col(c)).alias(f"{rank}_{c}") for c in distinct]
    return stream.with_columns(*exprs)


def _bid_counts() -> list[Agg]:
    return [count("total_bids")] + [count(f"{r}_bids", f"{r}_bid") for r in RANKS]


def _distinct_counts() -> list[Agg]:
    return [
        agg
        for column, name in (("bidder", "bidders"), ("auction", "auctions"))
        for agg in [
            count_distinct(column, f"total_{name}"),
            *(count_distinct(f"{r}_{column}", f"{r}_{name}") for r in RANKS),
        ]
    ]


def _per_day(stream: Stream, keys: tuple[str, ...], aggs: list[Agg], *extra: pl.Expr) -> Stream:
    """One-day tumbling windows per ``keys``; the window's start as the ``day`` (a date),
    then the keys, ``extra`` columns and the aggregates."""
    return (
        stream.key_by(*keys)
        .window(tumbling(DAY))
        .agg(*aggs)
        .with_columns(pl.col("window_start").cast(pl.Date).alias("day"), *extra)
        .select("day", *keys, *(e.meta.output_name() for e in extra), *_public(aggs))
    )


def _public(aggs: list[Agg]) -> list[str]:
    return [a.alias for a in aggs if not a.alias.startswith("__")]


def _daily(src: NexmarkSources, name: str, keys: tuple[str, ...]) -> Stream:
    """q15 (no keys) and q16 (per channel): bid counts and distinct bidders and auctions,
    overall and per rank; per channel also Flink's ``minute``, the day's last bid's
    ``HH:mm``."""
    aggs = _bid_counts() + _distinct_counts()
    extra = []
    if keys:
        aggs.append(max_("date_time", "__last_bid"))
        extra.append(pl.col("__last_bid").dt.strftime("%H:%M").alias("minute"))
    stream = _ranked(_pipeline(name).source(src.need("bids")), ("bidder", "auction"))
    return _per_day(stream, keys, aggs, *extra)


def q15(src: NexmarkSources, sink: Sink) -> Pipeline:
    """Daily bid statistics: bids, bidders and auctions per day, overall and per price
    rank (exact distinct counts)."""
    return _daily(src, "nexmark-q15", ()).sink(sink)


def q15_approx_bidders(src: NexmarkSources, sink: Sink, hll: AggregatePlugin) -> Pipeline:
    """q15's distinct bidders per day, approximate: the ``hll_distinct`` WASM plugin (a
    4 KiB HyperLogLog sketch, ~1.6 % standard error) loaded with ``columns={"value":
    "bidder"}``, one sketch per day window (``plugin_agg``), in constant space where the
    exact count keeps every bidder of the day. One row per day when the day closes:
    ``day`` and ``total_bidders`` (the estimate)."""
    return (
        _pipeline("nexmark-q15-approx")
        .source(src.need("bids"))
        .select("bidder", "date_time")
        .key_by()
        .window(tumbling(DAY))
        .plugin_agg(hll)
        .select(
            pl.col("window_start").cast(pl.Date).alias("day"),
            pl.col("approx_distinct").alias("total_bidders"),
        )
        .sink(sink)
    )


def q16(src: NexmarkSources, sink: Sink) -> Pipeline:
    """q15 per channel, with the ``minute`` of the channel's last bid of the day."""
    return _daily(src, "nexmark-q16", ("channel",)).sink(sink)


def q17(src: NexmarkSources, sink: Sink) -> Pipeline:
    """Daily auction statistics: bids per rank and min/max/avg/sum price per auction."""
    p = _pipeline("nexmark-q17")
    aggs = [
        *_bid_counts(),
        min_("price", "min_price"),
        max_("price", "max_price"),
        mean("price", "avg_price"),
        sum_("price", "sum_price"),
    ]
    return _per_day(_ranked(p.source(src.need("bids")), ()), ("auction",), aggs).sink(sink)


def q18(src: NexmarkSources, sink: Sink, ttl: int | str | None = None) -> Pipeline:
    """Latest bid per (bidder, auction): an upsert stream keyed by both. ``ttl`` forgets
    a pair idle that long (event time): exact while no pair is revived after it."""
    return (
        _pipeline("nexmark-q18")
        .source(src.need("bids"))
        .key_by("bidder", "auction")
        .top_n("date_time", n=1, descending=True, ttl=ttl)
        .sink(sink)
    )


def q19(src: NexmarkSources, sink: Sink, ttl: int | str | None = None) -> Pipeline:
    """Ten highest bids per auction with their rank: an upsert stream keyed by (auction,
    rank_number). ``ttl`` forgets an auction idle that long (event time): exact while no
    auction gets a bid after it (a revived auction ranks its new bids afresh)."""
    return (
        _pipeline("nexmark-q19")
        .source(src.need("bids"))
        .key_by("auction")
        .top_n("price", n=10, descending=True, rank_column="rank_number", ttl=ttl)
        .sink(sink)
    )


def _truth_counts(distinct: bool) -> str:
    ranks = {
        "rank1": f"price < {RANK_BOUNDS[0]}",
        "rank2": f"price >= {RANK_BOUNDS[0]} AND price < {RANK_BOUNDS[1]}",
        "rank3": f"price >= {RANK_BOUNDS[1]}",
    }
    parts = ["count(*) AS total_bids"]
    parts += [f"count(*) FILTER (WHERE {c}) AS {r}_bids" for r, c in ranks.items()]
    if distinct:
        for column, name in (("bidder", "bidders"), ("auction", "auctions")):
            parts.append(f"count(DISTINCT {column}) AS total_{name}")
            parts += [
                f"count(DISTINCT {column}) FILTER (WHERE {c}) AS {r}_{name}"
                for r, c in ranks.items()
            ]
    return ", ".join(parts)


_DAYS = f"WITH b AS (SELECT *, ms(date_time) - ms(date_time) % {DAY_MS} AS ws FROM bids)"
_DAY = "CAST(epoch_ms(ws) AS DATE) AS day"

GROUND_TRUTH = {
    "q15": f"{_DAYS} SELECT {_DAY}, {_truth_counts(True)} FROM b GROUP BY ws",
    "q16": f"""{_DAYS} SELECT {_DAY}, channel, strftime(max(date_time), '%H:%M') AS minute,
        {_truth_counts(True)} FROM b GROUP BY ws, channel""",
    "q17": f"""{_DAYS} SELECT {_DAY}, auction, {_truth_counts(False)},
        min(price) AS min_price, max(price) AS max_price, avg(price) AS avg_price,
        sum(price) AS sum_price FROM b GROUP BY ws, auction""",
    "q18": """
        SELECT auction, bidder, price, channel, url, date_time, extra FROM bids
        QUALIFY row_number() OVER (PARTITION BY bidder, auction
            ORDER BY date_time DESC, price, channel, url, extra) = 1""",
    "q19": """
        SELECT auction, bidder, price, channel, url, date_time, extra,
            row_number() OVER (PARTITION BY auction
                ORDER BY price DESC, bidder, channel, url, date_time, extra) AS rank_number
        FROM bids QUALIFY rank_number <= 10""",
}

SPECS = {
    "q15": QuerySpec(COLUMNS["q15"], q15, GROUND_TRUTH["q15"]),
    "q16": QuerySpec(COLUMNS["q16"], q16, GROUND_TRUTH["q16"]),
    "q17": QuerySpec(COLUMNS["q17"], q17, GROUND_TRUTH["q17"], approx=("avg_price",)),
    "q18": QuerySpec(
        COLUMNS["q18"],
        q18,
        GROUND_TRUTH["q18"],
        upsert_keys=["bidder", "auction"],
        keeps_state=True,
    ),
    "q19": QuerySpec(
        COLUMNS["q19"],
        q19,
        GROUND_TRUTH["q19"],
        upsert_keys=["auction", "rank_number"],
        keeps_state=True,
    ),
}
