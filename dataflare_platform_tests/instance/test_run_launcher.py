"""MonitoredRunLauncher against real parts: a Dagster instance on a temporary home, a real
gRPC code server (``dagster api grpc``) serving ``prod_topology_defs``, runs launched
through it whose workers are real processes, killed with SIGKILL."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from dagster import DagsterInstance
from dagster._core.launcher import WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus, RunsFilter
from dagster._core.storage.tags import MAX_RETRIES_TAG
from dagster._core.test_utils import create_run_for_test, instance_for_test
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import GrpcServerTarget
from dagster._daemon.monitoring.run_monitoring import monitor_started_run
from dagster._grpc.client import DagsterGrpcClient

from dataflare_platform.gateway.process import LOOPBACK, free_port
from dataflare_platform.instance.run_launcher import (
    SERVER_ID_TAG,
    MonitoredRunLauncher,
    _server_runs,
    local_address,
    process_alive,
)
from dataflare_platform_tests.e2e.prod_topology_defs import release_tags

LOCATION = "monitored"
CEILING_S = 120.0
DEFS_MODULE = "dataflare_platform_tests.e2e.prod_topology_defs"


def _launcher(visible: bool | None = None, retries: bool = True) -> dict:
    config = {} if visible is None else {"config": {"run_workers_visible": visible}}
    return {
        "run_launcher": {
            "module": "dataflare_platform.instance.run_launcher",
            "class": "MonitoredRunLauncher",
            **config,
        },
        "run_retries": {"enabled": retries},
    }


RELEASES: list[Path] = []


@contextmanager
def _settled(instance: DagsterInstance) -> Iterator[DagsterInstance]:
    """At the end: release every launched run (a killed run worker leaves its step process,
    multiprocess executor, polling for the release file) and fail the runs whose worker a
    test killed, as the daemon's run monitoring would (the instance waits for its runs)."""
    try:
        yield instance
    finally:
        for path in RELEASES:
            path.write_text("teardown")
        RELEASES.clear()
        for record in instance.get_run_records():
            run = record.dagster_run
            event = instance.run_launcher._worker_event(run)
            if (
                run.status == DagsterRunStatus.STARTED
                and event is not None
                and not process_alive(event[0], event[1])
            ):
                instance.report_run_failed(run, "its worker was killed by the test")


@pytest.fixture
def instance(tmp_path) -> Iterator[DagsterInstance]:
    with (
        instance_for_test(overrides=_launcher(), temp_dir=str(tmp_path)) as inst,
        _settled(inst),
    ):
        yield inst


