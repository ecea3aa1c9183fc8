"""Partition-parallel workers over NATS JetStream and Redis Streams (the local servers):
a source declared with ``partitions: 4`` reads the streams ``<stream>-0..3`` as its
partitions, rows sent to them by ``partition_of`` their auction; two worker processes,
one SIGKILLed and succeeded by another that resumes its partitions from their
checkpoints; the PostgreSQL table equals the ground truth exactly once (as for the
embedded log in ``test_workers`` and Kafka in ``test_workers_kafka``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pytest

from dataflare_platform.connectors import nats as nats_connector
from dataflare_platform.connectors import redis as redis_connector
from dataflare_platform.connectors.partitioned_streams import (
    partition_stream,
    send_partitioned,
)
from dataflare_platform.connectors.settings import OpenContext
from dataflare_platform.events.log import EventLog
from dataflare_platform.streams.spec import PipelineSpec
from dataflare_platform.streams.workers import check_splittable
from dataflare_platform_tests.connectors.broker_helpers import (
    NATS_URL_VARIABLE,
    REDIS_URL_VARIABLE,
    service_url,
)
from dataflare_platform_tests.streams.test_workers import (
    PARTITIONS,
    Feed,
    check_takeover,
    counts_spec,
)

COLUMNS = {"auction": "int64", "price": "int64", "date_time": "int64"}


@dataclass
class Broker:
    settings: Any  # the source's settings (kind, partitions, partitioned_by, schema)
    producer: Any  # BrokerProducer factory: settings of one stream -> producer
    delete: Any

    def send(self, rows: pa.Table) -> None:
        send_partitioned(self.producer, self._plain(), rows, "auction", PARTITIONS)

    def close_windows(self, at_ms: int) -> None:
        """One event far ahead in every partition's stream: closes its earlier windows."""
        for p in range(PARTITIONS):
            one = self._plain().model_copy(
                update={"stream": partition_stream(self.settings.stream, p)}
            )
            sender = self.producer(one)
            sender.send(pa.table({"auction": [10_000 + p], "price": [0], "date_time": [at_ms]}))
            sender.close()

    def ends(self) -> dict[int, int]:
        source = type(self.settings).model_validate(self.settings.model_dump(by_alias=True))
        opened = _open(source, OpenContext("ends", "bids", bounded=True))
        try:
            return {int(p): opened.end_offset(p) for p in opened.partitions()}
        finally:
            opened.close()

    def _plain(self):
        """The stream's connection settings without the source's schema fields."""
        fields = type(self.settings).__mro__[1]
        values = self.settings.model_dump(include=set(fields.model_fields))
        return fields(**values)

    def cleanup(self) -> None:
        for p in range(PARTITIONS):
            self.delete(
                self._plain().model_copy(
                    update={"stream": partition_stream(self.settings.stream, p)}
                )
            )


def _open(settings, context):
    from dataflare_platform.connectors import registry

    return registry.open_source(settings, context)


@pytest.fixture(params=["redis", "nats"])
def broker(request):
    stream = f"dftest-{uuid.uuid4().hex[:10]}"
    common = {"stream": stream, "schema": COLUMNS, "partitions": PARTITIONS}
    if request.param == "redis":
        url = service_url(REDIS_URL_VARIABLE, "redis://127.0.0.1:6379/0", "Redis", "redis-server")
        settings = redis_connector.RedisSourceSettings(url=url, partitioned_by="auction", **common)
        made = Broker(settings, redis_connector.RedisProducer, redis_connector.delete_stream)
    else:
        url = service_url(NATS_URL_VARIABLE, "nats://127.0.0.1:4222", "NATS", "nats-server -js")
        settings = nats_connector.NatsSourceSettings(url=url, partitioned_by="auction", **common)
        made = Broker(settings, nats_connector.NatsProducer, nats_connector.delete_stream)
    yield made
    made.cleanup()


def _spec(broker: Broker, dsn: str, schema: str) -> str:
    return counts_spec(broker.settings.model_dump(by_alias=True, exclude_none=True), dsn, schema)


def test_killed_worker_over_broker_streams_is_taken_over_exactly_once(
    broker, tmp_path, dsn, pg_schema
):
    spec_path = tmp_path / "bid_counts.yaml"
    spec_path.write_text(_spec(broker, dsn, pg_schema))
    log, streams = EventLog(tmp_path / "log"), tmp_path / "streams"
    feed = Feed(broker.send, broker.close_windows, broker.ends)
    check_takeover(spec_path, log, streams, feed, dsn, pg_schema)


def test_partitioned_stream_settings_and_partitions_are_checked(broker, tmp_path, dsn, pg_schema):
    cls = type(broker.settings)
    with pytest.raises(ValueError, match="needs partitions of 2 or more"):
        cls(**{**broker.settings.model_dump(by_alias=True), "partitions": 1})
    with pytest.raises(ValueError, match="not a column of the schema"):
        cls(**{**broker.settings.model_dump(by_alias=True), "partitioned_by": "bidder"})
    broker.close_windows(0)  # the streams exist
    spec_path = tmp_path / "bid_counts.yaml"
    spec_path.write_text(_spec(broker, dsn, pg_schema))
    splittable = check_splittable(
        PipelineSpec.from_yaml(spec_path), EventLog(tmp_path / "log"), tmp_path
    )
    assert splittable == list(range(PARTITIONS))
    with pytest.raises(ValueError, match=r"no partition\(s\) \[4\]"):
        _open(broker.settings, OpenContext("p", "bids", partitions=(4,)))
    one = _open(broker.settings, OpenContext("p", "bids", partitions=(2,)))
    try:
        assert one.partitions() == ["2"] and one.read("2", 0, 10).num_rows == 1
    finally:
        one.close()
