"""The ``dataflare`` command.

Dagster is imported only by the commands that use it, so ``generate`` and ``--help``
stay fast.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from dataflare_platform.cli_alerts import alerts_app
from dataflare_platform.cli_audit import audit_app
from dataflare_platform.cli_dlq import dlq_app
from dataflare_platform.cli_events import consume, produce, topics_app
from dataflare_platform.cli_launch import launch
from dataflare_platform.cli_plugin import plugin_app
from dataflare_platform.cli_replay import replay_command
from dataflare_platform.cli_route import route
from dataflare_platform.errors import DataflareError
from dataflare_platform.home import HOME_ENV_VAR, ProjectHome

app = typer.Typer(
    help="DataFlare Platform: stream and batch pipelines on Dagster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks; each prints one JSON object.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
nexmark_app = typer.Typer(help="Nexmark queries on the streaming engine.", no_args_is_help=True)
app.add_typer(nexmark_app, name="nexmark")
pipeline_app = typer.Typer(help="Declarative (YAML) pipelines.", no_args_is_help=True)
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(topics_app, name="topics")
app.command("produce")(produce)
app.command("consume")(consume)
app.command("replay")(replay_command)
app.add_typer(dlq_app, name="dlq")
app.add_typer(alerts_app, name="alerts")
app.add_typer(plugin_app, name="plugin")
app.add_typer(audit_app, name="audit")
app.command("launch")(launch)
app.command("route")(route)
console = Console(stderr=True)

HomeOption = Annotated[
    Path | None,
    typer.Option("--home", help=f"Project home (default: ${HOME_ENV_VAR} or ./.dataflare)."),
]
EventsOption = Annotated[int | None, typer.Option(help="Total events to generate.")]
SeedOption = Annotated[int | None, typer.Option(help="Random seed (same seed, same data).")]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="Generator settings as YAML (fields of NexmarkConfig)."),
]


def _fail(err: Exception) -> None:
    console.print(f"[bold red]error:[/] {err}")
    raise typer.Exit(code=2)


def _generator_config(config: Path | None, base: dict[str, Any] | None = None, **overrides: Any):
    from dataflare_platform.datagen import NexmarkConfig

    if config is not None:
        return NexmarkConfig.from_yaml(config, **overrides)
    return NexmarkConfig.load(base, **overrides)


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.completed:,}/{task.total:,} events"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )


@app.command()
def generate(
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default: <home>/events/nexmark).")
    ] = None,
    home: HomeOption = None,
    events: EventsOption = None,
    seed: SeedOption = None,
    chunk_events: Annotated[int | None, typer.Option(help="Events per file chunk.")] = None,
    events_per_second: Annotated[
        float | None, typer.Option(help="Event-time rate (spreads events over time).")
    ] = None,
    max_out_of_order_ms: Annotated[
        int | None, typer.Option(help="Maximum event-time jitter, in ms.")
    ] = None,
    file_format: Annotated[
        str | None, typer.Option("--format", help="parquet or ipc (Arrow IPC).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Generate Nexmark events (persons, auctions, bids) to Parquet or Arrow IPC files."""
    from dataflare_platform.datagen import write_nexmark

    try:
        cfg = _generator_config(
            config,
            events=events,
            seed=seed,
            chunk_events=chunk_events,
            events_per_second=events_per_second,
            max_out_of_order_ms=max_out_of_order_ms,
            format=file_format,
        )
        target = out if out is not None else ProjectHome.resolve(home).ensure().nexmark_dir
        target = ProjectHome.resolve(target).root  # refuses an unwritable directory
        with _progress() as bar:
            task = bar.add_task("generating", total=cfg.events)
            summary = write_nexmark(
                cfg, target, progress=lambda done, _total: bar.update(task, completed=done)
            )
    except DataflareError as err:
        _fail(err)
    rate = summary.events / summary.seconds if summary.seconds else 0.0
    console.print(
        f"wrote {summary.events:,} events ({summary.rows}) in {summary.files} files to "
        f"{summary.out_dir} in {summary.seconds:.2f}s ({rate:,.0f} events/s)"
    )


@app.command()
def demo(
    home: HomeOption = None,
    events: EventsOption = None,
    seed: SeedOption = None,
    config: ConfigOption = None,
) -> None:
    """Generate data and run the shipped pipelines end to end in a real Dagster instance."""
    try:
        from dataflare_platform.demo import DEMO_CONFIG, run_demo

        project = ProjectHome.resolve(home)
        cfg = _generator_config(config, DEMO_CONFIG.model_dump(), events=events, seed=seed)
        console.print(f"project home: {project.root}")
        with _progress() as bar:
            task = bar.add_task("generating", total=cfg.events)
            report = run_demo(
                project,
                cfg,
                progress=lambda done, _t: bar.update(task, completed=done),
                log=lambda msg: console.print(f"[dim]{msg}[/]"),
            )
    except DataflareError as err:
        _fail(err)
    _print_demo(report)
    if not report.ok:
        raise typer.Exit(code=1)


