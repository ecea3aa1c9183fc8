"""Topics of the embedded event log: a topic as a source, and an exactly-once output
topic as a sink (the engine adapters live with the log, in ``events.engine_io``).

    sources: {bids: {kind: topic, topic: nexmark.bids, columns: [auction, date_time]}}
    sink: {kind: topic, topic: hot_items.out}

A topic's offsets are dense per partition and its committed ends are cheap to read, so
topic sources suit micro-batch ranges (the sensor's) and continuous runs alike.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dataflare_platform.connectors.settings import ConnectorSettings, OpenContext
from dataflare_platform.errors import ConfigError
from dataflare_platform.events.engine_io import LogSink, LogSource
from dataflare_platform.events.log import EventLog, TopicNotFoundError

__all__ = ["TopicSinkSettings", "TopicSourceSettings", "open_sink", "open_source"]

TopicName = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


class TopicSourceSettings(ConnectorSettings):
    kind: Literal["topic"] = "topic"
    topic: str = TopicName
    columns: list[str] | None = Field(None, min_length=1, description="Read only these.")
    time_column: str = "date_time"


class TopicSinkSettings(ConnectorSettings):
    kind: Literal["topic"] = "topic"
    topic: str = TopicName
    time_column: str | None = Field(
        None, description="Event time of a created topic (default window_start or date_time)."
    )


def _log(context: OpenContext, field: str) -> EventLog:
    if context.log is None:
        raise ConfigError(f"pipeline {context.pipeline!r}", [(field, "no event log to open")])
    return context.log


def open_source(settings: TopicSourceSettings, context: OpenContext) -> LogSource:
    where = f"sources.{context.name}"
    log = _log(context, f"{where}.topic")
    try:
        topic = log.topic(settings.topic)
    except TopicNotFoundError as err:
        raise ConfigError(
            f"pipeline {context.pipeline!r}", [(f"{where}.topic", str(err))]
        ) from None
    if topic.time_column != settings.time_column:
        raise ConfigError(
            f"pipeline {context.pipeline!r}",
            [
                (
                    f"{where}.time_column",
                    f"topic {topic.name!r} keeps event time in {topic.time_column!r}",
                )
            ],
        )
    partitions = None if context.partitions is None else list(context.partitions)
    if partitions is not None:
        missing = sorted(set(partitions) - set(range(len(topic.parts))))
        if missing:
            raise ConfigError(
                f"pipeline {context.pipeline!r}",
                [(where, f"topic {topic.name!r} has no partition(s) {missing}")],
            )
    return LogSource(
        topic,
        settings.columns,
        partitions=partitions,
        bounded=context.bounded,
        group=context.group,
        name=context.name,
    )


def open_sink(settings: TopicSinkSettings, context: OpenContext) -> LogSink:
    return LogSink(_log(context, "sink.topic"), settings.topic, settings.time_column)


def end_offsets(settings: TopicSourceSettings, context: OpenContext) -> dict[str, int]:
    """Committed end per partition (what a sensor's range reaches); raises
    ``TopicNotFoundError`` while the topic does not exist."""
    topic = _log(context, f"sources.{context.name}.topic").topic(settings.topic)
    return {str(p): end for p, end in topic.committed_ends().items()}
