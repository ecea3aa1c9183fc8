"""Rows the PostgreSQL instance storage gains per run (docs/capacity.md): starts the
production topology on a fresh database with the e2e tests' small code location,
launches RUNS one-op runs through the front, and counts per run what run storage
(runs, run_tags) and event-log storage (event_logs) hold, plus pg_stat_database's
tuple counters over the whole window (which include the daemon's own writes).

    .venv/bin/python deployments/production/measure_run_writes.py [RUNS]
"""

import json
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg

from dataflare_platform.client import DataflareClient
from dataflare_platform.gateway.topology import PostgresTarget, running_topology
from dataflare_platform.sql_names import quote_identifier


def _stats(env: dict[str, str]) -> dict[str, int]:
    with psycopg.connect(
        host=env["DAGSTER_PG_HOST"],
        port=int(env["DAGSTER_PG_PORT"]),
        user=env["DAGSTER_PG_USERNAME"],
        dbname=env["DAGSTER_PG_DB"],
    ) as conn:
        row = conn.execute(
            "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
    return dict(
        zip(("xact_commit", "tup_inserted", "tup_updated", "tup_deleted"), row, strict=True)
    )


def _per_run(env: dict[str, str], run_ids: list[str]) -> dict[str, float]:
    with psycopg.connect(
        host=env["DAGSTER_PG_HOST"],
        port=int(env["DAGSTER_PG_PORT"]),
        user=env["DAGSTER_PG_USERNAME"],
        dbname=env["DAGSTER_PG_DB"],
    ) as conn:
        counts = {}
        for table in ("runs", "run_tags", "event_logs"):
            (n,) = conn.execute(
                f"SELECT count(*) FROM {quote_identifier(table)} WHERE run_id = ANY(%s)", (run_ids,)
            ).fetchone()
            counts[f"{table}_rows_per_run"] = n / len(run_ids)
    return counts


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    target = PostgresTarget(db_name=f"dataflare_measure_{uuid.uuid4().hex[:8]}")
    try:
        with (
            tempfile.TemporaryDirectory() as root,
            running_topology(
                Path(root), target, code_module="dataflare_platform_tests.e2e.prod_topology_defs"
            ) as topology,
        ):
            token = topology.front.service_token("measure", ("editor",))
            client = DataflareClient(port=topology.front.port, timeout_s=60, token=token)
            before = _stats(topology.env)
            run_ids = []
            for _ in range(runs):
                run_id = client.launch_job("hello_job")
                assert client.wait(run_id, timeout_s=600) == "SUCCESS"
                run_ids.append(run_id)
            after = _stats(topology.env)
            window = {f"{k}_delta_per_run": (after[k] - before[k]) / runs for k in before}
            print(json.dumps({"runs": runs, **_per_run(topology.env, run_ids), **window}))
    finally:
        target.drop()


if __name__ == "__main__":
    main()
