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
hold the days' rows, and the broker's password must appear in no log, event or file.
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

from dataflare_platform.datagen import SCHEMAS
from dataflare_platform.deployment_settings import CELERY_BROKER_ENV
from dataflare_platform.home import ProjectHome
from dataflare_platform.warehouse.connection import connect
from dataflare_platform.warehouse.loader import load_table
from dataflare_platform_tests.conftest import REPO_ROOT
from dataflare_platform_tests.e2e.conftest import stop_group
from dataflare_platform_tests.waits import wait_until

pytestmark = pytest.mark.e2e

JOB = "nexmark_daily_stats_celery_job"
DAILY_TABLES = ("daily_seller_stats", "daily_category_stats", "daily_person_activity")
RABBITMQ_PORT = 5672
CEILING_S = 300  # worker start, and each run (about 10 s here)


def _rabbitmq_answers() -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", RABBITMQ_PORT)) == 0


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


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
    password = secrets.token_urlsafe(18)
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


def test_daily_stats_run_on_the_celery_workers(celery_worker, landed_home, broker):
    with connect(landed_home.warehouse_path) as conn:
        for kind in ("persons", "auctions", "bids"):
            assert load_table(conn, kind, landed_home.nexmark_dir / kind, SCHEMAS[kind]).rows
    days = _days(landed_home)
    assert len(days) >= 2  # SMALL_CONFIG spans two UTC days

    # The run carries the code location's own origin (the module the code server loads),
    # so the worker reconstructs the job from it as it would in a deployment.
    recon = ReconstructableRepository.for_module(
        "dataflare_platform.definitions", "defs", str(REPO_ROOT)
    ).get_reconstructable_job(JOB)
    steps = {"nexmark__" + table for table in DAILY_TABLES}
    with dg.DagsterInstance.get() as instance:  # the home's instance (DAGSTER_HOME)
        for day in days:  # what a backfill over the range submits: one run per day
            with dg.execute_job(
                recon, instance=instance, tags={"dagster/partition": day}, raise_on_error=False
            ) as result:
                failures = [e.message for e in result.all_events if e.is_failure]
                assert result.success, (day, failures, celery_worker.log()[-4000:])
                run_id = result.run_id

            records = instance.all_logs(run_id)
            # dagster-celery's task reports each step it takes, with the worker's name.
            delegated = {
                r.step_key: r.dagster_event.event_specific_data.metadata["Celery worker"].value
                for r in records
                if r.dagster_event
                and r.dagster_event.event_type == dg.DagsterEventType.ENGINE_EVENT
                and "in celery worker" in (r.dagster_event.message or "")
            }
            assert delegated == dict.fromkeys(steps, celery_worker.name), day
            step_pids = {
                r.step_key: r.dagster_event.pid
                for r in records
                if r.dagster_event and r.dagster_event.event_type == dg.DagsterEventType.STEP_START
            }
            assert set(step_pids) == steps, day
            # Every step ran in the worker's pool process, none in this (the run's) process.
            assert os.getpid() not in step_pids.values()
            for step, pid in step_pids.items():
                assert _parent_pid(pid) == celery_worker.proc.pid, (step, pid)
            materialized = {
                r.step_key
                for r in records
                if r.dagster_event
                and r.dagster_event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
            }
            assert materialized == steps, day

    # The worker's own log shows each step's task received and succeeded (the platform's
    # JSON log handler repeats some lines: tasks are counted by id).
    log = celery_worker.log()
    received = set(re.findall(r"Task execute_plan\[([^\]]+)\] received", log))
    succeeded = set(re.findall(r"Task execute_plan\[([^\]]+)\] succeeded", log))
    assert len(received) == len(steps) * len(days), log[-4000:]
    assert succeeded == received, log[-4000:]
    # What the steps computed reached the warehouse: rows for the days run, no others.
    with connect(landed_home.warehouse_path) as conn:
        for table in DAILY_TABLES:
            rows = conn.execute(f"SELECT DISTINCT CAST(day AS VARCHAR) FROM {table}").fetchall()
            stored = {day for (day,) in rows}
            assert stored and stored <= set(days), table

    # The broker's password (in DATAFLARE_CELERY_BROKER_URL only) is nowhere in the worker's
    # log, the runs' event logs or any file under the home (the instance's SQLite storage,
    # compute logs, the warehouse).
    assert broker.password not in log
    with dg.DagsterInstance.get() as instance:
        for run in instance.get_runs():
            for record in instance.all_logs(run.run_id):
                assert broker.password not in str(record), run.run_id
            assert broker.password not in str(run.run_config) + str(run.tags)
    needle = broker.password.encode()
    for path in landed_home.root.rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), path
