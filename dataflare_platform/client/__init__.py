"""A small Python client for launching and watching runs through Dagster's GraphQL API.

It talks to a running web server (``make ui`` / ``dataflare ui`` starts one on
127.0.0.1:3000)::

    from dataflare_platform.client import DataflareClient

    client = DataflareClient(port=3000)
    run_id = client.launch_job("nexmark_ingest_job", tags={"who": "me"})
    client.wait(run_id, timeout_s=600)  # "SUCCESS"
    client.runs(limit=5, statuses=["FAILURE"])  # [RunInfo(...), ...]
    client.asset_metadata("nexmark/bids")  # {"dagster/row_count": 123, ...}
    run_id = client.materialize(["nexmark/daily_seller_stats"], partition="2024-01-01")
    backfill_id = client.backfill(
        "nexmark_daily_stats_job", partition_range=("2026-01-01", "2026-01-07")
    )
    client.wait_backfill(backfill_id, timeout_s=1800)  # "COMPLETED_SUCCESS"

Split by role: ``transport`` (HTTP, DagsterGraphQLClient), ``documents`` (the GraphQL it
sends), ``results`` (parsing answers into plain values), ``errors`` and ``client`` (the
class). Every failure is a ``DataflareClientError`` whose message says what to fix.
``launch_job`` and ``materialize`` check the partition key against the server's
partitions before launching (``partitions``): a partitioned target needs an existing key
(``MissingPartitionError``, ``UnknownPartitionError`` naming the nearest keys,
``MalformedPartitionError``), an unpartitioned one refuses a key
(``NotPartitionedError``).

Runs are launched by the server's run coordinator: with the default (queued) coordinator
a run waits in QUEUED until ``dagster-daemon`` picks it up, which ``dagster dev`` (``make
ui``) runs next to the web server.
"""

from dataflare_platform.client.client import CLIENT_TAG, DataflareClient
from dataflare_platform.client.errors import (
    BackfillNotFoundError,
    BackfillTimeoutError,
    ConfigProblem,
    DataflareClientError,
    LaunchError,
    MalformedPartitionError,
    MissingPartitionError,
    NotPartitionedError,
    PartitionError,
    RunConfigError,
    RunNotFoundError,
    RunTimeoutError,
    ServerUnreachableError,
    UnknownAssetError,
    UnknownJobError,
    UnknownPartitionError,
)
from dataflare_platform.client.results import (
    ASSET_JOB,
    BACKFILL_TERMINAL_STATUSES,
    PARTITION_TAG,
    RUN_STATUSES,
    TERMINAL_STATUSES,
    AssetKeyLike,
    BackfillStatus,
    JobRef,
    RunInfo,
    asset_key_path,
    config_problem,
)

__all__ = [
    "ASSET_JOB",
    "BACKFILL_TERMINAL_STATUSES",
    "CLIENT_TAG",
    "PARTITION_TAG",
    "RUN_STATUSES",
    "TERMINAL_STATUSES",
    "AssetKeyLike",
    "BackfillNotFoundError",
    "BackfillStatus",
    "BackfillTimeoutError",
    "ConfigProblem",
    "DataflareClient",
    "DataflareClientError",
    "JobRef",
    "LaunchError",
    "MalformedPartitionError",
    "MissingPartitionError",
    "NotPartitionedError",
    "PartitionError",
    "RunConfigError",
    "RunInfo",
    "RunNotFoundError",
    "RunTimeoutError",
    "ServerUnreachableError",
    "UnknownAssetError",
    "UnknownJobError",
    "UnknownPartitionError",
    "asset_key_path",
    "config_problem",
]
