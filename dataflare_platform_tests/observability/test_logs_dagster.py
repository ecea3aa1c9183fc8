"""Inside a real Dagster run, the platform's log lines reach Dagster's captured logs: the
step's compute log (stderr of the step process, captured by the instance's compute log
manager) holds the JSON line with the run id, job and step, and the instance's event log
holds the same record (``python_logs.managed_python_loggers`` in the home's dagster.yaml).

The job runs under the multiprocess executor, so its step runs in a process of its own
that loads this module, and with it the code location (``dataflare_platform.definitions``)
whose import configures the logs, as a run worker of the deployment does."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

import dataflare_platform.definitions  # noqa: F401  (configures the logs, as a run worker)
from dataflare_platform.engine import CollectSink, Runner, RunnerConfig, TableSource
from dataflare_platform_tests.engine.helpers import events
from dataflare_platform_tests.engine.test_time_and_bad_input import windowed_count

pytestmark = pytest.mark.e2e


@dg.op
def run_with_bad_rows() -> int:
    """An engine run whose source has two rows of the wrong schema (dead-lettered)."""
    dg.get_dagster_logger().info("starting the run with bad rows")  # an op's own line
    wrong_schema = pa.table({"key": [1, 2], "date_time": pa.array([5, 6], pa.int64())})
    source = TableSource("e", {"a": events(range(0, 5_000, 100)), "b": wrong_schema})
    pipeline = windowed_count(source, CollectSink())
    return Runner(pipeline, RunnerConfig(batch_rows=100)).run().metrics.dead_letters


@dg.job(executor_def=dg.multiprocess_executor)
def logs_job() -> None:
    run_with_bad_rows()


def make_logs_job() -> dg.JobDefinition:
    """The job, rebuilt in the step process (a reconstructable job needs a function)."""
    return logs_job


def _json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def test_a_runs_captured_logs_hold_the_json_line_with_the_run_id(home, monkeypatch):
    monkeypatch.setenv("DATAFLARE_LOG_FORMAT", "json")
    recon = dg.build_reconstructable_job(__name__, make_logs_job.__name__)
    with dg.DagsterInstance.get() as instance:  # the home's instance (DAGSTER_HOME)
        assert instance.managed_python_loggers == ["dataflare_platform"]
        with dg.execute_job(recon, instance=instance, raise_on_error=False) as result:
            failures = [e.message for e in result.all_events if e.is_step_failure]
            assert result.success, failures
            run_id = result.run_id
            assert result.output_for_node("run_with_bad_rows") == 2
        records = instance.all_logs(run_id)

    # The step's captured stderr (compute log files of the instance's storage).
    storage = Path(os.environ["DAGSTER_HOME"]) / "storage"
    captured = [p for p in storage.rglob("*.err") if run_id in str(p)]
    assert captured, f"no compute log of run {run_id} under {storage}"
    lines = [x for p in captured for x in _json_lines(p.read_text())]
    dropped = [x for x in lines if x.get("component") == "engine"]
    assert len(dropped) == 1, lines
    (line,) = dropped
    assert line["level"] == "WARNING"
    assert line["logger"] == "dataflare_platform.engine.runner"
    assert (line["reason"], line["dropped"]) == ("dead_lettered", 2)
    # The platform's own message, not Dagster's rewrite of it ("job - run id - step - ...").
    assert line["message"].startswith("pipeline ") and run_id not in line["message"]
    assert line["run_id"] == run_id
    assert line["job"] == "logs_job"
    assert line["step"] == "run_with_bad_rows"
    assert line["pipeline"]  # set by the runner
    assert "dagster_meta" not in line  # Dagster's copy of the same ids is left out
    # An op logging through Dagster's python logger gets the same line (once).
    (op_line,) = [x for x in lines if x["message"] == "starting the run with bad rows"]
    assert (op_line["logger"], op_line["level"]) == ("dagster.builtin", "INFO")
    assert (op_line["run_id"], op_line["step"]) == (run_id, "run_with_bad_rows")

    # ... and the run's event log has the record (the managed python logger).
    messages = [r for r in records if r.user_message and "2 rows dead-lettered" in r.user_message]
    assert messages, [r.user_message for r in records]
    assert all(r.level == 30 for r in messages)  # logging.WARNING
