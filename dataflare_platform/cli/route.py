"""``dataflare route RULES``: route what is in a source topic now by a rule file.

A bounded run: it stops at the source's ends as they were when it started. Progress is
kept in a consumer group (``route.<rules file stem>`` unless ``--group``), so running it
again routes only what arrived since; a crash mid-run routes the last batch again
(at-least-once).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dataflare_platform.cli._common import HomeOption, print_json
from dataflare_platform.cli.dlq import LogDirOption, open_log


def route(
    rules: Annotated[Path, typer.Argument(help="Route rules (YAML).")],
    home: HomeOption = None,
    log_dir: LogDirOption = None,
    group: Annotated[
        str | None,
        typer.Option(help="Consumer group keeping the progress (default: route.<file stem>)."),
    ] = None,
    max_rows: Annotated[int, typer.Option(min=1, help="Rows per batch.")] = 10_000,
) -> None:
    """Route a source topic's records to target topics by a rule file, once (bounded).

    Unroutable records go to the source's dead-letter topic. Prints JSON counts.
    """
    from dataflare_platform.events.router import Router

    router = Router.from_file(open_log(home, log_dir), rules)
    name = group or f"route.{rules.stem}"
    result = router.run(group=name, max_rows=max_rows)
    print_json(
        {
            "rules": str(rules),
            "source": router.source.name,
            "group": name,
            "mode": router.rules.mode,
            **result.as_dict(),
        }
    )
