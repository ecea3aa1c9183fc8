"""``dataflare topics``, ``produce`` and ``consume``: the embedded event log from a shell.

Arrow and the event layer are imported by the commands, so ``dataflare --help`` stays fast.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dataflare_platform.cli._common import (
    HOME_ENV_VAR,
    JsonOption,
    UsageError,
    command_group,
    err_console,
    print_json,
    table,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from dataflare_platform.events.log import EventLog

topics_app = command_group(help="Topics of the embedded event log.")

LogDirOption = Annotated[
    Path | None,
    typer.Option(
        "--log-dir",
        help=f"Event log directory (default: <home>/events/log; home from ${HOME_ENV_VAR}).",
    ),
]
NEXMARK_KINDS = ("bids", "persons", "auctions")


def open_log(log_dir: Path | None) -> EventLog:
    from dataflare_platform.events.log import EventLog
    from dataflare_platform.home import ProjectHome

    if log_dir is None:
        log_dir = ProjectHome.resolve().ensure().event_log_dir
    return EventLog(log_dir)


def _schema_from(path: Path | None, nexmark: str | None) -> pa.Schema:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dataflare_platform.datagen import SCHEMAS
    from dataflare_platform.errors import user_file

    if nexmark is not None:
        if nexmark not in NEXMARK_KINDS:
            raise UsageError(f"--nexmark must be one of {', '.join(NEXMARK_KINDS)}")
        return SCHEMAS[nexmark]
    if path is None:
        raise UsageError("give --schema-from FILE (Parquet or Arrow) or --nexmark KIND")
    with user_file(path, "--schema-from"):
        if path.suffix == ".parquet":
            return pq.read_schema(path)
        with pa.memory_map(str(path)) as f:
            return pa.ipc.open_file(f).schema


@topics_app.command("list")
def topics_list(log_dir: LogDirOption = None, as_json: JsonOption = False) -> None:
    """Topics with their partitions, rows and size (--json: each topic's description)."""
    log = open_log(log_dir)
    described = [log.topic(name).describe() for name in log.topics()]
    if as_json:
        print_json(described)
        return
    rows = []
    for d in described:
        retention = ", ".join(
            f"{k.removeprefix('retention_')}={d[k]}"
            for k in ("retention_ms", "retention_bytes")
            if d[k] is not None
        )
        rows.append(
            (d["topic"], d["partitions"], f"{d['rows']:,}", f"{d['bytes']:,}", retention or "-")
        )
    table(None, ("topic", "partitions", "rows", "bytes", "retention"), rows)


@topics_app.command("create")
def topics_create(
    name: Annotated[str, typer.Argument(help="Topic name.")],
    schema_from: Annotated[
        Path | None, typer.Option(help="Take the schema of this Parquet/Arrow file.")
    ] = None,
    nexmark: Annotated[
        str | None, typer.Option(help="Take the schema of Nexmark bids, persons or auctions.")
    ] = None,
    partitions: Annotated[int, typer.Option(help="Number of partitions.")] = 1,
    time_column: Annotated[str, typer.Option(help="Event-time column.")] = "date_time",
    key: Annotated[str | None, typer.Option(help="Hash-partition rows by this column.")] = None,
    retention_ms: Annotated[
        int | None, typer.Option(help="Delete segments older than this.")
    ] = None,
    retention_bytes: Annotated[
        int | None, typer.Option(help="Keep at most this many bytes per partition.")
    ] = None,
    fsync: Annotated[bool, typer.Option(help="fsync every append (power-loss safe).")] = False,
    log_dir: LogDirOption = None,
) -> None:
    """Create a topic."""
    schema = _schema_from(schema_from, nexmark)
    topic = open_log(log_dir).create_topic(
        name,
        schema,
        time_column=time_column,
        partitions=partitions,
        key=key,
        retention_ms=retention_ms,
        retention_bytes=retention_bytes,
        fsync=fsync,
    )
    print_json(topic.describe(), indent=2)


@topics_app.command("describe")
def topics_describe(
    name: Annotated[str, typer.Argument(help="Topic name.")], log_dir: LogDirOption = None
) -> None:
    """Partitions, offsets, sizes, event-time range, retention and consumer-group lag."""
    from dataflare_platform.events.groups import ConsumerGroup, list_groups

    topic = open_log(log_dir).topic(name)
    described = topic.describe()
    described["groups"] = {g: ConsumerGroup(topic, g).lag() for g in list_groups(topic)}
    print_json(described, indent=2)


@topics_app.command("maintain")
def topics_maintain(
    name: Annotated[str, typer.Argument(help="Topic name.")], log_dir: LogDirOption = None
) -> None:
    """Apply retention, then compact small segments."""
    topic = open_log(log_dir).topic(name)
    deleted = topic.enforce_retention()
    merged = topic.compact()
    print_json({"topic": name, "segments_deleted": deleted, "segments_merged": merged})


@topics_app.command("recover")
def topics_recover(
    name: Annotated[str, typer.Argument(help="Topic name.")],
    verify_all: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Check every segment's checksum, not only those written since the last"
            " recovery (after a read reported a damaged segment).",
        ),
    ] = False,
    log_dir: LogDirOption = None,
) -> None:
    """Check segments; move a damaged one and every later one aside into the topic's
    quarantine (never deleted). ``restore-quarantine`` puts the intact ones back."""
    topic = open_log(log_dir).topic(name)
    warnings = topic.recover(full=verify_all)
    print_json({"topic": name, "warnings": warnings})


