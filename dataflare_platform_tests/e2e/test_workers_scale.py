"""``dataflare scale`` / ``DataflareClient.scale`` through the front with its daemon: a
shipped pipeline (masked_persons: two WASM map plugins into DuckDB) over a 4-partition
topic runs as a worker run that owns every partition; scaling to 0 stops it gracefully
(each partition's last checkpoint committed, the run SUCCESS); scaling up again resumes
each partition from its own checkpoint, until the table holds every person exactly
once; more workers than the sink takes are refused with the reason."""

from __future__ import annotations

import ast
import os
import re
import signal
import time

import duckdb
import pytest

from dataflare_platform.events.log import EventLog
from dataflare_platform.sql_names import quote_identifier
from dataflare_platform_tests.e2e.test_continuous_restart import PID, RUNS_QUERY
from dataflare_platform_tests.e2e.test_stream_sensor import _stop_sensors_except
from dataflare_platform_tests.waits import wait_until

pytestmark = pytest.mark.e2e

TIMEOUT_S = 300
PIPELINE = "masked_persons"
JOB = f"{PIPELINE}_workers"
STOPPED = re.compile(r"checkpointed at (\{.*\}) and released")


@pytest.fixture
def dagster_yaml_overrides() -> dict:
    """The shipped settings with a faster monitoring loop; retries stay as shipped."""
    return {"run_monitoring": {"poll_interval_seconds": 2}}


def _owns_all(client, run_id: str) -> bool:
    """The worker runs every partition: each has committed once in this run."""
    messages = [e.get("message") or "" for e in client.logs(run_id)]
    return all(any(f"partition {p} first commit at" in m for m in messages) for p in range(4))


def _scale_until_done(client, want: dict, running: str | None = None) -> None:
    """Stop the worker (``running``, else a new one), read the offsets its partitions
    stopped at; start another from those checkpoints until they are ``want``."""
    offsets: dict[int, dict[str, int]] = {}
    for _cycle in range(10):
        run_id = running or client.scale(PIPELINE, 1).launched[0]
        running = None
        wait_until(
            "the worker to own its partitions",
            lambda r=run_id: _owns_all(client, r),
            TIMEOUT_S,
            poll_s=0.5,
        )
        stopped = client.scale(PIPELINE, 0)
        assert stopped.stopped == [run_id] and stopped.launched == []
        assert client.wait(run_id, timeout_s=TIMEOUT_S) == "SUCCESS"
        offsets = _stop_offsets(client, run_id)
        assert set(offsets) == {0, 1, 2, 3}
        if offsets == want:
            return
    assert offsets == want


def _check_table(home, persons) -> None:
    with duckdb.connect(str(home.root / "streams" / f"{PIPELINE}.duckdb"), read_only=True) as db:
        ids = [r[0] for r in db.sql(f"SELECT id FROM {quote_identifier(PIPELINE)}").fetchall()]
        keys = {r[0] for r in db.sql("SELECT pipeline FROM dataflare_checkpoints").fetchall()}
    assert sorted(ids) == sorted(persons.column("id").to_pylist())  # each person once
    # The units' checkpoints and the pipeline's own key, retired (``streams.split``).
    assert keys == {PIPELINE, *(f"{PIPELINE}#p{p}" for p in range(4))}


def _stop_offsets(client, run_id: str) -> dict[int, dict[str, int]]:
    for event in client.logs(run_id):
        found = STOPPED.search(event.get("message") or "")
        if found:
            return ast.literal_eval(found.group(1))  # the worker's own repr of the offsets
    return {}


def test_scale_runs_workers_stops_them_gracefully_and_resumes_each_partition(
    dagster_dev, home, small_nexmark
):
    client = dagster_dev
    _stop_sensors_except(client)  # the micro-batch job must not run the pipeline meanwhile
    persons = small_nexmark["persons"]
    topic = EventLog(home.event_log_dir).create_topic(
        "nexmark.persons", persons.schema, partitions=4, key="id"
    )
    topic.append(persons)
    ends = topic.committed_ends()
    want = {p: {f"persons/{p}": ends[p]} for p in range(4)}

    _scale_until_done(client, want)
    _check_table(home, persons)

    # Two workers would be two writer processes of one DuckDB file: refused, no retry.
    launched = client.scale(PIPELINE, 2).launched
    assert len(launched) == 2
    for run_id in launched:
        assert client.wait(run_id, timeout_s=TIMEOUT_S) == "FAILURE"
    messages = " ".join(e.get("message") or "" for e in client.logs(launched[0]))
    assert "takes one writer process" in messages


def test_a_killed_worker_run_is_retried_and_resumes_its_partitions(
    dagster_dev, home, small_nexmark
):
    """SIGKILL of the worker run's process: run monitoring marks it FAILED, Dagster's run
    retries launch it again (the job allows 3), its leases died with the process, and the
    retry resumes every partition from its last commit: each person once in the end."""
    client = dagster_dev
    _stop_sensors_except(client)
    persons = small_nexmark["persons"]
    topic = EventLog(home.event_log_dir).create_topic(
        "nexmark.persons", persons.schema, partitions=4, key="id"
    )
    half = persons.num_rows // 2
    topic.append(persons.slice(0, half))
    (run_id,) = client.scale(PIPELINE, 1).launched
    wait_until(
        "the worker to own its partitions", lambda: _owns_all(client, run_id), TIMEOUT_S, poll_s=0.5
    )

    pid = next(
        int(m.group(1)) for e in client.logs(run_id) if (m := PID.search(e.get("message") or ""))
    )
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    wait_until(
        "the killed worker run to be FAILED",
        lambda: client.status(run_id) == "FAILURE",
        TIMEOUT_S,
        poll_s=0.5,
    )
    detected = time.monotonic() - killed
    topic.append(persons.slice(half))  # produced while no worker runs

    def retry() -> str | None:
        runs = client.query(RUNS_QUERY, {"job": JOB})["runsOrError"]["results"]
        return next((r["runId"] for r in runs if r["parentRunId"] == run_id), None)

    retried = wait_until("the automatic retry", retry, TIMEOUT_S, poll_s=0.5)
    wait_until(
        "the retry to own the partitions", lambda: _owns_all(client, retried), TIMEOUT_S, poll_s=0.5
    )
    resumed = time.monotonic() - killed
    ends = topic.committed_ends()
    _scale_until_done(client, {p: {f"persons/{p}": ends[p]} for p in range(4)}, retried)
    messages = " ".join(e.get("message") or "" for e in client.logs(retried))
    assert "automatic restart 1 of worker 0" in messages
    _check_table(home, persons)
    print(f"\nworker SIGKILL -> FAILED {detected:.2f} s, retry owns partitions {resumed:.2f} s")
