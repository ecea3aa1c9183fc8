"""Arrow schemas of the three Nexmark event kinds, as the Nexmark benchmark defines them.

Timestamps are ``timestamp[ms]`` without a zone and mean UTC; money is in cents (int64).
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("ms")

PERSON_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("name", pa.string()),
        ("email_address", pa.string()),
        ("credit_card", pa.string()),
        ("city", pa.string()),
        ("state", pa.string()),
        ("date_time", TS),
        ("extra", pa.string()),
    ]
)

AUCTION_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("item_name", pa.string()),
        ("description", pa.string()),
        ("initial_bid", pa.int64()),
        ("reserve", pa.int64()),
        ("date_time", TS),
        ("expires", TS),
        ("seller", pa.int64()),
        ("category", pa.int64()),
        ("extra", pa.string()),
    ]
)

BID_SCHEMA = pa.schema(
    [
        ("auction", pa.int64()),
        ("bidder", pa.int64()),
        ("price", pa.int64()),
        ("channel", pa.string()),
        ("url", pa.string()),
        ("date_time", TS),
        ("extra", pa.string()),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "persons": PERSON_SCHEMA,
    "auctions": AUCTION_SCHEMA,
    "bids": BID_SCHEMA,
}


def _pooled(schema: pa.Schema, columns: tuple[str, ...]) -> pa.Schema:
    pooled = pa.dictionary(pa.int32(), pa.string())
    return pa.schema([(f.name, pooled if f.name in columns else f.type) for f in schema])


# In memory the generator draws some string columns from fixed pools and keeps them
# dictionary-encoded (no byte copies); files and readers see the plain schemas above.
PERSON_CHUNK_SCHEMA = _pooled(PERSON_SCHEMA, ("extra",))
AUCTION_CHUNK_SCHEMA = _pooled(AUCTION_SCHEMA, ("extra",))
BID_CHUNK_SCHEMA = _pooled(BID_SCHEMA, ("channel", "url", "extra"))