def _print_demo(report) -> None:
    out = Console()
    assets = Table(title="Assets", show_lines=False)
    assets.add_column("asset")
    assets.add_column("rows", justify="right")
    for key, rows in sorted(report.rows.items()):
        assets.add_row(key, f"{rows:,}")
    out.print(assets)
    checks = Table(title="Asset checks")
    for col in ("asset", "check", "partition", "result", "details"):
        checks.add_column(col)
    for c in report.checks:
        verdict = "[green]passed[/]" if c.passed else "[red]FAILED[/]"
        checks.add_row(c.asset, c.check, c.partition or "-", verdict, c.description)
    out.print(checks)
    runs = Table(title="Runs")
    for col in ("job", "partition", "status", "seconds", "run id"):
        runs.add_column(col)
    for r in report.runs:
        status = "[green]success[/]" if r.success else "[red]FAILURE[/]"
        runs.add_row(r.job, r.partition or "-", status, f"{r.seconds:.1f}", r.run_id[:8])
    out.print(runs)
    verdict = "[bold green]demo OK[/]" if report.ok else "[bold red]demo FAILED[/]"
    out.print(f"{verdict} in {report.seconds:.1f}s; see it in the UI with `make ui`")


@app.command()
def ui(
    home: HomeOption = None,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the web UI.")] = 3000,
) -> None:
    """Start the Dagster web UI and daemon (`dagster dev`) on the project home."""
    try:
        project = ProjectHome.resolve(home).ensure()
    except DataflareError as err:
        _fail(err)
    # The dagster next to this interpreter, so the UI runs in the project's environment.
    sibling = Path(sys.executable).with_name("dagster")
    dagster = str(sibling) if sibling.exists() else shutil.which("dagster") or "dagster"
    env = {**os.environ, **project.environ()}
    console.print(f"Dagster UI on http://{host}:{port} (home {project.root}); Ctrl-C stops it")
    os.execvpe(
        dagster,
        [dagster, "dev", "-m", "dataflare_platform.definitions", "-h", host, "-p", str(port)],
        env,
    )


