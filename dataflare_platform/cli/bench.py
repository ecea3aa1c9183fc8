"""``dataflare bench``: benchmarks, each printing JSON measured against a baseline in the
same run (method: docs/benchmarks.md). The benchmark code is imported by the commands."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from dataflare_platform.cli._common import command_group, print_json
from dataflare_platform.cli.nexmark import (
    AuctionsOption,
    InputOption,
    PersonsOption,
    QueryOption,
    check_query,
)

bench_app = command_group(help="Benchmarks; each prints one JSON object.")

JsonOnly = Annotated[bool, typer.Option("--json", help="Print JSON only.")]


@bench_app.command("datagen")
def bench_datagen(
    events: Annotated[int, typer.Option(help="Events to generate per repetition.")] = 10_000_000,
    chunk_events: Annotated[int, typer.Option(help="Events per chunk.")] = 1_000_000,
    repeat: Annotated[int, typer.Option(help="Repetitions; the fastest counts.")] = 3,
    files: Annotated[bool, typer.Option(help="Also time writing Parquet files.")] = True,
    as_json: JsonOnly = True,
) -> None:
    """Nexmark generator throughput versus a raw-numpy baseline (target: 5 M bids/s)."""
    from dataflare_platform.bench.datagen import run

    result = run(events=events, chunk_events=chunk_events, repeat=repeat, files=files)
    print_json(result, indent=None if as_json else 2)


@bench_app.command("nexmark")
def bench_nexmark(
    query: QueryOption,
    input_path: InputOption = None,
    persons: PersonsOption = None,
    auctions: AuctionsOption = None,
    output: Annotated[Path | None, typer.Option(help="Write the result as Parquet.")] = None,
    batch_rows: Annotated[int, typer.Option(help="Rows per micro-batch.")] = 10_000,
    rate: Annotated[
        float | None, typer.Option(help="Offered load in events/s (default: as fast as possible).")
    ] = None,
    repeat: Annotated[int, typer.Option(help="Runs of each side; the fastest counts.")] = 1,
    checkpoint_every: Annotated[
        int | None,
        typer.Option(help="Batches between checkpoints (default: the engine's, 50)."),
    ] = None,
    duckdb_sink: Annotated[
        bool,
        typer.Option(
            "--duckdb",
            help="Write to a DuckDB table in a temporary file (a transactional sink: it"
            " checkpoints during the run, so cold_start.first_commit_s is the first"
            " checkpoint's commit).",
        ),
    ] = False,
    otel: Annotated[
        bool,
        typer.Option(
            "--otel",
            help="Also run with metrics and 1 % trace sampling on, and off, interleaved (plus"
            " metrics only and every run traced); the ratios are under 'otel'.",
        ),
    ] = False,
    baseline: Annotated[
        str,
        typer.Option(
            "--baseline",
            help="duckdb: the one-shot DuckDB query only; microbatch: also a hand-written"
            " Polars loop over the same batches (q0, q1, q2, q5, q7), reported as"
            " ratio_vs_microbatch beside the DuckDB ratio.",
        ),
    ] = "duckdb",
    ttl: Annotated[
        str | None,
        typer.Option(
            help="q18/q19: forget a key idle this long in event time (e.g. 60s), which bounds"
            " their state; exact while no key gets a row after it.",
        ),
    ] = None,
    as_json: JsonOnly = True,
) -> None:
    """Run a Nexmark query on the engine and as a one-shot DuckDB query; print JSON."""
    from dataflare_platform.bench.nexmark import run

    check_query(query)
    result = run(
        query,
        input_path,
        persons,
        auctions,
        output,
        batch_rows,
        rate,
        repeat,
        otel=otel,
        checkpoint_every=checkpoint_every,
        duckdb_sink=duckdb_sink,
        baseline=baseline,
        ttl=ttl,
    )
    print_json(result, indent=None if as_json else 2)


@bench_app.command("nexmark-trace")
def bench_nexmark_trace(
    query: QueryOption,
    input_path: InputOption = None,
    persons: PersonsOption = None,
    auctions: AuctionsOption = None,
    batch_rows: Annotated[int, typer.Option(help="Rows per micro-batch.")] = 10_000,
    rate: Annotated[
        float | None, typer.Option(help="Offered load in events/s (0: as fast as possible).")
    ] = 1_000_000,
    ttl: Annotated[str | None, typer.Option(help="q18/q19: as for 'bench nexmark'.")] = None,
    as_json: JsonOnly = True,
) -> None:
    """One engine run of a Nexmark query with every operator call, keyed-store merge and
    store-filter build timed: what ran while the slowest batches waited; print JSON."""
    from dataflare_platform.bench.batch_trace import run

    check_query(query)
    result = run(query, input_path, persons, auctions, batch_rows, rate or None, ttl)
    print_json(result, indent=None if as_json else 2)


@bench_app.command("checkpoint")
def bench_checkpoint(
    rows: Annotated[int, typer.Option(help="Rows of the synthetic keyed state.")] = 6_000_000,
    repeat: Annotated[int, typer.Option(help="Runs of each side; the fastest counts.")] = 3,
    as_json: JsonOnly = True,
) -> None:
    """Encode and decode a large operator state against the joined-parts baseline."""
    from dataflare_platform.bench.checkpoint import run

    print_json(run(rows=rows, repeat=repeat), indent=None if as_json else 2)


@bench_app.command("restart")
def bench_restart(
    events: Annotated[int, typer.Option(help="Nexmark events to generate (bids are ~92 %).")] = (
        2_000_000
    ),
    batch_rows: Annotated[int, typer.Option(help="Rows per micro-batch.")] = 10_000,
    checkpoint_every: Annotated[int, typer.Option(help="Batches between checkpoints.")] = 2,
    as_json: JsonOnly = True,
) -> None:
    """A windowed stream pipeline started in a fresh process to half of its topic, then
    restarted from that checkpoint in another: time to the first committed output and
    p99 of the first 20 batches, first start beside restart; print JSON."""
    from dataflare_platform.bench.restart import run

    result = run(events=events, batch_rows=batch_rows, checkpoint_every=checkpoint_every)
    print_json(result, indent=None if as_json else 2)


@bench_app.command("gateway")
def bench_gateway(
    workspace: Annotated[
        Path, typer.Option(help="Workspace file whose code location the query lists.")
    ] = Path("workspace.yaml"),
    requests_per_side: Annotated[
        int, typer.Option("--requests", min=10, help="Timed requests per side.")
    ] = 1000,
    query: Annotated[
        str,
        typer.Option(
            help="repositories (a small listing) or permissions (what the UI asks at each "
            "page load, decided by the policy behind the front)."
        ),
    ] = "repositories",
    as_json: JsonOnly = True,
) -> None:
    """p50/p99 of a GraphQL query through the web front versus the bare webserver app,
    both served by this process (target: the front adds at most 5 ms p99)."""
    from dataflare_platform.cli._common import UsageError
    from dataflare_platform.gateway.bench import QUERIES, run

    if not workspace.is_file():
        raise UsageError(f"--workspace {workspace}: no such file")
    if query not in QUERIES:
        raise UsageError(f"--query {query}: one of {', '.join(QUERIES)}")
    print_json(run(workspace, requests_per_side, query=query), indent=None if as_json else 2)


@bench_app.command("plugins")
def bench_plugins_command(
    as_json: JsonOnly = True,
    suite: Annotated[
        str,
        typer.Option(
            "--suite", help="all, runtime (plugin throughput) or marketplace (signed registry)."
        ),
    ] = "all",
    repeat: Annotated[
        int, typer.Option(help="Marketplace: installs, verifies and cold checks timed.")
    ] = 20,
    loads: Annotated[int, typer.Option(help="Marketplace: loads timed on each side.")] = 200,
) -> None:
    """WASM plugins against the equivalent Polars work in the same process (JSON lines):
    a numeric map, utf8 masking, and Nexmark q1 with the conversion as a plugin; and the
    signed registry: install and verify time, the load check cold (TUF refresh) and warm,
    and a plugin load with and without verification, side by side."""
    from dataflare_platform.cli._common import UsageError

    if suite not in {"all", "runtime", "marketplace"}:
        raise UsageError(f"--suite {suite}: all, runtime or marketplace")
    if suite in {"all", "runtime"}:
        from dataflare_platform.bench.plugins import bench_plugins

        for result in bench_plugins():
            print_json(result, indent=None if as_json else 2)
    if suite in {"all", "marketplace"}:
        from dataflare_platform.marketplace.benchmark import run

        print_json(run(repeat=repeat, loads=loads), indent=None if as_json else 2)


@bench_app.command("plugin-usage")
def bench_plugin_usage_command(
    rows: Annotated[int, typer.Option(help="Rows per batch (small: the worst case).")] = 1024,
    calls: Annotated[int, typer.Option(help="Calls per round and side.")] = 500,
    rounds: Annotated[int, typer.Option(help="Alternating rounds.")] = 41,
    flush_interval_s: Annotated[float, typer.Option(help="Usage flush interval.")] = 0.05,
    as_json: JsonOnly = True,
) -> None:
    """Plugin calls with and without usage statistics attached (same plugin, same batches,
    alternating rounds): the ratio of the per-call times."""
    from dataflare_platform.bench.plugin_usage import bench_usage_overhead

    result = bench_usage_overhead(rows, calls, rounds, flush_interval_s)
    print_json(result, indent=None if as_json else 2)


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
    as_json: JsonOnly = True,
) -> None:
    """Event log append/scan throughput and produce-to-consume latency; brokers each way."""
    from dataflare_platform.bench.events import bench_log

    results = [bench_log(events, batch_rows, fsync)]
    if brokers:
        from dataflare_platform.bench.brokers import bench_brokers

        results.extend(bench_brokers(min(events, 200_000), 1_000))
    for result in results:
        print_json(result, indent=None if as_json else 2)


@bench_app.command("cli")
def bench_cli(
    repeat: Annotated[int, typer.Option(min=1, help="Runs of each side; the fastest counts.")] = 5,
    as_json: JsonOnly = True,
) -> None:
    """`dataflare --help` start-up (wall and CPU) against `python -c pass` and a minimal
    typer app, each in a fresh interpreter; lists heavy libraries --help imported."""
    from dataflare_platform.bench.cli import run

    print_json(run(repeat=repeat), indent=None if as_json else 2)


@bench_app.command("pipeline")
def bench_pipeline_command(
    pipeline: Annotated[str, typer.Option(help="Shipped pipeline to measure.")] = "hot_items",
    events: Annotated[int, typer.Option(min=1, help="Bids produced per sample.")] = 2_000,
    samples: Annotated[int, typer.Option(min=1, help="Samples per mode.")] = 7,
    sensor_interval: Annotated[
        int, typer.Option(min=1, help="DATAFLARE_SENSOR_INTERVAL in seconds.")
    ] = 5,
    mode: Annotated[
        list[str] | None, typer.Option(help="micro_batch and/or continuous (default both).")
    ] = None,
    code_path: Annotated[
        Path | None,
        typer.Option(
            help="Load the code location from this source tree (e.g. an export of "
            "another commit) to compare it; the benchmark itself runs from here."
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Ceiling of each wait, seconds.")] = 300.0,
    as_json: JsonOnly = True,
) -> None:
    """Produce-to-visible latency of a pipeline under the real UI (`dataflare ui`), in micro-batch
    mode (sensor-launched runs) and continuous mode, and each run's overhead around its
    step; baseline: the engine alone on the same events (JSON lines)."""
    from dataflare_platform.bench.pipeline import bench_pipeline
    from dataflare_platform.client import DataflareClient
    from dataflare_platform.gateway.process import running_front

    modes = tuple(mode or ("micro_batch", "continuous"))
    unknown = sorted(set(modes) - {"micro_batch", "continuous"})
    if unknown:
        raise typer.BadParameter(f"unknown mode(s) {unknown}", param_hint="--mode")

    @contextlib.contextmanager
    def serve(home, env: dict[str, str], log_path: Path, timeout_s: float):
        """The front as ``dataflare ui`` starts it; an editor's token (the benchmark stops
        every sensor but the measured pipeline's)."""
        with running_front(home, log_path, env=env, ceiling_s=timeout_s) as front:
            token = front.service_token("dataflare-bench", ("editor",))
            yield DataflareClient(port=front.port, timeout_s=60, token=token)

    results = bench_pipeline(
        serve,
        pipeline=pipeline,
        events=events,
        samples=samples,
        sensor_interval_s=sensor_interval,
        modes=modes,
        timeout_s=timeout,
        code_path=code_path,
    )
    for result in results:
        print_json(result, indent=None if as_json else 2)


