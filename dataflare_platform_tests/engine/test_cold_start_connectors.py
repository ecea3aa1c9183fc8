"""Cold start over the other sources and sinks pipelines use (issue 21 §1): a YAML
pipeline reading Redis Streams, NATS JetStream or Kafka (librdkafka's mock cluster) into
PostgreSQL, and one reading Parquet files into a Parquet dataset, each in a fresh process
to its first checkpoint and past it, never imports pandas, great_expectations or dagster.

The child and its import recorder are ``test_cold_start``'s; a connector's own client
library (redis, nats, confluent_kafka, psycopg) is on the path under test, so an import
of pandas it triggered (or one the engine triggers on its batches) would show here.
"""

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataflare_platform.connectors import kafka
from dataflare_platform.connectors import nats as nats_connector
from dataflare_platform.connectors import redis as redis_connector
from dataflare_platform.datagen import NexmarkConfig
from dataflare_platform_tests.connectors.broker_helpers import (
    NATS_URL_VARIABLE,
    REDIS_URL_VARIABLE,
    service_url,
)
from dataflare_platform_tests.engine.test_cold_start import (
    BOUNDED_CHILD,
    DENIED,
    OTHER_CLIENTS,
    _assert_nothing_denied,
    _run_child,
)
from dataflare_platform_tests.kafka_cluster import create_topic, kafka_bootstrap, unique_topic
from dataflare_platform_tests.nexmark_data import nexmark_tables
from dataflare_platform_tests.streams.test_workers import SCHEMA, counts_spec

__all__ = ["kafka_bootstrap"]

ROWS = 3_000


def _rows() -> pa.Table:
    """Bids on 20 auctions, 10 ms apart: many 1 s windows close during the run."""
    return pa.table(
        {
            "auction": [i % 20 for i in range(ROWS)],
            "price": list(range(ROWS)),
            "date_time": [1_700_000_000_000 + 10 * i for i in range(ROWS)],
        },
        schema=SCHEMA,
    )


def _run_pipeline(tmp_path: Path, spec_text: str) -> dict:
    specs = tmp_path / "pipelines"
    specs.mkdir()
    (specs / "bid_counts.yaml").write_text(spec_text)
    report = _run_child(BOUNDED_CHILD, str(specs), str(tmp_path / "log"), str(tmp_path / "out"))
    _assert_nothing_denied(report)
    assert report["events_in"] == ROWS and report["events_out"] > 0, report
    assert report["commits"] >= 2, report  # a checkpoint during the run, and the last
    return report


BrokerCase = Callable[[pa.Table], dict]


@pytest.fixture
def redis_source() -> Iterator[BrokerCase]:
    url = service_url(REDIS_URL_VARIABLE, "redis://127.0.0.1:6379/0", "Redis", "redis-server")
    settings = redis_connector.RedisSettings(url=url, stream=f"dftest-{uuid.uuid4().hex[:10]}")

    def send(rows: pa.Table) -> dict:
        producer = redis_connector.RedisProducer(settings)
        producer.send(rows)
        producer.close()
        return {"kind": "redis", "url": url, "stream": settings.stream}

    yield send
    redis_connector.delete_stream(settings)


@pytest.fixture
def nats_source() -> Iterator[BrokerCase]:
    url = service_url(NATS_URL_VARIABLE, "nats://127.0.0.1:4222", "NATS", "nats-server -js")
    settings = nats_connector.NatsSettings(url=url, stream=f"dftest-{uuid.uuid4().hex[:10]}")

    def send(rows: pa.Table) -> dict:
        nats_connector.ensure_stream(settings)
        producer = nats_connector.NatsProducer(settings)
        producer.send(rows)
        producer.close()
        return {"kind": "nats", "url": url, "stream": settings.stream}

    yield send
    nats_connector.delete_stream(settings)


@pytest.fixture
def kafka_source(kafka_bootstrap) -> BrokerCase:
    topic = unique_topic()
    create_topic(kafka_bootstrap, topic)
    settings = kafka.KafkaSettings(bootstrap_servers=kafka_bootstrap, topic=topic)

    def send(rows: pa.Table) -> dict:
        producer = kafka.KafkaProducer(settings, SCHEMA, key="auction")
        producer.send(rows)
        producer.close()
        return {"kind": "kafka", "bootstrap_servers": kafka_bootstrap, "topic": topic}

    return send


@pytest.mark.e2e
@pytest.mark.parametrize("source", ["redis_source", "nats_source", "kafka_source"])
def test_a_broker_source_into_postgres_never_imports_denied_modules(
    request, tmp_path, dsn, pg_schema, source
):
    declared = request.getfixturevalue(source)(_rows())
    declared["schema"] = {f.name: str(f.type) for f in SCHEMA}
    _run_pipeline(tmp_path, counts_spec(declared, dsn, pg_schema))


PARQUET_SPEC = """
name: bid_counts
watermark: {{out_of_orderness: 4s}}
sources:
  bids: {{kind: file, path: {data}, columns: [auction, price, date_time]}}
streams:
  counts:
    from: bids
    steps:
      - key_by: [auction]
      - window: {{tumbling: 10s, agg: {{n: count, top_price: {{max: price}}}}}}
output: counts
sink: {sink}
"""


@pytest.mark.e2e
@pytest.mark.parametrize("sink", ["parquet_dataset", "file"])
def test_parquet_input_to_a_parquet_sink_never_imports_denied_modules(tmp_path, sink):
    bids = nexmark_tables(NexmarkConfig(events=6_000, events_per_second=200.0, seed=23))["bids"]
    data = tmp_path / "bids"
    data.mkdir()
    for i, at in enumerate(range(0, bids.num_rows, 1_000)):  # several files, read in order
        pq.write_table(bids.slice(at, 1_000), data / f"part-{i}.parquet")
    out = tmp_path / "sunk"
    declared = (
        {"kind": "parquet_dataset", "root": str(out), "time_column": "window_start"}
        if sink == "parquet_dataset"
        else {"kind": "file", "path": str(out / "counts.parquet")}
    )
    text = PARQUET_SPEC.format(data=json.dumps(str(data)), sink=json.dumps(declared))
    specs = tmp_path / "pipelines"
    specs.mkdir()
    (specs / "bid_counts.yaml").write_text(text)
    report = _run_child(
        BOUNDED_CHILD,
        str(specs),
        str(tmp_path / "log"),
        str(tmp_path / "out"),
        denied=DENIED + OTHER_CLIENTS,
    )
    _assert_nothing_denied(report)
    assert report["finished"] and report["events_out"] > 0, report
    assert report["commits"] >= 1, report
    written = list(out.rglob("*.parquet"))
    assert written and sum(pq.read_metadata(f).num_rows for f in written) == report["events_out"]
