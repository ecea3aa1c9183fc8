"""Consumer lag of a pipeline: how far its committed checkpoint is behind its sources.

Per ``source/partition``:

- **events behind** = the source's committed end offset now minus the checkpoint's next
  offset. Against the source's end, never against the range a run was given: a run
  handed ``until`` stops there, so ``until - checkpoint`` is 0 after every run however
  far the topic has moved on (the bug behind ``lag_events`` staying 0 while
  ``hot_items`` was 158 k events behind);
- **seconds behind** (topic sources: the segment names carry event-time ranges) = the
  newest event time in the partition minus the newest event time the pipeline processed
  from it (the checkpoint's watermark state). When it processed nothing of that
  partition yet, the oldest unprocessed segment's earliest event time stands in for it,
  so a pipeline that never ran shows the whole backlog's event-time span. 0 when no
  event is behind.

The pipeline's figures are the sum of events and the largest seconds over partitions.
Reading costs segment names and one read-only look at the sink's checkpoint; no event
is read. No Dagster here: the asset's metadata, its lag check and the lag sensor all
call :func:`pipeline_lag`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from dataflare_platform.connectors import duckdb as duckdb_connector
from dataflare_platform.connectors.registry import supports_ranges
from dataflare_platform.engine.checkpoint import Checkpoint
from dataflare_platform.engine.watermarks import MAX_WATERMARK, MIN_WATERMARK
from dataflare_platform.errors import DataflareError
from dataflare_platform.events.log import EventLog
from dataflare_platform.events.log.segments import NO_TIME
from dataflare_platform.events.topic_state import topic_state
from dataflare_platform.streams.ranges import source_ends, topics_of
from dataflare_platform.streams.spec import PipelineSpec


class CheckpointUnavailableError(DataflareError):
    """The sink's checkpoint cannot be read now (a run holds its file for writing)."""


@dataclass(frozen=True)
class PartitionLag:
    key: str  # "source/partition", as in checkpoints
    end_offset: int  # committed end of the source partition now
    checkpoint_offset: int  # next offset the pipeline reads there
    events_behind: int
    newest_event_ms: int | None  # newest event time in the partition (topic sources)
    processed_event_ms: int | None  # newest event time the pipeline processed from it
    seconds_behind: float | None  # None: the source kind carries no event times


@dataclass(frozen=True)
class PipelineLag:
    pipeline: str
    partitions: tuple[PartitionLag, ...]
    watermark_ms: int | None  # the pipeline's checkpointed watermark

    @property
    def events_behind(self) -> int:
        return sum(p.events_behind for p in self.partitions)

    @property
    def seconds_behind(self) -> float | None:
        known = [p.seconds_behind for p in self.partitions if p.seconds_behind is not None]
        return max(known) if known else None

    def per_partition(self) -> dict[str, dict[str, object]]:
        """``source/partition`` → its figures (JSON-ready)."""
        return {p.key: {k: v for k, v in asdict(p).items() if k != "key"} for p in self.partitions}


def has_lag(spec: PipelineSpec) -> bool:
    """Whether any source has end offsets to be behind of (topic, nats, redis, file);
    a landing directory or a plain subscription has none."""
    return any(supports_ranges(source) for source in spec.sources.values())


def _processed_ms(checkpoint: Checkpoint | None) -> dict[str, int]:
    seen = (checkpoint.watermark if checkpoint else {}).get("max_seen", {})
    return {k: int(v) for k, v in seen.items() if int(v) > MIN_WATERMARK}


def _watermark_ms(checkpoint: Checkpoint | None) -> int | None:
    emitted = (checkpoint.watermark if checkpoint else {}).get("emitted")
    if emitted is None or not MIN_WATERMARK < int(emitted) < MAX_WATERMARK:
        return None
    return int(emitted)


