"""``dataflare scale`` / ``DataflareClient.scale`` through the front with its daemon: a
shipped pipeline (masked_persons: two WASM map plugins into DuckDB) over a 4-partition
topic runs as a worker run that owns every partition; scaling to 0 stops it gracefully
(each partition's last checkpoint committed, the run SUCCESS); scaling up again resumes
each partition from its own checkpoint, until the table holds every person exactly
once; more workers than the sink takes are refused with the reason."""

from __future__ import annotations

import ast
import re

import duckdb
import pytest

from dataflare_platform.events.log import EventLog
from dataflare_platform_tests.e2e.test_stream_sensor import _stop_sensors_except, _wait_for

pytestmark = pytest.mark.e2e

TIMEOUT_S = 300
PIPELINE = "masked_persons"
JOB = f"{PIPELINE}_workers"
STOPPED = re.compile(r"checkpointed at (\{.*\}) and released")


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

    offsets: dict[int, dict[str, int]] = {}
    for _cycle in range(10):  # each cycle resumes from the last one's checkpoints
        (run_id,) = client.scale(PIPELINE, 1).launched
        _wait_for(
            "the worker to own its partitions",
            lambda run_id=run_id: any(
                "owns partitions [0, 1, 2, 3]" in (e.get("message") or "")
                for e in client.logs(run_id)
            ),
            TIMEOUT_S,
        )
        stopped = client.scale(PIPELINE, 0)
        assert stopped.stopped == [run_id] and stopped.launched == []
        assert client.wait(run_id, timeout_s=TIMEOUT_S) == "SUCCESS"
        offsets = _stop_offsets(client, run_id)
        assert set(offsets) == {0, 1, 2, 3}
        if offsets == want:
            break
    assert offsets == want
    with duckdb.connect(str(home.root / "streams" / f"{PIPELINE}.duckdb"), read_only=True) as db:
        ids = [r[0] for r in db.sql(f"SELECT id FROM {PIPELINE}").fetchall()]
        keys = {r[0] for r in db.sql("SELECT pipeline FROM dataflare_checkpoints").fetchall()}
    assert sorted(ids) == sorted(persons.column("id").to_pylist())  # each person once
    assert keys == {f"{PIPELINE}#p{p}" for p in range(4)}

    # Two workers would be two writer processes of one DuckDB file: refused, no retry.
    launched = client.scale(PIPELINE, 2).launched
    assert len(launched) == 2
    for run_id in launched:
        assert client.wait(run_id, timeout_s=TIMEOUT_S) == "FAILURE"
    messages = " ".join(e.get("message") or "" for e in client.logs(launched[0]))
    assert "takes one writer process" in messages
