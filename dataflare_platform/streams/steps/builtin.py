"""The steps every pipeline can use (``streams.<name>.steps`` of a spec, see
``streams.spec``): each one a builder method of ``engine.Stream`` with the same name and
arguments, registered with the model of its argument. Expressions are Polars SQL
expressions (``"auction % 123 = 0"``), checked at load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import Field, ValidationInfo, field_validator, model_validator

from dataflare_platform.connectors.files import FileSideTable
from dataflare_platform.engine.aggregations import Agg
from dataflare_platform.engine.durations import MAX_WINDOWS_PER_EVENT, to_ms
from dataflare_platform.engine.operators.plugin import BatchPlugin
from dataflare_platform.engine.operators.windows import (
    ProcessingTumbling,
    Session,
    Sliding,
    TopN,
    Tumbling,
)
from dataflare_platform.engine.pipeline import Stream
from dataflare_platform.errors import ConfigError
from dataflare_platform.streams.fields import (
    PLUGIN_NAME,
    DelayField,
    Expr,
    SizeField,
    SpecModel,
)
from dataflare_platform.streams.steps.registry import StepContext, step


# -- argument models -----------------------------------------------------------------------
class AggSpec(SpecModel):
    """``count`` or one of ``{sum|min|max|mean|count|count_distinct: column}``
    (``count_distinct`` is exact; in ``window`` only, not ``interval_join_agg``)."""

    kind: Literal["count", "sum", "min", "max", "mean", "count_distinct"]
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


class SlidingSpec(SpecModel):
    """A sliding window: each event is in ``size / slide`` windows, at most
    ``durations.MAX_WINDOWS_PER_EVENT`` (the state and the output grow with it)."""

    size: SizeField
    slide: SizeField

    @model_validator(mode="after")
    def _divides(self) -> SlidingSpec:
        size, slide = to_ms(self.size), to_ms(self.slide)
        if size % slide:
            raise ValueError("slide must divide size")
        if size // slide > MAX_WINDOWS_PER_EVENT:
            raise ValueError(
                f"size / slide is {size // slide}: each event would be in that many windows,"
                f" over the limit of {MAX_WINDOWS_PER_EVENT} (use a longer slide)"
            )
        return self


class TopSpec(SpecModel):
    by: str
    n: int = Field(1, ge=1, le=100_000)  # rows kept per window: state and output grow with it
    descending: bool = True


WINDOW_KINDS = ("tumbling", "sliding", "session", "processing_tumbling")


class WindowSpec(SpecModel):
    """A window step: one of ``tumbling``, ``sliding``, ``session`` (event time) or
    ``processing_tumbling`` (tumbling windows of the time the engine sees each batch,
    the machine's clock: Nexmark q12), with ``agg``, ``top_rows`` or ``plugin`` (an
    aggregate WASM plugin, one state per window and key: a HyperLogLog per day, say;
    tumbling and sliding windows). Processing-time
    windows close by the clock, not the watermark, so ``lateness``, ``top`` and
    ``top_rows`` mean nothing there and are refused naming the field."""

    tumbling: SizeField | None = None
    sliding: SlidingSpec | None = None
    session: SizeField | None = None
    processing_tumbling: SizeField | None = None
    # Declared after the kinds: their validators below see which kind was given.
    lateness: DelayField = 0
    agg: dict[str, AggSpec] | None = None
    top: TopSpec | None = None
    top_rows: TopSpec | None = None
    plugin: PluginSpec | None = None

    @field_validator("lateness", "top", "top_rows")
    @classmethod
    def _event_time_only(cls, value: Any, info: ValidationInfo) -> Any:
        given = value is not None and (info.field_name != "lateness" or to_ms(value) != 0)
        if given and info.data.get("processing_tumbling") is not None:
            raise ValueError(
                f"processing_tumbling windows close by the clock: {info.field_name} does not"
                " apply to them"
            )
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> WindowSpec:
        kinds = [k for k in WINDOW_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of {', '.join(WINDOW_KINDS)}")
        given = [k for k in ("agg", "top_rows", "plugin") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give one of agg (aggregates), top_rows (rows with top values) or plugin"
                " (an aggregate plugin)"
            )
        if self.plugin is not None and kinds[0] not in ("tumbling", "sliding"):
            raise ValueError("plugin aggregates tumbling or sliding windows")
        return self


class JoinSpec(SpecModel):
    """``right_filter``: keep only right rows it holds for (a Polars SQL expression on the
    right's columns), the same rows as a ``filter`` after the join, but the rejected right
    rows are never held (with ``right_unique`` their keys are, so their left rows are
    dropped on arrival instead of waiting for ever)."""

    with_: str = Field(alias="with")
    left_on: str | list[str]
    right_on: str | list[str]
    right_unique: bool = False
    right_filter: Expr | None = None


class WindowJoinSpec(SpecModel):
    with_: str = Field(alias="with")
    tumbling: SizeField
    left_on: str | list[str]
    right_on: str | list[str]
    lateness: DelayField = 0


class IntervalJoinSpec(SpecModel):
    with_: str = Field(alias="with")
    left_key: str
    right_key: str
    end_column: str
    left_columns: list[str]
    agg: dict[str, AggSpec]
    lateness: DelayField = 0

    @field_validator("agg")
    @classmethod
    def _no_distinct(cls, value: dict[str, AggSpec]) -> dict[str, AggSpec]:
        if any(a.kind == "count_distinct" for a in value.values()):
            raise ValueError("count_distinct is not available in interval_join_agg")
        return value


class OrderSpec(SpecModel):
    """One column of a winner's order: ``{price: desc}`` or ``{date_time: asc}``."""

    column: str
    descending: bool = False

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, dict) and len(value) == 1 and "column" not in value:
            ((column, direction),) = value.items()
            if direction not in ("asc", "desc"):
                raise ValueError(f"{column}: give asc or desc, not {direction!r}")
            return {"column": column, "descending": direction == "desc"}
        return value


