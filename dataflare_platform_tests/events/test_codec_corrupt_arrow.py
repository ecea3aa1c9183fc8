"""Corrupt Arrow payloads are refused by ``decode_arrow`` with a ValueError: the IPC
reader checks only the framing, so without full validation a changed byte in a string
offset buffer yields a table that crashes (segfaults) whoever reads it later."""

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflare_platform.datagen import NexmarkConfig
from dataflare_platform.events.codec import decode_arrow, encode_arrow
from dataflare_platform_tests.nexmark_data import nexmark_tables

BIDS = nexmark_tables(NexmarkConfig(events=200, events_per_second=100.0, seed=3))["bids"]
PAYLOAD = encode_arrow(BIDS.slice(0, 50))


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(PAYLOAD) - 1), st.integers(0, 255)), min_size=1, max_size=4
    )
)
def test_changed_bytes_are_refused_or_decode_to_readable_data(edits):
    corrupt = bytearray(PAYLOAD)
    for position, value in edits:
        corrupt[position] = value
    try:
        table = decode_arrow(bytes(corrupt), BIDS.schema)
    except ValueError:
        return
    table.validate(full=True)
    df = pl.from_arrow(table)
    df.sort(df.columns)
    df.select(pl.col("url").str.len_bytes().sum(), pl.col("channel").str.to_uppercase())


def test_a_known_corruption_is_refused_naming_it():
    # A string offset pushed past the data buffer: framing intact, buffers not.
    table = pa.table({"s": ["a", "bb", "ccc"]})
    payload = bytearray(encode_arrow(table))
    offsets = bytes(pa.array([0, 1, 3, 6], pa.int32()).buffers()[1])
    at = bytes(payload).find(offsets)
    assert at > 0
    payload[at + 12 : at + 16] = (1000).to_bytes(4, "little")
    with pytest.raises(ValueError, match="corrupt Arrow IPC stream"):
        decode_arrow(bytes(payload), table.schema)
