"""What every command group shares: the consoles, the common options, JSON printing and
the one error boundary.

The boundary lives in the click group class every ``dataflare`` (sub)app is built with
(``command_group``): a ``DataflareError`` raised anywhere below a command prints
``error: <message>`` on stderr and exits 2, with no traceback. Commands therefore raise
instead of catching; only outcomes that are not errors (a run that ended FAILURE, a
tampered audit log) choose their own exit code (1).

Library code raises ``DataflareError`` subclasses for bad user input (``InvalidInputError``,
``NotFoundError``, ``UserPathError`` where it opens a user's path; see ``errors``), so the
boundary catches that one class. A pydantic ``ValidationError`` that reaches it (a model
built straight from user values) is printed as one line naming the fields. Anything else,
a builtin ``ValueError`` or ``OSError`` included, is a bug and keeps its traceback: a test
drives every command group with bad input to hold that.

This module is imported by ``dataflare --help``: it imports typer and nothing heavy (rich
is imported when something is printed).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import click
import typer
from typer.core import TyperGroup

from dataflare_platform.errors import ConfigError, DataflareError

if TYPE_CHECKING:
    from pydantic import ValidationError
    from rich.console import Console

    from dataflare_platform.client import DataflareClient

USAGE_EXIT = 2  # an error: bad input, config, server, timeout
FAILED_EXIT = 1  # the command worked and reports a failure (a run ended FAILURE, ...)

# Spelled out here rather than imported from ``home`` (which imports pydantic, ~0.2 s of
# ``dataflare --help``); a test holds them equal.
HOME_ENV_VAR = "DATAFLARE_HOME"
WEBSERVER_HOST_ENV_VAR = "DATAFLARE_WEBSERVER_HOST"
WEBSERVER_PORT_ENV_VAR = "DATAFLARE_WEBSERVER_PORT"


class UsageError(DataflareError):
    """A refusal found by the CLI itself (options that do not fit together, a bad value)."""


@cache
def err_console() -> Console:
    """Messages, progress and errors go to stderr, so stdout stays parseable. Soft-wrapped:
    a message is one line however long (rich would otherwise break it at 80 columns when
    stderr is not a terminal, splitting an error across lines for whoever greps a log)."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


@cache
def out_console() -> Console:
    """Tables for people, on stdout."""
    from rich.console import Console

    return Console()


def print_error(message: str) -> None:
    from rich.markup import escape

    err_console().print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def fail(err: BaseException | str, code: int = USAGE_EXIT) -> NoReturn:
    """Print ``error: ...`` and exit (2 unless told); for refusals found by the CLI itself."""
    print_error(str(err))
    raise typer.Exit(code=code)


@contextmanager
def error_boundary() -> Iterator[None]:
    """The CLI's one error handler: user errors print ``error: ...`` and exit 2."""
    try:
        yield
    except DataflareError as err:
        fail(err)
    except ValueError as err:
        # pydantic is imported only when an error is on its way out (``--help`` stays
        # light); a ValidationError is a ValueError.
        from pydantic import ValidationError

        if not isinstance(err, ValidationError):
            raise
        fail(validation_message(err))


def validation_message(err: ValidationError) -> str:
    """``invalid <model>: <field>: <problem>; ...`` on one line."""
    problems = ConfigError.from_validation(err.title, err).problems
    return f"invalid {err.title}: " + "; ".join(f"{field}: {msg}" for field, msg in problems)


class DataflareGroup(TyperGroup):
    """A typer group whose commands run inside ``error_boundary``."""

    def invoke(self, ctx: click.Context) -> Any:
        with error_boundary():
            return super().invoke(ctx)


def command_group(help: str, **kwargs: Any) -> typer.Typer:
    """A (sub)app of ``dataflare``: with the error boundary, help on no arguments and no
    pretty tracebacks (a bug's traceback should be the plain one)."""
    kwargs.setdefault("no_args_is_help", True)
    return typer.Typer(
        help=help,
        cls=DataflareGroup,
        pretty_exceptions_enable=False,
        **kwargs,
    )


def print_json(data: Any, indent: int | None = None) -> None:
    """One JSON document on stdout (dates and paths as strings)."""
    sys.stdout.write(json.dumps(data, indent=indent, default=str) + "\n")
    sys.stdout.flush()


def table(title: str | None, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """A rich table on stdout; cells are shown as text."""
    from rich.table import Table

    shown = Table(title=title)
    for column in columns:
        shown.add_column(column, overflow="fold")
    for row in rows:
        shown.add_row(*("" if cell is None else str(cell) for cell in row))
    out_console().print(shown)


HomeOption = Annotated[
    Path | None,
    typer.Option("--home", help=f"Project home (default: ${HOME_ENV_VAR} or ./.dataflare)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
LoopbackPortOption = Annotated[
    int, typer.Option("--port", help="Port on 127.0.0.1 (0: a free one, printed).")
]
WebserverHost = Annotated[
    str,
    typer.Option(
        "--host", envvar=WEBSERVER_HOST_ENV_VAR, help="Dagster web server host.", show_envvar=True
    ),
]
WebserverPort = Annotated[
    int,
    typer.Option(
        "--port", envvar=WEBSERVER_PORT_ENV_VAR, help="Dagster web server port.", show_envvar=True
    ),
]
TagOption = Annotated[
    list[str] | None, typer.Option("--tag", help="Run tag KEY=VALUE (repeatable).")
]


def parse_tags(values: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` options as a dict; refused naming --tag otherwise."""
    tags = {}
    for value in values:
        key, sep, tag_value = value.partition("=")
        if not sep or not key:
            raise UsageError(f"--tag takes KEY=VALUE, got {value!r}")
        tags[key] = tag_value
    return tags


def client(host: str, port: int, timeout_s: float = 30.0) -> DataflareClient:
    """The GraphQL client for ``--host``/``--port`` (imported here: it pulls in Dagster's
    GraphQL client, which ``--help`` should not pay for)."""
    from dataflare_platform.client import DataflareClient

    return DataflareClient(host=host, port=port, timeout_s=timeout_s)
