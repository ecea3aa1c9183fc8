"""The operator graph of a declarative pipeline: pydantic models of its streams and
steps that map one-to-one onto the builder API — every step is a builder method with the
same name and arguments — and ``wire``, which applies them to the source streams.

    streams:
      hot:
        from: bids
        steps:
          - key_by: [auction]
          - window: {sliding: {size: 10s, slide: 2s}, agg: {num: count}, top: {by: num}}

Expressions are Polars SQL expressions (``"auction % 123 = 0"``), checked at load. Any
error names the field it is about (``streams.hot.steps[1].window.sliding.slide``). The
whole pipeline spec (sources and sink by ``kind:``, catalog, builder) is
``streams.spec.PipelineSpec``: sources and sinks are connectors, above the engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from dataflare_platform.engine.aggregations import Agg
from dataflare_platform.engine.durations import to_ms
from dataflare_platform.engine.operators import BatchPlugin
from dataflare_platform.engine.pipeline import Stream, WindowedStream
from dataflare_platform.engine.windows import Session, Sliding, TopN, Tumbling
from dataflare_platform.errors import ConfigError, InvalidInputError
from dataflare_platform.models import StrictModel

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
        raise InvalidInputError(f"not a valid expression {text!r}: {err}") from None
    return text


class WatermarkSpec(_Model):
    out_of_orderness: Duration = "4s"
    idle_timeout: Duration | None = None
    max_future: Duration = "1h"

    _check = field_validator("out_of_orderness", "max_future")(_duration)


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


def wire(
    streams: dict[str, Stream],
    stream_specs: dict[str, StreamSpec],
    output: str,
    plugins: dict[str, BatchPlugin] | None = None,
) -> Stream:
    """The ``output`` stream, from one stream per source and the declared streams in
    order (each may read a source or an earlier stream)."""
    streams = dict(streams)
    for name, stream_spec in stream_specs.items():
        stream = streams[stream_spec.from_]
        for step in stream_spec.steps:
            stream = apply_step(stream, step, streams, plugins or {})
        streams[name] = stream
    return streams[output]


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
