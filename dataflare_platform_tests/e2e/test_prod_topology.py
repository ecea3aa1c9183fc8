"""The production topology (deployments/production) as separate processes on loopback, on
a PostgreSQL database of this module's own (created and dropped by the fixture): sensor-
and client-launched runs succeed; the daemon killed and started again resumes its sensor
without a duplicate run (run keys); the webserver restarted loses nothing; the code server
killed mid-run (with its run worker) gets the run failed by run monitoring and retried
once it is back."""

import os
import re
import signal
import time
import uuid
from collections import Counter

import pytest

from dataflare_platform.client import DataflareClient
from dataflare_platform.gateway.topology import PostgresTarget, Topology, running_topology
from dataflare_platform.instance.run_launcher import SERVER_ID_TAG, process_alive
from dataflare_platform_tests.e2e.prod_topology_defs import RUN_KEYS, release_tags

pytestmark = pytest.mark.e2e

CEILING_S = 600.0
MONITORING_CEILING_S = 180.0  # run monitoring polls every 15 s (deployments/production)
RUN_KEY_TAG = "dagster/run_key"
PARENT_RUN_TAG = "dagster/parent_run_id"
WORKER_STARTED = re.compile(r"Started process for run \(pid: (\d+)\)")


@pytest.fixture(scope="module")
def topology(tmp_path_factory):
    target = PostgresTarget(db_name=f"dataflare_e2e_{uuid.uuid4().hex[:12]}")
    root = tmp_path_factory.mktemp("prod_topology")
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("XDG_CONFIG_HOME", str(root / "xdg-config"))
            with running_topology(
                root, target, code_module="dataflare_platform_tests.e2e.prod_topology_defs"
            ) as running:
                yield running
    finally:
        target.drop()


def _client(topology: Topology) -> DataflareClient:
    assert topology.front is not None
    token = topology.front.service_token("e2e-prod", ("editor",))
    return DataflareClient(port=topology.front.port, timeout_s=60, token=token)


def _sensor_runs(client: DataflareClient) -> list:
    return client.runs(job="keyed_job", limit=100)


def _wait_sensor_runs_done(client: DataflareClient) -> list:
    deadline = time.monotonic() + CEILING_S
    while time.monotonic() < deadline:
        runs = _sensor_runs(client)
        if len(runs) >= len(RUN_KEYS) and all(run.status == "SUCCESS" for run in runs):
            return runs
        assert not [run for run in runs if run.status in ("FAILURE", "CANCELED")], runs
        time.sleep(1)
    pytest.fail(f"sensor runs not all SUCCESS within {CEILING_S}s: {_sensor_runs(client)}")


def _sensor_ticks(topology: Topology) -> int:
    """Ticks of keyed_sensor recorded so far (the daemon's progress)."""
    import psycopg

    env = topology.env
    with psycopg.connect(
        host=env["DAGSTER_PG_HOST"],
        port=int(env["DAGSTER_PG_PORT"]),
        user=env["DAGSTER_PG_USERNAME"],
        dbname=env["DAGSTER_PG_DB"],
    ) as conn:
        row = conn.execute("SELECT count(*) FROM job_ticks WHERE type = 'SENSOR'").fetchone()
    return int(row[0])


def test_sensor_and_client_runs_succeed(topology):
    client = _client(topology)
    run_id = client.launch_job("hello_job", tags={"launched_by": "test_prod_topology"})
    assert client.wait(run_id, timeout_s=CEILING_S) == "SUCCESS"
    runs = _wait_sensor_runs_done(client)
    assert sorted(run.tags[RUN_KEY_TAG] for run in runs) == sorted(RUN_KEYS)


def test_daemon_restart_resumes_sensor_without_duplicates(topology):
    client = _client(topology)
    _wait_sensor_runs_done(client)
    topology.stop("daemon", grace_s=0)  # killed, not drained
    before = _sensor_ticks(topology)
    topology.start("daemon")
    deadline = time.monotonic() + CEILING_S
    while _sensor_ticks(topology) < before + 3:  # the sensor ticks again, three times
        assert time.monotonic() < deadline, "sensor did not resume after the daemon restart"
        time.sleep(1)
    runs = _sensor_runs(client)
    assert Counter(run.tags[RUN_KEY_TAG] for run in runs) == Counter(RUN_KEYS)


def test_webserver_restart_loses_nothing(topology):
    client = _client(topology)
    run_id = client.launch_job("hello_job")
    assert client.wait(run_id, timeout_s=CEILING_S) == "SUCCESS"
    before = {run.run_id: run.status for run in client.runs(limit=100)}
    topology.stop("front")
    topology.start("front")  # same port, same home and instance
    client = _client(topology)
    after = {run.run_id: run.status for run in client.runs(limit=100)}
    assert after == before
    assert client.run(run_id).status == "SUCCESS"


def _until(what: str, ceiling_s: float, probe):
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` after the
    ceiling."""
    deadline = time.monotonic() + ceiling_s
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}: not within {ceiling_s}s"
        time.sleep(0.5)


def _worker(client: DataflareClient, run_id: str) -> tuple[int, float] | None:
    """The run worker's pid and start event time, once the run is STARTED."""
    if client.status(run_id) != "STARTED":
        return None
    for event in client.logs(run_id):
        found = WORKER_STARTED.search(event["message"] or "")
        if found:
            return int(found.group(1)), event["timestamp"]
    return None


def test_code_server_killed_mid_run_fails_the_run_and_the_retry_succeeds(topology, tmp_path):
    client = _client(topology)
    release = tmp_path / "release"
    run_id = client.launch_job(
        "long_job", tags={**release_tags(release), "dagster/max_retries": "1"}
    )
    pid, started_at = _until("run STARTED", CEILING_S, lambda: _worker(client, run_id))
    assert SERVER_ID_TAG in client.run(run_id).tags
    topology.kill("code_server")  # SIGKILL: the server and its run workers, one group
    if process_alive(pid, started_at):
        os.kill(pid, signal.SIGKILL)
    _until("run worker gone", 60, lambda: not process_alive(pid, started_at))
    assert client.status(run_id) == "STARTED"  # nobody else would ever change it
    release.write_text("the retry may finish")
    topology.start("code_server")  # back on the same port, a new server id
    _until("run FAILURE", MONITORING_CEILING_S, lambda: client.status(run_id) == "FAILURE")
    messages = " ".join(event["message"] or "" for event in client.logs(run_id))
    assert "Detected run worker status FAILED" in messages
    assert f"pid {pid}" in messages and "was restarted" in messages

    def retry():
        runs = client.runs(job="long_job", limit=20)
        return [run for run in runs if run.tags.get(PARENT_RUN_TAG) == run_id]

    (retried,) = _until("retry run", MONITORING_CEILING_S, retry)
    assert client.wait(retried.run_id, timeout_s=CEILING_S) == "SUCCESS"
