"""``dataflare dlq``: list, inspect and re-drive the dead letters of a topic, and find the
late and dead-lettered rows of pipelines (their sinks' side outputs).

    dataflare dlq list                        # every dead-letter topic and pipeline side output
    dataflare dlq list bids                   # the dead letters of topic bids
    dataflare dlq list --pipeline hot_items   # the side rows of a pipeline
    dataflare dlq show --pipeline hot_items --row 3

The event layer (Polars, Arrow) is imported by the commands, not by this module, so that
``dataflare --help`` stays fast. ``route`` shares ``open_log`` and the log option here.
"""

from __future__ import annotations

import base64
import importlib
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dataflare_platform.cli._common import (
    HomeOption,
    JsonOption,
    command_group,
    print_json,
    table,
)
from dataflare_platform.errors import ConfigError

if TYPE_CHECKING:
    from dataflare_platform.events.deadletter import DeadLetters
    from dataflare_platform.events.log import EventLog

dlq_app = command_group(
    help="Dead-letter topics (<topic>.dlq) and pipelines' late/dead-lettered rows: list,"
    " show and re-drive records that failed."
)

LogDirOption = Annotated[
    Path | None,
    typer.Option("--log-dir", help="Event log root (default: <home>/events/log)."),
]
TopicArgument = Annotated[str, typer.Argument(help="The topic whose dead letters to use.")]
OptionalTopic = Annotated[
    str | None,
    typer.Argument(help="The topic whose dead letters to use (none: an overview of all)."),
]
PipelineOption = Annotated[
    str | None,
    typer.Option("--pipeline", help="A pipeline: its side output (late and dead-lettered rows)."),
]
PipelinesDirOption = Annotated[
    Path | None,
    typer.Option(
        "--pipelines-dir", help="Where the pipelines are (default: the shipped pipelines)."
    ),
]


def open_log(home: Path | None, log_dir: Path | None) -> EventLog:
    """The event log at ``--log-dir``, else under the project home; never created here
    (a typo in a path should not make an empty log)."""
    from dataflare_platform.events.log import EventLog
    from dataflare_platform.home import ProjectHome

    root = log_dir if log_dir is not None else ProjectHome.resolve(home).event_log_dir
    if not root.is_dir():
        option = "--log-dir" if log_dir is not None else "--home"
        raise ConfigError("event log", [(option, f"no event log at {root}")])
    return EventLog(root)


def _dead_letters(home: Path | None, log_dir: Path | None, topic: str) -> DeadLetters:
    from dataflare_platform.events.deadletter import DeadLetters
    from dataflare_platform.events.log import TopicNotFoundError

    log = open_log(home, log_dir)
    if not log.exists(topic):
        raise TopicNotFoundError(topic)
    return DeadLetters(log, topic)


@dlq_app.command("list")
def list_dead_letters(
    topic: OptionalTopic = None,
    pipeline: PipelineOption = None,
    pipelines_dir: PipelinesDirOption = None,
    home: HomeOption = None,
    log_dir: LogDirOption = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows to show.")] = 20,
    reason: Annotated[
        str | None,
        typer.Option(help="Only reasons LIKE this (case-insensitive; % and _ wildcards)."),
    ] = None,
    start: Annotated[int | None, typer.Option(help="First DLQ offset to show.")] = None,
    pending: Annotated[bool, typer.Option(help="Only those not re-driven yet.")] = False,
    as_json: JsonOption = False,
) -> None:
    """List dead letters, oldest first, with the reason and a payload preview; without a
    topic, every dead-letter topic and every pipeline's side output with counts."""
    if pipeline is not None:
        if topic is not None:
            raise ConfigError("dlq list", [("--pipeline", "give a topic or --pipeline, not both")])
        _list_side_rows(pipeline, pipelines_dir, home, limit, reason, start or 0, as_json)
        return
    if topic is None:
        _overview(home, log_dir, pipelines_dir, as_json)
        return
    dead = _dead_letters(home, log_dir, topic)
    rows = dead.list(limit, reason_like=reason, start=start, include_redriven=not pending)
    counts = {"pending": dead.count(), "total": dead.count(include_redriven=True)}
    if as_json:
        listing = [{**r, "received_at": r["received_at"].isoformat()} for r in rows.to_dicts()]
        print_json({"topic": topic, "dlq": dead.name, **counts, "dead_letters": listing})
        return
    table(
        f"{dead.name}: {counts['pending']} pending of {counts['total']}",
        ("dlq offset", "source", "part", "offset", "reason", "bytes", "payload", "done"),
        [
            (
                r["dlq_offset"],
                r["source"],
                r["partition"],
                r["offset"],
                r["reason"],
                r["size"],
                r["preview"],
                "yes" if r["redriven"] else "",
            )
            for r in rows.iter_rows(named=True)
        ],
    )


