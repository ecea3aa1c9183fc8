"""Shared pieces of the broker tests: reachability checks that fail loudly, unique
names, fuzzed payloads and the invariants every broker reader must keep."""

from __future__ import annotations

import json
import os
import socket
import uuid
from urllib.parse import urlparse

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import strategies as st

from dataflare_platform.connectors.broker import arrow_rows
from dataflare_platform.connectors.offset_source import OffsetSource
from dataflare_platform.connectors.settings import OpenContext
from dataflare_platform.engine import TableSource
from dataflare_platform.events.codec import DEAD_LETTER_SCHEMA, encode_arrow, encode_json
from dataflare_platform_tests.connectors.contract import SourceCase
from dataflare_platform_tests.connectors.sink_helpers import run_q1

NATS_URL_VARIABLE = "DATAFLARE_TEST_NATS_URL"
REDIS_URL_VARIABLE = "DATAFLARE_TEST_REDIS_URL"


def service_url(variable: str, default: str, what: str, start_hint: str) -> str:
    """The service's URL, after checking it accepts connections: a test that needs a
    broker fails (never skips) when it is down, saying which and how to start it."""
    url = os.environ.get(variable, default)
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=2):
            pass
    except OSError as err:
        pytest.fail(
            f"{what} is not reachable at {url} ({err}). These tests use a real server:"
            f" start it ({start_hint}) or point {variable} at one.",
            pytrace=False,
        )
    return url


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


# -- fuzzed payloads -----------------------------------------------------------------------
# Each item is (kind, payload, expected rows): "good" must decode to exactly the expected
# rows, "bad" must be dead-lettered, "any" may go either way (arbitrary bytes can happen
# to be a valid record, e.g. ``{}``) but must be accounted for all the same.
Item = tuple[str, bytes, pa.Table | None]


def _mistyped(record: bytes, field: str, value: object) -> bytes:
    obj = json.loads(record)
    obj[field] = value
    return json.dumps(obj).encode()


def json_items(bids: pa.Table, pool: int = 50) -> st.SearchStrategy[Item]:
    records = encode_json(bids.slice(0, pool))
    index = st.integers(0, pool - 1)
    good = index.map(lambda i: ("good", records[i], bids.slice(i, 1)))
    truncated = st.builds(
        lambda i, cut: ("bad", records[i][: cut % (len(records[i]) - 1) + 1], None),
        index,
        st.integers(0, 10**6),
    )
    mistyped_number = st.builds(
        lambda i, f, v: ("bad", _mistyped(records[i], f, v), None),
        index,
        st.sampled_from(["auction", "bidder", "price"]),
        st.one_of(st.text(min_size=1), st.lists(st.integers(), max_size=2), st.booleans()),
    )
    mistyped_text = st.builds(
        lambda i, f, v: ("bad", _mistyped(records[i], f, v), None),
        index,
        st.sampled_from(["channel", "url", "extra", "date_time"]),
        st.one_of(st.integers(), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)),
    )
    not_object = st.sampled_from([b"[1, 2]", b"null", b"42", b'"bid"', b"", b"   ", b"{}{}"])
    return st.one_of(
        good,
        truncated,
        mistyped_number,
        mistyped_text,
        not_object.map(lambda p: ("bad", p, None)),
        st.binary(max_size=300).map(lambda p: ("any", p, None)),
    )


def arrow_items(bids: pa.Table) -> st.SearchStrategy[Item]:
    batch = st.builds(
        lambda start, n: bids.slice(start, n), st.integers(0, 200), st.integers(1, 40)
    )
    good = batch.map(lambda t: ("good", encode_arrow(t), t))
    # Prices as text still decode (cast back to int64): the same rows come out.
    price_text = batch.map(
        lambda t: ("good", encode_arrow(t.set_column(2, "price", t["price"].cast(pa.string()))), t)
    )
    # A cut stream may still hold whole batches, so either outcome is allowed.
    truncated = st.builds(
        lambda t, cut: ("any", (p := encode_arrow(t))[: cut % (len(p) - 1) + 1], None),
        batch,
        st.integers(0, 10**6),
    )
    # Bytes changed in place: mostly refused, sometimes still valid; never a crash.
    flipped = st.builds(
        lambda t, edits: ("any", flip(encode_arrow(t), edits), None),
        batch,
        st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
    )
    missing = batch.map(lambda t: ("bad", encode_arrow(t.drop_columns(["date_time"])), None))
    garbage = st.binary(min_size=1, max_size=300).map(lambda p: ("bad", p, None))
    return st.one_of(good, price_text, truncated, flipped, missing, garbage)


