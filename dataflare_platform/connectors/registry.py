"""``kind:`` → connector: the one table that maps a pipeline's declared sources and sinks
to the settings model that validates them and the function that opens them.

A pipeline spec's ``sources.<name>`` and ``sink`` are :data:`SourceSettings` and
:data:`SinkSettings`, pydantic unions discriminated on ``kind``, so every kind's fields
are checked by its own model and an error names the field
(``sources.bids.nats.stream: String should match pattern ...``).

Micro-batch ranges: a sensor requests runs over offset ranges, so it must read each
source's end offsets cheaply and without side effects. Kinds with ``end_offsets`` can
(file, topic, nats, redis, kafka); the others (landing: offsets are assigned as files are
taken) run continuously only, and a pipeline that asks for sensor ranges over one is
refused at load (see ``streams.spec``).

Adding a connector: a package ``connectors/<system>/`` exporting its settings model
(with ``kind: Literal["<system>"]``) and ``open_source`` / ``open_sink``, one entry
below, and one fixture in the contract tests (docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field

from dataflare_platform.connectors import (
    duckdb,
    files,
    kafka,
    landing,
    nats,
    parquet_dataset,
    postgres,
)
from dataflare_platform.connectors import redis as redis_connector
from dataflare_platform.connectors import topic as topic_connector
from dataflare_platform.connectors.settings import ConnectorSettings, OpenContext, snapshot_ends
from dataflare_platform.engine.io import Sink, Source
from dataflare_platform.engine.sinks import NullSink
from dataflare_platform.errors import InvalidInputError


class DiscardSinkSettings(ConnectorSettings):
    """Counts and drops the output (benchmarks, dry runs)."""

    kind: Literal["discard"] = "discard"


def _open_discard(settings: DiscardSinkSettings, context: OpenContext) -> Sink:
    return NullSink()


def _ends_of_files(settings: files.FileSourceSettings, context: OpenContext) -> dict[str, int]:
    return snapshot_ends(files.open_source(settings, context))


@dataclass(frozen=True)
class SourceKind:
    settings: type[ConnectorSettings] | type[Any]
    open: Callable[[Any, OpenContext], Source]
    # Committed end offset per partition, for sensor ranges; None: continuous only.
    end_offsets: Callable[[Any, OpenContext], dict[str, int]] | None


@dataclass(frozen=True)
class SinkKind:
    settings: type[ConnectorSettings] | type[Any]
    open: Callable[[Any, OpenContext], Sink]


SOURCES: dict[str, SourceKind] = {
    "file": SourceKind(files.FileSourceSettings, files.open_source, _ends_of_files),
    "topic": SourceKind(
        topic_connector.TopicSourceSettings,
        topic_connector.open_source,
        topic_connector.end_offsets,
    ),
    "nats": SourceKind(nats.NatsSourceSettings, nats.open_source, nats.end_offsets),
    "redis": SourceKind(
        redis_connector.RedisSourceSettings,
        redis_connector.open_source,
        redis_connector.end_offsets,
    ),
    "kafka": SourceKind(kafka.KafkaSourceSettings, kafka.open_source, kafka.end_offsets),
    "landing": SourceKind(landing.LandingSourceSettings, landing.open_source, None),
}

SINKS: dict[str, SinkKind] = {
    "duckdb": SinkKind(duckdb.DuckDBSinkSettings, duckdb.open_sink),
    "file": SinkKind(files.FileSinkSettings, files.open_sink),
    "topic": SinkKind(topic_connector.TopicSinkSettings, topic_connector.open_sink),
    "postgres": SinkKind(postgres.PostgresSinkSettings, postgres.open_sink),
    "parquet_dataset": SinkKind(parquet_dataset.ParquetDatasetSettings, parquet_dataset.open_sink),
    "kafka": SinkKind(kafka.KafkaSinkSettings, kafka.open_sink),
    "discard": SinkKind(DiscardSinkSettings, _open_discard),
}

SourceSettings = Annotated[
    files.FileSourceSettings
    | topic_connector.TopicSourceSettings
    | nats.NatsSourceSettings
    | redis_connector.RedisSourceSettings
    | kafka.KafkaSourceSettings
    | landing.LandingSourceSettings,
    Field(discriminator="kind"),
]

SinkSettings = Annotated[
    duckdb.DuckDBSinkSettings
    | files.FileSinkSettings
    | topic_connector.TopicSinkSettings
    | postgres.PostgresSinkSettings
    | parquet_dataset.ParquetDatasetSettings
    | kafka.KafkaSinkSettings
    | DiscardSinkSettings,
    Field(discriminator="kind"),
]

RANGE_KINDS = tuple(k for k, v in SOURCES.items() if v.end_offsets is not None)


def open_source(settings: Any, context: OpenContext) -> Source:
    return SOURCES[settings.kind].open(settings, context)


def open_sink(settings: Any, context: OpenContext) -> Sink:
    return SINKS[settings.kind].open(settings, context)


def supports_ranges(settings: Any) -> bool:
    return SOURCES[settings.kind].end_offsets is not None


def end_offsets(settings: Any, context: OpenContext) -> dict[str, int]:
    """End offset per partition of a range-capable source (see the module docstring)."""
    ends = SOURCES[settings.kind].end_offsets
    if ends is None:
        raise InvalidInputError(f"{settings.kind} sources have no end offsets to range over")
    return ends(settings, context)
