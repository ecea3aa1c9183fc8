"""Declarative pipelines (``streams.spec``) with plugin steps: the engine does not load
plugins, so every ``- plugin: {name, params, columns, id}`` step is resolved here through a
:class:`PluginRegistry`. Errors name the step's field, e.g.
``streams.masked.steps[1].plugin.params.min_digits``.

    spec = PipelineSpec.from_yaml(path)
    pipeline = build_with_plugins(spec, PluginRegistry("plugins"))
"""

from __future__ import annotations

from pathlib import Path

from dataflare_platform.engine.pipeline import Pipeline
from dataflare_platform.engine.sinks import Sink
from dataflare_platform.engine.sources import Source
from dataflare_platform.errors import ConfigError
from dataflare_platform.plugins.lock import LOCK_FILE
from dataflare_platform.plugins.registry import PluginRegistry
from dataflare_platform.plugins.runtime import Plugin
from dataflare_platform.streams.spec import PipelineSpec
from dataflare_platform.streams.steps import PluginSpec


def plugin_steps(spec: PipelineSpec) -> list[tuple[str, PluginSpec]]:
    """``(field path, step)`` of every plugin a step uses, in declaration order: plugin
    steps and windows aggregated by a plugin (``window: {..., plugin: {...}}``)."""
    found = []
    for name, stream in spec.streams.items():
        for i, step in enumerate(stream.steps):
            if step.op == "plugin":
                found.append((f"streams.{name}.steps[{i}].plugin", step.arg))
            elif step.op == "window" and step.arg.plugin is not None:
                found.append((f"streams.{name}.steps[{i}].window.plugin", step.arg.plugin))
    return found


def pipeline_lock(spec: PipelineSpec) -> Path | None:
    """The pipeline's own ``plugins.lock`` (beside its YAML / builders), consulted before
    the deployment's; None for a spec built in memory."""
    return spec.folder / LOCK_FILE if spec.folder is not None else None


def load_plugins(spec: PipelineSpec, registry: PluginRegistry) -> dict[str, Plugin]:
    """One fresh plugin instance per plugin step, keyed as ``PipelineSpec.build`` expects.
    Every problem of every step is reported at once, each naming its field. Each module
    is checked against its pin (the pipeline's lock, then the registry's): a mismatch or,
    where the registry refuses them, an unpinned plugin names the step's field."""
    plugins: dict[str, Plugin] = {}
    problems: list[tuple[str, str]] = []
    own = pipeline_lock(spec)
    first = (own,) if own is not None else ()
    for where, step in plugin_steps(spec):
        if step.key in plugins:
            problems.append(
                (f"{where}.id", f"plugin {step.key!r} is used by two steps: give each an id")
            )
            continue
        try:
            plugins[step.key] = registry.load(
                step.name,
                step.params,
                step.columns or None,
                lock_files=first,
                pipeline=spec.name,
            )
            kind = plugins[step.key].manifest.kind
            if where.endswith(".window.plugin") and kind != "aggregate":
                problems.append(
                    (
                        f"{where}.name",
                        f"a window needs an aggregate plugin; {step.name} is a {kind} plugin",
                    )
                )
        except ConfigError as err:
            for field, msg in err.problems:
                field = field.removeprefix("plugin.")
                problems.append((f"{where}.{field}", msg))
    if problems:
        raise ConfigError(f"pipeline {spec.name!r}", problems)
    return plugins


def build_with_plugins(
    spec: PipelineSpec,
    registry: PluginRegistry,
    sink: Sink | None = None,
    sources: dict[str, Source] | None = None,
) -> Pipeline:
    """``spec.build`` with its plugin steps loaded from ``registry``. To open topic (or
    other) connectors too, pass ``load_plugins(spec, registry)`` as ``plugins`` to
    ``streams.bind.build``."""
    return spec.build(sink=sink, plugins=load_plugins(spec, registry), sources=sources)
