"""Nexmark q0–q5, q7 and q8: the queries the engine first ran (pass-through, projection,
selection, a stream-table join, an interval join, sliding and tumbling windows, a
window join)."""

from __future__ import annotations

import polars as pl

from dataflare_platform.engine import (
    Pipeline,
    Sink,
    TopN,
    count,
    max_,
    mean,
    sliding,
    tumbling,
)
from dataflare_platform.queries.nexmark.spec import NexmarkSources, QuerySpec
from dataflare_platform.queries.nexmark.spec import pipeline as _pipeline

COLUMNS = {
    "q0": {"bids": ["auction", "bidder", "price", "channel", "url", "date_time", "extra"]},
    "q1": {"bids": ["auction", "bidder", "price", "date_time"]},
    "q2": {"bids": ["auction", "price", "date_time"]},
    "q3": {
        "persons": ["id", "name", "city", "state", "date_time"],
        "auctions": ["id", "seller", "category", "date_time"],
    },
    "q4": {
        "auctions": ["id", "category", "date_time", "expires"],
        "bids": ["auction", "price", "date_time"],
    },
    "q5": {"bids": ["auction", "date_time"]},
    "q7": {"bids": ["auction", "bidder", "price", "date_time"]},
    "q8": {"persons": ["id", "name", "date_time"], "auctions": ["seller", "date_time"]},
}


def q0(src: NexmarkSources, sink: Sink) -> Pipeline:
    """Pass-through."""
    return _pipeline("nexmark-q0").source(src.need("bids")).sink(sink)


def q1(src: NexmarkSources, sink: Sink) -> Pipeline:
    """Currency conversion: price in euros (× 0.908) as float64."""
    return (
        _pipeline("nexmark-q1")
        .source(src.need("bids"))
        .select("auction", "bidder", (pl.col("price") * 0.908).alias("price"), "date_time")
        .sink(sink)
    )


def q2(src: NexmarkSources, sink: Sink) -> Pipeline:
    """Selection: bids on every 123rd auction."""
    return (
        _pipeline("nexmark-q2")
        .source(src.need("bids"))
        .filter(pl.col("auction") % 123 == 0)
        .select("auction", "price")
        .sink(sink)
    )


def q3(src: NexmarkSources, sink: Sink) -> Pipeline:
    """Local item suggestion: sellers in OR/ID/CA with auctions in category 10."""
    p = _pipeline("nexmark-q3")
    auctions = p.source(src.need("auctions")).filter(pl.col("category") == 10)
    persons = p.source(src.need("persons")).filter(pl.col("state").is_in(["OR", "ID", "CA"]))
    return (
        auctions.join(persons, left_on="seller", right_on="id", right_unique=True)
        .select("name", "city", "state", "id")
        .sink(sink)
    )


def q4(src: NexmarkSources, sink: Sink) -> Pipeline:
    """Average winning price per category; the sink should upsert on ``category``."""
    p = _pipeline("nexmark-q4")
    auctions = p.source(src.need("auctions"))
    bids = p.source(src.need("bids"))
    return (
        auctions.interval_join_agg(
            bids, "id", "auction", "expires", ["id", "category"], max_("price", "final")
        )
        .key_by("category")
        .reduce(mean("final", "avg_price"))
        .sink(sink)
    )


def q5(src: NexmarkSources, sink: Sink) -> Pipeline:
    """Hot items: auction(s) with the most bids per 10 s window sliding by 2 s."""
    return (
        _pipeline("nexmark-q5")
        .source(src.need("bids"))
        .key_by("auction")
        .window(sliding("10s", "2s"))
        .agg(count("num"), top=TopN("num"))
        .sink(sink)
    )


def q7(src: NexmarkSources, sink: Sink) -> Pipeline:
    """Highest bid(s) per 10 s tumbling window."""
    return (
        _pipeline("nexmark-q7")
        .source(src.need("bids"))
        .window(tumbling("10s"))
        .top_rows("price")
        .sink(sink)
    )


def q8(src: NexmarkSources, sink: Sink) -> Pipeline:
    """New users: persons who opened an auction in the 10 s window they registered in."""
    p = _pipeline("nexmark-q8")
    persons = p.source(src.need("persons"))
    auctions = p.source(src.need("auctions"))
    return (
        persons.window_join(auctions, tumbling("10s"), left_on="id", right_on="seller")
        .select("id", "name", "window_start")
        .unique()
        .sink(sink)
    )


GROUND_TRUTH = {
    "q0": "SELECT auction, bidder, price, channel, url, date_time, extra FROM bids",
    "q1": "SELECT auction, bidder, price * 0.908::DOUBLE AS price, date_time FROM bids",
    "q2": "SELECT auction, price FROM bids WHERE auction % 123 = 0",
    "q3": """
        SELECT P.name, P.city, P.state, A.id
        FROM auctions A JOIN persons P ON A.seller = P.id
        WHERE A.category = 10 AND P.state IN ('OR', 'ID', 'CA')""",
    "q4": """
        WITH q AS (
            SELECT A.id, A.category, max(B.price) AS final
            FROM auctions A JOIN bids B ON A.id = B.auction
             AND B.date_time BETWEEN A.date_time AND A.expires
            GROUP BY A.id, A.category)
        SELECT category, avg(final) AS avg_price FROM q GROUP BY category""",
    "q5": """
        WITH b AS (SELECT auction, ms(date_time) AS t FROM bids),
        w AS (SELECT auction, (t - t % 2000) - k * 2000 AS ws FROM b, range(5) r(k)),
        c AS (SELECT ws, auction, count(*) AS num FROM w GROUP BY ws, auction)
        SELECT epoch_ms(ws) AS window_start,
               epoch_ms(ws + 10000) AS window_end, auction, num
        FROM c QUALIFY num = max(num) OVER (PARTITION BY ws)""",
    "q7": """
        WITH w AS (SELECT *, ms(date_time) - ms(date_time) % 10000 AS ws
                   FROM bids)
        SELECT auction, bidder, price, date_time, epoch_ms(ws) AS window_start,
               epoch_ms(ws + 10000) AS window_end
        FROM w QUALIFY price = max(price) OVER (PARTITION BY ws)""",
    "q8": """
        WITH P AS (SELECT id, name, ms(date_time) - ms(date_time) % 10000 AS ws
                   FROM persons),
             A AS (SELECT seller, ms(date_time) - ms(date_time) % 10000 AS ws
                   FROM auctions)
        SELECT DISTINCT P.id, P.name, epoch_ms(P.ws) AS window_start
        FROM P JOIN A ON P.id = A.seller AND P.ws = A.ws""",
}


SPECS = {
    name: QuerySpec(
        columns=COLUMNS[name],
        build=build,
        truth=GROUND_TRUTH[name],
        upsert_keys=["category"] if name == "q4" else None,
        approx=("avg_price",) if name == "q4" else (),
        # q3's persons and auctions (a table join) and q4's running average per category
        # (an upsert stream without windows) stay in state when the input ends.
        keeps_state=name in ("q3", "q4"),
    )
    for name, build in {
        "q0": q0,
        "q1": q1,
        "q2": q2,
        "q3": q3,
        "q4": q4,
        "q5": q5,
        "q7": q7,
        "q8": q8,
    }.items()
}