class IntervalWinnerSpec(SpecModel):
    """``interval_join_winner``: each closed left row with the columns of its first
    ranked right row (``order_by``); ``columns`` maps right columns to output names."""

    with_: str = Field(alias="with")
    left_key: str
    right_key: str
    end_column: str
    left_columns: list[str]
    order_by: list[OrderSpec] = Field(min_length=1)
    columns: dict[str, str] | list[str]
    agg: dict[str, AggSpec] = Field(default_factory=dict)
    lateness: DelayField = 0


class ReduceLastSpec(SpecModel):
    """``reduce_last``: per key, aggregates over the key's last ``n`` rows."""

    n: int = Field(ge=1, le=100_000)  # rows kept per key: state grows with it
    agg: dict[str, AggSpec]
    order_by: list[str] = Field(default_factory=list)


class DedupSpec(SpecModel):
    horizon: SizeField
    lateness: DelayField = 0


class TopNSpec(SpecModel):
    """The top ``n`` rows per key (after ``key_by``) by ``by``, as an upsert stream; ``n``
    over 1 needs ``rank_column`` (the upsert key with the keys). ``ttl`` forgets a key
    idle that long in event time (bounded state, exact while keys are not revived)."""

    by: str | list[str]
    n: int = Field(1, ge=1, le=100_000)  # rows kept per key: state and output grow with it
    descending: bool | list[bool] = True
    rank_column: str | None = None
    ttl: SizeField | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TopNSpec:
        if isinstance(self.descending, list):
            by = [self.by] if isinstance(self.by, str) else self.by
            if len(self.descending) != len(by):
                raise ValueError("give one descending flag per 'by' column")
        if self.n > 1 and self.rank_column is None:
            raise ValueError("n > 1 needs a rank_column (the upsert key with the keys)")
        return self


class EnrichSpec(SpecModel):
    """``path``: the side table, a Parquet file (or CSV with ``refresh``). ``refresh``:
    re-read it whenever the file changes (checked with one stat per batch), so rows
    after a change use the new values; otherwise it is read once when the pipeline is
    built."""

    path: Path
    left_on: str | list[str]
    right_on: str | list[str] | None = None
    how: Literal["left", "inner"] = "left"
    refresh: bool = False


