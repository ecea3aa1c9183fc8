"""Replay: re-process part of a topic through a pipeline, into a separate output or over
the pipeline's own output.

Two kinds of range:

- an event-time interval [start, end): the replay owns the output rows of that interval
  (see ``plan``: windows overlapping it, or rows of events inside it), reads the
  offsets of every segment whose events overlap the widened interval (a segment's time
  bounds hold all of its events, however out of order, so nothing is missed), feeds the
  pipeline only the events it needs and keeps only the rows it owns. Those rows equal
  the original run's rows for the same windows, provided that run dropped none of their
  events as late (a late event's fate depends on the whole stream before it, which a
  replay does not see; check the original side output);
- an offset range per partition: exactly those rows, processed as a fresh bounded run
  whose output is everything the pipeline emits (its rows cannot be told from others,
  so it can only go to a target it replaces wholesale).

Targets: memory (the Python API's default), a DuckDB table, or a date-partitioned
Parquet dataset. Publishing deletes the owned rows and inserts the replayed ones in one
transaction (a dataset: swaps the interval's whole UTC days, the interval widened to
them, in one manifest commit), so replaying twice changes nothing. Overwriting the
pipeline's own output is refused while that pipeline's checkpoint there has not yet
passed the interval: it would write those windows again later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import Field, field_validator, model_validator

from dataflare_platform.engine.pipeline import Pipeline
from dataflare_platform.engine.runner import Runner, RunnerConfig
from dataflare_platform.engine.sinks import Sink
from dataflare_platform.engine.sources import Source
from dataflare_platform.errors import DataflareError
from dataflare_platform.events.engine_io import LogSource
from dataflare_platform.events.log import EventLog, Topic
from dataflare_platform.models import StrictModel
from dataflare_platform.replay.engine_io import OffsetRangeSource, ReplaySink, insert_time_filters
from dataflare_platform.replay.plan import (
    IntervalPlan,
    Ownership,
    ReplayError,
    detect_ownership,
    plan_days,
    plan_interval,
)
from dataflare_platform.replay.targets import (
    DuckDBTableTarget,
    MemoryTarget,
    Owned,
    ParquetDatasetTarget,
    ReplayTarget,
)
from dataflare_platform.sql_names import SQL_COLUMN, SQL_IDENTIFIER
from dataflare_platform.times import epoch_ms

logger = logging.getLogger(__name__)

__all__ = [
    "DuckDBTarget",
    "Ownership",
    "ParquetTarget",
    "PipelineFactory",
    "ReplayError",
    "ReplayRequest",
    "ReplayResult",
    "replay",
]


@dataclass(frozen=True)
class PipelineFactory:
    """Builds the pipeline to replay from the sources a replay gives it (bounded views of
    topics) and the replay's sink; ``sources`` names each source the pipeline reads and
    the columns to read (None: all)."""

    build: Callable[[dict[str, Source], Sink], Pipeline]
    sources: dict[str, list[str] | None]


class DuckDBTarget(StrictModel):
    """A DuckDB table to write; ``overwrite`` says it is the replayed pipeline's own
    output (guarded: the pipeline must already have written the interval)."""

    path: Path
    table: str = Field(pattern=SQL_IDENTIFIER, max_length=120)  # refused naming the field
    overwrite: bool = False


class ParquetTarget(StrictModel):
    """A date-partitioned Parquet dataset (``connectors.parquet_dataset``) partitioned by
    the UTC date of ``time_column``, which must be the column the replay owns rows by
    (``window_start`` for windowed pipelines). The interval is widened to whole days."""

    root: Path
    time_column: str = Field(pattern=SQL_COLUMN)
    partition_by: str = "date"
    overwrite: bool = False


class ReplayRequest(StrictModel):
    """What to replay: a topic (or source name → topic for several sources) and either an
    event-time interval or per-partition offset ranges ([start, end); end None: the
    committed end). ``target`` None keeps the output in memory (``ReplayResult.output``)."""

    topic: str | dict[str, str]
    start: int | None = None  # epoch ms
    end: int | None = None
    offsets: dict[int, tuple[int, int | None]] | None = None
    target: DuckDBTarget | ParquetTarget | None = None
    ownership: Ownership | None = None  # detected from the pipeline when None
    batch_rows: int = Field(default=10_000, ge=1)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time(cls, value: Any) -> Any:
        return None if value is None else epoch_ms(value)

    @model_validator(mode="after")
    def _one_range(self) -> ReplayRequest:
        interval = self.start is not None or self.end is not None
        if interval == (self.offsets is not None):
            raise ValueError("give either start and end (event time) or offsets")
        if interval and (self.start is None or self.end is None):
            raise ValueError("an interval needs both start and end")
        if interval and self.end <= self.start:  # type: ignore[operator]
            raise ValueError("end must be after start")
        for p, (lo, hi) in (self.offsets or {}).items():
            if lo < 0 or (hi is not None and hi < lo):
                raise ValueError(f"offsets[{p}]: need 0 <= start <= end")
        if self.offsets is not None and self.target is not None and self.target.overwrite:
            raise ValueError(
                "an offset-range replay cannot overwrite the pipeline's output: its rows"
                " cannot be told from the others; replay an event-time interval instead"
            )
        if self.offsets is not None and isinstance(self.target, ParquetTarget):
            raise ValueError("a dataset is replaced by whole days: give an event-time interval")
        return self


@dataclass
class ReplayResult:
    pipeline: str
    offsets: dict[str, dict[int, tuple[int, int]]]  # source → partition → [start, end)
    plan: IntervalPlan | None  # None for an offset-range replay
    events_read: int  # rows read from the topics
    events_replayed: int  # of those, the ones fed to the pipeline
    rows_out: int  # rows written to the target (the owned ones)
    rows_discarded: int  # output of windows the replay does not own (incomplete edges)
    late_events: int
    dead_letters: int
    replaced: str  # "range", "table" or "none" (in memory)
    seconds: float
    output: pl.DataFrame | None = None  # the rows, when the target is memory
    side: pl.DataFrame = field(default_factory=pl.DataFrame)  # late rows and dead letters

    def as_dict(self) -> dict[str, object]:
        return {
            "pipeline": self.pipeline,
            "offsets": {
                s: {str(p): list(r) for p, r in parts.items()} for s, parts in self.offsets.items()
            },
            "interval": None if self.plan is None else self.plan.as_dict(),
            "events_read": self.events_read,
            "events_replayed": self.events_replayed,
            "rows_out": self.rows_out,
            "rows_discarded": self.rows_discarded,
            "late_events": self.late_events,
            "dead_letters": self.dead_letters,
            "replaced": self.replaced,
            "seconds": round(self.seconds, 4),
        }


def replay(log: EventLog, request: ReplayRequest, factory: PipelineFactory) -> ReplayResult:
    """Run ``request`` through the pipeline ``factory`` builds; see the module docstring
    for what is read and which output rows are replaced."""
    started = time.perf_counter()
    topics = _topics(log, request, factory)
    sources = {
        name: OffsetRangeSource(LogSource(topic, factory.sources[name], bounded=True), {}, name)
        for name, topic in topics.items()
    }
    target = _target(request.target)
    sink = ReplaySink(target, {})
    pipeline = factory.build(dict(sources), sink)
    plan: IntervalPlan | None = None
    ownership: Ownership | None = None
    if request.offsets is not None:
        ranges = _offset_ranges(topics, request.offsets)
    else:
        assert request.start is not None and request.end is not None
        ownership = request.ownership or detect_ownership(pipeline)
        dataset = request.target if isinstance(request.target, ParquetTarget) else None
        plan = (plan_interval if dataset is None else plan_days)(
            ownership, request.start, request.end
        )
        if dataset is not None and plan.column != dataset.time_column:
            raise ReplayError(
                f"the dataset is partitioned by {dataset.time_column!r}, but the pipeline's"
                f" rows are owned by {plan.column!r}: partition it by that"
            )
        ranges = {name: _time_ranges(topic, plan) for name, topic in topics.items()}
    for name, source in sources.items():
        source.ranges = {str(p): r for p, r in ranges[name].items()}
        sink.starts.update(source.start_offsets())
    filters: list[str] = []
    if plan is not None and ownership is not None:
        filters = insert_time_filters(pipeline, plan.read_start_ms, plan.read_end_ms)
        if not ownership.stateless:  # edge windows saw only part of their events
            sink.owned = (plan.column, plan.owned_start_ms, plan.owned_end_ms)
    overwrite = request.target is not None and request.target.overwrite
    try:
        if overwrite:
            assert plan is not None and ownership is not None
            _check_original(target, pipeline.name, plan, ownership)
        target.open()
        run = Runner(pipeline, RunnerConfig(batch_rows=request.batch_rows)).run()
        whole = not overwrite and not isinstance(request.target, ParquetTarget)
        owned = _owned_rows(plan, ownership, sink.columns, whole)
        try:
            target.publish(owned)
        except ValueError as err:  # the target cannot take these rows: say so, plainly
            raise ReplayError(str(err)) from None
    finally:
        target.close()
    m = run.metrics
    if m.late_events:
        logger.warning(
            "replay of %s: %d events were late (see ReplayResult.side); rows they belong to"
            " may differ from the original run's",
            pipeline.name,
            m.late_events,
        )
    replaced = "none" if request.target is None else ("table" if owned is None else "range")
    return ReplayResult(
        pipeline=pipeline.name,
        offsets=ranges,
        plan=plan,
        events_read=m.events_in,
        events_replayed=sum(m.operators[f].rows_out for f in filters) if filters else m.events_in,
        rows_out=sink.rows_out,
        rows_discarded=sink.rows_discarded,
        late_events=m.late_events,
        dead_letters=m.dead_letters,
        replaced=replaced,
        seconds=time.perf_counter() - started,
        output=target.output if isinstance(target, MemoryTarget) else None,
        side=pl.concat(sink.sides) if sink.sides else pl.DataFrame(),
    )


def _topics(log: EventLog, request: ReplayRequest, factory: PipelineFactory) -> dict[str, Topic]:
    """Source name → topic."""
    names = list(factory.sources)
    if isinstance(request.topic, str):
        if len(names) != 1:
            raise ReplayError(
                f"the pipeline reads {len(names)} sources {names}: map each to a topic"
                " (source=topic)"
            )
        mapping = {names[0]: request.topic}
    else:
        mapping = dict(request.topic)
        if set(mapping) != set(names):
            raise ReplayError(f"map every source of the pipeline {names} to a topic, no more")
    if request.offsets is not None and len(mapping) != 1:
        raise ReplayError("an offset-range replay reads one topic; replay an interval instead")
    topics = {}
    for name, topic_name in mapping.items():
        try:
            topics[name] = log.topic(topic_name)
        except KeyError as err:
            raise ReplayError(f"{err} in {log.root}") from None
    return topics


def _offset_ranges(
    topics: dict[str, Topic], offsets: dict[int, tuple[int, int | None]]
) -> dict[str, dict[int, tuple[int, int]]]:
    ((name, topic),) = topics.items()
    ends = topic.committed_ends()
    ranges = {}
    for p, (start, end) in sorted(offsets.items()):
        part = topic.partition(p)
        stop = ends[p] if end is None else end
        if start < part.start_offset():
            raise ReplayError(
                f"topic {topic.name!r} partition {p}: offset {start} was removed by retention;"
                f" the log now starts at {part.start_offset()}"
            )
        if stop > ends[p]:
            raise ReplayError(
                f"topic {topic.name!r} partition {p}: offset {stop} is past the end ({ends[p]})"
            )
        ranges[p] = (start, stop)
    return {name: ranges}


def _time_ranges(topic: Topic, plan: IntervalPlan) -> dict[int, tuple[int, int]]:
    """Offsets of the segments whose events overlap the read interval, up to what readers
    may see (a transactional topic's uncommitted tail is not replayed)."""
    ends = topic.committed_ends()
    ranges = {}
    for p, (start, end) in topic.offsets_for_time(plan.read_start_ms, plan.read_end_ms).items():
        end = min(end, ends[p])
        if end > start:
            ranges[p] = (start, end)
    return ranges


def _target(spec: DuckDBTarget | ParquetTarget | None) -> ReplayTarget:
    try:
        if spec is None:
            return MemoryTarget()
        if isinstance(spec, DuckDBTarget):
            return DuckDBTableTarget(spec.path, spec.table)
        return ParquetDatasetTarget(spec.root, spec.time_column, spec.partition_by)
    except (ValueError, DataflareError) as err:
        raise ReplayError(str(err)) from None


def _check_original(
    target: ReplayTarget, pipeline: str, plan: IntervalPlan, ownership: Ownership
) -> None:
    """Refuse to overwrite windows the original pipeline has not emitted yet: it would
    emit them again when it gets there, next to the replayed rows."""
    try:
        watermark = target.original_watermark(pipeline)
    except ValueError as err:  # e.g. a dataset written by another pipeline
        raise ReplayError(str(err)) from None
    needed = plan.read_end_ms + ownership.lateness_ms
    if watermark is not None and watermark < needed:
        raise ReplayError(
            f"pipeline {pipeline!r} has not yet written the interval to its output"
            f" (its watermark {watermark} < {needed}); replay into another table, or wait"
        )


def _owned_rows(
    plan: IntervalPlan | None,
    ownership: Ownership | None,
    columns: list[str] | None,
    may_replace_all: bool,
) -> Owned | None:
    """The rows publishing replaces: the owned range, or None for the whole target (an
    offset range, or a stateless output without its event-time column, which only a
    table of the replay's own may take)."""
    if plan is None or ownership is None:
        return None
    if ownership.stateless and columns is not None and plan.column not in columns:
        if not may_replace_all:
            raise ReplayError(
                f"the output has no event-time column {plan.column!r}, so the rows of the"
                " interval cannot be found to overwrite; replay into a table of its own"
            )
        return None
    return (plan.column, plan.owned_start_ms, plan.owned_end_ms)