def pipeline_lag(spec: PipelineSpec, log: EventLog, checkpoint: Checkpoint | None) -> PipelineLag:
    """The lag of ``checkpoint`` (None: the pipeline never committed) against the
    pipeline's sources as they are now. Raises while a source does not exist yet."""
    ends = source_ends(spec, log)
    offsets = checkpoint.offsets if checkpoint else {}
    processed = _processed_ms(checkpoint)
    topics = topics_of(spec)
    states = {name: topic_state(log.topic(topic)) for name, topic in topics.items()}
    partitions = []
    for key, end in sorted(ends.items()):
        source, _, partition = key.rpartition("/")
        at = offsets.get(key, 0)
        behind = max(0, end - at)
        newest = seconds = None
        done = processed.get(key)
        if source in states:
            index = int(partition)
            newest = states[source].partition_newest_ms.get(index)
            seconds = 0.0
            if behind and newest is not None:
                since = (
                    done if done is not None else _oldest_unread_ms(log, topics[source], index, at)
                )
                seconds = max(0.0, (newest - since) / 1000) if since is not None else 0.0
        partitions.append(PartitionLag(key, end, at, behind, newest, done, seconds))
    return PipelineLag(spec.name, tuple(partitions), _watermark_ms(checkpoint))


def _oldest_unread_ms(log: EventLog, topic: str, partition: int, offset: int) -> int | None:
    """Earliest event time of the segments holding offsets at or after ``offset``."""
    segments = log.topic(topic).partition(partition).segments()
    times = [s.min_time for s in segments if s.end > offset and s.min_time != NO_TIME]
    return min(times) if times else None


def committed_checkpoint(spec: PipelineSpec, default_dir: Path) -> Checkpoint | None:
    """The checkpoint the pipeline's sink committed last, read without writing anything
    (None: it never committed). DuckDB sinks only for now; other sinks raise
    ``CheckpointUnavailableError`` (their checkpoint is reported by the runs themselves).

    DuckDB allows one writing process per file: while a run holds it, reading fails and
    ``CheckpointUnavailableError`` says so (the run reports its own lag when it commits)."""
    import duckdb

    sink = spec.sink
    if sink.kind != "duckdb":
        raise CheckpointUnavailableError(
            f"pipeline {spec.name!r}: the checkpoint of a {sink.kind} sink is not read here"
        )
    path = duckdb_connector.default_path(sink, spec.name, default_dir)
    if not path.exists():
        return None
    try:
        with duckdb.connect(str(path), read_only=True) as conn:
            tables = conn.sql("SELECT table_name FROM information_schema.tables").fetchall()
            if ("dataflare_checkpoints",) not in tables:
                return None
            rows = conn.execute(
                "SELECT pipeline, state FROM dataflare_checkpoints"
                " WHERE pipeline = $p OR starts_with(pipeline, $units)",
                {"p": spec.name, "units": unit_prefix(spec.name)},
            ).fetchall()
    except duckdb.OperationalError as err:  # IOException: another process writes it
        raise CheckpointUnavailableError(
            f"pipeline {spec.name!r}: {path} is in use ({err})"
        ) from None
    found = {str(name): Checkpoint.decode(bytes(state)) for name, state in rows}
    units = [c for name, c in sorted(found.items()) if name != spec.name]
    if units:  # run as partition workers: the units hold the progress (streams.split)
        return merge_units(units)
    return found.get(spec.name)


def unit_prefix(pipeline: str) -> str:
    """What every partition unit's checkpoint key of ``pipeline`` starts with
    (``streams.workers.unit_key``)."""
    return f"{pipeline}#p"


def merge_units(units: list[Checkpoint]) -> Checkpoint:
    """One pipeline-wide view of its partition units' checkpoints, for lag only: each
    unit's own offsets and newest event times, and the lowest unit watermark (what the
    pipeline as a whole has emitted up to). No state: units cannot be merged back into
    one run (``streams.split``)."""
    offsets: dict[str, int] = {}
    seen: dict[str, int] = {}
    emitted: list[int] = []
    counters: dict[str, int] = {}
    for unit in units:
        offsets.update(unit.offsets)
        seen.update(unit.watermark.get("max_seen", {}))
        emitted.append(int(unit.watermark.get("emitted", MIN_WATERMARK)))
        for name, value in unit.counters.items():
            counters[name] = counters.get(name, 0) + int(value)
    return Checkpoint(
        offsets=offsets,
        watermark={"max_seen": seen, "finished": [], "emitted": min(emitted)},
        counters=counters,
        batches=sum(u.batches for u in units),
    )
