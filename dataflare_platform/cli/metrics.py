"""``dataflare metrics``: the Prometheus scrape endpoint of every worker process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dataflare_platform.cli._common import (
    HOME_ENV_VAR,
    LoopbackPortOption,
    command_group,
    print_json,
)

metrics_app = command_group(help="Metrics of the platform's processes (Prometheus).")


@metrics_app.command("serve")
def serve(
    port: LoopbackPortOption = 9464,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Multiprocess directory (default: $PROMETHEUS_MULTIPROC_DIR, else "
            f"<home>/metrics; home from ${HOME_ENV_VAR}).",
        ),
    ] = None,
) -> None:
    """Serve /metrics on 127.0.0.1, summing the files every worker writes.

    Workers write there when started with DATAFLARE_METRICS=1 (and the same
    PROMETHEUS_MULTIPROC_DIR or home). Prints one JSON line with the URL, then serves
    until interrupted."""
    from dataflare_platform.observability import ObservabilitySettings
    from dataflare_platform.observability.endpoint import MetricsServer

    chosen = directory or ObservabilitySettings.from_env().resolved_metrics_dir()
    server = MetricsServer(chosen, port)
    print_json({"url": server.url, "dir": str(server.directory)})
    server.serve_until_interrupted()


@metrics_app.command("list")
def list_metrics() -> None:
    """Print every metric (type, labels, meaning, Flink/Kafka name) as a Markdown table:
    the table in docs/observability.md is this output."""
    import sys

    from dataflare_platform.observability.catalog import markdown_table

    sys.stdout.write(markdown_table())


@metrics_app.command("grafana")
def grafana_dashboard() -> None:
    """Print the Grafana dashboard generated from the metric list (JSON, importable as
    is; deployments/observe/grafana/dataflare.json is this output)."""
    import sys

    from dataflare_platform.observability.grafana import dashboard_json

    sys.stdout.write(dashboard_json())


@metrics_app.command("instance")
def instance_exporter(
    interval: Annotated[
        float, typer.Option("--interval", min=0.2, help="Seconds between collections.")
    ] = 5.0,
    definitions: Annotated[
        str | None,
        typer.Option(
            "--definitions",
            help="module:attribute of a code location's dg.Definitions whose assets'"
            " freshness policies are exported beside their materialization age"
            " (e.g. dataflare_platform.definitions:defs).",
        ),
    ] = None,
) -> None:
    """Export the Dagster instance's health (runs queued and in progress, oldest queued
    age, run outcomes and durations by job, daemon heartbeat age, asset freshness) into
    the metrics directory that `dataflare metrics serve` reads. The instance is
    $DAGSTER_HOME's (`<home>/dagster_home`). Runs until interrupted."""
    import contextlib
    import importlib

    from dataflare_platform.errors import InvalidInputError
    from dataflare_platform.instance.exporter import freshness_policies, run_exporter

    policies = None
    if definitions is not None:
        module, _, attribute = definitions.partition(":")
        if not module or not attribute:
            raise InvalidInputError(f"--definitions: {definitions!r} is not module:attribute")
        defs = getattr(importlib.import_module(module), attribute, None)
        if defs is None:
            raise InvalidInputError(f"--definitions: {module} has no {attribute!r}")
        policies = freshness_policies(defs)
    with contextlib.suppress(KeyboardInterrupt):
        run_exporter(interval, policies)
