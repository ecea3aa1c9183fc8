"""A continuous run whose worker is SIGKILLed (what the OOM killer or a ``kill -9`` does)
under the real front (``dataflare ui``: webserver app, daemon, code server) on a temporary
DAGSTER_HOME with the shipped instance settings: the run is marked FAILED, Dagster's run
retries (``run_retries`` in ``dagster.yaml`` + the job's ``dagster/max_retries`` tag) launch
exactly one new run that waits its backoff and resumes from the checkpoint, the warehouse
ends with exactly what an uninterrupted engine run over the same bids gives, and once the
run group has used its retries a further crash is not restarted.

Nothing is simulated: the worker is the real ``multiprocessing`` child the code server
spawns for the run, found through the run's own "Started process for run (pid: N)" event.
"""

import os
import re
import signal
import time
from pathlib import Path

import pytest

from dataflare_platform.client import DataflareClient
from dataflare_platform.defs.streams.continuous import (
    ATTEMPT_TAG,
    MAX_RESTARTS,
    MAX_RETRIES_TAG,
    WILL_RETRY_TAG,
)
from dataflare_platform.events.log import EventLog
from dataflare_platform_tests.e2e.test_stream_sensor import (
    _check_output,
    _stop_sensors_except,
)
from dataflare_platform_tests.waits import wait_until

pytestmark = pytest.mark.e2e

JOB = "hot_items_continuous"
CONFIG = {
    "ops": {
        f"run_{JOB}": {
            "config": {
                "checkpoint_interval_s": 0.5,
                "progress_interval_s": 0.5,
                "restart_backoff_s": 1.0,
            }
        }
    }
}
RUNS_QUERY = """
query Runs($job: String!) {
  runsOrError(filter: {pipelineName: $job}) {
    ... on Runs { results { runId status parentRunId rootRunId tags { key value } } }
  }
}
"""
PID = re.compile(r"Started process for run \(pid: (\d+)\)")
# Each wait spans a queued launch (daemon dequeue + a spawned worker importing the code
# location): ~10 s idle, several times that on a loaded 2-core machine.
WAIT_S = 240.0


@pytest.fixture
def dagster_yaml_overrides() -> dict:
    """The shipped settings with a faster monitoring loop; retries stay as shipped."""
    return {"run_monitoring": {"poll_interval_seconds": 2}}


def _runs(client: DataflareClient) -> dict[str, dict]:
    """The continuous job's runs by id, each with its tags as a dict."""
    results = client.query(RUNS_QUERY, {"job": JOB})["runsOrError"]["results"]
    return {r["runId"]: {**r, "tags": {t["key"]: t["value"] for t in r["tags"]}} for r in results}


def _worker_pid(client: DataflareClient, run_id: str) -> int:
    """The pid of the run's worker process, from the run's own start event."""

    def pid() -> int | None:
        for event in client.logs(run_id):
            if match := PID.search(event["message"] or ""):
                return int(match.group(1))
        return None

    found = wait_until(f"the worker pid of {run_id}", pid, WAIT_S, poll_s=0.5)
    cmdline = Path(f"/proc/{found}/cmdline").read_bytes()
    assert b"python" in cmdline and b"multiprocessing" in cmdline, cmdline
    return found


def _crash(client: DataflareClient, run_id: str) -> float:
    """SIGKILL the run's worker; wait until the run is FAILED; return the seconds that took."""
    pid = _worker_pid(client, run_id)
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    wait_until(
        f"{run_id} to be FAILED", lambda: client.status(run_id) == "FAILURE", WAIT_S, poll_s=0.5
    )
    detected = time.monotonic() - killed
    messages = [e["message"] or "" for e in client.logs(run_id)]
    assert any(
        f"Run execution process for {run_id} was terminated by signal 9" in m for m in messages
    )
    return detected


def _retry_of(client: DataflareClient, run_id: str) -> dict:
    """Wait for the run Dagster launched as the automatic retry of ``run_id``."""

    def child() -> dict | None:
        runs = _runs(client)
        return next((r for r in runs.values() if r["parentRunId"] == run_id), None)

    return wait_until(f"an automatic retry of {run_id}", child, WAIT_S, poll_s=0.5)