@dlq_app.command("show")
def show_dead_letter(
    topic: OptionalTopic = None,
    offset: Annotated[int | None, typer.Argument(help="DLQ offset (see `dlq list`).")] = None,
    pipeline: PipelineOption = None,
    row: Annotated[
        int | None, typer.Option("--row", min=0, help="With --pipeline: the side row to show.")
    ] = None,
    pipelines_dir: PipelinesDirOption = None,
    home: HomeOption = None,
    log_dir: LogDirOption = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Write only the payload's bytes (to fix in a file).")
    ] = False,
) -> None:
    """Show one dead letter with its whole payload, as JSON; with --pipeline, where its
    side output is and its counts, or one side row whole (--row)."""
    if pipeline is not None:
        if topic is not None or offset is not None:
            raise ConfigError("dlq show", [("--pipeline", "give TOPIC OFFSET or --pipeline")])
        _show_side(pipeline, pipelines_dir, home, row)
        return
    if topic is None or offset is None:
        raise ConfigError("dlq show", [("TOPIC OFFSET", "give both (or --pipeline NAME)")])
    letter = _dead_letters(home, log_dir, topic).show(offset)
    if raw:
        sys.stdout.buffer.write(letter.payload)
        sys.stdout.buffer.flush()
        return
    out: dict[str, Any] = {
        "dlq_offset": letter.dlq_offset,
        "source": letter.source,
        "partition": letter.partition,
        "offset": letter.offset,
        "reason": letter.reason,
        "received_at": letter.received_at.isoformat(),
        "redriven": letter.redriven,
        "size": len(letter.payload),
    }
    try:
        out["payload"] = letter.payload.decode("utf-8")
    except UnicodeDecodeError:  # not text: keep every byte
        out["payload_base64"] = base64.b64encode(letter.payload).decode()
    print(json.dumps(out, ensure_ascii=False))


@dlq_app.command("redrive")
def redrive_dead_letters(
    topic: TopicArgument,
    home: HomeOption = None,
    log_dir: LogDirOption = None,
    start: Annotated[int | None, typer.Option(help="First DLQ offset to re-drive.")] = None,
    end: Annotated[int | None, typer.Option(help="DLQ offset to stop before.")] = None,
    fix: Annotated[
        str | None,
        typer.Option(
            help="A function bytes -> bytes applied to each payload first:"
            " 'package.module:function' or 'path/to/file.py:function'."
        ),
    ] = None,
) -> None:
    """Decode dead letters again (after --fix); append those that now decode to the topic.

    The rest stay dead letters. Re-driving the same range again appends nothing.
    """
    dead = _dead_letters(home, log_dir, topic)
    fixer = load_function(fix) if fix is not None else None
    offsets = None
    if start is not None or end is not None:
        offsets = range(start or 0, end if end is not None else sys.maxsize)
    result = dead.redrive(offsets=offsets, fix=fixer)
    reasons: dict[str, int] = {}
    for why in result.failures.values():
        reasons[why] = reasons.get(why, 0) + 1
    print_json({"topic": topic, **result.as_dict(), "still_dead_reasons": reasons})


def _specs(pipelines_dir: Path | None) -> list:
    from dataflare_platform.streams.ranges import load_specs

    return load_specs(pipelines_dir)


def _spec(name: str, pipelines_dir: Path | None):
    specs = {s.name: s for s in _specs(pipelines_dir)}
    if name not in specs:
        known = ", ".join(sorted(specs)) or "none"
        raise ConfigError("dlq", [("--pipeline", f"no pipeline {name!r} (known: {known})")])
    return specs[name]


def _streams_dir(home: Path | None) -> Path:
    from dataflare_platform.home import ProjectHome

    return ProjectHome.resolve(home).root / "streams"


