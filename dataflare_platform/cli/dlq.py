"""``dataflare dlq``: list, inspect and re-drive the dead letters of a topic.

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
    help="Dead-letter topics (<topic>.dlq): list, show and re-drive records that failed."
)

LogDirOption = Annotated[
    Path | None,
    typer.Option("--log-dir", help="Event log root (default: <home>/events/log)."),
]
TopicArgument = Annotated[str, typer.Argument(help="The topic whose dead letters to use.")]


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
    topic: TopicArgument,
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
    """List dead letters, oldest first, with the reason and a payload preview."""
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
    topic: TopicArgument,
    offset: Annotated[int, typer.Argument(help="DLQ offset (see `dlq list`).")],
    home: HomeOption = None,
    log_dir: LogDirOption = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Write only the payload's bytes (to fix in a file).")
    ] = False,
) -> None:
    """Show one dead letter with its whole payload, as JSON."""
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
