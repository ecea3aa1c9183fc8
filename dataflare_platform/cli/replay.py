"""``dataflare replay``: re-process a topic range through a pipeline (a Nexmark query or
a pipeline spec) into another DuckDB table, or over the pipeline's own output table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dataflare_platform.cli._common import HomeOption, UsageError, print_json


def replay_command(
    topic: Annotated[
        list[str],
        typer.Option(
            "--topic",
            help="Topic to read; SOURCE=TOPIC for each source of a multi-source pipeline.",
        ),
    ],
    query: Annotated[str | None, typer.Option(help="Nexmark query: q0..q8.")] = None,
    spec: Annotated[Path | None, typer.Option(help="Pipeline YAML file (its sources).")] = None,
    from_time: Annotated[
        str | None, typer.Option(help="Interval start: ISO 8601 (naive = UTC) or epoch ms.")
    ] = None,
    to_time: Annotated[str | None, typer.Option(help="Interval end (exclusive).")] = None,
    from_offset: Annotated[
        list[str] | None,
        typer.Option(help="First offset: N for every partition, or P:N (repeatable)."),
    ] = None,
    to_offset: Annotated[
        list[str] | None,
        typer.Option(help="End offset (exclusive): N or P:N; default the committed end."),
    ] = None,
    into: Annotated[
        str | None, typer.Option(help="Write to this table (created if missing).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the interval in the pipeline's table.")
    ] = False,
    duckdb_path: Annotated[
        Path | None,
        typer.Option("--duckdb", help="DuckDB file (default: the spec's sink; --query needs it)."),
    ] = None,
    table: Annotated[
        str | None,
        typer.Option(help="The pipeline's table (default: the spec's, or nexmark_QUERY)."),
    ] = None,
    log_dir: Annotated[
        Path | None, typer.Option("--log", help="Event log root (default: <home>/events/log).")
    ] = None,
    home: HomeOption = None,
    batch_rows: Annotated[int, typer.Option(help="Rows per micro-batch.")] = 10_000,
) -> None:
    """Replay an event-time interval (--from-time/--to-time) or an offset range
    (--from-offset/--to-offset) into --into TABLE, or over the pipeline's own table with
    --overwrite. Replaying twice leaves the table unchanged. Prints a JSON summary."""
    from dataflare_platform.events.log import EventLog
    from dataflare_platform.home import ProjectHome
    from dataflare_platform.replay.run import DuckDBTarget, ReplayRequest, replay

    factory, sink = _pipeline(query, spec)
    root = log_dir or ProjectHome.resolve(home).event_log_dir
    if not root.is_dir():
        raise UsageError(f"no event log at {root}")
    log = EventLog(root)
    topics = _topic_map(topic)
    if bool(into) == overwrite:
        raise UsageError("give one of --into TABLE or --overwrite")
    path = duckdb_path or (Path(sink["path"]) if sink else None)
    own_table = table or (sink["table"] if sink else f"nexmark_{query}")
    if path is None:
        raise UsageError("--duckdb is needed (the spec has no duckdb sink)")
    target = DuckDBTarget(path=path, table=into or own_table, overwrite=overwrite)
    timed = from_time is not None or to_time is not None
    if timed and (from_offset or to_offset):
        raise UsageError("give an interval (--from-time/--to-time) or offsets, not both")
    if timed:
        request = ReplayRequest(
            topic=topics,
            start=_time(from_time),
            end=_time(to_time),
            target=target,
            batch_rows=batch_rows,
        )
    else:
        names = list(topics.values()) if isinstance(topics, dict) else [topics]
        if len(names) != 1:
            raise UsageError("an offset-range replay reads one topic")
        offsets = _offsets(log, names[0], from_offset or [], to_offset or [])
        request = ReplayRequest(topic=topics, offsets=offsets, target=target, batch_rows=batch_rows)
    result = replay(log, request, factory)
    print_json({"table": target.table, **result.as_dict()})


def _pipeline(query: str | None, spec: Path | None):
    """The pipeline factory and, for a spec, its duckdb sink settings."""
    from dataflare_platform.replay.factories import for_nexmark, for_spec
    from dataflare_platform.streams.spec import PipelineSpec

    if (query is None) == (spec is None):
        raise UsageError("give one of --query or --spec")
    if query is not None:
        return for_nexmark(query), None
    assert spec is not None
    loaded = PipelineSpec.from_yaml(spec)
    sink = loaded.sink
    duck = sink.model_dump(exclude_none=True, exclude={"kind"}) if sink.kind == "duckdb" else None
    return for_spec(loaded), duck


def _topic_map(values: list[str]) -> str | dict[str, str]:
    if len(values) == 1 and "=" not in values[0]:
        return values[0]
    pairs = [v.split("=", 1) for v in values]
    if any(len(p) != 2 for p in pairs):
        raise UsageError("with several --topic options, each is SOURCE=TOPIC")
    return {source: name for source, name in pairs}


def _time(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.lstrip("-").isdigit() else value


def _offsets(log, topic_name: str, starts: list[str], ends: list[str]):
    """Per partition (start, end | None) from N / P:N options: plain values apply to
    every partition; with only P:N values, only the partitions named are read."""
    topic = log.topic(topic_name)
    first = _by_partition(starts, "--from-offset")
    last = _by_partition(ends, "--to-offset")
    named = {p for p in [*first, *last] if p is not None}
    plain = None in first or None in last or not named
    unknown = sorted(named - set(range(len(topic.parts))))
    if unknown:
        raise UsageError(
            f"--from-offset/--to-offset: topic {topic_name!r} has no partition"
            f" {', '.join(map(str, unknown))} (it has 0..{len(topic.parts) - 1})"
        )
    partitions = range(len(topic.parts)) if plain else sorted(named)
    begin = topic.start_offsets()
    out = {}
    for p in partitions:
        start = first.get(p, first.get(None, begin[p]))
        out[p] = (start, last.get(p, last.get(None)))
    return out


def _by_partition(values: list[str], option: str) -> dict[int | None, int]:
    out: dict[int | None, int] = {}
    for value in values:
        part, _, offset = value.rpartition(":")
        try:
            out[int(part) if part else None] = int(offset)
        except ValueError:
            raise UsageError(f"{option} {value!r}: expected N or PARTITION:N") from None
    return out
