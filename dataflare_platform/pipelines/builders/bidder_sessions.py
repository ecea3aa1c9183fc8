"""Bidder sessions: each bidder's bursts of activity, a session closing after 10 s
without a bid — written with the builder API rather than YAML to show that both forms
become the same Dagster asset, sensor and continuous job."""

import polars as pl

from dataflare_platform.engine import Stream, count, max_, session, sum_
from dataflare_platform.streams.python_specs import stream_pipeline


@stream_pipeline(
    name="bidder_sessions",
    catalog={
        "description": (
            "Per bidder and activity session (closed after 10 s without a bid): bids, "
            "bid volume in cents and the highest bid. Written in Python "
            "with the builder API (pipelines/builders/bidder_sessions.py)."
        ),
        "group": "streams",
        "owners": ["team:streaming"],
        "tags": {"domain": "nexmark", "form": "python"},
    },
    watermark={"out_of_orderness": "4s"},
    sources={
        "bids": {
            "kind": "topic",
            "topic": "nexmark.bids",
            "columns": ["bidder", "price", "date_time"],
        }
    },
    sink={"kind": "duckdb", "table": "bidder_sessions"},
)
def bidder_sessions(bids: Stream) -> Stream:
    return (
        bids.filter(pl.col("price") > 0)
        .key_by("bidder")
        .window(session("10s"))
        .agg(count("bids"), sum_("price", "volume"), max_("price", "top_bid"))
    )