@bench_app.command("crypto")
def bench_crypto(
    batch_rows: Annotated[int, typer.Option(min=1, help="Values per batch.")] = 65_536,
    repeat: Annotated[int, typer.Option(min=1, help="Runs of each side; the fastest counts.")] = 7,
    as_json: JsonOnly = True,
) -> None:
    """Column encryption and decryption (AES-256-GCM, deterministic AES-SIV) of 64 k-row
    batches of 16-64-byte strings and of int64, against a plain copy of the same column
    in the same process (target: 1 M values/s per core for encryption)."""
    from dataflare_platform.bench.crypto import run

    print_json(run(batch_rows=batch_rows, repeat=repeat), indent=None if as_json else 2)


@bench_app.command("audit")
def bench_audit(
    entries: Annotated[int, typer.Option(min=1, help="Entries appended per round.")] = 2000,
    repeat: Annotated[
        int, typer.Option(min=1, help="Rounds of each side; the fastest counts.")
    ] = 5,
    postgres_url: Annotated[
        str | None,
        typer.Option(
            "--postgres-url",
            help="Also measure on this PostgreSQL server (a scratch schema, dropped after).",
        ),
    ] = None,
    as_json: JsonOnly = True,
) -> None:
    """Audit appends with entry authenticators (HMAC-SHA256 at append) against the same
    append without them, in the same process; ratio = authenticated / plain throughput."""
    from dataflare_platform.bench.common import machine
    from dataflare_platform.compliance.audit_bench import run

    result = {
        **run(entries=entries, repeat=repeat, postgres_url=postgres_url),
        "machine": machine(),
    }
    print_json(result, indent=None if as_json else 2)


