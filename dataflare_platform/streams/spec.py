"""Declarative pipelines: a pydantic model, loadable from YAML, of a pipeline's sources
and sink (connectors, by ``kind:``), its operator graph (``streams.steps``) and how it
appears in the catalog.

    name: hot_items
    watermark: {out_of_orderness: 4s}
    sources:
      bids: {kind: topic, topic: nexmark.bids, columns: [auction, date_time]}
    streams:
      hot:
        from: bids
        steps:
          - key_by: [auction]
          - window: {sliding: {size: 10s, slide: 2s}, agg: {num: count}, top: {by: num}}
    output: hot
    sink: {kind: duckdb, table: hot_items}

Each source and the sink is validated by its kind's own settings model
(``connectors.registry``); errors name the field (``sources.bids.nats.stream``). The
shape before kinds is still read: a source ``{path: ...}`` is a ``file`` source and
``{topic: ...}`` a ``topic`` source; a sink ``{duckdb: {...}}``, ``{parquet: PATH}``,
``{topic: NAME}`` or ``{discard: {}}`` is the kind of that name (``parquet`` is ``file``).

``catalog.micro_batch`` (default true) gives the pipeline a sensor that requests runs
over offset ranges; every source must then be of a kind with readable end offsets
(``registry.RANGE_KINDS``), else the spec is refused naming ``sources.<name>.kind``.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr, field_validator, model_validator

from dataflare_platform.component_files import load_spec_mapping
from dataflare_platform.connectors.registry import (
    RANGE_KINDS,
    SinkSettings,
    SourceSettings,
    supports_ranges,
)
from dataflare_platform.deployment_settings import (
    PIPELINE_BUILDERS_ENV,
    builder_allowed,
    builder_packages,
)
from dataflare_platform.engine.io import Sink, Source
from dataflare_platform.engine.operators.plugin import BatchPlugin
from dataflare_platform.engine.pipeline import Pipeline, Stream
from dataflare_platform.errors import ConfigError, InvalidInputError
from dataflare_platform.models import PIPELINE_NAME, validated
from dataflare_platform.streams import bind
from dataflare_platform.streams.fields import (
    Duration,
    ScalingPolicy,
    SpecModel,
    WatermarkSpec,
    check_size,
)
from dataflare_platform.streams.steps import StreamSpec, wire


def legacy_source(value: Any) -> Any:
    """``{path: ...}`` / ``{topic: ...}`` (the shape before ``kind:``) as a kind."""
    if isinstance(value, dict) and "kind" not in value:
        if "path" in value and "topic" not in value:
            return {"kind": "file", **value}
        if "topic" in value and "path" not in value:
            return {"kind": "topic", **value}
        if "path" in value and "topic" in value:
            raise InvalidInputError("give exactly one of path, topic (or a kind)")
    return value


_LEGACY_SINKS = {"duckdb": "duckdb", "parquet": "file", "discard": "discard", "topic": "topic"}


def legacy_sink(value: Any) -> Any:
    """``{duckdb: {...}}`` / ``{parquet: PATH}`` / ``{topic: NAME}`` / ``{discard: {}}``
    (the shape before ``kind:``) as a kind."""
    if not isinstance(value, dict) or "kind" in value:
        return value
    given = [k for k in _LEGACY_SINKS if k in value]
    if len(given) != 1 or len(value) != 1:
        raise InvalidInputError(f"give a kind (or exactly one of {', '.join(_LEGACY_SINKS)})")
    (old,) = given
    inner = value[old]
    kind = _LEGACY_SINKS[old]
    if old == "duckdb":
        return {"kind": kind, **(inner or {})}
    if old == "parquet":
        return {"kind": kind, "path": inner}
    if old == "topic":
        return {"kind": kind, "topic": inner}
    return {"kind": kind}


class MaxLagSpec(SpecModel):
    """How far behind its sources the pipeline may fall before its ``lag`` check fails:
    committed events not yet processed, and seconds of event time between the newest
    event in a source partition and the newest the pipeline processed from it. A bound
    left out is not judged."""

    events: int | None = Field(None, ge=0)
    seconds: float | None = Field(None, ge=0)
    # warn: a failed check shows yellow; error: red (a failed check never stops a run).
    severity: Literal["warn", "error"] = "warn"


class CatalogSpec(SpecModel):
    """How the pipeline's output appears in a catalog (the Dagster asset) and how it is
    scheduled there: the engine ignores it."""

    description: str | None = None
    group: str = "streams"
    owners: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    # Lag bounds of the ``lag`` check; without them it reports the lag and always passes.
    max_lag: MaxLagSpec = Field(default_factory=MaxLagSpec)
    sensor_interval: Duration = "30s"
    # A sensor requests runs over new offset ranges (false: continuous runs only).
    micro_batch: bool = True
    # The share of a run's events that may be dead-lettered before its check warns.
    max_dead_letter_rate: float = Field(0.0, ge=0.0, le=1.0)
    # A continuous run records a materialization (and evaluates the asset's checks) at
    # most this often; checkpoints in between are committed but only logged.
    progress_interval: Duration = "30s"

    # Positive (0 would ask for a sensor tick or a materialization all the time), at most
    # a year.
    _check = field_validator("sensor_interval", "progress_interval")(check_size)


_BUILDER_REF = re.compile(
    r"^(?P<module>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"
    r":(?P<qualname>[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*)$"
)


def _import_builder(value: Any) -> Callable[..., Stream] | None:
    """``"package.module:function"`` (YAML) or the function itself (Python).

    Naming a module imports it, which runs its code: only modules inside the platform's
    builder packages or those the deployment allows (``deployment_settings.
    builder_packages``, ``$DATAFLARE_PIPELINE_BUILDERS``) may be named, checked before
    anything is imported; the function must be defined in that module (not something
    it imported) and its path has no private (``_``) part."""
    if value is None or callable(value):
        return value
    if not isinstance(value, str):
        raise InvalidInputError("give the builder function as 'package.module:function'")
    match = _BUILDER_REF.match(value)
    if match is None:
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise InvalidInputError(
            f"give the builder function as 'package.module:function', not {shown!r}"
        )
    module_name, qualname = match["module"], match["qualname"]
    packages = builder_packages()
    if not builder_allowed(module_name, packages):
        raise InvalidInputError(
            f"module {module_name!r} is not in a builder package the deployment allows"
            f" ({', '.join(packages)}); list its package in ${PIPELINE_BUILDERS_ENV}"
            " to allow it"
        )
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as err:
        raise InvalidInputError(f"cannot import {value!r}: {err}") from None
    if not callable(target):
        raise InvalidInputError(f"{value!r} is not a function")
    if getattr(target, "__module__", None) != module_name:
        raise InvalidInputError(f"{value!r} is not defined in {module_name!r}")
    return target


def _builder_name(builder: Callable[..., Any]) -> str:
    return f"{builder.__module__}:{builder.__qualname__}"


class PipelineSpec(SpecModel):
    """A pipeline: its steps declared in ``streams`` (YAML), or a ``builder`` — a Python
    function taking one :class:`Stream` per source (by name) and returning the output
    stream, for what the builder API expresses better than YAML."""

    name: str = Field(pattern=PIPELINE_NAME)
    catalog: CatalogSpec = Field(default_factory=CatalogSpec)
    watermark: WatermarkSpec = Field(default_factory=WatermarkSpec)
    sources: dict[str, SourceSettings]
    streams: dict[str, StreamSpec] = Field(default_factory=dict)
    output: str | None = None
    builder: Any = Field(default=None, exclude=True)
    sink: SinkSettings
    # Size the partition-parallel workers with the <name>_autoscaler sensor.
    autoscaling: ScalingPolicy | None = None
    _folder: Path | None = PrivateAttr(default=None)

    _import = field_validator("builder", mode="before")(_import_builder)

    @field_validator("sources", mode="before")
    @classmethod
    def _legacy_sources(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {name: legacy_source(s) for name, s in value.items()}
        return value

    _legacy_sink = field_validator("sink", mode="before")(legacy_sink)

    @model_validator(mode="after")
    def _references(self) -> PipelineSpec:
        self._ranges_possible()
        if self.builder is not None:
            return self._builder_fits()
        known = set(self.sources)
        for name, stream in self.streams.items():
            if name in self.sources:
                raise ValueError(f"streams.{name}: a stream cannot share a source's name")
            if stream.from_ not in known:
                raise ValueError(
                    f"streams.{name}.from: unknown source or earlier stream {stream.from_!r}"
                )
            for i, step in enumerate(stream.steps):
                other = getattr(step.arg, "with_", None)
                if other is not None and other not in known:
                    raise ValueError(
                        f"streams.{name}.steps[{i}].{step.op}.with: unknown stream {other!r}"
                    )
            known.add(name)
        self._columns_exist()
        if self.output is None:
            raise ValueError("output: name the stream to sink (or give a builder)")
        if self.output not in self.streams:
            raise ValueError(f"output: no stream named {self.output!r}")
        return self

    def _columns_exist(self) -> None:
        """Columns the steps name exist: followed from each source that declares its
        columns (``columns:`` or ``schema:``) through the steps whose output columns are
        plain to see (filter, with_columns, select, key_by, dedup, unique); after any
        other step (windows, joins, plugins...) the columns are not followed further."""
        have: dict[str, frozenset[str] | None] = {
            name: declared_columns(source) for name, source in self.sources.items()
        }
        for name, stream in self.streams.items():
            columns = have.get(stream.from_)
            for i, step in enumerate(stream.steps):
                if columns is None:
                    break
                used, after = step_columns(step.op, step.arg, columns)
                missing = sorted(used - columns)
                if missing:
                    raise InvalidInputError(
                        f"streams.{name}.steps[{i}].{step.op}: no column {missing[0]!r} in"
                        f" {stream.from_!r} at this step (columns: {_shown(columns)})"
                    )
                columns = after
            have[name] = columns

    def _ranges_possible(self) -> None:
        if not self.catalog.micro_batch:
            return
        for name, source in self.sources.items():
            if not supports_ranges(source):
                raise InvalidInputError(
                    f"sources.{name}.kind: {source.kind} sources run continuously only"
                    f" (micro-batch ranges need one of {', '.join(RANGE_KINDS)}):"
                    " set catalog.micro_batch: false"
                )

    def _builder_fits(self) -> PipelineSpec:
        if self.streams or self.output is not None:
            raise InvalidInputError(
                "builder: give either a builder or streams and output, not both"
            )
        try:
            params = inspect.signature(self.builder).parameters
        except (TypeError, ValueError) as err:
            raise InvalidInputError(f"builder: {err}") from None
        required = {n for n, p in params.items() if p.default is inspect.Parameter.empty} - {
            n for n, p in params.items() if p.kind is p.VAR_KEYWORD
        }
        missing = sorted(required - set(self.sources))
        if missing:
            raise InvalidInputError(
                f"builder: {_builder_name(self.builder)} takes {missing}, which are not "
                f"sources (sources: {sorted(self.sources)})"
            )
        return self

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def load(cls, data: dict[str, Any]) -> PipelineSpec:
        return validated(cls, "pipeline spec", data)

    @classmethod
    def from_yaml(cls, path: Path) -> PipelineSpec:
        """A bare spec file, or a component instance (``defs.yaml``: the spec under
        ``attributes``); relative paths resolve against the file's folder either way."""
        base = Path(path).parent
        spec = cls.load(load_spec_mapping(path, "pipeline spec"))
        return spec.relative_to(base)

    def relative_to(self, base: Path) -> PipelineSpec:
        """Resolve relative paths of sources and the sink against the spec file's folder
        (which is also where the pipeline's own ``plugins.lock`` is looked for)."""
        sources = {k: _resolved(s, base) for k, s in self.sources.items()}
        copy = self.model_copy(update={"sources": sources, "sink": _resolved(self.sink, base)})
        return copy.with_folder(base)

    def with_folder(self, folder: Path) -> PipelineSpec:
        """This spec, declared in ``folder`` (not a field: where a spec was found is not
        part of what it says, and two copies of one spec compare equal)."""
        copy = self.model_copy()
        copy._folder = Path(folder)
        return copy

    def __eq__(self, other: object) -> bool:
        # What the spec says, not where it was found (pydantic would compare ``_folder``).
        if type(other) is not type(self):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = SpecModel.__hash__

    @property
    def folder(self) -> Path | None:
        """The folder the spec was declared in (None for a spec built in memory)."""
        return self._folder

    # -- building ------------------------------------------------------------------------
    def build(
        self,
        sink: Sink | None = None,
        plugins: dict[str, BatchPlugin] | None = None,
        sources: dict[str, Source] | None = None,
        **opening: Any,
    ) -> Pipeline:
        """The pipeline with its sources and sink opened: ``streams.bind.build``."""
        return bind.build(self, sink=sink, sources=sources, plugins=plugins, **opening)

    # -- the operator graph --------------------------------------------------------------
    def wire(
        self, streams: dict[str, Stream], plugins: dict[str, BatchPlugin] | None = None
    ) -> Stream:
        """The output stream, from one stream per source."""
        if self.builder is not None:
            return self._call_builder(streams)
        assert self.output is not None
        return wire(streams, self.streams, self.output, plugins)

    def _call_builder(self, streams: dict[str, Stream]) -> Stream:
        params = inspect.signature(self.builder).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            given = dict(streams)
        else:
            given = {name: streams[name] for name in params if name in streams}
        out = self.builder(**given)
        if not isinstance(out, Stream):
            raise ConfigError(
                f"pipeline {self.name!r}",
                [
                    (
                        "builder",
                        f"{_builder_name(self.builder)} returned {type(out).__name__}: "
                        "return the output Stream (the platform adds the sink)",
                    )
                ],
            )
        return out


