"""The engine-facing parts of a replay: a source bounded to offset ranges, the event-time
filter put in front of the operators, and the sink that stages output for a target.

Why the time filter is an operator and not part of the source: the runner advances a
partition's offset by the number of rows ``read`` returns, so a source that dropped rows
would corrupt the offsets. It would also hide those rows from the watermark, which the
original run computed from every row; keeping them there keeps the replay's lateness
decisions close to the original's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

from dataflare_platform.engine.checkpoint import Checkpoint
from dataflare_platform.engine.operators.stateless import Filter
from dataflare_platform.engine.pipeline import Node, Pipeline
from dataflare_platform.engine.sinks import Sink
from dataflare_platform.engine.sources import Source
from dataflare_platform.engine.watermarks import MIN_WATERMARK
from dataflare_platform.errors import InvalidInputError
from dataflare_platform.replay.targets import ReplayTarget


class OffsetRangeSource:
    """``source`` limited to [start, end) per partition. Offsets stay the wrapped
    source's (a dead letter still names the topic offset); the end is reported as the
    end of the data, so a bounded run drains the range and then closes every window."""

    def __init__(self, source: Source, ranges: dict[str, tuple[int, int]], name: str) -> None:
        self.source = source
        self.name = name
        self.time_column = source.time_column
        self.ranges = dict(ranges)

    @property
    def schema(self) -> pa.Schema:
        return self.source.schema

    def partitions(self) -> list[str]:
        return list(self.ranges)

    def read(self, partition: str, offset: int, max_rows: int) -> pa.Table:
        rows = min(max_rows, self.ranges[partition][1] - offset)
        if rows <= 0:
            return self.schema.empty_table()
        return self.source.read(partition, offset, rows)

    def end_offset(self, partition: str) -> int | None:
        return self.ranges[partition][1]

    def start_offsets(self) -> dict[str, int]:
        """Where the runner starts, keyed like its checkpoints ("source/partition")."""
        return {f"{self.name}/{p}": start for p, (start, _) in self.ranges.items()}


def event_ms(column: str) -> pl.Expr:
    """Event time as epoch milliseconds, for a datetime or an integer (ms) column."""
    return pl.col(column).cast(pl.Datetime("ms")).cast(pl.Int64)


def insert_time_filters(pipeline: Pipeline, start_ms: int, end_ms: int) -> list[str]:
    """Put a filter keeping event time in [start_ms, end_ms) between every source and
    its consumers; returns the filter nodes' ids (their rows_out count the events
    replayed)."""
    nodes: dict[str, Node] = {}
    added = []
    for node_id, node in pipeline.nodes.items():
        nodes[node_id] = node
        if node.source is None:
            continue
        time_ms = event_ms(node.time_column)
        op = Filter((time_ms >= start_ms) & (time_ms < end_ms))
        op.bind(node.time_column)
        fid = f"replay-filter:{node.source.name}"
        nodes[fid] = Node(fid, op, [node_id], time_column=node.time_column)
        consumers = pipeline.children[node_id]
        for child, _ in consumers:
            parents = pipeline.nodes[child].parents
            pipeline.nodes[child].parents = [fid if p == node_id else p for p in parents]
        pipeline.children[fid] = consumers
        pipeline.children[node_id] = [(fid, 0)]
        if pipeline.sink_node == node_id:
            pipeline.sink_node = fid
        added.append(fid)
    pipeline.nodes = nodes  # sources, each followed by its filter: still topological
    return added


def start_checkpoint(starts: dict[str, int]) -> Checkpoint:
    """A checkpoint that only positions the runner: fresh operators, no watermark, and
    every partition registered so none is skipped by the watermark before its first
    batch."""
    return Checkpoint(
        offsets=dict(starts),
        watermark={
            "max_seen": dict.fromkeys(starts, MIN_WATERMARK),
            "finished": [],
            "emitted": MIN_WATERMARK,
        },
    )


@dataclass
class ReplaySink(Sink):
    """Stages the owned part of each commit into a target; publishing is the caller's
    step after a successful run, so a failed replay changes nothing visible.

    ``owned``: keep only output rows with ``column`` in [start, end) (windows at the
    edges of the read interval are incomplete); None keeps every row.
    """

    target: ReplayTarget
    starts: dict[str, int] = field(default_factory=dict)
    owned: tuple[str, int, int] | None = None
    transactional: bool = True
    columns: list[str] | None = None  # the output's, once a row has been seen
    rows_out: int = 0
    rows_discarded: int = 0
    sides: list[pl.DataFrame] = field(default_factory=list)
    _pending: list[pl.DataFrame] = field(default_factory=list)
    _pending_sides: list[pl.DataFrame] = field(default_factory=list)

    def open(self, pipeline: str) -> Checkpoint | None:
        return start_checkpoint(self.starts)

    def write(self, output: pl.DataFrame | None, side: pl.DataFrame | None) -> None:
        if output is not None and output.height:
            self.columns = self.columns or output.columns
            if self.owned is not None:
                column, start, end = self.owned
                if column not in output.columns:
                    raise InvalidInputError(
                        f"the output has no column {column!r} to tell the replayed"
                        f" interval's rows by (columns: {output.columns})"
                    )
                kept = output.filter(event_ms(column).is_between(start, end, closed="left"))
                self.rows_discarded += output.height - kept.height
                output = kept
            if output.height:
                self._pending.append(output)
        if side is not None and side.height:
            self._pending_sides.append(side)

    def commit(self, checkpoint: Checkpoint) -> None:
        if self._pending:
            rows = pl.concat(self._pending, how="vertical_relaxed")
            self.target.stage(rows)
            self.rows_out += rows.height
        self.sides.extend(self._pending_sides)
        self._pending.clear()
        self._pending_sides.clear()
