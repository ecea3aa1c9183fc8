"""One writer per DuckDB file, between runs and between the steps of one run.

DuckDB lets one process open a file for writing (and no other process may open it at
all meanwhile), so everything that opens one must take turns. Two Dagster mechanisms
do that, one per level:

- **Between runs: concurrency pools.** Every asset or op writing a file declares its
  pool (below); the instance gives each pool one slot with *run* granularity
  (``dagster.yaml`` written by ``ProjectHome.ensure``), so the run queue holds a run
  while another run holds the pool.
- **Between the steps of one run: the executor's tag limits.** With run granularity
  Dagster does not claim pool slots step by step (a launched run owns its pools), so
  the multiprocess executor would start a job's three warehouse loads at once and all
  but one would fail on the file lock (seen on 8 M generated events). Every step that
  opens a file carries ``DUCKDB_FILE_TAG`` = the file's pool, and ``executor`` (the
  code location's default executor, also set on the jobs that need it) runs at most one
  step per tag value at a time, each still in its own process.

Why not ``granularity: op`` instead: the instance has a single granularity for all
pools. With op granularity a step holds its slot in the instance's storage, so a
killed continuous run (SIGKILL, OOM) would keep its pipeline's slot until the daemon
frees it (``free_slots_after_run_end_seconds``) and its retry would wait on it; and
runs are dequeued while a long continuous step holds the slot, then wait inside the
run, holding a worker process. Why not a lock file around DuckDB connections: a waiting
step would be invisible in the UI, and the executor already schedules steps by tag.
Steps that open different files (each stream pipeline's own file) still run side by
side.
"""

from pathlib import Path

import dagster as dg

from dataflare_platform.compliance.datasets import WAREHOUSE_FILE, DatasetRef

WAREHOUSE_POOL = "dataflare_warehouse"
DUCKDB_FILE_TAG = "dataflare/duckdb_file"
STREAMS_DIR = "streams"


def stream_pool(pipeline: str) -> str:
    """A stream pipeline's output file and checkpoint: its micro-batch runs, its
    continuous run and replays into it take turns."""
    return f"dataflare_stream_{pipeline}"


def duckdb_file_tags(pool: str) -> dict[str, str]:
    """Op tags of a step that opens the DuckDB file guarded by ``pool``."""
    return {DUCKDB_FILE_TAG: pool}


def dataset_tags(ref: DatasetRef | None) -> dict[str, str]:
    """Op tags of a step that reads a governed dataset: its DuckDB file's pool (the
    warehouse, a stream pipeline's output, or the file's own path); none for Parquet
    folders and topics, which readers share with writers safely."""
    if ref is None or ref.duckdb is None:
        return {}
    path = Path(ref.duckdb.path)
    if path == Path(WAREHOUSE_FILE):
        return duckdb_file_tags(WAREHOUSE_POOL)
    if len(path.parts) == 2 and path.parts[0] == STREAMS_DIR and path.suffix == ".duckdb":
        return duckdb_file_tags(stream_pool(path.stem))
    return duckdb_file_tags(f"dataflare_duckdb:{path}")


executor = dg.multiprocess_executor.configured(
    {
        "tag_concurrency_limits": [
            {
                "key": DUCKDB_FILE_TAG,
                "value": {"applyLimitPerUniqueValue": True},
                "limit": 1,
            }
        ]
    },
    name="multiprocess_one_writer_per_duckdb_file",
)