MAX_PARAMS_DEPTH = 16
MAX_PARAMS_VALUES = 10_000


class PluginSpec(SpecModel):
    """A plugin step: ``{name, params, columns, id}``. Plugins are not loaded here: the
    plugins layer (``dataflare_platform.plugins.specs``) loads one per step from its
    registry and hands them to the build, keyed by ``key`` (``id``, else ``name``)."""

    # A plain identifier: it names a file of the plugin folder (``fields.PLUGIN_NAME``).
    name: str = Field(pattern=PLUGIN_NAME)
    params: dict[str, Any] = Field(default_factory=dict)
    columns: dict[str, str] = Field(default_factory=dict)  # manifest column -> table column
    id: str | None = Field(None, min_length=1)  # tells apart two steps of one plugin

    @field_validator("params")
    @classmethod
    def _params_bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Parameters are small settings, checked against the manifest when the plugin
        loads: nesting past ``MAX_PARAMS_DEPTH`` or more than ``MAX_PARAMS_VALUES``
        values is refused here (a deep value overflowed the encoders' recursion)."""
        stack: list[tuple[Any, int]] = [(value, 0)]
        seen = 0
        while stack:
            item, depth = stack.pop()
            seen += 1
            if seen > MAX_PARAMS_VALUES:
                raise ValueError(f"more than {MAX_PARAMS_VALUES} values")
            children = (
                [*item.keys(), *item.values()]
                if isinstance(item, dict)
                else item
                if isinstance(item, list | tuple)
                else ()
            )
            if children and depth >= MAX_PARAMS_DEPTH:
                raise ValueError(f"nested more than {MAX_PARAMS_DEPTH} levels deep")
            stack.extend((child, depth + 1) for child in children)
        return value

    @property
    def key(self) -> str:
        return self.id or self.name


def _aggs(spec: dict[str, AggSpec]) -> list[Agg]:
    return [Agg(a.kind, a.column, alias) for alias, a in spec.items()]


# -- stateless steps -----------------------------------------------------------------------
@step("filter", Expr)
def filter_(stream: Stream, predicate: str, context: StepContext) -> Stream:
    return stream.filter(pl.sql_expr(predicate))


@step("with_columns", dict[str, Expr])
def with_columns(stream: Stream, exprs: dict[str, str], context: StepContext) -> Stream:
    return stream.with_columns(*(pl.sql_expr(e).alias(n) for n, e in exprs.items()))


@step("select", list[str])
def select(stream: Stream, columns: list[str], context: StepContext) -> Stream:
    return stream.select(*columns)


@step("flat_map", str)
def flat_map(stream: Stream, column: str, context: StepContext) -> Stream:
    return stream.flat_map(column)


@step("unique", list[str] | None)
def unique(stream: Stream, subset: list[str] | None, context: StepContext) -> Stream:
    return stream.unique(subset)


@step("enrich", EnrichSpec)
def enrich(stream: Stream, spec: EnrichSpec, context: StepContext) -> Stream:
    table = FileSideTable(spec.path) if spec.refresh else pl.read_parquet(spec.path)
    return stream.enrich(table, spec.left_on, spec.right_on, spec.how)


# -- keyed steps ---------------------------------------------------------------------------
@step("key_by", list[str])
def key_by(stream: Stream, keys: list[str], context: StepContext) -> Stream:
    return stream.key_by(*keys)


@step("dedup", DedupSpec)
def dedup(stream: Stream, spec: DedupSpec, context: StepContext) -> Stream:
    return stream.dedup(spec.horizon, spec.lateness)


@step("reduce", dict[str, AggSpec])
def reduce(stream: Stream, aggs: dict[str, AggSpec], context: StepContext) -> Stream:
    return stream.reduce(*_aggs(aggs))


@step("reduce_last", ReduceLastSpec)
def reduce_last(stream: Stream, spec: ReduceLastSpec, context: StepContext) -> Stream:
    return stream.reduce_last(spec.n, *_aggs(spec.agg), order_by=spec.order_by)


@step("top_n", TopNSpec)
def top_n(stream: Stream, spec: TopNSpec, context: StepContext) -> Stream:
    return stream.top_n(spec.by, spec.n, spec.descending, spec.rank_column, spec.ttl)


# -- windows -------------------------------------------------------------------------------
@step("window", WindowSpec)
def window(stream: Stream, spec: WindowSpec, context: StepContext) -> Stream:
    if spec.processing_tumbling is not None:  # always the wall clock (no fake one from YAML)
        kind: Tumbling | Sliding | Session | ProcessingTumbling = ProcessingTumbling(
            to_ms(spec.processing_tumbling)
        )
    elif spec.tumbling is not None:
        kind = Tumbling(to_ms(spec.tumbling))
    elif spec.sliding is not None:
        kind = Sliding(to_ms(spec.sliding.size), to_ms(spec.sliding.slide))
    else:
        assert spec.session is not None
        kind = Session(to_ms(spec.session))
    windowed = stream.window(kind, spec.lateness)
    if spec.plugin is not None:
        plugin = _loaded(spec.plugin, context, "window.plugin")
        return windowed.plugin_agg(plugin)  # type: ignore[arg-type]  # checked at load
    if spec.top_rows is not None:
        return windowed.top_rows(spec.top_rows.by, spec.top_rows.n, spec.top_rows.descending)
    top = None if spec.top is None else TopN(spec.top.by, spec.top.n, spec.top.descending)
    return windowed.agg(*_aggs(spec.agg or {}), top=top)


# -- joins (``with`` names a source or an earlier stream) ---------------------------------
@step("join", JoinSpec)
def join(stream: Stream, spec: JoinSpec, context: StepContext) -> Stream:
    other = context.streams[spec.with_]
    right_filter = None if spec.right_filter is None else pl.sql_expr(spec.right_filter)
    return stream.join(
        other, spec.left_on, spec.right_on, spec.right_unique, right_filter=right_filter
    )


@step("window_join", WindowJoinSpec)
def window_join(stream: Stream, spec: WindowJoinSpec, context: StepContext) -> Stream:
    return stream.window_join(
        context.streams[spec.with_],
        Tumbling(to_ms(spec.tumbling)),
        spec.left_on,
        spec.right_on,
        spec.lateness,
    )


@step("interval_join_agg", IntervalJoinSpec)
def interval_join_agg(stream: Stream, spec: IntervalJoinSpec, context: StepContext) -> Stream:
    return stream.interval_join_agg(
        context.streams[spec.with_],
        spec.left_key,
        spec.right_key,
        spec.end_column,
        spec.left_columns,
        *_aggs(spec.agg),
        lateness=spec.lateness,
    )


@step("interval_join_winner", IntervalWinnerSpec)
def interval_join_winner(stream: Stream, spec: IntervalWinnerSpec, context: StepContext) -> Stream:
    return stream.interval_join_winner(
        context.streams[spec.with_],
        spec.left_key,
        spec.right_key,
        spec.end_column,
        spec.left_columns,
        [(o.column, o.descending) for o in spec.order_by],
        spec.columns,
        *_aggs(spec.agg),
        lateness=spec.lateness,
    )


# -- plugins -------------------------------------------------------------------------------
@step("plugin", PluginSpec)
def plugin(stream: Stream, spec: PluginSpec, context: StepContext) -> Stream:
    return stream.plugin(_loaded(spec, context, "plugin"))


def _loaded(spec: PluginSpec, context: StepContext, field: str) -> BatchPlugin:
    """The plugin the plugins layer loaded for ``spec``, or a refusal naming ``field``."""
    loaded = context.plugins.get(spec.key)
    if loaded is None:
        where = f"{field}.id" if spec.id else f"{field}.name"
        raise ConfigError("pipeline spec", [(where, f"no plugin named {spec.key!r} is loaded")])
    return loaded
