"""Batch fan-out across processes: the daily statistics on real Celery workers.

A Celery worker (``celery -A dataflare_platform.instance.celery_worker worker``, the
command docs/deploy.md gives) runs against the machine's RabbitMQ (127.0.0.1:5672, which
``.ci/run`` starts when it is down), in a virtual host and as a user (random password) of
the test's own, made with ``rabbitmqctl`` and deleted at the end, so no other run's tasks
reach this worker and none of this test's are left behind. The broker URL reaches both
the runs and the worker only through ``DATAFLARE_CELERY_BROKER_URL``.

The test loads the warehouse tables, then runs ``nexmark_daily_stats_celery_job`` for
every day of the landed data (what a backfill does: one run per day) in the home's real
Dagster instance (SQLite under the temporary ``DAGSTER_HOME``, which the worker opens by
path). Each run must succeed with its three steps executed by the worker's pool process
(their events' pid is a child of the worker, not this process; dagster-celery's own
engine event names the worker), the worker's log must show each task, the warehouse must
hold the days' rows, and the broker's password must appear in no log, event or file. The
second test does the same through a backfill that the real daemon submits.
"""

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.reconstruct import ReconstructableRepository

from dataflare_platform.client import DataflareClient
from dataflare_platform.datagen import SCHEMAS
from dataflare_platform.deployment_settings import CELERY_BROKER_ENV
from dataflare_platform.home import ProjectHome
from dataflare_platform.sql_names import quote_identifier
from dataflare_platform.warehouse.connection import connect
from dataflare_platform.warehouse.loader import load_table
from dataflare_platform_tests.conftest import REPO_ROOT
from dataflare_platform_tests.e2e.conftest import stop_group
from dataflare_platform_tests.waits import wait_until

pytestmark = pytest.mark.e2e

JOB = "nexmark_daily_stats_celery_job"
DAILY_TABLES = ("daily_seller_stats", "daily_category_stats", "daily_person_activity")
RABBITMQ_PORT = 5672
CEILING_S = 300  # the worker's start (a few seconds here)
BACKFILL_CEILING_S = 900  # the daemon's backfill of two days (about 30 s here)


def _rabbitmq_answers() -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", RABBITMQ_PORT)) == 0


def _rabbitmqctl(*args: str) -> None:
    done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"rabbitmqctl {args[0]}: {done.stderr or done.stdout}"


class Broker:
    def __init__(self, url: str, password: str) -> None:
        self.url = url
        self.password = password


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    """A RabbitMQ virtual host and user (random password) of this test's own on the local
    broker, as the deployment's broker setting; both deleted (with any queue left in the
    host) at the end."""
    assert shutil.which("rabbitmqctl"), "RabbitMQ's rabbitmqctl is not installed"
    assert _rabbitmq_answers(), f"RabbitMQ does not answer on 127.0.0.1:{RABBITMQ_PORT}"
    suffix = secrets.token_hex(4)
    vhost, user = f"dataflare-e2e-{suffix}", f"dataflare-e2e-{suffix}"
    # A leading "-" would read as an option to rabbitmqctl: the password starts with a letter.
    password = "p" + secrets.token_urlsafe(18)
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("add_user", user, password)
        _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        url = f"amqp://{user}:{password}@127.0.0.1:{RABBITMQ_PORT}/{vhost}"
        monkeypatch.setenv(CELERY_BROKER_ENV, url)
        yield Broker(url, password)
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_user", user], capture_output=True, timeout=60)
        _rabbitmqctl("delete_vhost", vhost)


