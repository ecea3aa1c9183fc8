"""Binding a pipeline spec to its connectors, in one place: each declared source and the
sink opened through the registry by ``kind:``, then the operator graph wired between
them. Everything that runs a declarative pipeline (micro-batch ranges, continuous runs,
replay, the CLI) builds it here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dataflare_platform.connectors import registry
from dataflare_platform.connectors.settings import OpenContext
from dataflare_platform.engine.durations import to_ms
from dataflare_platform.engine.io import Sink, Source
from dataflare_platform.engine.operators.plugin import BatchPlugin
from dataflare_platform.engine.pipeline import Pipeline, Stream
from dataflare_platform.streams.fields import WatermarkSpec

if TYPE_CHECKING:
    from dataflare_platform.events.log import EventLog


class PipelineSpec(Protocol):
    """What binding needs of ``streams.spec.PipelineSpec`` (which builds through here)."""

    name: str
    watermark: WatermarkSpec
    sources: dict[str, Any]
    sink: Any

    def wire(
        self, streams: dict[str, Stream], plugins: dict[str, BatchPlugin] | None = None
    ) -> Stream: ...


def context(
    spec: PipelineSpec,
    log: EventLog | None = None,
    default_dir: Path | None = None,
    bounded: bool = False,
    group: str | None = None,
) -> OpenContext:
    return OpenContext(spec.name, "", bounded, default_dir, log, group)


def open_sources(
    spec: PipelineSpec, where: OpenContext, given: dict[str, Source] | None = None
) -> dict[str, Source]:
    """Every declared source, opened; ``given`` replaces some by name (tests, replay)."""
    given = given or {}
    return {
        name: given[name] if name in given else registry.open_source(s, where.for_source(name))
        for name, s in spec.sources.items()
    }


def open_sink(spec: PipelineSpec, where: OpenContext) -> Sink:
    return registry.open_sink(spec.sink, where)


def source_ends(spec: PipelineSpec, where: OpenContext) -> dict[str, int]:
    """End offset of every ``source/partition`` a sensor ranges over (sources of range
    kinds; see ``connectors.registry``). May raise while a source does not exist yet
    (a topic not yet created, a broker stream not yet made)."""
    ends: dict[str, int] = {}
    for name, settings in spec.sources.items():
        if not registry.supports_ranges(settings):
            continue
        for partition, end in registry.end_offsets(settings, where.for_source(name)).items():
            ends[f"{name}/{partition}"] = end
    return ends


def close_sources(pipeline: Pipeline | None) -> None:
    """Close the sources ``build`` opened (the runner closes the sink, not the sources,
    which the caller may have handed in): a broker client (a Kafka consumer, a NATS or
    Redis connection) would otherwise live on, connected, as long as the process."""
    for node in pipeline.sources() if pipeline is not None else []:
        close = getattr(node.source, "close", None)
        if close is not None:
            close()


def build(
    spec: PipelineSpec,
    *,
    sink: Sink | None = None,
    sources: dict[str, Source] | None = None,
    plugins: dict[str, BatchPlugin] | None = None,
    log: EventLog | None = None,
    default_dir: Path | None = None,
    bounded: bool = False,
    group: str | None = None,
    partitions: tuple[int, ...] | None = None,
    checkpoint_key: str | None = None,
) -> Pipeline:
    """The pipeline with its sources and sink opened (``sources`` / ``sink`` given here
    replace the declared ones). ``log`` opens topic sources and sinks; ``default_dir``
    holds a DuckDB file declared without a path; ``bounded`` reads a snapshot of growing
    sources; ``group`` commits a topic consumer group's offsets along with checkpoints;
    ``partitions`` reads only those source partitions and ``checkpoint_key`` names the
    checkpoint (a partition-parallel worker's unit, ``streams.workers``)."""
    w = spec.watermark
    pipeline = Pipeline(
        spec.name,
        out_of_orderness_ms=to_ms(w.out_of_orderness),
        idle_timeout_ms=None if w.idle_timeout is None else to_ms(w.idle_timeout),
        max_future_ms=to_ms(w.max_future),
        checkpoint_key=checkpoint_key,
    )
    where = context(spec, log, default_dir, bounded, group)
    if partitions is not None:
        where = dataclasses.replace(where, partitions=tuple(partitions))
    opened = open_sources(spec, where, sources)
    streams = {name: pipeline.source(source) for name, source in opened.items()}
    return spec.wire(streams, plugins).sink(sink if sink is not None else open_sink(spec, where))
