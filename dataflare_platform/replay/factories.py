"""Pipelines to replay, built on the sources a replay hands over: a Nexmark query by
name, or a declarative pipeline spec whose file sources are swapped for topics."""

from __future__ import annotations

from dataflare_platform.engine.pipeline import Pipeline
from dataflare_platform.engine.sinks import Sink
from dataflare_platform.engine.sources import Source
from dataflare_platform.queries.nexmark import BUILDERS, COLUMNS, NexmarkSources
from dataflare_platform.replay.run import PipelineFactory, ReplayError
from dataflare_platform.streams.spec import PipelineSpec


def for_nexmark(query: str) -> PipelineFactory:
    """Nexmark ``query`` (q0..q8) reading only the columns it uses, like ``nexmark run``."""
    if query not in BUILDERS:
        raise ReplayError(f"no Nexmark query {query!r}; one of {', '.join(BUILDERS)}")

    def build(sources: dict[str, Source], sink: Sink) -> Pipeline:
        return BUILDERS[query](NexmarkSources(**sources), sink)

    return PipelineFactory(build, {kind: list(cols) for kind, cols in COLUMNS[query].items()})


def for_spec(spec: PipelineSpec, plugins: dict | None = None) -> PipelineFactory:
    """``spec``'s pipeline with each named source read from a topic instead of its path
    (the spec's watermark settings and steps are kept; its sink is the replay's).
    ``plugins``: ready plugin instances by step key, for specs with plugin steps (see
    ``dataflare_platform.plugins.specs.load_plugins``)."""

    def build(sources: dict[str, Source], sink: Sink) -> Pipeline:
        return spec.build(sink=sink, plugins=plugins, sources=sources)

    columns = {name: getattr(s, "columns", None) for name, s in spec.sources.items()}
    return PipelineFactory(build, columns)