def _dead_letter_topics(home: Path | None, log_dir: Path | None) -> list[dict[str, Any]]:
    """Every ``<topic>.dlq`` of the log with its counts (none when there is no log)."""
    from dataflare_platform.events.deadletter import DLQ_SUFFIX, DeadLetters

    try:
        log = open_log(home, log_dir)
    except ConfigError:
        return []
    found = []
    for name in log.topics():
        if not name.endswith(DLQ_SUFFIX) or not log.exists(name.removesuffix(DLQ_SUFFIX)):
            continue
        dead = DeadLetters(log, name.removesuffix(DLQ_SUFFIX))
        found.append(
            {
                "topic": name.removesuffix(DLQ_SUFFIX),
                "dlq": name,
                "pending": dead.count(),
                "total": dead.count(include_redriven=True),
                "where": str(log.root / name),
            }
        )
    return found


def _overview(
    home: Path | None, log_dir: Path | None, pipelines_dir: Path | None, as_json: bool
) -> None:
    from dataflare_platform.streams.side_outputs import side_output

    topics = _dead_letter_topics(home, log_dir)
    streams = _streams_dir(home)
    sides = [side_output(spec, streams).as_dict() for spec in _specs(pipelines_dir)]
    if as_json:
        print_json({"dead_letter_topics": topics, "pipelines": sides})
        return
    rows: list[tuple[Any, ...]] = [
        ("topic", t["topic"], t["pending"], t["total"], "", "", t["where"]) for t in topics
    ]
    for side in sides:
        counts = side["counts"]
        rows.append(
            (
                "pipeline",
                side["pipeline"],
                "" if counts is None else counts.get("dead_letter", 0),
                "?" if side["total"] is None else side["total"],
                "" if counts is None else counts.get("late", 0),
                side["note"] or "",
                side["where"],
            )
        )
    table(
        "dead letters and late rows (dlq list TOPIC / --pipeline NAME for the rows)",
        ("of", "name", "dead letters", "total", "late", "note", "where"),
        rows,
    )


def _list_side_rows(
    name: str,
    pipelines_dir: Path | None,
    home: Path | None,
    limit: int,
    reason: str | None,
    start: int,
    as_json: bool,
) -> None:
    from dataflare_platform.streams.side_outputs import side_output, side_rows

    spec = _spec(name, pipelines_dir)
    streams = _streams_dir(home)
    place = side_output(spec, streams)
    rows = side_rows(spec, streams, limit, start=start, reason_like=reason)
    if as_json:
        print_json({**place.as_dict(), "rows": rows})
        return
    total = "?" if place.total is None else place.total
    table(
        f"{name}: {total} side rows in {place.where}",
        ("row", "kind", "operator", "reason", "payload"),
        [(r["row"], r["kind"], r["operator"], r["reason"], r["payload"]) for r in rows],
    )


def _show_side(name: str, pipelines_dir: Path | None, home: Path | None, row: int | None) -> None:
    from dataflare_platform.sql_names import quote_identifier
    from dataflare_platform.streams.side_outputs import side_output, side_row

    spec = _spec(name, pipelines_dir)
    streams = _streams_dir(home)
    place = side_output(spec, streams).as_dict()
    if row is None:
        if place["table"] is not None and place["path"] is not None:
            table = quote_identifier(place["table"])  # a name from the pipeline's YAML
            place["query"] = f"SELECT * FROM {table} ORDER BY rowid"
        print_json(place)
        return
    print(json.dumps({**place, **side_row(spec, streams, row)}, ensure_ascii=False, default=str))


def load_function(spec: str) -> Callable[[bytes], bytes]:
    """``module:function`` or ``file.py:function``; refused with a ConfigError naming
    ``--fix`` if it cannot be loaded."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ConfigError("--fix", [("--fix", f"{spec!r} is not 'module:function'")])
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            loader = importlib.util.spec_from_file_location(f"_dataflare_fix_{path.stem}", path)
            if loader is None or loader.loader is None:
                raise ImportError(f"cannot load {path}")
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
        function = getattr(module, attr)
    except (ImportError, AttributeError, OSError, SyntaxError) as err:
        raise ConfigError("--fix", [("--fix", f"cannot load {spec!r}: {err}")]) from None
    if not callable(function):
        raise ConfigError("--fix", [("--fix", f"{spec!r} is not a function")])
    return function
