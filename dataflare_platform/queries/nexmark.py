"""The Nexmark queries on the engine's public API, with their DuckDB ground truth.

Each builder takes the sources it needs and a sink and returns a ready pipeline. The
SQL in ``GROUND_TRUTH`` is the same query as a one-shot batch over all events: tests
compare against it, and the benchmark times it as the baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

from dataflare_platform.connectors.files import FileSource, nexmark_files
from dataflare_platform.engine import (
    Pipeline,
    Sink,
    Source,
    TopN,
    count,
    max_,
    mean,
    sliding,
    tumbling,
)
from dataflare_platform.errors import InvalidInputError, MissingPathError

# Nexmark: the watermark trails the highest event time by 4 s.
WATERMARK_DELAY_MS = 4_000

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
QUERIES = tuple(COLUMNS)


@dataclass
class NexmarkSources:
    bids: Source | None = None
    persons: Source | None = None
    auctions: Source | None = None

    def need(self, kind: str) -> Source:
        source = getattr(self, kind)
        if source is None:
            raise InvalidInputError(f"this query needs the {kind} input")
        return source

    @classmethod
    def from_paths(
        cls,
        query: str,
        bids: Path | None = None,
        persons: Path | None = None,
        auctions: Path | None = None,
    ) -> NexmarkSources:
        """File sources reading only the columns ``query`` uses; a path may be a file
        or a directory of part files."""
        given = {"bids": bids, "persons": persons, "auctions": auctions}
        made = {}
        for kind, columns in COLUMNS[query].items():
            path = given[kind]
            if path is None:
                raise InvalidInputError(f"{query} needs --{kind} (or --input for bids)")
            path = Path(path)
            if not path.exists():
                raise MissingPathError(f"{kind} input {path}: no such file or directory")
            files = nexmark_files(path) if path.is_dir() else [path]
            made[kind] = FileSource(kind, files, columns=columns)
        return cls(**made)


def _pipeline(name: str) -> Pipeline:
    return Pipeline(name, out_of_orderness_ms=WATERMARK_DELAY_MS)


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


BUILDERS: dict[str, Callable[[NexmarkSources, Sink], Pipeline]] = {
    "q0": q0,
    "q1": q1,
    "q2": q2,
    "q3": q3,
    "q4": q4,
    "q5": q5,
    "q7": q7,
    "q8": q8,
}

UPSERT_KEYS = {"q4": ["category"]}

# One-shot DuckDB SQL over tables named bids / persons / auctions, giving the rows an
# engine run produces (in any order). ``ms(t)`` is a macro: duckdb 2.0 cannot apply
# epoch_ms to an Arrow timestamp[ms] column directly ("Unimplemented type for cast").
TRUTH_PRELUDE = "CREATE OR REPLACE TEMP MACRO ms(t) AS epoch_ms(CAST(t AS TIMESTAMP))"

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


def ground_truth(conn: duckdb.DuckDBPyConnection, query: str) -> pa.Table:
    """Run ``query``'s one-shot SQL on ``conn`` (tables bids/persons/auctions)."""
    conn.execute(TRUTH_PRELUDE)
    return conn.sql(GROUND_TRUTH[query]).to_arrow_table()