class CodeServer:
    """``dagster api grpc`` (or, ``proxy``, ``dagster code-server start`` as in production)
    on a fixed loopback port, startable again on the same port."""

    def __init__(self, log: Path, proxy: bool = False):
        self.port = free_port()
        self.log = log
        self.command = ("code-server", "start") if proxy else ("api", "grpc")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        dagster = str(Path(sys.executable).with_name("dagster"))
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                [
                    *(dagster, *self.command, "-m", DEFS_MODULE),
                    *("-h", LOOPBACK, "-p", str(self.port)),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + CEILING_S
        while True:
            try:
                self.client().ping("up")
                return
            except Exception:
                assert self.proc.poll() is None, self.log.read_text()[-2000:]
                assert time.monotonic() < deadline, "code server not serving"
                time.sleep(0.2)

    def client(self) -> DagsterGrpcClient:
        return DagsterGrpcClient(port=self.port, host=LOOPBACK)

    def kill(self) -> None:
        """SIGKILL the server process only (its run workers are left as they are)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def server(tmp_path) -> Iterator[CodeServer]:
    code_server = CodeServer(tmp_path / "code_server.log")
    code_server.start()
    try:
        yield code_server
    finally:
        code_server.stop()


@contextmanager
def _workspace(instance: DagsterInstance, server: CodeServer):
    target = GrpcServerTarget(host=LOOPBACK, port=server.port, socket=None, location_name=LOCATION)
    with WorkspaceProcessContext(instance, target) as context:
        yield context.create_request_context()


def _launch(instance, server, release: Path, tags: dict | None = None) -> DagsterRun:
    RELEASES.append(release)
    with _workspace(instance, server) as workspace:
        location = workspace.get_code_location(LOCATION)
        repository = next(iter(location.get_repositories().values()))
        remote_job = repository.get_full_job("long_job")
        run = create_run_for_test(
            instance,
            job_name="long_job",
            tags={**release_tags(release), **(tags or {})},
            remote_job_origin=remote_job.get_remote_origin(),
            job_code_origin=remote_job.get_python_origin(),
        )
        instance.launch_run(run.run_id, workspace)
    return _wait_status(instance, run.run_id, DagsterRunStatus.STARTED)


def _wait_status(instance, run_id: str, status: DagsterRunStatus) -> DagsterRun:
    deadline = time.monotonic() + CEILING_S
    while True:
        run = instance.get_run_by_id(run_id)
        if run.status == status:
            return run
        assert not run.is_finished, f"run {run_id} ended {run.status}, not {status}"
        assert time.monotonic() < deadline, f"run {run_id} not {status} but {run.status}"
        time.sleep(0.2)


def _worker_pid(launcher: MonitoredRunLauncher, run: DagsterRun) -> int:
    event = launcher._worker_event(run)
    assert event is not None
    return event[0]


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + CEILING_S
    while process_alive(pid, time.time()):
        assert time.monotonic() < deadline, f"pid {pid} still alive"
        time.sleep(0.1)


def test_dagster_monitors_the_launcher(instance):
    launcher = instance.run_launcher
    assert isinstance(launcher, MonitoredRunLauncher)
    assert launcher.supports_check_run_worker_health
    assert not launcher.supports_resume_run


def test_launch_records_server_id_and_a_running_worker_is_healthy(instance, server, tmp_path):
    release = tmp_path / "release"
    run = _launch(instance, server, release)
    assert run.tags[SERVER_ID_TAG] == server.client().get_server_id()
    health = instance.run_launcher.check_run_worker_health(run)
    assert health.status == WorkerStatus.RUNNING, health
    release.write_text("go")
    _wait_status(instance, run.run_id, DagsterRunStatus.SUCCESS)


def test_the_production_code_server_answers_the_health_check(instance, tmp_path):
    """``dagster code-server start`` (a proxy over a ``dagster api grpc`` child) as in the
    production topology: it lacks GetCurrentRuns, the check asks CanCancelExecution."""
    proxy = CodeServer(tmp_path / "proxy.log", proxy=True)
    proxy.start()
    try:
        release = tmp_path / "release"
        run = _launch(instance, proxy, release)
        assert run.tags[SERVER_ID_TAG] == proxy.client().get_server_id()
        health = instance.run_launcher.check_run_worker_health(run)
        assert health.status == WorkerStatus.RUNNING, health
        assert "runs it" in health.msg
        release.write_text("go")
        _wait_status(instance, run.run_id, DagsterRunStatus.SUCCESS)
    finally:
        proxy.stop()


def test_worker_gone_while_its_server_is_up_fails(instance, server, tmp_path):
    run = _launch(instance, server, tmp_path / "release")
    launcher = instance.run_launcher
    _kill(_worker_pid(launcher, run))
    deadline = time.monotonic() + CEILING_S
    # The server forgets the run once it notices its worker exited.
    while _server_runs(server.client(), run.run_id):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    health = launcher.check_run_worker_health(run)
    assert health.status == WorkerStatus.FAILED, health
    assert "is up and no longer runs it" in health.msg


def test_server_restarted_with_worker_alive_keeps_running_and_the_run_finishes(
    instance, server, tmp_path
):
    release = tmp_path / "release"
    run = _launch(instance, server, release)
    launcher = instance.run_launcher
    server.kill()  # the worker survives its server (no parent-death signal)
    health = launcher.check_run_worker_health(run)
    assert health.status == WorkerStatus.RUNNING, health
    assert "unreachable" in health.msg
    server.start()
    assert server.client().get_server_id() != run.tags[SERVER_ID_TAG]
    health = launcher.check_run_worker_health(run)
    assert health.status == WorkerStatus.RUNNING, health
    assert "still does" in health.msg
    release.write_text("go")
    _wait_status(instance, run.run_id, DagsterRunStatus.SUCCESS)


def test_server_restarted_and_worker_gone_fails(instance, server, tmp_path):
    run = _launch(instance, server, tmp_path / "release")
    launcher = instance.run_launcher
    pid = _worker_pid(launcher, run)
    server.kill()
    _kill(pid)
    server.start()
    health = launcher.check_run_worker_health(run)
    assert health.status == WorkerStatus.FAILED, health
    assert "was restarted" in health.msg and f"pid {pid}" in health.msg
    # Dagster's own monitoring step (what the daemon runs every poll) fails the run.
    (record,) = instance.get_run_records(RunsFilter(run_ids=[run.run_id]))
    with _workspace(instance, server) as workspace:
        monitor_started_run(instance, workspace, record, logging.getLogger(__name__))
    failed = instance.get_run_by_id(run.run_id)
    assert failed.status == DagsterRunStatus.FAILURE


def test_server_down_and_worker_gone_fails_unless_a_retry_waits_for_the_server(
    instance, server, tmp_path
):
    plain = _launch(instance, server, tmp_path / "release-a")
    retried = _launch(instance, server, tmp_path / "release-b", tags={MAX_RETRIES_TAG: "1"})
    launcher = instance.run_launcher
    pids = [_worker_pid(launcher, run) for run in (plain, retried)]
    server.kill()
    for pid in pids:
        _kill(pid)
    health = launcher.check_run_worker_health(plain)
    assert health.status == WorkerStatus.FAILED, health
    assert "unreachable" in health.msg and f"pid {pids[0]}" in health.msg
    waiting = launcher.check_run_worker_health(retried)
    assert waiting.status == WorkerStatus.RUNNING, waiting
    server.start()  # back: the verdict is given, and the retry daemon can build the retry
    health = launcher.check_run_worker_health(retried)
    assert health.status == WorkerStatus.FAILED, health


def test_invisible_workers_are_never_failed_on_a_guess(tmp_path, server):
    with (
        instance_for_test(overrides=_launcher(visible=False), temp_dir=str(tmp_path)) as visible,
        _settled(visible) as instance,
    ):
        run = _launch(instance, server, tmp_path / "release")
        launcher = instance.run_launcher
        pid = _worker_pid(launcher, run)
        server.kill()
        _kill(pid)
        down = launcher.check_run_worker_health(run)
        assert down.status == WorkerStatus.RUNNING, down
        server.start()
        restarted = launcher.check_run_worker_health(run)
        assert restarted.status == WorkerStatus.RUNNING, restarted
        assert "not visible" in restarted.msg


def test_a_run_without_a_recorded_code_server_is_not_judged(instance):
    run = create_run_for_test(instance, job_name="long_job", status=DagsterRunStatus.STARTED)
    health = instance.run_launcher.check_run_worker_health(run)
    assert health.status == WorkerStatus.RUNNING
    assert "no code server recorded" in health.msg


def test_process_alive_checks_identity_and_zombies():
    before = time.time()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        assert process_alive(child.pid, time.time())
        # A pid that started after the event it is read from is another, newer process.
        assert not process_alive(child.pid, before - 3600)
        child.kill()
        child_status = Path(f"/proc/{child.pid}/stat")
        deadline = time.monotonic() + CEILING_S
        while child_status.exists() and " Z " not in child_status.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert not process_alive(child.pid, time.time())  # a zombie is not alive
    finally:
        child.kill()
        child.wait()
    assert not process_alive(child.pid, time.time())


@pytest.mark.parametrize(
    ("info", "local"),
    [
        ({"host": "127.0.0.1", "port": 4266}, True),
        ({"host": "::1", "port": 4266}, True),
        ({"host": "localhost", "port": 4266}, True),
        ({"socket": "/tmp/dagster.sock"}, True),
        ({"host": "code-server", "port": 4266}, False),
        ({"host": "10.1.2.3", "port": 4266}, False),
    ],
)
def test_local_address(info, local):
    assert local_address(info) is local


def test_config_is_read_from_dagster_yaml(tmp_path):
    with instance_for_test(overrides=_launcher(visible=True), temp_dir=str(tmp_path)) as instance:
        assert instance.run_launcher._run_workers_visible is True
