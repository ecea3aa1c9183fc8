"""The hourly leaderboard materializes on its own under the real front (web server app +
daemon, as ``dataflare ui`` starts them) with the shipped instance settings: a producer
appends bids, the ``topic_observations`` sensor reports the topic's new end offsets, and
after the cron ticks the ``dataflare_automation`` sensor requests the hour that just ended.
Nothing is launched by the test.

``DATAFLARE_LEADERBOARD_CRON=* * * * *`` makes the cron tick every minute instead of
every hour (the partitions stay hourly), and ``DATAFLARE_SENSOR_INTERVAL=1s`` (set by
``dagster_dev``) makes both sensors tick as often as the daemon allows.
"""

import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import pyarrow as pa
import pytest

from dataflare_platform.defs.automation import AUTOMATION_SENSOR
from dataflare_platform.defs.leaderboards.assets import CRON_ENV_VAR
from dataflare_platform.defs.streams.topics import TOPIC_OBSERVATIONS_SENSOR, topic_key
from dataflare_platform.events.log import EventLog
from dataflare_platform_tests.defs.topic_observations import data_version, observations
from dataflare_platform_tests.e2e.test_stream_sensor import _stop_sensors_except

pytestmark = pytest.mark.e2e

BOARD = dg.AssetKey(["leaderboards", "hourly_hot_auctions"])
BIDS = topic_key("nexmark.bids")
# A cron tick a minute, a daemon that evaluates every few seconds, and a run to finish
# on a shared machine: minutes in the worst case.
TIMEOUT_S = 600
BATCH = 100
# The tag Dagster puts on runs requested by an automation condition (dagster._core.storage.tags).
FROM_AUTOMATION_TAG = "dagster/from_automation_condition"


@pytest.fixture(autouse=True)
def every_minute(monkeypatch):
    """Set before ``dagster_dev`` starts its code server, which reads it at load."""
    monkeypatch.setenv(CRON_ENV_VAR, "* * * * *")


def _bids_around_now(bids: pa.Table) -> pa.Table:
    """The bids re-timed to span the previous and the current UTC hour evenly, so the
    hour that has just ended when the leaderboard runs holds bids whichever it is."""
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start_ms = int((hour - timedelta(hours=1)).timestamp() * 1000)
    step_ms = (2 * 3_600_000) // bids.num_rows
    times = pa.array([start_ms + i * step_ms for i in range(bids.num_rows)], pa.int64()).cast(
        pa.timestamp("ms")
    )
    index = bids.schema.get_field_index("date_time")
    return bids.set_column(index, "date_time", times.cast(bids.schema.field(index).type))


def test_the_leaderboard_materializes_after_bids_arrive(dagster_dev, home, small_nexmark):
    client = dagster_dev
    # The stream pipelines read the same topic; their runs would only compete for CPU.
    _stop_sensors_except(client, TOPIC_OBSERVATIONS_SENSOR, AUTOMATION_SENSOR)
    bids = _bids_around_now(small_nexmark["bids"])
    topic = EventLog(home.event_log_dir).create_topic("nexmark.bids", bids.schema)
    topic.append(bids)  # both candidate hours hold bids from the start

    with dg.DagsterInstance.get() as instance:
        # A live stream: bids keep arriving until the leaderboard has materialized
        # (on_cron waits for an update after each tick).
        deadline = time.monotonic() + TIMEOUT_S
        produced = 0
        while instance.get_latest_materialization_event(BOARD) is None:
            if time.monotonic() >= deadline:
                pytest.fail(f"no leaderboard materialization within {TIMEOUT_S} s")
            topic.append(bids.slice(produced % bids.num_rows, BATCH))
            produced += BATCH
            time.sleep(1)

        event = instance.get_latest_materialization_event(BOARD)
        run = instance.get_run_by_id(event.run_id)
        assert client.wait(run.run_id, timeout_s=TIMEOUT_S) == "SUCCESS"
        assert run.tags.get(FROM_AUTOMATION_TAG) == "true", run.tags
        # The hour that had just ended when the condition was evaluated (shortly before
        # the run was created).
        created = instance.get_run_record_by_id(run.run_id).create_timestamp.astimezone(UTC)
        hour = datetime.strptime(event.dagster_event.partition, "%Y-%m-%d-%H:%M")
        hour_end = hour.replace(tzinfo=UTC) + timedelta(hours=1)
        assert hour_end <= created < hour_end + timedelta(hours=1, minutes=1)
        meta = event.asset_materialization.metadata
        assert meta["dagster/row_count"].value > 0 and meta["top_bids"].value > 0

        # The sensor reported the topic only when its end offsets moved: no repeats.
        seen = [data_version(o) for o in observations(instance, BIDS)]
        assert seen and len(set(seen)) == len(seen)
        totals = [o.metadata["total_events"].value for o in observations(instance, BIDS)]
        assert totals == sorted(totals) and totals[-1] <= sum(topic.end_offsets().values())