@bench_app.command("scale")
def bench_scale(
    events: Annotated[
        int, typer.Option(min=1000, help="Nexmark events generated (bids are ~92 %).")
    ] = 60_000_000,
    query: Annotated[list[str] | None, typer.Option(help="q1 and/or q5 (default both).")] = None,
    batch_rows: Annotated[int, typer.Option(min=1, help="Rows per micro-batch.")] = 65_536,
    checkpoint_interval: Annotated[
        float, typer.Option(min=0.01, help="Seconds between commits (the end is seen within).")
    ] = 0.1,
    repeat: Annotated[int, typer.Option(min=1, help="Runs of each side; the fastest counts.")] = 1,
    recovery_events: Annotated[
        int, typer.Option(min=1000, help="Events of the recovery runs (PostgreSQL sink).")
    ] = 2_000_000,
    postgres_url: Annotated[
        str,
        typer.Option(
            "--postgres-url",
            help="PostgreSQL for the recovery run (a scratch schema, dropped after).",
        ),
    ] = "postgresql://postgres@127.0.0.1:5432/postgres",
    recovery: Annotated[
        bool, typer.Option(help="Also SIGKILL a worker and time its replacement.")
    ] = True,
    timeout: Annotated[float, typer.Option(help="Ceiling of each run, seconds.")] = 600.0,
    pin_cores: Annotated[
        bool,
        typer.Option(
            help="Also measure with each worker process pinned to a core of its own and"
            " one Polars thread (the per-core speed-up, beside the machine's total)."
        ),
    ] = False,
    as_json: JsonOnly = True,
) -> None:
    """Nexmark q1 and q5 (keyed) over a 4-partition topic as 1 and as 2 worker processes,
    side by side: events/s of each and the speed-up (target 1.6x on q1 with 2 workers),
    output compared; with --pin-cores again with a core per worker; then the recovery
    time after SIGKILLing one of 2 workers."""
    from dataflare_platform.bench.scale import run

    result = run(
        events=events,
        recovery_events=recovery_events,
        queries=tuple(query or ("q1", "q5")),
        batch_rows=batch_rows,
        checkpoint_interval=checkpoint_interval,
        repeat=repeat,
        dsn=postgres_url if recovery else None,
        timeout_s=timeout,
        pin_cores=pin_cores,
    )
    print_json(result, indent=None if as_json else 2)
