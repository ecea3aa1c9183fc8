"""The ``dataflare`` command: one typer app assembled from one module per command group.

Every (sub)app is built by ``_common.command_group``, whose group class is the one error
boundary (a ``DataflareError`` prints ``error: ...`` and exits 2). Command modules import
only typer at module level; Dagster, Arrow, Polars and the rest are imported by the
commands that use them, so ``dataflare --help`` stays fast (``dataflare bench cli``).
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from dataflare_platform.cli import project
from dataflare_platform.cli._common import command_group
from dataflare_platform.cli.access import tokens_app, users_app
from dataflare_platform.cli.alerts import alerts_app
from dataflare_platform.cli.audit import audit_app
from dataflare_platform.cli.backfill import backfill_app
from dataflare_platform.cli.bench import bench_app
from dataflare_platform.cli.dlq import dlq_app
from dataflare_platform.cli.keys import keys_app
from dataflare_platform.cli.launch import launch
from dataflare_platform.cli.metrics import metrics_app
from dataflare_platform.cli.nexmark import nexmark_app
from dataflare_platform.cli.observe import observe
from dataflare_platform.cli.pipeline import pipeline_app, pipelines_app
from dataflare_platform.cli.plugin import plugin_app
from dataflare_platform.cli.portal import portal_app
from dataflare_platform.cli.quickstart import quickstart
from dataflare_platform.cli.replay import replay_command
from dataflare_platform.cli.route import route
from dataflare_platform.cli.runs import runs_app
from dataflare_platform.cli.scale import scale
from dataflare_platform.cli.topics import consume, produce, topics_app

DISTRIBUTION = "dataflare-platform"

# home.PRIVATE_UMASK (a test holds them equal); not imported: `dataflare --help` imports
# no pydantic.
PRIVATE_UMASK = 0o077

app = command_group(
    help="DataFlare Platform: stream and batch pipelines on Dagster.",
    add_completion=True,  # --install-completion / --show-completion
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"dataflare {version(DISTRIBUTION)}")
        raise typer.Exit()


def _configure_logs(ctx: typer.Context) -> None:
    """The process's log handler and levels, from the environment (DATAFLARE_LOG_*):
    text on a terminal, JSON lines otherwise (observability/logs.py). Skipped for help
    and completion, which log nothing and should not pay for the import."""
    if ctx.resilient_parsing:
        return
    rest = [*getattr(ctx, "protected_args", ()), *ctx.args]
    if any(arg in ("--help", "-h") for arg in rest):
        return
    from dataflare_platform.observability.logs import configure_logging

    configure_logging()


@app.callback()
def main(
    ctx: typer.Context,
    _version_flag: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print the installed version and exit.",
        ),
    ] = False,
) -> None:
    """DataFlare Platform: stream and batch pipelines on Dagster."""
    # Least exposure: everything this command and its children (dagster dev, the code
    # server, run workers, SQLite storages, compute logs) create is owner-only.
    os.umask(PRIVATE_UMASK)
    _configure_logs(ctx)


# Data and the demo.
app.command("generate")(project.generate)
app.command("demo")(project.demo)
app.command("ui")(project.ui)
app.command("quickstart")(quickstart)
# The engine.
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(nexmark_app, name="nexmark")
app.add_typer(bench_app, name="bench")
app.add_typer(metrics_app, name="metrics")
# The embedded event log.
app.add_typer(topics_app, name="topics")
app.command("produce")(produce)
app.command("consume")(consume)
app.command("route")(route)
app.command("replay")(replay_command)
app.add_typer(dlq_app, name="dlq")
# Plugins and governance.
app.add_typer(plugin_app, name="plugin")
app.add_typer(portal_app, name="portal")
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")
app.add_typer(alerts_app, name="alerts")
app.command("observe")(observe)
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
# Runs on a Dagster web server.
app.command("launch")(launch)
app.command("scale")(scale)
app.add_typer(runs_app, name="runs")
app.add_typer(pipelines_app, name="pipelines")
app.add_typer(backfill_app, name="backfill")
