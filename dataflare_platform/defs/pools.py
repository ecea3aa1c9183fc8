"""Concurrency pools: runs that write the same DuckDB file wait for each other in the
run queue instead of failing on its lock (DuckDB has one writer per file). The instance
gives every pool one slot with run granularity (deployments/local/dagster.yaml)."""

WAREHOUSE_POOL = "dataflare_warehouse"


def stream_pool(pipeline: str) -> str:
    """A stream pipeline's output file and checkpoint: its micro-batch runs, its
    continuous run and replays into it take turns."""
    return f"dataflare_stream_{pipeline}"
