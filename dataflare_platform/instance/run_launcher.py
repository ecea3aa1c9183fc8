"""The run launcher of the production topology: Dagster's gRPC launcher plus a run-worker
health check, so that run monitoring fails a run whose worker died with its code server.

Dagster 1.13's :class:`DefaultRunLauncher` asks the code server (``dagster code-server
start``) to start each run in a subprocess of its own, and says
``supports_check_run_worker_health = False``: the daemon's run monitoring never looks at
those workers, and a run whose code server was killed stays STARTED forever.
:class:`MonitoredRunLauncher` (``run_launcher:`` in the instance's ``dagster.yaml``)

- records, at launch, the id of the code server the run goes to (``get_server_id()``) in
  :data:`SERVER_ID_TAG` (the platform's reserved ``dataflare/`` namespace), written before
  the server starts the run so that a STARTED run always carries it;
- answers the daemon's health check from the code server and the run worker's process:

  ===============================================  ==========================================
  the run's code server (Dagster's grpc_info tag)  verdict
  ===============================================  ==========================================
  answers and runs the run (its executions)        RUNNING
  answers with the recorded id, not running it     FAILED (the server outlived the worker),
                                                   unless the worker is seen alive
  answers with another id (restarted or reloaded)  the worker's process decides: gone →
                                                   FAILED, alive or not visible → RUNNING
  does not answer                                  RUNNING, or FAILED when the worker is seen
                                                   gone and the run will not be retried
  ===============================================  ==========================================

The worker's process is the pid of Dagster's own ``Started process for run (pid: N)``
engine event (written by the worker), checked only where the daemon can see the code
server's processes (``run_workers_visible``; by default when the code server listens on a
loopback address or a socket), and only counted alive if that pid is the same process
(started no later than the event; a reused pid is a newer process), not a zombie, and no
``Process for run exited`` event followed.

Why never UNKNOWN: Dagster 1.13's monitoring (``daemon/monitoring/run_monitoring.py``)
fails a STARTED run on any status other than RUNNING or SUCCESS, UNKNOWN included, so a
network blip answered UNKNOWN would fail live runs. A failure needs evidence: a code
server that answers, or a worker process seen gone. And while the code server is down a
run that will be retried is not failed yet: the retry daemon builds the retry from the
code location and gives up for good (``dagster/will_retry=false``) when it does not
load, so the verdict waits until the server answers again.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagster import Field, Noneable
from dagster._core.errors import DagsterUserCodeUnreachableError
from dagster._core.events import DagsterEventType
from dagster._core.execution.retries import auto_reexecution_should_retry_run
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.launcher.default_run_launcher import DefaultRunLauncher
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._grpc.client import DagsterGrpcClient
from dagster._grpc.types import CanCancelExecutionRequest, CanCancelExecutionResult
from dagster._serdes import ConfigurableClassData, deserialize_value

SERVER_ID_TAG = "dataflare/code_server_id"
VISIBLE_ENV_VAR = "DATAFLARE_RUN_WORKERS_VISIBLE"
STARTED_PREFIX = "Started process for run (pid: "
EXITED_PREFIX = "Process for run exited (pid: "
HEALTH_TIMEOUT_S = 10
# /proc/stat's boot time is whole seconds: a process's start read from it is up to 1 s
# early, never late; the slack keeps the comparison on the side of "alive".
START_SLACK_S = 1.0


def process_alive(pid: int, started_by: float) -> bool:
    """Whether process ``pid`` exists, is not a zombie, and started no later than
    ``started_by`` (epoch seconds; a pid reused by a newer process does not count).

    Without ``/proc`` (not Linux) only existence is checked."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/stat").read_text()
    except FileNotFoundError:
        # Linux: the process is gone since os.kill; elsewhere there is no /proc to ask.
        return not Path("/proc/self").exists()
    except OSError:
        return True
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X", "x"):
        return False
    btime = next(int(line.split()[1]) for line in boot.splitlines() if line.startswith("btime"))
    started = btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return started <= started_by + START_SLACK_S


