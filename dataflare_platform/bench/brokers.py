"""Broker throughput: Nexmark bids through NATS JetStream and Redis Streams, each in both
wire formats, measured each way.

- produce: ``send`` of the whole table (encoding, batched publishing, waiting for every
  ack);
- consume: a consumer group fetching ``batch_rows`` records at a time, decoding and
  acking each fetch (what a router or sink worker does);
- source: the engine's offset source reading it all back in 10k-row reads (what a
  pipeline run does).

Each run uses a fresh, uniquely named stream that is deleted afterwards. Counts are
checked: a run that lost, duplicated or dead-lettered anything raises instead of
reporting a rate.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from dataflare_platform.bench.events import nexmark_bids
from dataflare_platform.connectors.broker import BrokerConsumer, BrokerProducer, Format
from dataflare_platform.connectors.offset_source import OffsetSource
from dataflare_platform.errors import InvalidInputError

SOURCE_READ_ROWS = 10_000  # the engine's default batch


def _bids(events: int) -> pa.Table:
    """Exactly ``events`` bids (bids are 46 of every 50 Nexmark events)."""
    bids = nexmark_bids(-(-events * 50 // 46) + 50)
    return bids.slice(0, events)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _consume(consumer: BrokerConsumer, rows: int, batch_rows: int) -> int:
    got = 0
    while got < rows:
        result = consumer.fetch(batch_rows, timeout_s=5.0)
        if not result.messages:
            raise RuntimeError(f"consumer stalled after {got} of {rows} rows")
        if result.dead.num_rows:
            raise RuntimeError(f"{result.dead.num_rows} dead letters in a clean stream")
        got += result.table.num_rows
        result.ack()
    return got


def _read(source: OffsetSource) -> int:
    (partition,) = source.partitions()
    end = source.end_offset(partition)
    assert end is not None
    offset = 0
    while offset < end:
        table = source.read(partition, offset, min(SOURCE_READ_ROWS, end - offset))
        if table.num_rows == 0:
            raise RuntimeError(f"source stalled at offset {offset} of {end}")
        offset += table.num_rows
    if source.stats.placeholder_rows:
        raise RuntimeError(f"{source.stats.placeholder_rows} placeholder rows in a clean stream")
    return offset


def _one(
    broker: str,
    fmt: Format,
    bids: pa.Table,
    batch_rows: int,
    make: Callable[[Format], tuple[Any, ...]],
) -> dict[str, object]:
    settings, producer_cls, consumer_cls, source_cls, delete = make(fmt)
    try:
        producer: BrokerProducer = producer_cls(settings)
        try:
            produce_s, _ = _timed(lambda: producer.send(bids))
            messages = producer.messages
        finally:
            producer.close()
        consumer: BrokerConsumer = consumer_cls(settings, bids.schema)
        try:
            consume_s, consumed = _timed(lambda: _consume(consumer, bids.num_rows, batch_rows))
        finally:
            consumer.close()
        source: OffsetSource = source_cls(settings, bids.schema, bounded=True)
        try:
            source_s, read = _timed(lambda: _read(source))
        finally:
            source.close()
    finally:
        delete(settings)
    n = bids.num_rows
    if consumed != n or read != n:
        raise RuntimeError(f"{broker}/{fmt}: sent {n} rows, consumed {consumed}, read {read}")
    return {
        "broker": broker,
        "format": fmt,
        "events": n,
        "batch_rows": batch_rows,
        "messages": messages,
        "produce_s": round(produce_s, 3),
        "produce_events_per_s": round(n / produce_s),
        "consume_s": round(consume_s, 3),
        "consume_events_per_s": round(n / consume_s),
        "source_read_s": round(source_s, 3),
        "source_read_events_per_s": round(n / source_s),
    }


def bench_brokers(
    events: int = 200_000,
    batch_rows: int = 5_000,
    brokers: Sequence[str] = ("nats", "redis"),
    formats: Sequence[Format] = ("json", "arrow"),
    nats_url: str = "nats://127.0.0.1:4222",
    redis_url: str = "redis://127.0.0.1:6379/0",
) -> list[dict[str, object]]:
    """One JSON-able result per broker and format: events/s produced, consumed through
    a consumer group, and read through the engine source. ``batch_rows`` is both the
    rows per arrow message and the records per consumer fetch."""
    bids = _bids(events)
    makers = {
        "nats": _nats_maker(nats_url, batch_rows),
        "redis": _redis_maker(redis_url, batch_rows),
    }
    unknown = set(brokers) - set(makers)
    if unknown:
        raise InvalidInputError(f"unknown brokers {sorted(unknown)}; known: {sorted(makers)}")
    return [_one(b, fmt, bids, batch_rows, makers[b]) for b in brokers for fmt in formats]


def _nats_maker(url: str, batch_rows: int) -> Callable[[Format], tuple[Any, ...]]:
    from dataflare_platform.connectors.nats import jetstream as nj
    from dataflare_platform.connectors.nats.settings import NatsSettings

    def make(fmt: Format) -> tuple[Any, ...]:
        settings = NatsSettings(
            url=url,
            stream=f"dfbench-{uuid.uuid4().hex[:12]}",
            format=fmt,
            batch_rows=batch_rows,
            fetch_messages=max(batch_rows, 1000),
        )
        return settings, nj.NatsProducer, nj.NatsConsumer, nj.NatsSource, nj.delete_stream

    return make


def _redis_maker(url: str, batch_rows: int) -> Callable[[Format], tuple[Any, ...]]:
    from dataflare_platform.connectors.redis import streams as rs

    def make(fmt: Format) -> tuple[Any, ...]:
        settings = rs.RedisSettings(
            url=url,
            stream=f"dfbench:{uuid.uuid4().hex[:12]}",
            format=fmt,
            batch_rows=batch_rows,
            fetch_messages=max(batch_rows, 1000),
        )
        return settings, rs.RedisProducer, rs.RedisConsumer, rs.RedisSource, rs.delete_stream

    return make