class CeleryWorker:
    def __init__(self, proc: subprocess.Popen, name: str, log_path: Path) -> None:
        self.proc = proc
        self.name = name
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def celery_worker(broker: Broker, landed_home: ProjectHome, tmp_path: Path):
    """One Celery worker (a main process and one pool process: the daily statistics all
    write warehouse.duckdb, one writer at a time) with the test's environment (home,
    DAGSTER_HOME, broker); stopped, its process group with it, at the end."""
    log_path = tmp_path / "celery-worker.log"
    name = f"dataflare-e2e-{secrets.token_hex(3)}@{socket.gethostname()}"
    command = [
        *(str(Path(sys.executable).parent / "celery"), "-A"),
        *("dataflare_platform.instance.celery_worker", "worker"),
        *("--concurrency", "1", "--prefetch-multiplier", "1", "--loglevel", "INFO"),
        *("-n", name),
        *("--without-gossip", "--without-mingle", "--without-heartbeat"),
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=os.environ.copy(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    worker = CeleryWorker(proc, name, log_path)
    try:

        def ready() -> bool:
            assert proc.poll() is None, f"the Celery worker exited:\n{worker.log()}"
            return " ready." in worker.log()

        wait_until("the Celery worker is ready", ready, timeout_s=CEILING_S)
        yield worker
    finally:
        stop_group(proc, grace_s=30)


def _parent_pid(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return None
    found = re.search(r"^PPid:\s+(\d+)", status, re.MULTILINE)
    return int(found.group(1)) if found else None


def _days(home: ProjectHome) -> list[str]:
    with connect(home.warehouse_path) as conn:
        rows = conn.execute(
            "SELECT DISTINCT CAST(CAST(date_time AS DATE) AS VARCHAR) AS day FROM bids ORDER BY day"
        ).fetchall()
    return [day for (day,) in rows]


STEPS = frozenset("nexmark__" + table for table in DAILY_TABLES)


def _load_warehouse(home: ProjectHome) -> list[str]:
    """Load the landed tables (the data-plane loader the table assets call); the days of
    data, which the daily statistics partition by."""
    with connect(home.warehouse_path) as conn:
        for kind in ("persons", "auctions", "bids"):
            assert load_table(conn, kind, home.nexmark_dir / kind, SCHEMAS[kind]).rows
    days = _days(home)
    assert len(days) >= 2  # SMALL_CONFIG spans two UTC days
    return days


def _assert_steps_ran_on(worker: CeleryWorker, instance: dg.DagsterInstance, run_id: str):
    """Every step of the run was taken by ``worker`` and ran in its pool process (not in
    the run's own process), and materialized its asset."""
    records = instance.all_logs(run_id)
    # dagster-celery's task reports each step it takes, with the worker's name.
    delegated = {
        r.step_key: r.dagster_event.event_specific_data.metadata["Celery worker"].value
        for r in records
        if r.dagster_event
        and r.dagster_event.event_type == dg.DagsterEventType.ENGINE_EVENT
        and "in celery worker" in (r.dagster_event.message or "")
    }
    assert delegated == dict.fromkeys(STEPS, worker.name), run_id
    step_pids = {
        r.step_key: r.dagster_event.pid
        for r in records
        if r.dagster_event and r.dagster_event.event_type == dg.DagsterEventType.STEP_START
    }
    assert set(step_pids) == STEPS, run_id
    run_pids = {
        r.dagster_event.pid
        for r in records
        if r.dagster_event and r.dagster_event.event_type == dg.DagsterEventType.RUN_START
    }
    assert run_pids and run_pids.isdisjoint(step_pids.values())
    for step, pid in step_pids.items():
        assert _parent_pid(pid) == worker.proc.pid, (step, pid)
    materialized = {
        r.step_key
        for r in records
        if r.dagster_event
        and r.dagster_event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
    }
    assert materialized == STEPS, run_id


def _assert_worker_log_and_warehouse(worker: CeleryWorker, home: ProjectHome, days: list[str]):
    # The worker's own log shows each step's task received and succeeded (the platform's
    # JSON log handler repeats some lines: tasks are counted by id).
    log = worker.log()
    received = set(re.findall(r"Task execute_plan\[([^\]]+)\] received", log))
    succeeded = set(re.findall(r"Task execute_plan\[([^\]]+)\] succeeded", log))
    assert len(received) == len(STEPS) * len(days), log[-4000:]
    assert succeeded == received, log[-4000:]
    # What the steps computed reached the warehouse: rows for the days run, no others.
    with connect(home.warehouse_path) as conn:
        for table in DAILY_TABLES:
            quoted = quote_identifier(table)
            rows = conn.execute(f"SELECT DISTINCT CAST(day AS VARCHAR) FROM {quoted}").fetchall()
            stored = {day for (day,) in rows}
            assert stored and stored <= set(days), table


def test_daily_stats_run_on_the_celery_workers(celery_worker, landed_home, broker):
    days = _load_warehouse(landed_home)
    # The run carries the code location's own origin (the module the code server loads),
    # so the worker reconstructs the job from it as it would in a deployment.
    recon = ReconstructableRepository.for_module(
        "dataflare_platform.definitions", "defs", str(REPO_ROOT)
    ).get_reconstructable_job(JOB)
    with dg.DagsterInstance.get() as instance:  # the home's instance (DAGSTER_HOME)
        for day in days:  # one run per day, as a backfill submits them
            with dg.execute_job(
                recon, instance=instance, tags={"dagster/partition": day}, raise_on_error=False
            ) as result:
                failures = [e.message for e in result.all_events if e.is_failure]
                assert result.success, (day, failures, celery_worker.log()[-4000:])
                run_id = result.run_id
            _assert_steps_ran_on(celery_worker, instance, run_id)
            assert os.getpid() not in {
                r.dagster_event.pid
                for r in instance.all_logs(run_id)
                if r.dagster_event and r.dagster_event.is_step_event
            }
    _assert_worker_log_and_warehouse(celery_worker, landed_home, days)

    # The broker's password (in DATAFLARE_CELERY_BROKER_URL only) is nowhere in the worker's
    # log, the runs' event logs or any file under the home (the instance's SQLite storage,
    # compute logs, the warehouse).
    assert broker.password not in celery_worker.log()
    with dg.DagsterInstance.get() as instance:
        for run in instance.get_runs():
            for record in instance.all_logs(run.run_id):
                assert broker.password not in str(record), run.run_id
            assert broker.password not in str(run.run_config) + str(run.tags)
    needle = broker.password.encode()
    for path in landed_home.root.rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), path


def test_backfill_through_the_daemon_runs_on_the_celery_workers(
    celery_worker, webserver, daemon, landed_home
):
    """A backfill of the Celery job over every day, accepted by the front and submitted
    by the real daemon: each day's run is launched by the code server (a run worker of
    its own, which inherits the broker setting from the deployment's environment) and
    hands its steps to the Celery worker."""
    days = _load_warehouse(landed_home)
    client = DataflareClient(port=webserver, timeout_s=120)
    backfill_id = client.backfill(
        JOB, partition_range=(days[0], days[-1]), tags={"launched_by": "test_celery_fanout"}
    )
    status = client.wait_backfill(backfill_id, timeout_s=BACKFILL_CEILING_S)
    assert status.status == "COMPLETED_SUCCESS", (status, celery_worker.log()[-4000:])
    assert set(status.runs) == set(days)  # one run per day, all green
    assert {run_status for _, run_status in status.runs.values()} == {"SUCCESS"}
    with dg.DagsterInstance.get() as instance:
        for run_id, _ in status.runs.values():
            _assert_steps_ran_on(celery_worker, instance, run_id)
    _assert_worker_log_and_warehouse(celery_worker, landed_home, days)
