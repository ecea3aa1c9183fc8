"""Split a pipeline's single-run checkpoint into per-partition unit checkpoints, once,
when it switches from one run to partition-parallel workers (``streams.workers``).

A pipeline that ran as one run keeps one checkpoint under its own name: the next offset
of every ``source/partition``, the watermark tracker, and each stateful step's state
over all keys. Partition-parallel units keep one checkpoint each, under
``<pipeline>#p<N>``, with the offsets, watermark and state of partition N alone. The
split hands each unit what belongs to its partition:

- **offsets**: ``bids/3`` goes to unit 3, for every source (co-partitioned sources share
  partition numbers, ``streams.parallel``);
- **watermark**: each unit keeps its own partitions' highest event times and the
  watermark the single run had emitted (a watermark never moves back);
- **keyed state**: each row of a step's state tables goes to the partition its key lands
  in, computed with the source's own partitioner (``key_partitions``: the embedded log's
  and partitioned NATS/Redis sources' hash, Kafka's murmur2 of the key as our producers
  send it). This is right only because ``streams.parallel.refusals`` already requires
  every stateful step's key to contain the column its sources are partitioned by, so all
  rows of one key were read from one partition. A table without that column is copied
  to every unit only when it is known to be per-step bookkeeping that is true for every
  key (a window step's ``fired_until``: windows before it fired for all keys); any other
  is refused, naming the step and table, and the pipeline keeps running as one run;
- **counters** (events in and out, checkpoints) and the batch count go to the lowest
  partition's unit, so sums over units stay the pipeline's totals.

**Atomic.** The unit checkpoints are written and the single checkpoint retired (replaced
by a marker saying how many units carried it on, ``engine.checkpoint.split_into``) in one
transaction of the sink (``split_checkpoint`` of the PostgreSQL and DuckDB sinks): a
crash midway leaves the old layout whole, and the next worker start splits again. A sink
without that method is refused rather than split in several steps.

**Once, with concurrent workers.** The split runs with the sink opened under the
pipeline's own checkpoint key, so it holds that key's writer lock (PostgreSQL's session
advisory lock; DuckDB's file lock): the same lock a single run of the pipeline takes, so
it never splits under a running single run, and two workers starting together take it in
turn. The one that comes second re-reads the checkpoint under the lock, finds the marker
and does nothing. Unit keys that already hold a checkpoint make the transaction refuse
(their progress would be overwritten) instead of guessing which layout is right. Units
start only after this step, so none writes while the split runs; and the marker makes a
later single run refuse to resume from the retired offsets (``engine.runner``), since
the units have moved past them. Merging units back into one checkpoint is not supported:
each unit's windows have fired up to a different point, which one checkpoint's state
cannot say.

No Dagster here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from dataflare_platform.engine import arrays
from dataflare_platform.engine.checkpoint import SPLIT_COUNTER, Checkpoint, split_into
from dataflare_platform.engine.io import Sink
from dataflare_platform.engine.operators.windows import WindowAggregate
from dataflare_platform.engine.pipeline import Node, Pipeline
from dataflare_platform.engine.watermarks import MIN_WATERMARK
from dataflare_platform.streams.parallel import ParallelismError, upstream_sources

__all__ = ["SplitReport", "split_checkpoint", "split_single_run"]

# State tables without the key column that hold for every key alike: copied to each unit.
_SHARED_TABLES: dict[type, frozenset[str]] = {WindowAggregate: frozenset({"meta"})}
# Two-input steps: the state table of each input (the rest go by the columns they hold).
_PORT_TABLES = {"side0": 0, "side1": 1, "left": 0, "right": 1}


@dataclass(frozen=True)
class SplitReport:
    """A single-run checkpoint split into unit checkpoints (what the worker logs)."""

    pipeline: str
    offsets: dict[str, int]  # the single run's, where the units carry on
    units: dict[str, dict[str, int]]  # unit key -> its offsets
    state_rows: dict[str, int]  # unit key -> rows of keyed state it took over


def _partition_of_key(key: str) -> str:
    return key.rsplit("/", 1)[1]


def _table_sources(pipeline: Pipeline, node: Node, table: str) -> list[Node]:
    """The sources whose rows a state table of ``node`` holds."""
    port = _PORT_TABLES.get(table) if len(node.parents) == 2 else None
    if port is not None:
        return upstream_sources(pipeline, node.parents[port])
    return upstream_sources(pipeline, node.id)


def _split_table(
    pipeline: Pipeline, node: Node, name: str, table: pa.Table, partitions: Sequence[int]
) -> dict[int, pa.Table]:
    step = node.id.split(":", 1)[-1]
    if table.num_rows == 0:
        return dict.fromkeys(partitions, table)
    if name in _SHARED_TABLES.get(type(node.operator), frozenset()):
        return dict.fromkeys(partitions, table)
    sources = _table_sources(pipeline, node, name)
    columns = {getattr(s.source, "partition_key", None) for s in sources} - {None}
    present = sorted(c for c in columns if c in table.column_names)
    if len(present) != 1:
        raise ParallelismError(
            f"step {step!r} keeps state {name!r} with columns {table.column_names}, not by"
            f" exactly one of the partition columns {sorted(columns)}: its rows cannot be"
            " attributed to partitions"
        )
    column = present[0]
    source = next(s for s in sources if getattr(s.source, "partition_key", None) == column)
    place = getattr(source.source, "key_partitions", None)
    if place is None:
        raise ParallelismError(
            f"source {source.source.name!r} cannot say which partition a value of"  # type: ignore[union-attr]
            f" {column!r} lands in, so step {step!r}'s state cannot be split by partition"
        )
    values = pl.Series(table.column(column))
    wanted = source.source.schema.field(column).type  # type: ignore[union-attr]
    # The partitioner hashes the source's column type; the state may hold another.
    values = values.cast(pl.from_arrow(pa.nulls(0, wanted)).dtype)  # type: ignore[union-attr]
    ids = np.asarray(place(values))
    return {p: table.filter(arrays.booleans(ids == p)) for p in partitions}


def split_checkpoint(
    checkpoint: Checkpoint, pipeline: Pipeline, partitions: Sequence[int]
) -> dict[int, Checkpoint]:
    """Each partition's share of ``checkpoint`` (see the module), by partition number;
    ``pipeline`` is the whole pipeline, built over every partition. Raises
    ``ParallelismError`` for state that cannot be attributed to partitions."""
    numbers = sorted(partitions)
    strs = {str(p) for p in numbers}
    strays = sorted(k for k in checkpoint.offsets if _partition_of_key(k) not in strs)
    if strays:
        raise ParallelismError(
            f"its checkpoint has offsets of partitions {strays} the sources no longer have"
        )
    states: dict[int, dict[str, dict[str, pa.Table]]] = {p: {} for p in numbers}
    for node_id, tables in checkpoint.states.items():
        node = pipeline.nodes.get(node_id)
        if node is None or node.operator is None:
            if any(t.num_rows for t in tables.values()):
                raise ParallelismError(f"its checkpoint holds state of an unknown step {node_id!r}")
            continue
        for name, table in tables.items():
            for p, share in _split_table(pipeline, node, name, table, numbers).items():
                states[p].setdefault(node_id, {})[name] = share
    marks = checkpoint.watermark or {}
    first = numbers[0]
    units: dict[int, Checkpoint] = {}
    for p in numbers:

        def mine(key: str, p: int = p) -> bool:
            return _partition_of_key(key) == str(p)

        watermark = (
            {
                "max_seen": {k: v for k, v in marks.get("max_seen", {}).items() if mine(k)},
                "finished": [k for k in marks.get("finished", []) if mine(k)],
                "emitted": marks.get("emitted"),
            }
            if marks
            else {}
        )
        units[p] = Checkpoint(
            offsets={k: v for k, v in checkpoint.offsets.items() if mine(k)},
            watermark=watermark,
            counters=dict(checkpoint.counters) if p == first else {},
            states=states[p],
            batches=checkpoint.batches if p == first else 0,
        )
    return units


def split_single_run(
    pipeline: Pipeline,
    sink: Sink,
    partitions: Sequence[int],
    unit_key: Callable[[str, int], str],
) -> SplitReport | None:
    """Split ``pipeline``'s single-run checkpoint in ``sink`` into one checkpoint per
    partition (``unit_key(name, p)``), atomically and once (see the module); returns
    what was split, ``None`` when there was no progress to split. A pipeline without
    progress as one run gets the marker alone (when the sink can write it): from then
    on it is carried on by workers, and a single run refuses rather than start over.
    Closes ``sink``."""
    name = pipeline.name
    try:
        single = sink.open(name)
        if split_into(single):
            return None  # split before (by this worker's predecessor or a concurrent one)
        write = getattr(sink, "split_checkpoint", None)
        progress = single is not None and any(single.offsets.values())
        if not progress:
            if write is not None:
                write(_marker(single or Checkpoint(), len(partitions)), {})
            return None
        assert single is not None
        if write is None:
            raise ParallelismError(
                f"it has progress as one run (checkpoint {name!r} at {single.offsets}) and its"
                f" sink ({type(sink).__name__}) cannot split a checkpoint into per-partition"
                " checkpoints in one transaction (PostgreSQL and DuckDB sinks can)"
            )
        units = split_checkpoint(single, pipeline, partitions)
        keyed = {unit_key(name, p): c for p, c in units.items()}
        write(_marker(single, len(units)), keyed)
    finally:
        sink.close()
    return SplitReport(
        pipeline=name,
        offsets=dict(single.offsets),
        units={k: dict(c.offsets) for k, c in keyed.items()},
        state_rows={
            k: sum(t.num_rows for tables in c.states.values() for t in tables.values())
            for k, c in keyed.items()
        },
    )


def _marker(single: Checkpoint, units: int) -> Checkpoint:
    """The retired single-run checkpoint: its offsets and watermark as they were when
    the units took over (what readers of the old key, replay among them, still find),
    no state, and the number of units."""
    return Checkpoint(
        offsets=dict(single.offsets),
        watermark=dict(single.watermark)
        or {"max_seen": {}, "finished": [], "emitted": MIN_WATERMARK},
        counters={**single.counters, SPLIT_COUNTER: units},
        states={},
        batches=single.batches,
    )
