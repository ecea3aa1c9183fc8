"""Pipelines whose sources are brokers (NATS JetStream, Redis Streams: real servers) run
through the stream factory like topic pipelines: the sensor reads the streams' end
offsets and requests each new range once; the runs it requests process each event once.
A landing source runs continuously only: its pipeline gets the continuous job and no
sensor."""

import dagster as dg
import duckdb
import polars as pl
import pyarrow as pa
import pytest

from dataflare_platform.connectors.nats import NatsProducer, NatsSettings, ensure_stream
from dataflare_platform.connectors.nats import delete_stream as delete_nats_stream
from dataflare_platform.connectors.redis import RedisProducer, RedisSettings
from dataflare_platform.connectors.redis import delete_stream as delete_redis_stream
from dataflare_platform.defs.plugins.resources import PluginRuntimeResource
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.defs.streams.factory import stream_definitions
from dataflare_platform.streams.spec import PipelineSpec
from dataflare_platform_tests.connectors.broker_helpers import (
    NATS_URL_VARIABLE,
    REDIS_URL_VARIABLE,
    service_url,
    unique,
)


class Broker:
    """A fresh stream of one broker: its ``kind:`` settings and a way to append."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        if kind == "nats":
            url = service_url(NATS_URL_VARIABLE, "nats://127.0.0.1:4222", "NATS", "nats-server -js")
            self.settings = NatsSettings(url=url, stream=unique("dftest-"))
            ensure_stream(self.settings)
        else:
            url = service_url(
                REDIS_URL_VARIABLE, "redis://127.0.0.1:6379/0", "Redis", "redis-server"
            )
            self.settings = RedisSettings(url=url, stream=unique("dftest:"))

    def send(self, table: pa.Table) -> None:
        producer = (NatsProducer if self.kind == "nats" else RedisProducer)(self.settings)
        producer.send(table)
        producer.close()

    def delete(self) -> None:
        (delete_nats_stream if self.kind == "nats" else delete_redis_stream)(self.settings)


@pytest.fixture(params=["nats", "redis"])
def broker(request):
    made = Broker(request.param)
    yield made
    made.delete()


def _resources(home):
    return {
        "dataflare": ProjectHomeResource(path=str(home.root)),
        "plugins": PluginRuntimeResource(plugin_dir=str(home.root / "plugins")),
    }


def _spec(broker: Broker, bids: pa.Table) -> PipelineSpec:
    return PipelineSpec.load(
        {
            "name": "big_bids",
            "sources": {
                "bids": {
                    "kind": broker.kind,
                    "url": broker.settings.url,
                    "stream": broker.settings.stream,
                    "schema": {f.name: str(f.type) for f in bids.schema},
                }
            },
            "streams": {
                "big": {
                    "from": "bids",
                    "steps": [
                        {"filter": "price > 10000000"},
                        {"select": ["auction", "bidder", "price", "date_time"]},
                    ],
                }
            },
            "output": "big",
            "sink": {"kind": "duckdb", "table": "big_bids"},
        }
    )


def _tick(defs, home, cursor):
    sensor = defs.resolve_sensor_def("big_bids_sensor")
    with dg.build_sensor_context(
        cursor=cursor, resources=_resources(home), instance=dg.DagsterInstance.ephemeral()
    ) as context:
        return sensor(context), context.cursor


def _materialize(defs, run_config) -> dict:
    asset = defs.resolve_assets_def(dg.AssetKey(["streams", "big_bids"]))
    result = dg.materialize([asset], run_config=run_config)
    assert result.success
    (mat,) = result.asset_materializations_for_node("streams__big_bids")
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def test_a_broker_pipeline_runs_each_range_the_sensor_requests_once(home, broker, small_nexmark):
    bids = small_nexmark["bids"]
    spec = _spec(broker, bids)
    defs = dg.Definitions.merge(
        stream_definitions([spec]), dg.Definitions(resources=_resources(home))
    )
    key = f"bids/{broker.settings.stream}"  # source/partition: one partition per stream

    broker.send(bids.slice(0, 1200))
    request, cursor = _tick(defs, home, None)
    assert isinstance(request, dg.RunRequest)
    assert request.run_key == f"big_bids:{key}=1200"
    assert _materialize(defs, request.run_config)["events_in"] == 1200

    again, cursor = _tick(defs, home, cursor)
    assert isinstance(again, dg.SkipReason)  # nothing new: no run
    assert _materialize(defs, request.run_config)["events_in"] == 0  # a repeat reads nothing

    broker.send(bids.slice(1200))
    request, cursor = _tick(defs, home, cursor)
    assert request.run_key == f"big_bids:{key}={bids.num_rows}"
    meta = _materialize(defs, request.run_config)
    assert meta["events_in"] == bids.num_rows - 1200
    assert meta["events_in_total"] == bids.num_rows and meta["dead_lettered"] == 0

    with duckdb.connect(str(home.root / "streams" / "big_bids.duckdb")) as conn:
        got = pl.from_arrow(conn.sql("SELECT * FROM big_bids").to_arrow_table())
    expected = (
        pl.from_arrow(bids)
        .filter(pl.col("price") > 10_000_000)
        .select("auction", "bidder", "price", "date_time")
    )
    assert expected.height > 0
    assert got.sort(got.columns).equals(expected.sort(expected.columns))


def test_a_landing_pipeline_gets_a_continuous_job_and_no_sensor(home, tmp_path):
    spec = PipelineSpec.load(
        {
            "name": "orders",
            "catalog": {"micro_batch": False},
            "sources": {
                "orders": {
                    "kind": "landing",
                    "directory": str(tmp_path),
                    "schema": {"id": "int64", "date_time": "timestamp[ms]"},
                }
            },
            "streams": {"all": {"from": "orders"}},
            "output": "all",
            "sink": {"kind": "duckdb", "table": "orders"},
        }
    )
    defs = dg.Definitions.merge(
        stream_definitions([spec]), dg.Definitions(resources=_resources(home))
    )
    assert defs.resolve_job_def("orders_continuous") is not None
    assert [s.name for s in defs.sensors or []] == []
