"""Nexmark q6, q9 and q20: queries over auctions and the bids on them. q9 (each closed
auction with its winning bid) is the building block: :func:`winning_bids` builds it on a
pipeline and q6 (a seller's average selling price) reads its output.

Winning bid (q9, as Flink's Nexmark defines it): of the bids whose time lies between the
auction's creation and its expiry (inclusive), the highest price; among equal prices the
earliest; among those the lowest bidder id, so that the winner is a single row whatever
the order the bids arrived in. An auction is emitted once, when the watermark passes its
expiry; auctions without bids are not. The auction is then dropped from state.
"""

from __future__ import annotations

import polars as pl

from dataflare_platform.engine import Pipeline, Sink, Stream, mean
from dataflare_platform.queries.nexmark.spec import NexmarkSources, QuerySpec
from dataflare_platform.queries.nexmark.spec import pipeline as _pipeline

AUCTION_COLUMNS = [
    "id",
    "item_name",
    "description",
    "initial_bid",
    "reserve",
    "date_time",
    "expires",
    "seller",
    "category",
    "extra",
]
# The winning bid's columns and their output names (the auction's own date_time keeps
# its name, as in Flink's q9 where the bid's is bid_dateTime).
WINNING_BID_COLUMNS = {
    "auction": "auction",
    "bidder": "bidder",
    "price": "price",
    "date_time": "bid_date_time",
}
# Highest price, then earliest, then lowest bidder: a total order on distinct rows.
WINNING_ORDER = [("price", True), ("date_time", False), ("bidder", False)]
# q20's auction columns, renamed where they clash with a bid column.
Q20_AUCTION_COLUMNS = {
    "item_name": "item_name",
    "description": "description",
    "initial_bid": "initial_bid",
    "reserve": "reserve",
    "date_time": "auction_date_time",
    "expires": "expires",
    "seller": "seller",
    "category": "category",
    "extra": "auction_extra",
}
BID_COLUMNS = ["auction", "bidder", "price", "channel", "url", "date_time", "extra"]
LAST_AUCTIONS = 10  # q6 averages a seller's last 10 closed auctions

COLUMNS = {
    "q6": {
        "auctions": ["id", "date_time", "expires", "seller"],
        "bids": ["auction", "bidder", "price", "date_time"],
    },
    "q9": {"auctions": AUCTION_COLUMNS, "bids": ["auction", "bidder", "price", "date_time"]},
    "q20": {"bids": BID_COLUMNS, "auctions": ["id", *Q20_AUCTION_COLUMNS]},
}


def winning_bids(auctions: Stream, bids: Stream, auction_columns: list[str]) -> Stream:
    """Each auction, once closed, with ``auction_columns`` and its winning bid
    (``WINNING_BID_COLUMNS``); the stream's time column is the auction's close
    (``window_end``, its expiry)."""
    return auctions.interval_join_winner(
        bids,
        "id",
        "auction",
        "expires",
        auction_columns,
        WINNING_ORDER,
        WINNING_BID_COLUMNS,
    )


def q9(src: NexmarkSources, sink: Sink) -> Pipeline:
    """Winning bids: every closed auction with its winning bid."""
    p = _pipeline("nexmark-q9")
    auctions = p.source(src.need("auctions"))
    bids = p.source(src.need("bids"))
    return (
        winning_bids(auctions, bids, AUCTION_COLUMNS)
        .select(*AUCTION_COLUMNS, *WINNING_BID_COLUMNS.values())
        .sink(sink)
    )


def q6(src: NexmarkSources, sink: Sink) -> Pipeline:
    """Average selling price by seller over their last 10 closed auctions, updated on
    each close; an upsert stream keyed by ``seller``. Auctions close in (expires, id)
    order: several closing in one batch are taken in that order."""
    p = _pipeline("nexmark-q6")
    auctions = p.source(src.need("auctions"))
    bids = p.source(src.need("bids"))
    return (
        winning_bids(auctions, bids, ["id", "expires", "seller"])
        .key_by("seller")
        .reduce_last(LAST_AUCTIONS, mean("price", "avg_price"), order_by=["expires", "id"])
        .sink(sink)
    )


def q20(src: NexmarkSources, sink: Sink) -> Pipeline:
    """Bids of auctions in category 10, with the auction's columns (an unwindowed join).

    The category filter is the join's ``right_filter``, not a filter on the auctions
    before it: a bid leaves the join's state as soon as its auction is there (auction
    ids are unique), matching or rejected, whereas filtering auctions first would keep
    every bid on another category waiting for a match forever. The auctions stay in
    state (as the persons of q3 do): category-10 ones with their columns, the others as
    ids only."""
    p = _pipeline("nexmark-q20")
    bids = p.source(src.need("bids"))
    auctions = p.source(src.need("auctions")).select(
        "id", *(pl.col(c).alias(a) for c, a in Q20_AUCTION_COLUMNS.items())
    )
    return (
        bids.join(
            auctions,
            left_on="auction",
            right_on="id",
            right_unique=True,
            right_filter=pl.col("category") == 10,
        )
        .select(*BID_COLUMNS, *Q20_AUCTION_COLUMNS.values())
        .sink(sink)
    )


_Q9_TRUTH = f"""
    SELECT {", ".join(f"A.{c}" for c in AUCTION_COLUMNS)},
           B.auction, B.bidder, B.price, B.date_time AS bid_date_time
    FROM auctions A JOIN bids B ON A.id = B.auction
     AND B.date_time BETWEEN A.date_time AND A.expires
    QUALIFY row_number() OVER (
        PARTITION BY A.id ORDER BY B.price DESC, B.date_time ASC, B.bidder ASC) = 1"""

GROUND_TRUTH = {
    "q9": _Q9_TRUTH,
    "q6": f"""
        WITH w AS ({_Q9_TRUTH}),
        r AS (SELECT seller, price, row_number() OVER (
                  PARTITION BY seller ORDER BY expires DESC, id DESC) AS back
              FROM w)
        SELECT seller, avg(price) AS avg_price FROM r
        WHERE back <= {LAST_AUCTIONS} GROUP BY seller""",
    "q20": f"""
        SELECT {", ".join(f"B.{c}" for c in BID_COLUMNS)},
               {", ".join(f"A.{c} AS {a}" for c, a in Q20_AUCTION_COLUMNS.items())}
        FROM bids B JOIN auctions A ON B.auction = A.id
        WHERE A.category = 10""",
}

SPECS = {
    "q6": QuerySpec(
        columns=COLUMNS["q6"],
        build=q6,
        truth=GROUND_TRUTH["q6"],
        upsert_keys=["seller"],
        approx=("avg_price",),
        keeps_state=True,  # the last 10 prices of every seller
    ),
    "q9": QuerySpec(columns=COLUMNS["q9"], build=q9, truth=GROUND_TRUTH["q9"]),
    "q20": QuerySpec(
        columns=COLUMNS["q20"],
        build=q20,
        truth=GROUND_TRUTH["q20"],
        keeps_state=True,  # every auction (a regular join, as in Flink's q20)
    ),
}
