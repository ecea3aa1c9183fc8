"""Kafka (librdkafka, through ``confluent-kafka``): a partitioned topic as a source, an
exactly-once transactional sink, and a producer for the CLI, router and tests.

    sources:
      bids:
        kind: kafka
        bootstrap_servers: 127.0.0.1:9092
        topic: bids
        format: json                     # or arrow (one batch of rows per message)
        schema: {auction: int64, price: int64, date_time: "timestamp[ms]"}
        partitioned_by: auction          # producers key messages by it (partition-parallel)
        # client: {security.protocol: SSL, ssl.ca.location: /etc/kafka/ca.pem}
        # secrets_from_env: {sasl.password: KAFKA_PASSWORD}
        # membership: {session_timeout_ms: 10000}   # workers own partitions by group rebalance
    sink:
      kind: kafka
      bootstrap_servers: 127.0.0.1:9092
      topic: hot_items
      key: auction                       # message key: the partition of each row

The source reads ``read_committed`` from the engine's checkpointed Kafka offsets (see
``source``); the sink commits output, side rows and the checkpoint in one Kafka
transaction (see ``sink``). Tested against librdkafka's mock cluster, which speaks the
Kafka protocol on 127.0.0.1 (transactions, ``read_committed``, consumer groups): there is
no Kafka broker package on the test machines. Nothing here knows about the mock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import Field, model_validator

from dataflare_platform.connectors.kafka.settings import (
    GROUP,
    KafkaGroupMembership,
    KafkaSettings,
    KafkaSinkSettings,
)
from dataflare_platform.connectors.settings import OpenContext, RowSchema

if TYPE_CHECKING:
    from dataflare_platform.connectors.kafka.producer import KafkaProducer
    from dataflare_platform.connectors.kafka.sink import KafkaSink
    from dataflare_platform.connectors.kafka.source import KafkaSource

# The client library (librdkafka, ~70 ms to import) loads when a Kafka source, sink or
# producer is first used, not with the code location every run worker loads.
_LAZY = {
    "KafkaProducer": "dataflare_platform.connectors.kafka.producer",
    "KafkaSink": "dataflare_platform.connectors.kafka.sink",
    "KafkaSource": "dataflare_platform.connectors.kafka.source",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)


__all__ = [
    "KafkaGroupMembership",
    "KafkaProducer",
    "KafkaSettings",
    "KafkaSink",
    "KafkaSinkSettings",
    "KafkaSource",
    "KafkaSourceSettings",
    "end_offsets",
    "open_sink",
    "open_source",
]


class KafkaSourceSettings(KafkaSettings, RowSchema):
    """The topic's connection settings plus the rows' schema and event-time column."""

    kind: Literal["kafka"] = "kafka"
    group: str | None = Field(
        None, pattern=GROUP, description="Consumer group shown the committed offsets"
    )
    partitioned_by: str | None = Field(
        None,
        description="Column the producers key messages by (murmur2): lets keyed and windowed"
        " steps run as partition-parallel workers",
    )
    membership: KafkaGroupMembership | None = Field(
        None,
        description="Partition-parallel workers own partitions as members of the consumer"
        " group (Kafka's rebalances decide) instead of by leases (docs/events.md)",
    )

    @model_validator(mode="after")
    def _partition_column(self) -> Self:
        if self.partitioned_by is not None and self.partitioned_by not in self.table_schema:
            raise ValueError(
                f"partitioned_by {self.partitioned_by!r} is not a column of the schema"
            )
        return self


def open_source(settings: KafkaSourceSettings, context: OpenContext) -> KafkaSource:
    from dataflare_platform.connectors.kafka.source import KafkaSource

    return KafkaSource(
        settings,
        settings.arrow_schema,
        name=context.name or None,
        time_column=settings.time_column,
        bounded=context.bounded,
        partitions=context.partitions,
        group=group_id(settings, context.pipeline),
        partition_key=settings.partitioned_by,
        # A group member (membership:) shows the group the offsets; this reader is none.
        commit_offsets=settings.membership is None,
        where=f"sources.{context.name}" if context.name else "source",
    )


def group_id(settings: KafkaSourceSettings, pipeline: str) -> str:
    """The consumer group of a pipeline's Kafka source (``group``, default
    ``dataflare.<pipeline>``)."""
    return settings.group or f"dataflare.{pipeline}"


def open_sink(settings: KafkaSinkSettings, context: OpenContext) -> KafkaSink:
    from dataflare_platform.connectors.kafka.sink import KafkaSink

    return KafkaSink(settings)


def end_offsets(settings: KafkaSourceSettings, context: OpenContext) -> dict[str, int]:
    """Committed end per partition now, for offset-range runs."""
    source = open_source(settings, OpenContext(context.pipeline, context.name, True))
    try:
        return {p: source.committed_end(int(p)) for p in source.partitions()}
    finally:
        source.close()