@bench_app.command("datagen")
def bench_datagen(
    events: Annotated[int, typer.Option(help="Events to generate per repetition.")] = 10_000_000,
    chunk_events: Annotated[int, typer.Option(help="Events per chunk.")] = 1_000_000,
    repeat: Annotated[int, typer.Option(help="Repetitions; the fastest counts.")] = 3,
    files: Annotated[bool, typer.Option(help="Also time writing Parquet files.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = True,
) -> None:
    """Nexmark generator throughput versus a raw-numpy baseline (target: 5 M bids/s)."""
    from dataflare_platform.bench.datagen import run

    result = run(events=events, chunk_events=chunk_events, repeat=repeat, files=files)
    print(json.dumps(result, indent=None if as_json else 2))


@bench_app.command("nexmark")
def bench_nexmark(
    query: Annotated[str, typer.Option(help="q0, q1, q2, q3, q4, q5, q7 or q8.")],
    input_path: Annotated[
        Path | None, typer.Option("--input", help="Bids: a Parquet/Arrow file or directory.")
    ] = None,
    persons: Annotated[Path | None, typer.Option(help="Persons file or directory.")] = None,
    auctions: Annotated[Path | None, typer.Option(help="Auctions file or directory.")] = None,
    output: Annotated[Path | None, typer.Option(help="Write the result as Parquet.")] = None,
    batch_rows: Annotated[int, typer.Option(help="Rows per micro-batch.")] = 10_000,
    rate: Annotated[
        float | None, typer.Option(help="Offered load in events/s (default: as fast as possible).")
    ] = None,
    repeat: Annotated[int, typer.Option(help="Runs of each side; the fastest counts.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = True,
) -> None:
    """Run a Nexmark query on the engine and as a one-shot DuckDB query; print JSON."""
    from dataflare_platform.bench.nexmark import run
    from dataflare_platform.queries.nexmark import QUERIES

    if query not in QUERIES:
        _fail(ValueError(f"--query must be one of {', '.join(QUERIES)}"))
    try:
        result = run(query, input_path, persons, auctions, output, batch_rows, rate, repeat)
    except (ValueError, FileNotFoundError) as err:
        _fail(err)
    print(json.dumps(result, indent=None if as_json else 2))


@bench_app.command("plugins")
def bench_plugins_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = True,
) -> None:
    """WASM plugins against the equivalent Polars work in the same process (JSON lines):
    a numeric map, utf8 masking, and Nexmark q1 with the conversion as a plugin."""
    from dataflare_platform.bench.plugins import bench_plugins

    for result in bench_plugins():
        print(json.dumps(result, indent=None if as_json else 2))


@bench_app.command("events")
def bench_events(
    events: Annotated[
        int, typer.Option(help="Nexmark events to generate (bids used).")
    ] = 2_000_000,
    batch_rows: Annotated[int, typer.Option(help="Rows per append / read.")] = 10_000,
    fsync: Annotated[bool, typer.Option(help="fsync every append.")] = False,
    brokers: Annotated[
        bool, typer.Option(help="Also NATS JetStream and Redis Streams (services must run).")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = True,
) -> None:
    """Event log append/scan throughput and produce-to-consume latency; brokers each way."""
    from dataflare_platform.bench.events import bench_log

    results = [bench_log(events, batch_rows, fsync)]
    if brokers:
        from dataflare_platform.bench.brokers import bench_brokers

        results.extend(bench_brokers(min(events, 200_000), 1_000))
    for result in results:
        print(json.dumps(result, indent=None if as_json else 2))


@nexmark_app.command("run")
def nexmark_run(
    query: Annotated[str, typer.Option(help="q0, q1, q2, q3, q4, q5, q7 or q8.")],
    duckdb_path: Annotated[Path, typer.Option("--duckdb", help="DuckDB file to write.")],
    input_path: Annotated[
        Path | None, typer.Option("--input", help="Bids: a Parquet/Arrow file or directory.")
    ] = None,
    persons: Annotated[Path | None, typer.Option(help="Persons file or directory.")] = None,
    auctions: Annotated[Path | None, typer.Option(help="Auctions file or directory.")] = None,
    table: Annotated[str | None, typer.Option(help="Output table (default nexmark_QUERY).")] = None,
    batch_rows: Annotated[int, typer.Option(help="Rows per micro-batch.")] = 10_000,
    checkpoint_every: Annotated[int, typer.Option(help="Batches per checkpoint.")] = 10,
    rate: Annotated[float | None, typer.Option(help="Pace the source (events/s).")] = None,
) -> None:
    """Run a query into a DuckDB table; rerun the same command to resume after a crash."""
    from dataflare_platform.queries.nexmark import QUERIES
    from dataflare_platform.queries.run import run_to_duckdb

    if query not in QUERIES:
        _fail(ValueError(f"--query must be one of {', '.join(QUERIES)}"))
    try:
        result = run_to_duckdb(
            query,
            duckdb_path,
            input_path,
            persons,
            auctions,
            table,
            batch_rows,
            checkpoint_every,
            rate,
        )
    except (ValueError, FileNotFoundError) as err:
        _fail(err)
    print(json.dumps({"query": query, **result.as_dict()}))


@pipeline_app.command("validate")
def pipeline_validate(spec: Annotated[Path, typer.Argument(help="Pipeline YAML file.")]) -> None:
    """Check a pipeline file; errors name the field."""
    from dataflare_platform.streams.spec import PipelineSpec

    try:
        loaded = PipelineSpec.from_yaml(spec)
    except DataflareError as err:
        _fail(err)
    console.print(f"{spec}: pipeline {loaded.name!r} is valid ({len(loaded.streams)} streams)")


@pipeline_app.command("run")
def pipeline_run(
    spec: Annotated[Path, typer.Argument(help="Pipeline YAML file.")],
    batch_rows: Annotated[int, typer.Option(help="Rows per micro-batch.")] = 10_000,
    checkpoint_every: Annotated[int, typer.Option(help="Batches per checkpoint.")] = 10,
) -> None:
    """Run a pipeline file over its bounded input (resuming from its last checkpoint)."""
    from dataflare_platform.engine import Runner, RunnerConfig
    from dataflare_platform.streams.spec import PipelineSpec

    try:
        pipeline = PipelineSpec.from_yaml(spec).build(bounded=True)
        config = RunnerConfig(batch_rows=batch_rows, checkpoint_every=checkpoint_every)
    except (DataflareError, ValueError, FileNotFoundError) as err:
        _fail(err)
    result = Runner(pipeline, config).run()
    print(json.dumps({"pipeline": pipeline.name, **result.as_dict()}))


if __name__ == "__main__":
    app()
