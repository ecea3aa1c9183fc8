"""The Dagster instance exporter reads a real instance through DagsterInstance and its
values reach the multiprocess endpoint; finished runs are counted once."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import dagster as dg
import pytest
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteInstigatorOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    TickData,
    TickStatus,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._daemon.types import DaemonHeartbeat
from dagster_shared.error import SerializableErrorInfo

from dataflare_platform import observability
from dataflare_platform.instance.exporter import InstanceExporter
from dataflare_platform.observability.prometheus import exposition
from dataflare_platform_tests.observability.fixtures import metrics_dir
from dataflare_platform_tests.observability.scrape import value

__all__ = ["metrics_dir"]


@dg.op
def fine() -> None:
    pass


@dg.op
def breaks() -> None:
    raise RuntimeError("boom")


@dg.job
def good() -> None:
    fine()


@dg.job
def broken() -> None:
    breaks()


@dg.asset
def orders() -> None:
    pass


@dg.asset_check(asset=orders)
def orders_not_empty() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False)


@dg.asset_check(asset=orders)
def orders_fresh() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


def test_asset_check_outcomes_counted_once(metrics_dir):
    with dg.DagsterInstance.ephemeral() as instance:
        exporter = InstanceExporter(instance, observability.instruments())
        checks = [orders, orders_not_empty, orders_fresh]
        dg.materialize(checks, instance=instance)
        exporter.collect()
        exporter.collect()
        dg.materialize(checks, instance=instance)
        exporter.collect()
        text = exposition(metrics_dir)
        name = "dataflare_dagster_asset_checks_total"
        assert value(text, name, asset="orders", check="orders_not_empty", outcome="failed") == 2
        assert value(text, name, asset="orders", check="orders_fresh", outcome="passed") == 2
        assert value(text, name, asset="orders", check="orders_fresh", outcome="failed") is None
        age = value(text, "dataflare_dagster_asset_materialization_age_seconds", asset="orders")
        assert age is not None and age >= 0


def _repository() -> RemoteRepositoryOrigin:
    location = InProcessCodeLocationOrigin(
        loadable_target_origin=LoadableTargetOrigin(
            executable_path=sys.executable, python_file=__file__, attribute="defs"
        ),
        location_name="loc",
    )
    return RemoteRepositoryOrigin(code_location_origin=location, repository_name="__repository__")


def _origin(job: str) -> RemoteJobOrigin:
    """Where a queued run comes from (Dagster requires one for QUEUED runs)."""
    return RemoteJobOrigin(repository_origin=_repository(), job_name=job)


def _tick(instance, state: InstigatorState, status: TickStatus, timestamp: float) -> None:
    instance.create_tick(
        TickData(
            instigator_origin_id=state.instigator_origin_id,
            instigator_name=state.instigator_name,
            instigator_type=state.instigator_type,
            status=status,
            timestamp=timestamp,
            selector_id=state.selector_id,
            run_ids=[],
            run_keys=[],
            error=(
                SerializableErrorInfo("sensor raised", [], "RuntimeError")
                if status == TickStatus.FAILURE
                else None
            ),
        )
    )


def test_sensor_tick_lag_and_failures_counted_once(metrics_dir, instance):
    """On the project home's instance (SQLite storages, the shipped dagster.yaml)."""
    exporter = InstanceExporter(instance, observability.instruments())
    state = InstigatorState(
        RemoteInstigatorOrigin(_repository(), "offsets_sensor"),
        InstigatorType.SENSOR,
        InstigatorStatus.RUNNING,
    )
    instance.add_instigator_state(state)
    # Ages are measured at the instant handed to collect(): exact, however slow the run.
    now = time.time()
    _tick(instance, state, TickStatus.FAILURE, now - 100)
    _tick(instance, state, TickStatus.SUCCESS, now - 60)
    exporter.collect(now)
    exporter.collect(now)
    text = exposition(metrics_dir)
    labels = {"instigator": "offsets_sensor", "type": "SENSOR"}
    assert value(text, "dataflare_dagster_tick_failures_total", **labels) == 1
    assert value(text, "dataflare_dagster_tick_age_seconds", **labels) == 60
    _tick(instance, state, TickStatus.FAILURE, now + 10)
    exporter.collect(now + 15)
    text = exposition(metrics_dir)
    assert value(text, "dataflare_dagster_tick_failures_total", **labels) == 2
    assert value(text, "dataflare_dagster_tick_age_seconds", **labels) == 5


def test_runs_outcomes_queue_and_heartbeats(metrics_dir):
    with dg.DagsterInstance.ephemeral() as instance:
        exporter = InstanceExporter(instance, observability.instruments())
        good.execute_in_process(instance=instance)
        good.execute_in_process(instance=instance)
        broken.execute_in_process(instance=instance, raise_on_error=False)
        queued = instance.create_run_for_job(
            good, status=dg.DagsterRunStatus.QUEUED, remote_job_origin=_origin("good")
        )
        instance.add_daemon_heartbeat(
            DaemonHeartbeat(
                timestamp=time.time() - 42, daemon_type="SENSOR", daemon_id="d", errors=[]
            )
        )
        exporter.collect()
        exporter.collect()  # a second pass counts no run twice
        text = exposition(metrics_dir)
        finished = "dataflare_dagster_runs_finished_total"
        assert value(text, finished, job="good", code_location="", status="SUCCESS") == 2
        assert value(text, finished, job="broken", code_location="", status="FAILURE") == 1
        assert value(text, "dataflare_dagster_runs", status="QUEUED") == 1
        assert value(text, "dataflare_dagster_runs", status="STARTED") == 0
        assert value(text, "dataflare_dagster_oldest_queued_run_age_seconds") >= 0
        assert value(text, "dataflare_dagster_daemon_heartbeat_age_seconds", daemon="SENSOR") >= 42
        duration = "dataflare_dagster_run_duration_seconds_count"
        assert value(text, duration, job="good", code_location="") == 2
        # The queued run is dequeued and finishes: counted once, the queue empties.
        instance.report_run_canceled(queued)
        exporter.collect()
        text = exposition(metrics_dir)
        assert value(text, "dataflare_dagster_runs", status="QUEUED") == 0
        assert value(text, finished, job="good", code_location="loc", status="CANCELED") == 1
        assert value(text, "dataflare_dagster_oldest_queued_run_age_seconds") == 0


@pytest.mark.e2e
def test_the_exporter_command_runs_alone_and_its_gauges_go_with_it(home, tmp_path, monkeypatch):
    """``dataflare metrics instance`` on the home's instance: its series appear in the
    multiprocess directory and vanish once the process is gone."""
    directory = tmp_path / "metrics"
    env = {**os.environ, **home.environ(), "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dataflare_platform.cli",
            "metrics",
            "instance",
            "--interval",
            "0.5",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            text = exposition(directory) if directory.exists() else b""
            if value(text, "dataflare_dagster_runs", status="QUEUED") == 0:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no instance metrics after 120 s"
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(60)
    assert value(exposition(directory), "dataflare_dagster_runs", status="QUEUED") is None
