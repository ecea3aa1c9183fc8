"""replay_job restores a damaged interval of a stream pipeline's table, idempotently."""

import duckdb
import polars as pl
import pytest

from dataflare_platform.defs.plugins.resources import PluginRuntimeResource
from dataflare_platform.defs.replay.jobs import replay_job
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.events.log import EventLog
from dataflare_platform.sql_names import quote_identifier
from dataflare_platform.streams.ranges import load_specs, run_range, source_ends


@pytest.fixture
def hot_items_home(home, small_nexmark):
    """hot_items run over all of a published topic, as its sensor's runs would leave it."""
    log = EventLog(home.event_log_dir)
    bids = small_nexmark["bids"]
    topic = log.create_topic("nexmark.bids", bids.schema, partitions=2)
    for start in range(0, bids.num_rows, 500):
        topic.append(bids.slice(start, 500))
    (spec,) = [s for s in load_specs() if s.name == "hot_items"]
    run_range(spec, log, source_ends(spec, log), home.root / "streams")
    return home


def _table(home, name="hot_items"):
    with duckdb.connect(str(home.root / "streams" / "hot_items.duckdb")) as conn:
        df = pl.from_arrow(conn.sql(f"SELECT * FROM {quote_identifier(name)}").to_arrow_table())
    return df.sort(df.columns)


def _run(home, **config):
    resources = {
        "dataflare": ProjectHomeResource(path=str(home.root)),
        "plugins": PluginRuntimeResource(plugin_dir=str(home.root / "plugins")),
    }
    return replay_job.execute_in_process(
        run_config={"ops": {"replay_range": {"config": {"pipeline": "hot_items", **config}}}},
        resources=resources,
        raise_on_error=False,
    )


def test_replay_job_overwrites_an_interval_idempotently(hot_items_home):
    home = hot_items_home
    before = _table(home)
    # Windows overlapping [2 s, 8 s) end by 18 s: the live run has closed them all (its
    # watermark is 4 s behind the last bid, near 28 s), so the replay may overwrite them.
    lo, hi = "2026-01-01T00:00:02", "2026-01-01T00:00:08"
    with duckdb.connect(str(home.root / "streams" / "hot_items.duckdb")) as conn:
        conn.execute(
            "DELETE FROM hot_items WHERE window_start >= TIMESTAMP '2026-01-01 00:00:04'"
            " AND window_start < TIMESTAMP '2026-01-01 00:00:08'"
        )
    assert _table(home).height < before.height
    for _ in range(2):  # twice: the second replay changes nothing
        result = _run(home, from_time=lo, to_time=hi)
        assert result.success
        assert _table(home).equals(before)
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    meta = event.event_specific_data.metadata
    assert meta["rows_out"].value > 0 and meta["dead_letters"].value == 0


def test_replay_job_into_a_new_table_and_readable_failures(hot_items_home):
    home = hot_items_home
    result = _run(
        home,
        from_time="2026-01-01T00:00:02",
        to_time="2026-01-01T00:00:08",
        into_table="hot_items_check",
    )
    assert result.success
    copy = _table(home, "hot_items_check")
    original = _table(home)
    assert copy.height > 0
    assert copy.join(original, on=copy.columns, how="anti").height == 0
    bad = _run(home, from_time="2026-01-01T00:00:16", to_time="2026-01-01T00:00:06")
    assert not bad.success
    failure = bad.failure_data_for_node("replay_range")
    assert "end must be after start" in str(failure.error.message)
    unknown = replay_job.execute_in_process(
        run_config={"ops": {"replay_range": {"config": {"pipeline": "nope"}}}},
        resources={
            "dataflare": ProjectHomeResource(path=str(home.root)),
            "plugins": PluginRuntimeResource(plugin_dir=str(home.root / "plugins")),
        },
        raise_on_error=False,
    )
    assert (
        "no pipeline 'nope'; known: " in unknown.failure_data_for_node("replay_range").error.message
    )
