"""nexmark_ingest_job under the multiprocess executor on data large enough that its steps
would overlap: every step opens warehouse.duckdb, and DuckDB lets one process hold the
file, so the executor must run them one at a time (each in its own process).

4 M generated events were measured to reproduce ``IOException: Could not set lock on
file`` before the fix (a load holds the file longer than the connection's retries wait;
2 M did not, 8 M did: docs/operations.md). The run must succeed, and the instance's
event log must show the warehouse steps never overlapping — which fails before the fix
at any size, since the three loads start together."""

import itertools

import dagster as dg
import pytest

from dataflare_platform.datagen import NexmarkConfig, write_nexmark
from dataflare_platform.sql_names import quote_identifier
from dataflare_platform.warehouse.connection import connect

pytestmark = pytest.mark.e2e

EVENTS = 4_000_000


def ingest_job() -> dg.JobDefinition:
    """The shipped job, rebuilt in every step process of the multiprocess executor."""
    from dataflare_platform.definitions import defs

    return defs.resolve_job_def("nexmark_ingest_job")


def test_ingest_job_keeps_one_warehouse_step_at_a_time(home):
    summary = write_nexmark(NexmarkConfig(events=EVENTS), home.nexmark_dir)
    job = ingest_job()
    # Every step opens the warehouse but the freshness check (it reads the instance).
    warehouse_steps = {n for n in job.graph.node_dict if not n.startswith("freshness_check")}
    assert {"nexmark__persons", "nexmark__auctions", "nexmark__bids"} <= warehouse_steps
    recon = dg.build_reconstructable_job(__name__, ingest_job.__name__)

    with dg.DagsterInstance.get() as instance:  # the home's instance (DAGSTER_HOME)
        with dg.execute_job(recon, instance=instance, raise_on_error=False) as result:
            failures = [e.message for e in result.all_events if e.is_step_failure]
            assert result.success, failures
            run_id = result.run_id
        records = instance.all_logs(
            run_id,
            of_type={
                dg.DagsterEventType.STEP_START,
                dg.DagsterEventType.STEP_SUCCESS,
                dg.DagsterEventType.STEP_FAILURE,
            },
        )

    spans: dict[str, list[float]] = {}
    pids = set()
    for record in records:
        if record.step_key in warehouse_steps:
            spans.setdefault(record.step_key, []).append(record.timestamp)
            pids.add(record.dagster_event.pid)
    assert spans.keys() == warehouse_steps
    assert len(pids) == len(warehouse_steps)  # multiprocess: one process per step
    ordered = sorted((min(t), max(t), step) for step, t in spans.items())
    for (_, end, step), (start, _, following) in itertools.pairwise(ordered):
        assert end <= start, f"{following} started while {step} held the warehouse"

    with connect(home.warehouse_path) as conn:
        for kind, rows in summary.rows.items():
            counted = conn.execute(f"SELECT count(*) FROM {quote_identifier(kind)}").fetchall()
            assert counted[0][0] == rows
