"""Declarative pipelines: a pydantic model, loadable from YAML, that maps one-to-one onto
the builder API — every step is a builder method with the same name and arguments.

    name: hot-items
    watermark: {out_of_orderness: 4s}
    sources:
      bids: {path: data/nexmark/bids, columns: [auction, date_time]}
    streams:
      hot:
        from: bids
        steps:
          - key_by: [auction]
          - window: {sliding: {size: 10s, slide: 2s}, agg: {num: count}, top: {by: num}}
    output: hot
    sink: {duckdb: {path: out.duckdb, table: hot_items}}

Expressions are Polars SQL expressions (``"auction % 123 = 0"``), checked at load. Any
error names the field it is about (``streams.hot.steps[1].window.sliding.slide``).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from dataflare_platform.engine.aggregations import Agg
from dataflare_platform.engine.durations import to_ms
from dataflare_platform.engine.operators import BatchPlugin
from dataflare_platform.engine.pipeline import Pipeline, Stream, WindowedStream
from dataflare_platform.engine.sinks import DuckDBSink, NullSink, ParquetSink, Sink
from dataflare_platform.engine.sources import FileSource, Source, nexmark_files
from dataflare_platform.engine.windows import Session, Sliding, TopN, Tumbling
from dataflare_platform.errors import ConfigError
from dataflare_platform.models import StrictModel, validated
from dataflare_platform.yaml_files import load_yaml_mapping

Duration = int | str


class _Model(StrictModel):
    model_config = ConfigDict(populate_by_name=True)


def _duration(value: Duration) -> Duration:
    to_ms(value)  # raises ValueError with a readable message
    return value


def _expr(text: str) -> str:
    try:
        pl.sql_expr(text)
    except Exception as err:  # polars raises several error types for bad SQL
        raise ValueError(f"not a valid expression {text!r}: {err}") from None
    return text


class WatermarkSpec(_Model):
    out_of_orderness: Duration = "4s"
    idle_timeout: Duration | None = None
    max_future: Duration = "1h"

    _check = field_validator("out_of_orderness", "max_future")(_duration)


class SourceSpec(_Model):
    """Files (``path``) or a topic of the event log (``topic``; see
    ``dataflare_platform.events.specs``, which opens it)."""

    path: Path | None = None
    topic: str | None = None
    columns: list[str] | None = None
    time_column: str = "date_time"

    @model_validator(mode="after")
    def _one(self) -> SourceSpec:
        if (self.path is None) == (self.topic is None):
            raise ValueError("give exactly one of path, topic")
        return self


class AggSpec(_Model):
    """``count`` or one of ``{sum|min|max|mean|count: column}``."""

    kind: Literal["count", "sum", "min", "max", "mean"]
    column: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if value == "count":
            return {"kind": "count"}
        if isinstance(value, dict) and len(value) == 1 and "kind" not in value:
            ((kind, column),) = value.items()
            return {"kind": kind, "column": column}
        return value

    @model_validator(mode="after")
    def _column_needed(self) -> AggSpec:
        if self.kind != "count" and not self.column:
            raise ValueError(f"{self.kind} needs a column")
        return self


class SlidingSpec(_Model):
    size: Duration
    slide: Duration

    _check = field_validator("size", "slide")(_duration)

    @model_validator(mode="after")
    def _divides(self) -> SlidingSpec:
        if to_ms(self.size) % max(to_ms(self.slide), 1) or to_ms(self.slide) == 0:
            raise ValueError("slide must be positive and divide size")
        return self


class TopSpec(_Model):
    by: str
    n: int = Field(1, ge=1)
    descending: bool = True


class WindowSpec(_Model):
    tumbling: Duration | None = None
    sliding: SlidingSpec | None = None
    session: Duration | None = None
    lateness: Duration = 0
    agg: dict[str, AggSpec] | None = None
    top: TopSpec | None = None
    top_rows: TopSpec | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> WindowSpec:
        kinds = [k for k in ("tumbling", "sliding", "session") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of tumbling, sliding, session")
        if (self.agg is None) == (self.top_rows is None):
            raise ValueError("give either agg (aggregates) or top_rows (rows with top values)")
        for name in ("tumbling", "session", "lateness"):
            value = getattr(self, name)
            if value is not None:
                _duration(value)
        return self


class JoinSpec(_Model):
    with_: str = Field(alias="with")
    left_on: str | list[str]
    right_on: str | list[str]
    right_unique: bool = False


class WindowJoinSpec(_Model):
    with_: str = Field(alias="with")
    tumbling: Duration
    left_on: str | list[str]
    right_on: str | list[str]
    lateness: Duration = 0


class IntervalJoinSpec(_Model):
    with_: str = Field(alias="with")
    left_key: str
    right_key: str
    end_column: str
    left_columns: list[str]
    agg: dict[str, AggSpec]
    lateness: Duration = 0


class DedupSpec(_Model):
    horizon: Duration
    lateness: Duration = 0


class EnrichSpec(_Model):
    path: Path
    left_on: str | list[str]
    right_on: str | list[str] | None = None
    how: Literal["left", "inner"] = "left"


class PluginSpec(_Model):
    """A plugin step: ``{name, params, columns, id}``. The engine does not load plugins:
    ``build(plugins=...)`` takes them ready, keyed by ``key`` (``id``, else ``name``); see
    ``dataflare_platform.plugins.specs``, which loads them from a registry."""

    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    columns: dict[str, str] = Field(default_factory=dict)  # manifest column -> table column
    id: str | None = Field(None, min_length=1)  # tells apart two steps of one plugin

    @property
    def key(self) -> str:
        return self.id or self.name


# Step name → the model of its argument (a plain type for simple ones).
STEPS: dict[str, Any] = {
    "filter": str,
    "with_columns": dict[str, str],
    "select": list[str],
    "key_by": list[str],
    "dedup": DedupSpec,
    "reduce": dict[str, AggSpec],
    "window": WindowSpec,
    "flat_map": str,
    "unique": list[str] | None,
    "enrich": EnrichSpec,
    "join": JoinSpec,
    "window_join": WindowJoinSpec,
    "interval_join_agg": IntervalJoinSpec,
    "plugin": PluginSpec,
}


class StepSpec(_Model):
    op: str
    arg: Any = None

    @model_validator(mode="before")
    @classmethod
    def _one_key(cls, value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"op", "arg"}:
            return value
        if not isinstance(value, dict) or len(value) != 1:
            raise ValueError(f"a step is a mapping with one key, one of {sorted(STEPS)}")
        ((op, arg),) = value.items()
        if op not in STEPS:
            raise ValueError(f"unknown step {op!r}; steps are {sorted(STEPS)}")
        from pydantic import TypeAdapter

        try:
            parsed = TypeAdapter(STEPS[op]).validate_python(arg)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in (op, *first["loc"]))
            raise ValueError(f"{where}: {first['msg']}") from None
        if op == "filter":
            _expr(parsed)
        if op == "with_columns":
            for expr in parsed.values():
                _expr(expr)
        return {"op": op, "arg": parsed}


class StreamSpec(_Model):
    from_: str = Field(alias="from")
    steps: list[StepSpec] = Field(default_factory=list)


SINK_KINDS = ("duckdb", "parquet", "discard", "topic")


class SinkSpec(_Model):
    duckdb: dict[str, Any] | None = None
    parquet: Path | None = None
    discard: dict[str, Any] | None = None
    topic: str | None = None  # an exactly-once output topic of the event log

    @model_validator(mode="after")
    def _one(self) -> SinkSpec:
        given = [k for k in SINK_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(SINK_KINDS)}")
        if self.duckdb is not None and "table" not in self.duckdb:
            raise ValueError("duckdb needs a table (and optionally path, upsert_keys)")
        return self


class CatalogSpec(_Model):
    """How the pipeline's output appears in a catalog (the Dagster asset): the engine
    ignores it."""

    description: str | None = None
    group: str = "streams"
    owners: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    sensor_interval: Duration = "30s"
    # The share of a run's events that may be dead-lettered before its check warns.
    max_dead_letter_rate: float = Field(0.0, ge=0.0, le=1.0)

    _check = field_validator("sensor_interval")(_duration)


def _import_builder(value: Any) -> Callable[..., Stream] | None:
    """``"package.module:function"`` (YAML) or the function itself (Python)."""
    if value is None or callable(value):
        return value
    if not isinstance(value, str) or ":" not in value:
        raise ValueError("give the builder function as 'package.module:function'")
    module_name, _, qualname = value.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import {value!r}: {err}") from None
    if not callable(target):
        raise ValueError(f"{value!r} is not a function")
    return target


def _builder_name(builder: Callable[..., Any]) -> str:
    return f"{builder.__module__}:{builder.__qualname__}"


class PipelineSpec(_Model):
    """A pipeline: its steps declared in ``streams`` (YAML), or a ``builder`` — a Python
    function taking one :class:`Stream` per source (by name) and returning the output
    stream, for what the builder API expresses better than YAML."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,100}$")
    catalog: CatalogSpec = Field(default_factory=CatalogSpec)
    watermark: WatermarkSpec = Field(default_factory=WatermarkSpec)
    sources: dict[str, SourceSpec]
    streams: dict[str, StreamSpec] = Field(default_factory=dict)
    output: str | None = None
    builder: Any = Field(default=None, exclude=True)
    sink: SinkSpec

    _import = field_validator("builder", mode="before")(_import_builder)

    @model_validator(mode="after")
    def _references(self) -> PipelineSpec:
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
        if self.output is None:
            raise ValueError("output: name the stream to sink (or give a builder)")
        if self.output not in self.streams:
            raise ValueError(f"output: no stream named {self.output!r}")
        return self

    def _builder_fits(self) -> PipelineSpec:
        if self.streams or self.output is not None:
            raise ValueError("builder: give either a builder or streams and output, not both")
        try:
            params = inspect.signature(self.builder).parameters
        except (TypeError, ValueError) as err:
            raise ValueError(f"builder: {err}") from None
        required = {n for n, p in params.items() if p.default is inspect.Parameter.empty} - {
            n for n, p in params.items() if p.kind is p.VAR_KEYWORD
        }
        missing = sorted(required - set(self.sources))
        if missing:
            raise ValueError(
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
        base = Path(path).parent
        spec = cls.load(load_yaml_mapping(path, "pipeline spec"))
        return spec.relative_to(base)

    def relative_to(self, base: Path) -> PipelineSpec:
        """Resolve relative source/sink paths against the spec file's folder."""

        def resolve(path: Path | str) -> Path:
            path = Path(path)
            return path if path.is_absolute() else base / path

        sources = {
            k: s.model_copy(update={"path": resolve(s.path)}) if s.path is not None else s
            for k, s in self.sources.items()
        }
        sink = self.sink
        if sink.duckdb is not None and "path" in sink.duckdb:
            sink = sink.model_copy(
                update={"duckdb": {**sink.duckdb, "path": resolve(sink.duckdb["path"])}}
            )
        elif sink.parquet is not None:
            sink = sink.model_copy(update={"parquet": resolve(sink.parquet)})
        return self.model_copy(update={"sources": sources, "sink": sink})

    # -- building ------------------------------------------------------------------------
    def build(
        self,
        sink: Sink | None = None,
        plugins: dict[str, BatchPlugin] | None = None,
        sources: dict[str, Source] | None = None,
    ) -> Pipeline:
        """The pipeline, with ``sources`` replacing the declared ones by name (topic
        sources must be given: the engine does not open the event log)."""
        w = self.watermark
        pipeline = Pipeline(
            self.name,
            out_of_orderness_ms=to_ms(w.out_of_orderness),
            idle_timeout_ms=None if w.idle_timeout is None else to_ms(w.idle_timeout),
            max_future_ms=to_ms(w.max_future),
        )
        streams: dict[str, Stream] = {}
        given = sources or {}
        for name, source in self.sources.items():
            if name in given:
                streams[name] = pipeline.source(given[name])
                continue
            if source.path is None:
                raise ConfigError(
                    f"pipeline {self.name!r}",
                    [(f"sources.{name}.topic", "open topic sources with events.specs.build")],
                )
            files = nexmark_files(source.path) if source.path.is_dir() else [source.path]
            streams[name] = pipeline.source(
                FileSource(name, files, source.time_column, source.columns)
            )
        return self.wire(streams, plugins).sink(sink or self._sink())

    def wire(
        self, streams: dict[str, Stream], plugins: dict[str, BatchPlugin] | None = None
    ) -> Stream:
        """The output stream, from one stream per source."""
        if self.builder is not None:
            return self._call_builder(streams)
        streams = dict(streams)
        for name, stream_spec in self.streams.items():
            stream = streams[stream_spec.from_]
            for step in stream_spec.steps:
                stream = apply_step(stream, step, streams, plugins or {})
            streams[name] = stream
        return streams[self.output]  # type: ignore[index]

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

    def _sink(self) -> Sink:
        s = self.sink
        if s.duckdb is not None:
            if "path" not in s.duckdb:
                raise ConfigError(
                    f"pipeline {self.name!r}",
                    [("sink.duckdb.path", "no path: give one, or run it where one is chosen")],
                )
            return DuckDBSink(
                Path(s.duckdb["path"]), s.duckdb["table"], s.duckdb.get("upsert_keys")
            )
        if s.parquet is not None:
            return ParquetSink(s.parquet)
        if s.topic is not None:
            raise ConfigError(
                f"pipeline {self.name!r}", [("sink.topic", "open with events.specs.build")]
            )
        return NullSink()


def _aggs(spec: dict[str, AggSpec]) -> list[Agg]:
    return [Agg(a.kind, a.column, alias) for alias, a in spec.items()]


def apply_step(
    stream: Stream, step: StepSpec, streams: dict[str, Stream], plugins: dict[str, BatchPlugin]
) -> Stream:
    op, arg = step.op, step.arg
    match op:
        case "filter":
            return stream.filter(pl.sql_expr(arg))
        case "with_columns":
            return stream.with_columns(*(pl.sql_expr(e).alias(n) for n, e in arg.items()))
        case "select":
            return stream.select(*arg)
        case "key_by":
            return stream.key_by(*arg)
        case "dedup":
            return stream.dedup(arg.horizon, arg.lateness)
        case "reduce":
            return stream.reduce(*_aggs(arg))
        case "flat_map":
            return stream.flat_map(arg)
        case "unique":
            return stream.unique(arg)
        case "enrich":
            table = pl.read_parquet(arg.path)
            return stream.enrich(table, arg.left_on, arg.right_on, arg.how)
        case "join":
            return stream.join(streams[arg.with_], arg.left_on, arg.right_on, arg.right_unique)
        case "window_join":
            return stream.window_join(
                streams[arg.with_],
                Tumbling(to_ms(arg.tumbling)),
                arg.left_on,
                arg.right_on,
                arg.lateness,
            )
        case "interval_join_agg":
            return stream.interval_join_agg(
                streams[arg.with_],
                arg.left_key,
                arg.right_key,
                arg.end_column,
                arg.left_columns,
                *_aggs(arg.agg),
                lateness=arg.lateness,
            )
        case "plugin":
            if arg.key not in plugins:
                field = "plugin.id" if arg.id else "plugin.name"
                raise ConfigError(
                    "pipeline spec", [(field, f"no plugin named {arg.key!r} is loaded")]
                )
            return stream.plugin(plugins[arg.key])
        case "window":
            return _window(stream, arg)
    raise AssertionError(op)


def _window(stream: Stream, spec: WindowSpec) -> Stream:
    if spec.tumbling is not None:
        window: Tumbling | Sliding | Session = Tumbling(to_ms(spec.tumbling))
    elif spec.sliding is not None:
        window = Sliding(to_ms(spec.sliding.size), to_ms(spec.sliding.slide))
    else:
        window = Session(to_ms(spec.session))
    windowed: WindowedStream = stream.window(window, spec.lateness)
    if spec.top_rows is not None:
        return windowed.top_rows(spec.top_rows.by, spec.top_rows.n, spec.top_rows.descending)
    top = None if spec.top is None else TopN(spec.top.by, spec.top.n, spec.top.descending)
    return windowed.agg(*_aggs(spec.agg or {}), top=top)
