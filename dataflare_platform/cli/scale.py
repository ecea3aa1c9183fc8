"""``dataflare scale PIPELINE --workers N``: run a stream pipeline as N partition-parallel
workers on a running Dagster web server (``DataflareClient.scale``): the running workers
stop gracefully, N new worker runs are launched, each taking its partitions as soon as
their previous owner has let go."""

from __future__ import annotations

from typing import Annotated

import typer

from dataflare_platform.cli._common import WebserverHost, WebserverPort, client, print_json


def scale(
    pipeline: Annotated[str, typer.Argument(help="The stream pipeline's name.")],
    workers: Annotated[
        int, typer.Option("--workers", min=0, help="How many workers (0 stops them all).")
    ],
    host: WebserverHost = "127.0.0.1",
    port: WebserverPort = 3000,
) -> None:
    """Run PIPELINE as --workers partition-parallel workers (one run each).

    Prints JSON: the worker runs stopped and launched. A pipeline that cannot be split by
    partition (state not keyed by the sources' partition column, more workers than
    partitions, running as one run) fails its worker runs with the reason.
    """
    print_json(client(host, port).scale(pipeline, workers).as_dict())