def declared_columns(settings: BaseModel) -> frozenset[str] | None:
    """The columns a source's settings declare (a file source's ``columns``, a broker's
    or landing directory's ``schema``), None when it does not say."""
    columns = getattr(settings, "columns", None)
    if isinstance(columns, list | tuple):
        return frozenset(str(c) for c in columns)
    schema = getattr(settings, "table_schema", None)
    if isinstance(schema, dict):
        return frozenset(str(c) for c in schema)
    return None


def expr_columns(text: str) -> set[str]:
    """Columns a (validated) Polars SQL expression reads."""
    import polars as pl

    try:
        return set(pl.sql_expr(text).meta.root_names())
    except Exception:  # already parsed at validation; the parser said what is wrong there
        return set()


def step_columns(
    op: str, arg: Any, columns: frozenset[str]
) -> tuple[set[str], frozenset[str] | None]:
    """``(columns the step reads, its output columns or None when not followed)``."""
    if op == "filter":
        return expr_columns(arg), columns
    if op == "with_columns":
        used = set().union(*(expr_columns(e) for e in arg.values())) if arg else set()
        return used, columns | frozenset(arg)
    if op == "select":
        return set(arg), frozenset(arg)
    if op == "key_by":
        return set(arg), columns
    if op == "unique":
        return set(arg or ()), columns
    if op == "dedup":
        return set(), columns
    return set(), None


def _shown(columns: frozenset[str]) -> list[str]:
    return sorted(columns)[:50]


# Path fields of connector settings resolved against a spec file's folder.
_PATH_FIELDS = ("path", "root", "directory", "ledger")


def _resolved(settings: BaseModel, base: Path) -> BaseModel:
    update = {}
    for field in _PATH_FIELDS:
        value = getattr(settings, field, None)
        if isinstance(value, Path) and not value.is_absolute():
            update[field] = base / value
    return settings.model_copy(update=update) if update else settings
