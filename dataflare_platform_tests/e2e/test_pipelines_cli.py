"""``dataflare pipelines start|status|stop`` against the real front (web server app, daemon,
code server; the CLI sends the home's service token) on a temporary DAGSTER_HOME: the CLI
launches the continuous job, status shows it with its run, offsets, lag per partition, rate,
watermark and last checkpoint, the governance checks are evaluated in the run, and stop ends
it gracefully: the run ends SUCCESS with no STEP_FAILURE and the final checkpoint committed.
One test, so the module starts one web server."""

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import yaml

from dataflare_platform.engine.checkpoint import Checkpoint
from dataflare_platform.events.log import EventLog
from dataflare_platform_tests.e2e.test_stream_sensor import _stop_sensors_except
from dataflare_platform_tests.waits import wait_until

pytestmark = pytest.mark.e2e

WAIT_S = 300.0
DATAFLARE = str(Path(sys.executable).with_name("dataflare"))
CONFIG = {
    "ops": {
        "run_hot_items_continuous": {
            "config": {"checkpoint_interval_s": 0.5, "progress_interval_s": 1.0}
        }
    }
}


def _cli(client, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [DATAFLARE, "pipelines", *args, "--port", str(client.port)],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        env={**os.environ, "COLUMNS": "250"},  # the status table unfolded
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def _status(client) -> dict[str, dict]:
    shown = json.loads(_cli(client, "status", "--json").stdout)
    return {p["name"]: p for p in shown}


def test_start_status_stop_a_continuous_pipeline(dagster_dev, home, small_nexmark, tmp_path):
    client = dagster_dev
    _stop_sensors_except(client)  # every pipeline idle but the one started here
    bids = small_nexmark["bids"]
    topic = EventLog(home.event_log_dir).create_topic("nexmark.bids", bids.schema)
    topic.append(bids.slice(0, 1000))
    config = tmp_path / "continuous.yaml"
    config.write_text(yaml.safe_dump(CONFIG))

    before = _status(client)
    assert {"hot_items", "highest_bid_eur", "masked_persons"} <= set(before)
    assert before["hot_items"]["mode"] == "idle"

    started = json.loads(_cli(client, "start", "hot_items", "--config", str(config)).stdout)
    run_id = started["run_id"]
    again = _cli(client, "start", "hot_items", check=False)
    assert again.returncode == 2 and f"already runs continuously in run {run_id}" in again.stderr

    def progress(total: int) -> dict:
        meta = client.asset_metadata("streams/hot_items")
        return meta if meta.get("events_in_total") == total else {}

    wait_until("the first progress", lambda: progress(1000), WAIT_S, poll_s=0.5)
    status = _status(client)
    hot = status["hot_items"]
    assert hot["mode"] == "continuous" and hot["run_id"] == run_id
    assert hot["run_status"] == "STARTED"
    assert hot["offsets"] == {"bids/0": 1000} and hot["lag"] == {"bids/0": 0}
    assert hot["events_per_s"] > 0 and hot["watermark_ms"] > 0
    assert hot["last_checkpoint"] > 0 and hot["dead_lettered"] == 0
    assert status["masked_persons"]["mode"] == "idle"
    table = _cli(client, "status").stdout  # the table for people names it too
    assert "hot_items" in table and "continuous" in table

    topic.append(bids.slice(1000, 1000))
    meta = wait_until("the second progress", lambda: progress(2000), WAIT_S, poll_s=0.5)
    assert list(meta["dagster/column_schema"]) == ["window_start", "window_end", "auction", "num"]

    stopped = json.loads(_cli(client, "stop", "hot_items", "--timeout", str(WAIT_S)).stdout)
    assert stopped == {"pipeline": "hot_items", "runs": {run_id: "SUCCESS"}}
    events = client.logs(run_id)
    types = {e["event_type"] for e in events}
    assert "STEP_FAILURE" not in types and "STEP_SUCCESS" in types
    messages = [e["message"] or "" for e in events]
    assert any("final checkpoint committed at {'bids/0': 2000}" in m for m in messages)
    checks = [e["message"] for e in events if e["event_type"] == "ASSET_CHECK_EVALUATION"]
    assert any("schema_contract" in m for m in checks)
    assert any("dead_letter_rate" in m for m in checks)
    with duckdb.connect(str(home.root / "streams" / "hot_items.duckdb"), read_only=True) as conn:
        ((state,),) = conn.execute("SELECT state FROM dataflare_checkpoints").fetchall()
    assert Checkpoint.decode(bytes(state)).offsets == {"bids/0": 2000}

    after = _status(client)["hot_items"]
    assert after["mode"] == "idle" and after["run_id"] == run_id
    assert after["run_status"] == "SUCCESS"
    not_running = _cli(client, "stop", "hot_items", check=False)
    assert not_running.returncode == 2 and "does not run continuously" in not_running.stderr
    unknown = _cli(client, "start", "no_such_pipeline", check=False)
    assert unknown.returncode == 2 and "no pipeline 'no_such_pipeline'" in unknown.stderr