@topics_app.command("restore-quarantine")
def topics_restore_quarantine(
    name: Annotated[str, typer.Argument(help="Topic name.")], log_dir: LogDirOption = None
) -> None:
    """Put the intact segments that recovery moved aside back at the end of their
    partition (under their own offsets if nothing was appended since, else under the
    next ones: the report gives both); damaged ones stay in the quarantine."""
    topic = open_log(log_dir).topic(name)
    restored = topic.restore_quarantine()
    print_json({"topic": name, "partitions": {str(k): v for k, v in restored.items()}}, indent=2)


def produce(
    topic: Annotated[
        str | None,
        typer.Argument(
            help="Target topic (default with --nexmark: nexmark.<kind>, created if missing).",
            show_default=False,
        ),
    ] = None,
    files: Annotated[
        list[Path] | None,
        typer.Argument(help="Parquet, Arrow IPC or NDJSON files to append.", show_default=False),
    ] = None,
    nexmark: Annotated[
        bool, typer.Option("--nexmark", help="Generate Nexmark events instead of reading files.")
    ] = False,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="With --nexmark: persons, auctions and bids to the nexmark.* topics with"
            " event time = now, paced to --rate, until Ctrl-C/SIGTERM (or a bound).",
        ),
    ] = False,
    events: Annotated[
        int | None,
        typer.Option(
            min=1, help="Events to generate (--nexmark: default 100000; --live: no bound)."
        ),
    ] = None,
    duration: Annotated[
        float | None, typer.Option(min=0, help="--live: stop after this many seconds.")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(min=0, help="Generator seed (default: random, printed).")
    ] = None,
    kind: Annotated[str, typer.Option(help="Nexmark kind to publish (not --live).")] = "bids",
    batch_rows: Annotated[int, typer.Option(help="Rows per append (not --live).")] = 10_000,
    rate: Annotated[
        float | None,
        typer.Option(help="Events/s limit (default: none; --live: 1000)."),
    ] = None,
    partitions: Annotated[int, typer.Option(help="Partitions of a topic made here.")] = 1,
    on_schema_mismatch: Annotated[
        str,
        typer.Option(
            help="NDJSON records with unknown or missing fields: dead_letter (to the"
            " topic's .dlq), refuse_file, or allow_extra (ignore unknown fields)."
        ),
    ] = "dead_letter",
    progress_every: Annotated[
        float, typer.Option(min=0.1, help="--live: seconds between progress lines.")
    ] = 2.0,
    log_dir: LogDirOption = None,
) -> None:
    """Append files or generated Nexmark events to a topic, with a progress bar.

    NDJSON records that do not decode go to the topic's dead-letter topic. Generated
    events end at the current time (not late for pipelines that already ran).
    """
    if seed is None and nexmark:
        import secrets

        seed = secrets.randbelow(2**31)
    if live:
        if not nexmark:
            raise UsageError("--live needs --nexmark")
        if topic is not None or files:
            raise UsageError("--live writes the nexmark.* topics: give no TOPIC or files")
        assert seed is not None
        _produce_live(log_dir, rate or 1000.0, seed, events, duration, progress_every)
        return
    if duration is not None:
        raise UsageError("--duration needs --live")
    from dataflare_platform.events.schema_policy import SCHEMA_POLICIES

    if on_schema_mismatch not in SCHEMA_POLICIES:
        raise UsageError(f"--on-schema-mismatch must be one of {', '.join(SCHEMA_POLICIES)}")
    _produce_once(
        topic,
        files,
        nexmark,
        events,
        seed,
        kind,
        batch_rows,
        rate,
        partitions,
        log_dir,
        on_schema_mismatch,
    )