def local_address(grpc_info: Mapping[str, Any]) -> bool:
    """Whether a code server address (Dagster's grpc_info) is on this host: a socket, a
    loopback address, ``localhost`` or this host's name."""
    if grpc_info.get("socket"):
        return True
    host = str(grpc_info.get("host") or "")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in ("localhost", socket.gethostname())


class MonitoredRunLauncher(DefaultRunLauncher):
    """:class:`DefaultRunLauncher` whose run workers the daemon's run monitoring checks
    (module docstring). Config: ``run_workers_visible`` (``true``/``false``; unset: the
    daemon's :data:`VISIBLE_ENV_VAR`, else whether the code server's address is local)
    says whether the daemon sees the code server's processes (same host, or a shared pid
    namespace such as compose's ``pid: service:code-server``)."""

    def __init__(
        self,
        inst_data: ConfigurableClassData | None = None,
        run_workers_visible: bool | None = None,
    ):
        self._run_workers_visible = run_workers_visible
        super().__init__(inst_data=inst_data)

    @classmethod
    def config_type(cls):
        return {
            "run_workers_visible": Field(
                Noneable(bool),
                is_required=False,
                default_value=None,
                description="Whether the daemon sees the code server's processes (unset: "
                "when the code server listens on a local address or socket).",
            )
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]):
        return cls(inst_data=inst_data, run_workers_visible=config_value.get("run_workers_visible"))

    # -- launch ----------------------------------------------------------------------------

    def launch_run(self, context: LaunchRunContext) -> None:
        client = self._launch_client(context)
        if client is not None:
            # Before the start: the worker turns the run STARTED, and by then the tag
            # is there. Unreachable here means the launch below fails with Dagster's error.
            with contextlib.suppress(DagsterUserCodeUnreachableError):
                server_id = client.get_server_id(timeout=HEALTH_TIMEOUT_S)
                self._instance.add_run_tags(context.dagster_run.run_id, {SERVER_ID_TAG: server_id})
        super().launch_run(context)

    @staticmethod
    def _launch_client(context: LaunchRunContext):
        from dagster._core.remote_representation.code_location import GrpcServerCodeLocation

        run = context.dagster_run
        if context.workspace is None or run.remote_job_origin is None:
            return None  # the parent launch raises Dagster's own error
        location_name = run.remote_job_origin.repository_origin.code_location_origin.location_name
        location = context.workspace.get_code_location(location_name)
        return location.client if isinstance(location, GrpcServerCodeLocation) else None

    # -- health ----------------------------------------------------------------------------

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        raw_info = run.tags.get(GRPC_INFO_TAG)
        if raw_info is None:
            return CheckRunHealthResult(
                WorkerStatus.RUNNING, "no code server recorded for the run: nothing to check"
            )
        grpc_info = json.loads(raw_info)
        client = DagsterGrpcClient(
            port=grpc_info.get("port"),
            socket=grpc_info.get("socket"),
            host=grpc_info.get("host"),
            use_ssl=bool(grpc_info.get("use_ssl", False)),
        )
        where = grpc_info.get("socket") or f"{grpc_info.get('host')}:{grpc_info.get('port')}"
        recorded = run.tags.get(SERVER_ID_TAG)
        try:
            server_id = client.get_server_id(timeout=HEALTH_TIMEOUT_S)
            runs_it = _server_runs(client, run.run_id)
        except DagsterUserCodeUnreachableError:
            alive = self._worker_alive(run, grpc_info)
            if alive is False and not self._will_retry(run):
                return CheckRunHealthResult(
                    WorkerStatus.FAILED,
                    f"code server {where} is unreachable and the run worker "
                    f"({self._pid_text(run)}) is gone",
                )
            return CheckRunHealthResult(
                WorkerStatus.RUNNING,
                f"code server {where} is unreachable; run worker alive: {alive} "
                "(a verdict waits for the server)",
            )
        if runs_it:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"code server {where} runs it")
        alive = self._worker_alive(run, grpc_info)
        if alive:
            return CheckRunHealthResult(
                WorkerStatus.RUNNING,
                f"code server {where} does not run it, its worker ({self._pid_text(run)}) "
                "still does",
            )
        if server_id == recorded:
            return CheckRunHealthResult(
                WorkerStatus.FAILED,
                f"code server {where} (server id {server_id}) that launched the run is up "
                "and no longer runs it: its run worker is gone",
            )
        if alive is False:
            return CheckRunHealthResult(
                WorkerStatus.FAILED,
                f"code server {where} was restarted (server id {recorded} → {server_id}) "
                f"and the run worker ({self._pid_text(run)}) is gone",
            )
        return CheckRunHealthResult(
            WorkerStatus.RUNNING,
            f"code server {where} was restarted or reloaded (server id {recorded} → "
            f"{server_id}); its run worker's process is not visible here",
        )

    # -- evidence --------------------------------------------------------------------------

    def _pids_visible(self, grpc_info: Mapping[str, Any]) -> bool:
        if self._run_workers_visible is not None:
            return self._run_workers_visible
        from_env = os.environ.get(VISIBLE_ENV_VAR, "").strip().lower()
        if from_env in ("true", "1", "yes"):
            return True
        if from_env in ("false", "0", "no"):
            return False
        return local_address(grpc_info)

    def _worker_event(self, run: DagsterRun) -> tuple[int, float, bool] | None:
        """The last ``Started process`` event's pid and time, and whether a ``Process for
        run exited`` event followed it."""
        records = self._instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.ENGINE_EVENT
        ).records
        started: tuple[int, float] | None = None
        exited = False
        for record in records:
            entry = record.event_log_entry
            message = entry.message or ""
            if message.startswith(STARTED_PREFIX):
                pid = _pid_of(entry)
                if pid is not None:
                    started, exited = (pid, entry.timestamp), False
            elif message.startswith(EXITED_PREFIX) and started is not None:
                exited = True
        return None if started is None else (*started, exited)

    def _worker_alive(self, run: DagsterRun, grpc_info: Mapping[str, Any]) -> bool | None:
        """True / False where the worker's process is seen, ``None`` where it cannot be."""
        event = self._worker_event(run)
        if event is None:
            return None
        pid, started_at, exited = event
        if exited:
            return False
        if not self._pids_visible(grpc_info):
            return None
        return process_alive(pid, started_at)

    def _pid_text(self, run: DagsterRun) -> str:
        event = self._worker_event(run)
        return "pid unknown" if event is None else f"pid {event[0]}"

    def _will_retry(self, run: DagsterRun) -> bool:
        if not self._instance.run_retries_enabled:
            return False
        failed = run.with_status(DagsterRunStatus.FAILURE)
        return auto_reexecution_should_retry_run(self._instance, failed, None)


def _server_runs(client: DagsterGrpcClient, run_id: str) -> bool:
    """Whether the code server runs ``run_id`` (among its executions, not being stopped).

    Asked with ``CanCancelExecution``, not ``GetCurrentRuns``: Dagster 1.13's
    ``dagster code-server start`` (the proxy server) does not implement the latter
    (UNIMPLEMENTED), both implement the former."""
    answer = client.can_cancel_execution(
        CanCancelExecutionRequest(run_id=run_id), timeout=HEALTH_TIMEOUT_S
    )
    return deserialize_value(answer, CanCancelExecutionResult).can_cancel


def _pid_of(entry) -> int | None:
    event = entry.dagster_event
    data = event.event_specific_data if event is not None else None
    metadata = getattr(data, "metadata", None) or {}
    value = metadata.get("pid")
    text = getattr(value, "value", value)
    try:
        return int(text)
    except (TypeError, ValueError):
        return None
