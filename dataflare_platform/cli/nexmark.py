"""``dataflare nexmark``: Nexmark queries on the streaming engine, into DuckDB."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dataflare_platform.cli._common import UsageError, command_group, print_json

nexmark_app = command_group(help="Nexmark queries on the streaming engine.")

QueryOption = Annotated[
    str, typer.Option(help="A Nexmark query, q0 … q22 (an unknown name is refused with the list).")
]
InputOption = Annotated[
    Path | None, typer.Option("--input", help="Bids: a Parquet/Arrow file or directory.")
]
PersonsOption = Annotated[Path | None, typer.Option(help="Persons file or directory.")]
AuctionsOption = Annotated[Path | None, typer.Option(help="Auctions file or directory.")]


def check_query(query: str) -> None:
    from dataflare_platform.queries.nexmark import QUERIES

    if query not in QUERIES:
        raise UsageError(f"--query must be one of {', '.join(QUERIES)}")


@nexmark_app.command("run")
def nexmark_run(
    query: QueryOption,
    duckdb_path: Annotated[
        Path | None, typer.Option("--duckdb", help="DuckDB file to write.")
    ] = None,
    dataset: Annotated[
        Path | None,
        typer.Option(help="Parquet dataset folder to write instead (q10: by date and hour)."),
    ] = None,
    input_path: InputOption = None,
    persons: PersonsOption = None,
    auctions: AuctionsOption = None,
    table: Annotated[str | None, typer.Option(help="Output table (default nexmark_QUERY).")] = None,
    batch_rows: Annotated[int, typer.Option(help="Rows per micro-batch.")] = 10_000,
    checkpoint_every: Annotated[int, typer.Option(help="Batches per checkpoint.")] = 10,
    rate: Annotated[float | None, typer.Option(help="Pace the source (events/s).")] = None,
) -> None:
    """Run a query into a DuckDB table or a Parquet dataset; rerun the same command to
    resume after a crash."""
    from dataflare_platform.queries.run import run_to_dataset, run_to_duckdb

    check_query(query)
    if (duckdb_path is None) == (dataset is None):
        raise UsageError("give one of --duckdb or --dataset")
    if dataset is not None:
        if table is not None:
            raise UsageError("--table goes with --duckdb")
        result = run_to_dataset(
            query, dataset, input_path, persons, auctions, batch_rows, checkpoint_every, rate
        )
        print_json({"query": query, **result.as_dict()})
        return
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
    print_json({"query": query, **result.as_dict()})
