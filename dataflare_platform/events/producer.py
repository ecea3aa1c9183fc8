"""Producing into a topic from tables or files, with a rate limit and dead letters."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataflare_platform.errors import (
    CorruptInputError,
    DataflareError,
    InvalidInputError,
    user_file,
)
from dataflare_platform.events.codec import DEAD_LETTER_SCHEMA, JsonDecoder, dead_letters
from dataflare_platform.events.deadletter import decode_for_topic
from dataflare_platform.events.log import EventLog, Topic
from dataflare_platform.events.schema_policy import DEFAULT_SCHEMA_POLICY, split_records

Batch = tuple[pa.Table, pa.Table | None]
"""Rows to append, and dead letters found while decoding them (or None)."""


def dead_letter_topic(log: EventLog, topic: str) -> Topic:
    """``<topic>.dlq``: where records of ``topic`` that could not be decoded are kept."""
    return log.create_topic(
        f"{topic}.dlq", DEAD_LETTER_SCHEMA, time_column="received_at", exist_ok=True
    )


def nexmark_tables(
    events: int, kind: str = "bids", seed: int = 42, end: datetime | None = None
) -> Iterator[pa.Table]:
    """Generated Nexmark events of one kind, chunk by chunk (bounded memory).

    With ``end`` the event times end there (at the generator's default 10 000 events/s),
    so events produced "now" are not late for pipelines whose watermark has moved on;
    without it they start at the generator's fixed first event time.
    """
    from dataflare_platform.datagen import SCHEMAS, NexmarkConfig, NexmarkGenerator

    config = NexmarkConfig(events=events, seed=seed, chunk_events=min(events, 1_000_000))
    if end is not None:
        span = timedelta(seconds=(events - 1) / config.events_per_second)
        config = config.model_copy(update={"first_event_time": end - span})
    gen = NexmarkGenerator(config)
    for i in gen.chunks():
        yield gen.chunk(i).tables(decode=True)[kind].cast(SCHEMAS[kind])


def tables_from_files(
    paths: Iterable[Path],
    topic: Topic,
    chunk_lines: int = 10_000,
    check_first: bool = True,
    on_schema_mismatch: str = DEFAULT_SCHEMA_POLICY,
) -> Iterator[Batch]:
    """Parquet row groups, Arrow IPC batches, or NDJSON lines decoded into the topic's
    schema (bad lines become dead letters: source = file, offset = line number).

    With ``check_first`` (the default) every file is read and conformed to the topic's
    schema before the first batch is yielded, so a corrupt or mismatched file among
    several is refused (naming it) before anything is appended: a retry after the fix
    would otherwise append the good files' rows a second time. Each file is read twice;
    the check keeps nothing in memory.

    NDJSON records with unknown or missing fields follow ``on_schema_mismatch`` (see
    ``events.schema_policy``): dead letters by default, never rows with silent nulls;
    ``refuse_file`` refuses the file in the check."""
    paths = [Path(p) for p in paths]
    if check_first:
        check_files(paths, topic, chunk_lines, on_schema_mismatch)
    decoder = JsonDecoder(topic.schema)
    for path in paths:
        _check_type(path)
        # The user's file: missing, a directory or not Parquet/Arrow is an error naming
        # it (an exception thrown into this generator by its consumer is not caught: a
        # generator only sees its own statements' errors).
        with user_file(path):
            yield from _file_batches(path, topic, decoder, chunk_lines, on_schema_mismatch)


def check_files(
    paths: Iterable[Path],
    topic: Topic,
    chunk_lines: int = 10_000,
    on_schema_mismatch: str = DEFAULT_SCHEMA_POLICY,
) -> None:
    """Read every file through and conform its rows to ``topic``'s schema, appending
    nothing: raises ``CorruptInputError`` / ``InvalidInputError`` naming the first bad
    file. Undecodable NDJSON lines are not an error here (they are dead-lettered when
    produced)."""
    decoder = JsonDecoder(topic.schema)
    for path in map(Path, paths):
        _check_type(path)
        with user_file(path):
            batches = _file_batches(path, topic, decoder, chunk_lines, on_schema_mismatch)
            for table, _dead in batches:
                try:
                    topic.conform(table)
                except DataflareError as err:
                    raise CorruptInputError(path, str(err)) from err


def _check_type(path: Path) -> None:
    if path.suffix not in _FILE_TYPES:
        raise InvalidInputError(f"{path}: unsupported file type (Parquet, Arrow IPC or NDJSON)")


_FILE_TYPES = (".parquet", ".arrow", ".ipc", ".feather", ".ndjson", ".jsonl", ".json")


def _file_batches(
    path: Path, topic: Topic, decoder: JsonDecoder, chunk_lines: int, policy: str
) -> Iterator[Batch]:
    if path.suffix == ".parquet":
        pf = pq.ParquetFile(path)
        for i in range(pf.num_row_groups):
            yield pf.read_row_group(i), None
    elif path.suffix in (".arrow", ".ipc", ".feather"):
        with pa.memory_map(str(path)) as f:
            reader = pa.ipc.open_file(f)
            for i in range(reader.num_record_batches):
                yield pa.Table.from_batches([reader.get_batch(i)]), None
    else:
        with path.open("rb") as f:
            lines: list[bytes] = []
            first = 0
            for number, line in enumerate(f):
                lines.append(line.rstrip(b"\r\n"))
                if len(lines) == chunk_lines:
                    yield _decode(topic, decoder, lines, first, path, policy)
                    first, lines = number + 1, []
            if lines:
                yield _decode(topic, decoder, lines, first, path, policy)


def _decode(
    topic: Topic, decoder: JsonDecoder, lines: list[bytes], first: int, path: Path, policy: str
) -> Batch:
    offsets = list(range(first, first + len(lines)))
    mismatched = split_records(lines, topic.schema, policy)
    if mismatched and policy == "refuse_file":
        at = min(mismatched)
        raise CorruptInputError(path, f"line {offsets[at] + 1}: {mismatched[at]}")
    keep = [i for i in range(len(lines)) if i not in mismatched]
    decoded = decode_for_topic(
        topic,
        decoder,
        [lines[i] for i in keep],
        [offsets[i] for i in keep],
        source=str(path),
        partition="0",
    )
    if not mismatched:
        return decoded.table, decoded.dead
    bad = sorted(mismatched)
    extra = dead_letters(
        str(path),
        "0",
        [offsets[i] for i in bad],
        [mismatched[i] for i in bad],
        [lines[i] for i in bad],
    )
    dead = pa.concat_tables([decoded.dead, extra])
    return decoded.table, dead.take(pc.sort_indices(dead.column("offset")))


def produce_tables(
    log: EventLog,
    topic: Topic,
    batches: Iterable[Batch | pa.Table],
    batch_rows: int = 10_000,
    rate: float | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, object]:
    """Append in slices of ``batch_rows``, paced to ``rate`` events/s if given."""
    appended = dead = 0
    dlq: Topic | None = None
    started = time.perf_counter()
    for item in batches:
        table, dead_rows = item if isinstance(item, tuple) else (item, None)
        if dead_rows is not None and dead_rows.num_rows:
            dlq = dlq or dead_letter_topic(log, topic.name)
            dlq.append(dead_rows)
            dead += dead_rows.num_rows
            if on_progress:
                on_progress(dead_rows.num_rows)
        for start in range(0, table.num_rows, batch_rows):
            piece = table.slice(start, batch_rows)
            if rate:
                delay = started + appended / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            topic.append(piece)
            appended += piece.num_rows
            if on_progress:
                on_progress(piece.num_rows)
    seconds = time.perf_counter() - started
    return {
        "topic": topic.name,
        "appended": appended,
        "dead_lettered": dead,
        "seconds": round(seconds, 3),
        "events_per_s": round(appended / seconds) if seconds > 0 else None,
    }
