"""What an event-time replay owns, and what it must read to rebuild that exactly.

A replay of the interval [t0, t1) *owns* a set of output rows: it deletes them from its
target and writes its own in their place. Ownership is judged on one output column:

- a windowed pipeline (tumbling or sliding windows of size S sliding by D) owns every
  window that overlaps [t0, t1), i.e. the windows whose ``window_start`` s (a multiple
  of D) has s + S > t0 and s < t1. The interval is thus widened to whole windows: every
  output row an event of [t0, t1) contributed to is rebuilt, and replays of adjacent
  intervals cover every window (windows that straddle the seam are rebuilt by both,
  with identical rows). To rebuild the owned windows the replay reads every event from
  the first owned window's start to the last one's end;
- a stateless pipeline (filters, projections, enrichments) owns the rows made from
  events with event time in [t0, t1), judged on the output's event-time column; it reads
  exactly the events of [t0, t1). This is the windowed rule with 1 ms windows.

Pipelines with state that outlives a window (running aggregates, sessions, dedup,
incremental and interval joins, plugins) cannot be rebuilt from an interval: their
output depends on events before it. They are refused here; an offset-range replay from
the topic's start is their replay.

Which is which is what each operator declares (``Operator.windowed`` and
``Operator.stateful``, ``engine.operators.base``), so a new operator is judged right
without this module knowing it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, model_validator

from dataflare_platform.engine.operators.windows import WINDOW_START
from dataflare_platform.engine.pipeline import Node, Pipeline
from dataflare_platform.errors import DataflareError
from dataflare_platform.models import StrictModel

DAY_MS = 86_400_000


class ReplayError(DataflareError):
    """A replay was refused: the message says why and what to do instead."""


class Ownership(StrictModel):
    """How output rows map to event time: rows are owned by aligned windows of
    ``size_ms`` sliding by ``slide_ms`` (1 ms / 1 ms: by the row's own event time), judged
    on the output column ``column`` (a window start, or the event time itself). Detected
    from the pipeline; give it explicitly only for pipelines the detection refuses but
    you know to be window-local."""

    size_ms: int = Field(ge=1)
    slide_ms: int = Field(ge=1)
    column: str
    lateness_ms: int = Field(default=0, ge=0)  # largest allowed lateness of its windows

    @model_validator(mode="after")
    def _slide_divides(self) -> Ownership:
        if self.size_ms % self.slide_ms:
            raise ValueError("slide_ms must divide size_ms")
        return self

    @property
    def stateless(self) -> bool:
        return self.size_ms == 1


@dataclass(frozen=True)
class IntervalPlan:
    """Owned rows: ``column`` in [owned_start_ms, owned_end_ms). Events fed to the
    pipeline: event time in [read_start_ms, read_end_ms)."""

    column: str
    owned_start_ms: int
    owned_end_ms: int
    read_start_ms: int
    read_end_ms: int

    def as_dict(self) -> dict[str, object]:
        return {
            "column": self.column,
            "owned_start_ms": self.owned_start_ms,
            "owned_end_ms": self.owned_end_ms,
            "read_start_ms": self.read_start_ms,
            "read_end_ms": self.read_end_ms,
        }


def plan_interval(ownership: Ownership, start_ms: int, end_ms: int) -> IntervalPlan:
    """The owned windows of [start_ms, end_ms) and the events that rebuild them."""
    if end_ms <= start_ms:
        raise ReplayError(f"empty interval: end ({end_ms}) must be after start ({start_ms})")
    size, slide = ownership.size_ms, ownership.slide_ms
    first = (start_ms - size) // slide * slide + slide  # first aligned s with s + size > t0
    stop = -(-end_ms // slide) * slide  # owned window starts are below this
    return IntervalPlan(
        column=ownership.column,
        owned_start_ms=first,
        owned_end_ms=stop,
        read_start_ms=first,
        read_end_ms=stop - slide + size,
    )


def plan_owned(ownership: Ownership, owned_start_ms: int, owned_end_ms: int) -> IntervalPlan:
    """Exactly the windows starting in [owned_start_ms, owned_end_ms) (both multiples of
    the slide): for targets replaced in fixed units, such as a dataset's date partitions,
    where the windows owned must be those of whole units, not those overlapping."""
    slide = ownership.slide_ms
    if owned_start_ms % slide or owned_end_ms % slide or owned_end_ms <= owned_start_ms:
        raise ReplayError(
            f"[{owned_start_ms}, {owned_end_ms}) is not a non-empty range of window starts"
            f" aligned to the {slide} ms slide"
        )
    return IntervalPlan(
        column=ownership.column,
        owned_start_ms=owned_start_ms,
        owned_end_ms=owned_end_ms,
        read_start_ms=owned_start_ms,
        read_end_ms=owned_end_ms - slide + ownership.size_ms,
    )


def plan_days(ownership: Ownership, start_ms: int, end_ms: int) -> IntervalPlan:
    """[start_ms, end_ms) widened to whole UTC days, owning the windows that start in
    them (a date partition holds the rows whose ownership column falls on its date)."""
    if end_ms <= start_ms:
        raise ReplayError(f"empty interval: end ({end_ms}) must be after start ({start_ms})")
    first = start_ms // DAY_MS * DAY_MS
    return plan_owned(ownership, first, -(-end_ms // DAY_MS) * DAY_MS)


def detect_ownership(pipeline: Pipeline) -> Ownership:
    """The ownership rule of ``pipeline``, or a ReplayError naming the operator that
    makes an interval replay impossible."""
    shapes: set[tuple[int, int]] = set()
    lateness = 0
    for node in pipeline.operators():
        op = node.operator
        assert op is not None
        if op.windowed:
            if _has_window_ancestor(pipeline, node):
                raise ReplayError(
                    f"pipeline {pipeline.name!r}: {node.id} windows the output of another"
                    " window; an interval replay cannot tell which events it needs"
                )
            window = op.window  # type: ignore[attr-defined]  # windowed: has one
            shapes.add((window.size_ms, window.slide_ms))
            lateness = max(lateness, op.lateness_ms)  # type: ignore[attr-defined]
        elif op.stateful:
            raise ReplayError(
                f"pipeline {pipeline.name!r}: {node.id} keeps state across windows, so its"
                " output for an interval depends on earlier events; replay an offset range"
                " from the start of the topic instead"
            )
    if len(shapes) > 1:
        raise ReplayError(
            f"pipeline {pipeline.name!r} has windows of different shapes {sorted(shapes)};"
            " give the ownership explicitly"
        )
    if shapes:
        ((size, slide),) = shapes
        return Ownership(size_ms=size, slide_ms=slide, column=WINDOW_START, lateness_ms=lateness)
    assert pipeline.sink_node is not None
    return Ownership(size_ms=1, slide_ms=1, column=pipeline.nodes[pipeline.sink_node].time_column)


def _has_window_ancestor(pipeline: Pipeline, node: Node) -> bool:
    todo = list(node.parents)
    while todo:
        parent = pipeline.nodes[todo.pop()]
        if parent.operator is not None and parent.operator.windowed:
            return True
        todo.extend(parent.parents)
    return False