def flip(payload: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(payload)
    for position, value in edits:
        out[position % len(out)] = value
    return bytes(out)


def placements(items: list[Item], fmt: str) -> list[tuple[int, int]]:
    """(first offset, rows) of each sent item, as the producers place raw payloads."""
    out, offset = [], 0
    for _, payload, _ in items:
        rows = 1 if fmt == "json" else (arrow_rows(payload) or 1)
        out.append((offset, rows))
        offset += rows
    return out


def check_fuzzed_read(items: list[Item], fmt: str, source: OffsetSource) -> None:
    """Read back what the items were sent as: each good item's rows at its offsets,
    each bad one dead-lettered with its raw bytes and null rows in its place, and
    in == out + dead exactly."""
    rows = read_all(source, max_rows=7)
    pl.from_arrow(rows).sort(
        rows.column_names
    )  # every value readable (corrupt input once crashed here)
    dead = dead_of(source)
    by_offset = dict(
        zip(dead.column("offset").to_pylist(), dead.column("payload").to_pylist(), strict=True)
    )
    assert len(by_offset) == dead.num_rows  # one dead letter per bad message
    place = placements(items, fmt)
    assert rows.num_rows == sum(n for _, n in place)
    for (kind, payload, expected), (start, n) in zip(items, place, strict=True):
        got = rows.slice(start, n)
        if start in by_offset:
            assert kind != "good", f"good message at {start} dead-lettered"
            assert by_offset[start] == payload
            assert all(c.null_count == n for c in got.columns)
        else:
            assert kind != "bad", f"bad message at {start} not dead-lettered: {payload!r}"
            if expected is not None:
                assert got.equals(expected.cast(source.schema))
    check_source_accounting(source, rows, len(items))
    assert source.stats.dead_messages == dead.num_rows
    assert source.stats.good_messages + dead.num_rows == len(items)


def check_fuzzed_fetch(items: list[Item], fmt: str, consumer) -> None:
    """A consumer group gets every item once: good rows or a dead letter each."""
    ids, good_rows, dead_offsets = [], 0, set()
    while len(ids) < len(items):
        result = consumer.fetch(1000, timeout_s=2)
        assert result.messages, f"only {len(ids)} of {len(items)} messages came"
        assert result.messages == result.good_messages + result.dead.num_rows
        if fmt == "json":
            assert result.table.num_rows + result.dead.num_rows == result.messages
        ids += result.ids
        good_rows += result.table.num_rows
        dead_offsets |= set(result.dead.column("offset").to_pylist())
        result.ack()
    assert len(set(ids)) == len(items)
    for (kind, _, _), (start, _) in zip(items, placements(items, fmt), strict=True):
        if kind == "bad":
            assert start in dead_offsets
        if kind == "good":
            assert start not in dead_offsets
    assert consumer.fetch(10, timeout_s=0.05).messages == 0


# -- invariants ----------------------------------------------------------------------------
def read_all(source: OffsetSource, max_rows: int = 997) -> pa.Table:
    """Every row of a bounded source's only partition, read as the runner would."""
    (partition,) = source.partitions()
    end = source.end_offset(partition)
    assert end is not None
    parts, offset = [], 0
    while offset < end:
        table = source.read(partition, offset, min(max_rows, end - offset))
        assert table.num_rows > 0, f"no progress at offset {offset} of {end}"
        parts.append(table)
        offset += table.num_rows
    assert offset == end
    return pa.concat_tables(parts) if parts else source.schema.empty_table()


def dead_of(source: OffsetSource) -> pa.Table:
    tables = [t for t in source.dead_letters if t.num_rows]
    return pa.concat_tables(tables) if tables else DEAD_LETTER_SCHEMA.empty_table()


def check_source_accounting(source: OffsetSource, rows: pa.Table, messages: int) -> None:
    """Every message is good or dead, every row decoded or a placeholder."""
    s = source.stats
    assert s.messages == messages == s.good_messages + s.dead_messages
    assert s.rows == rows.num_rows == s.good_rows + s.placeholder_rows
    assert dead_of(source).num_rows == s.dead_messages + s.gaps


def q1_over_table(bids: pa.Table) -> pl.DataFrame:
    return run_q1(TableSource.single("bids", bids))


def same_rows(a: pa.Table, b: pa.Table) -> bool:
    """Equal as multisets of rows (order aside)."""
    key = [(name, "ascending") for name in a.column_names]
    return a.num_rows == b.num_rows and a.sort_by(key).equals(b.sort_by(key))


# -- the source contract -------------------------------------------------------------------
def broker_source_case(
    fresh, producer, source_settings, open_source, *, context: OpenContext | None = None
) -> SourceCase:
    """The contract's case for a broker: ``fresh()`` gives settings of a new, empty
    stream; rows are sent by ``producer`` (a factory: settings -> producer; bad messages
    raw, between good ones) and read back by a source opened from ``source_settings`` (its
    ``kind:`` model) with ``open_source``, as a pipeline opens it. ``context`` is the
    context the source is opened in (a bounded read of every partition unless given, e.g.
    ``partitions=(0,)`` for a producer that writes one partition of a topic)."""
    opened = context or OpenContext("contract", "bids", bounded=True)

    def opener(settings, table: pa.Table):
        types = {f.name: str(f.type) for f in table.schema}
        spec = source_settings(**settings.model_dump(), schema=types)
        return lambda: open_source(spec, opened)

    def store(table: pa.Table):
        settings = fresh()
        sender = producer(settings)
        sender.send(table)
        sender.close()
        return opener(settings, table)

    def store_with_bad(table: pa.Table, bad: int):
        settings = fresh()
        sender = producer(settings)
        step = table.num_rows // bad
        for i in range(bad):
            sender.send(table.slice(i * step, step))
            sender.send_raw([b"{not json " + str(i).encode()])
        sender.send(table.slice(bad * step))
        sender.close()
        return opener(settings, table)

    return SourceCase(store, store_with_bad)