def test_killed_worker_is_restarted_from_its_checkpoint_a_bounded_number_of_times(
    dagster_dev, home, small_nexmark
):
    client = dagster_dev
    _stop_sensors_except(client)  # restarts need no sensor; other runs would only queue
    bids = small_nexmark["bids"]
    parts = [bids.slice(0, 1000), bids.slice(1000, 1000), bids.slice(2000)]
    topic = EventLog(home.event_log_dir).create_topic("nexmark.bids", bids.schema)
    topic.append(parts[0])

    def metadata_reaches(total: int) -> dict:
        meta = client.asset_metadata("streams/hot_items")
        return meta if meta.get("events_in_total") == total else {}

    # One retry allowed for this launch (the job's own tag says MAX_RESTARTS).
    first = client.launch_job(JOB, run_config=CONFIG, tags={MAX_RETRIES_TAG: "1"})
    wait_until("the first checkpoint", lambda: metadata_reaches(1000), WAIT_S, poll_s=0.5)
    first_detected = _crash(client, first)
    topic.append(parts[1])  # produced while the pipeline is down

    retry = _retry_of(client, first)
    assert retry["tags"][ATTEMPT_TAG] == "1" and retry["rootRunId"] == first
    assert retry["tags"][MAX_RETRIES_TAG] == "1"  # the launch's bound travels with the group
    assert _runs(client)[first]["tags"][WILL_RETRY_TAG] == "true"
    meta = wait_until("the retry's checkpoint", lambda: metadata_reaches(2000), WAIT_S, poll_s=0.5)
    assert meta["events_in"] == parts[1].num_rows  # resumed: nothing read twice, none lost
    assert meta["offsets"] == {"bids/0": 2000}
    messages = [e["message"] or "" for e in client.logs(retry["runId"])]
    assert any(
        f"automatic restart 1 of 1 (after run {first}); resuming in 1 s" in m for m in messages
    )

    topic.append(parts[2])
    wait_until(
        "the retry's second checkpoint", lambda: metadata_reaches(bids.num_rows), WAIT_S, poll_s=0.5
    )
    second_detected = _crash(client, retry["runId"])
    assert _runs(client)[retry["runId"]]["tags"][WILL_RETRY_TAG] == "false"

    # A fresh launch is a new run group with the job's own bound. Its crash is retried,
    # which shows the retry daemon has consumed the failures before it, including the
    # retry's above, and launched nothing for that one.
    fresh = client.launch_job(JOB, run_config=CONFIG)
    _crash(client, fresh)
    fresh_retry = _retry_of(client, fresh)
    assert fresh_retry["tags"][ATTEMPT_TAG] == "1"
    assert fresh_retry["tags"][MAX_RETRIES_TAG] == str(MAX_RESTARTS)
    runs = _runs(client)
    assert not [r for r in runs.values() if r["parentRunId"] == retry["runId"]]
    assert len(runs) == 4  # first, its one retry, fresh, its retry: no double relaunch

    # Wait for the op itself (its restart line), not only the run's STARTED status: a run is
    # STARTED while its step still waits for the pipeline's pool slot, which the crashed run
    # gives back only once it is marked FAILED, and a terminate before the step begins ends
    # the run CANCELED (Dagster's own semantics: nothing had started to stop gracefully).
    fresh_retry_id = fresh_retry["runId"]
    wait_until(
        "the fresh retry's op to begin",
        lambda: any(
            "automatic restart 1 of" in (e["message"] or "") for e in client.logs(fresh_retry_id)
        ),
        WAIT_S,
        poll_s=0.5,
    )
    client.terminate(fresh_retry_id)
    # A graceful stop (here during the backoff or the loop): the step succeeds, so the run
    # ends SUCCESS (no STEP_FAILURE).
    assert client.wait(fresh_retry_id, timeout_s=WAIT_S) == "SUCCESS"
    _check_output(home, bids)  # each closed window once, as the uninterrupted run has it
    print(f"\nkill -> FAILURE observed after {first_detected:.2f} s and {second_detected:.2f} s")
