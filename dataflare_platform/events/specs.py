"""Declarative pipelines (``engine.spec``) whose sources or sink are topics of the event
log: the engine does not know the log, so topic sources and sinks are opened here."""

from __future__ import annotations

from dataflare_platform.engine.pipeline import Pipeline
from dataflare_platform.engine.sinks import Sink
from dataflare_platform.engine.sources import Source
from dataflare_platform.engine.spec import PipelineSpec
from dataflare_platform.errors import ConfigError
from dataflare_platform.events.engine_io import LogSink, LogSource
from dataflare_platform.events.log import EventLog, TopicNotFoundError


def topic_sources(
    spec: PipelineSpec, log: EventLog, bounded: bool = False, group: str | None = None
) -> dict[str, Source]:
    """A ``LogSource`` for every source of ``spec`` that names a topic."""
    out: dict[str, Source] = {}
    for name, source in spec.sources.items():
        if source.topic is None:
            continue
        try:
            topic = log.topic(source.topic)
        except TopicNotFoundError as err:
            raise ConfigError(
                f"pipeline {spec.name!r}", [(f"sources.{name}.topic", str(err))]
            ) from None
        if topic.time_column != source.time_column:
            raise ConfigError(
                f"pipeline {spec.name!r}",
                [
                    (
                        f"sources.{name}.time_column",
                        f"topic {topic.name!r} keeps event time in {topic.time_column!r}",
                    )
                ],
            )
        out[name] = LogSource(topic, source.columns, bounded=bounded, group=group, name=name)
    return out


def build(
    spec: PipelineSpec,
    log: EventLog,
    sink: Sink | None = None,
    bounded: bool = False,
    group: str | None = None,
    plugins=None,
) -> Pipeline:
    """``spec`` built with its topic sources opened and, for ``sink: {topic: NAME}``, an
    exactly-once ``LogSink`` (which creates the output topic from the first output)."""
    sources = topic_sources(spec, log, bounded=bounded, group=group)
    if sink is None and spec.sink.topic is not None:
        sink = LogSink(log, spec.sink.topic)
    return spec.build(sink=sink, plugins=plugins, sources=sources)
