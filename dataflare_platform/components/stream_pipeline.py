"""A declarative stream pipeline as a Dagster component: the ``attributes`` of its
``defs.yaml`` are the pipeline spec, unchanged (``streams/spec.py``), so the
same file runs from the CLI (``dataflare pipeline run defs.yaml``) and in Dagster.

    type: dataflare_platform.components.StreamPipelineComponent
    attributes:
      name: big_bids
      sources: {bids: {kind: topic, topic: nexmark.bids}}
      streams: {big: {from: bids, steps: [{filter: "price > 1000000"}]}}
      output: big
      sink: {kind: duckdb, table: big_bids}

``build_defs`` calls the stream factory (``defs/streams/factory.py``): the pipeline's
asset, job, sensor and continuous job. The source topics' assets are shared by every
pipeline reading them, so the streams domain declares them once, for all instances
(``defs/streams/definitions.py``).
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import BaseModel, ConfigDict

from dataflare_platform.component_files import INSTANCE_FILE
from dataflare_platform.defs.streams.factory import pipeline_definitions
from dataflare_platform.defs.streams.intervals import sensor_interval_override
from dataflare_platform.errors import ConfigError
from dataflare_platform.streams.spec import PipelineSpec

EXAMPLE: dict[str, Any] = {
    "catalog": {
        "description": "Bids above one million, from the nexmark.bids topic.",
        "group": "streams",
        "owners": ["team:streaming"],
        "sensor_interval": "30s",
    },
    "sources": {"bids": {"kind": "topic", "topic": "nexmark.bids"}},
    "streams": {"big": {"from": "bids", "steps": [{"filter": "price > 1000000"}]}},
    "output": "big",
}


class PipelineAttributes(BaseModel):
    """What dg checks in ``defs.yaml`` before loading: a named mapping. The engine's
    ``PipelineSpec`` then validates the whole spec (its YAML steps are shorthand the
    model rewrites, so its JSON schema is not the file's), naming file and field."""

    model_config = ConfigDict(extra="allow")

    name: str


class StreamPipelineScaffolder(dg.Scaffolder):
    """Writes a working pipeline named after its folder, to edit from there."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        name = request.target_path.name.replace("-", "_")
        dg.scaffold_component(
            request,
            {"name": name, **EXAMPLE, "sink": {"kind": "duckdb", "table": name}},
        )


@dg.scaffold_with(StreamPipelineScaffolder)
class StreamPipelineComponent(dg.Component):
    """A stream pipeline: topic sources, vectorised steps, windows and a sink, run in
    micro-batches by a sensor over new topic offsets, or continuously. The attributes are
    the pipeline spec; relative source/sink paths resolve against the ``defs.yaml``
    folder."""

    def __init__(self, spec: PipelineSpec) -> None:
        self.spec = spec

    @classmethod
    def get_model_cls(cls) -> type[BaseModel]:
        return PipelineAttributes

    @classmethod
    def load(cls, attributes: BaseModel | None, context: dg.ComponentLoadContext):
        data = attributes.model_dump(exclude_unset=True) if attributes is not None else {}
        try:
            spec = PipelineSpec.load(data)
        except ConfigError as err:
            raise ConfigError(f"pipeline {context.path / INSTANCE_FILE}", err.problems) from None
        return cls(spec.relative_to(context.path))

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return pipeline_definitions(self.spec, sensor_interval_override())