def _produce_live(
    log_dir: Path | None,
    rate: float,
    seed: int,
    events: int | None,
    duration: float | None,
    progress_every: float,
) -> None:
    """The live producer in the foreground: SIGINT and SIGTERM stop it after the batch in
    flight, and it prints its final count either way."""
    import signal

    from dataflare_platform.events.live import LiveNexmarkProducer

    if rate <= 0:
        raise UsageError("--rate must be > 0 events/s")
    console = err_console()
    producer = LiveNexmarkProducer(
        open_log(log_dir), rate=rate, seed=seed, max_events=events, max_seconds=duration
    )
    console.print(
        f"producing Nexmark events live at {rate:,.0f} events/s (seed {seed}) to "
        "nexmark.persons, nexmark.auctions, nexmark.bids; Ctrl-C stops",
        soft_wrap=True,
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: producer.stop())
    last = time.monotonic()

    def on_batch(p) -> None:
        nonlocal last
        if time.monotonic() - last >= progress_every:
            last = time.monotonic()
            console.print(p.line(), highlight=False, soft_wrap=True)

    final = producer.run(on_batch)
    console.print(f"stopped: {final.line()}", highlight=False, soft_wrap=True)
    print_json({"seed": seed, **final.summary()})


def _produce_once(
    topic: str | None,
    files: list[Path] | None,
    nexmark: bool,
    events: int | None,
    seed: int | None,
    kind: str,
    batch_rows: int,
    rate: float | None,
    partitions: int,
    log_dir: Path | None,
    on_schema_mismatch: str = "dead_letter",
) -> None:
    from datetime import UTC, datetime

    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from dataflare_platform.datagen import SCHEMAS
    from dataflare_platform.events.producer import (
        nexmark_tables,
        produce_tables,
        tables_from_files,
    )

    log = open_log(log_dir)
    if nexmark:
        if kind not in NEXMARK_KINDS:
            raise UsageError(f"--kind must be one of {', '.join(NEXMARK_KINDS)}")
        topic = topic or f"nexmark.{kind}"
        if not log.exists(topic):
            log.create_topic(topic, SCHEMAS[kind], partitions=partitions)
        target = log.topic(topic)
        assert seed is not None
        source = nexmark_tables(events or 100_000, kind, seed=seed, end=datetime.now(UTC))
    elif topic is not None and files:
        if events is not None:
            raise UsageError("--events needs --nexmark")
        target = log.topic(topic)
        source = tables_from_files(files, target, on_schema_mismatch=on_schema_mismatch)
    else:
        raise UsageError("give a TOPIC and files to append, or --nexmark [--events N]")
    console = err_console()
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.completed:,} events"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task(f"producing to {topic}", total=None)
        result = produce_tables(
            log,
            target,
            source,
            batch_rows=batch_rows,
            rate=rate,
            on_progress=lambda n: progress.update(task, advance=n),
        )
    if nexmark:
        result["seed"] = seed
    print_json(result)


def consume(
    topic: Annotated[str, typer.Argument(help="Topic to read.")],
    group: Annotated[
        str | None, typer.Option(help="Consumer group: start at and commit its offsets.")
    ] = None,
    follow: Annotated[bool, typer.Option(help="Keep waiting for new events (tail -f).")] = False,
    max_events: Annotated[int | None, typer.Option("--max", help="Stop after this many.")] = None,
    log_dir: LogDirOption = None,
) -> None:
    """Print a topic's events as JSON lines (from the start, or from a group's offsets)."""
    from dataflare_platform.events.codec import encode_json
    from dataflare_platform.events.groups import ConsumerGroup

    t = open_log(log_dir).topic(topic)
    consumer = ConsumerGroup(t, group or "dataflare-consume-cli").consumer()
    if group is None:
        for p, start in t.start_offsets().items():
            consumer.seek(p, start)
    printed = 0
    out = sys.stdout.buffer
    while max_events is None or printed < max_events:
        fetched = consumer.poll(max_rows=10_000)
        if not fetched:
            if not follow:
                break
            time.sleep(0.05)
            continue
        for f in fetched:
            table = f.table
            if max_events is not None and table.num_rows > max_events - printed:
                table = table.slice(0, max_events - printed)
                consumer.seek(f.partition, f.start + table.num_rows)
            for line in encode_json(table):
                out.write(line + b"\n")
            printed += table.num_rows
        out.flush()
        if group is not None:
            consumer.commit()
    err_console().print(f"{printed:,} events")
