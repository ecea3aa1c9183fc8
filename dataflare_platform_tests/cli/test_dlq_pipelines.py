"""``dataflare dlq`` for pipelines: a real run of hot_items that sends rows late (behind its
watermark) and dead-letters others (event time jumping hours ahead) shows in ``dlq list``
beside the dead-letter topics, with the counts the run reported; ``dlq list --pipeline``
and ``dlq show --pipeline`` read the rows where the sink committed them."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from dataflare_platform.cli import app
from dataflare_platform.component_files import DEFS_DIR
from dataflare_platform.events.deadletter import DeadLetters
from dataflare_platform.events.log import EventLog
from dataflare_platform.home import ProjectHome
from dataflare_platform.streams.ranges import load_specs, run_range, source_ends
from dataflare_platform_tests.processes import holding_duckdb_writer

runner = CliRunner()


def _json(args: list[str]):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def ran(home: ProjectHome, tmp_path, small_nexmark):
    """hot_items run twice: the second run reads bids already behind its watermark (late)
    and bids ten hours ahead (dead-lettered: beyond max_future)."""
    folder = tmp_path / "pipelines"
    folder.mkdir()
    shutil.copy(DEFS_DIR / "streams" / "hot_items" / "defs.yaml", folder / "hot_items.yaml")
    (spec,) = load_specs(folder)
    bids = small_nexmark["bids"]
    log = EventLog(home.event_log_dir)
    topic = log.create_topic("nexmark.bids", bids.schema)
    topic.append(bids)
    streams = home.root / "streams"
    run_range(spec, log, source_ends(spec, log), streams)
    ahead = bids.slice(0, 7)
    times = pc.add(ahead.column("date_time"), pa.scalar(timedelta(hours=10)))
    ahead = ahead.set_column(ahead.schema.get_field_index("date_time"), "date_time", times)
    topic.append(bids.slice(0, 40))  # old event times: late
    topic.append(ahead)
    second = run_range(spec, log, source_ends(spec, log), streams)
    counts = second.metrics.this_run()
    assert counts["late_events"] > 0 and counts["dead_letters"] > 0
    return folder, counts, streams / "hot_items.duckdb"


def test_dlq_list_shows_pipeline_side_outputs_beside_dead_letter_topics(home, ran, tmp_path):
    folder, counts, path = ran
    # A dead-letter topic too: one malformed line produced to another topic.
    log = EventLog(home.event_log_dir)
    log.create_topic("orders", pa.schema([("id", pa.int64()), ("date_time", pa.int64())]))
    (tmp_path / "in.ndjson").write_bytes(b'{"id": 1, "date_time": 5}\n{broken\n')
    _json(["produce", "orders", str(tmp_path / "in.ndjson")])

    listed = _json(["dlq", "list", "--pipelines-dir", str(folder), "--json"])
    (orders,) = listed["dead_letter_topics"]
    assert (orders["topic"], orders["pending"], orders["total"]) == ("orders", 1, 1)
    assert DeadLetters(log, "orders").count() == 1
    (side,) = listed["pipelines"]
    assert side["pipeline"] == "hot_items" and side["sink"] == "duckdb"
    assert side["path"] == str(path) and side["table"] == "hot_items_side"
    assert side["counts"] == {"dead_letter": counts["dead_letters"], "late": counts["late_events"]}
    assert side["total"] == counts["dead_letters"] + counts["late_events"]
    with duckdb.connect(str(path), read_only=True) as conn:
        ((stored,),) = conn.sql("SELECT count(*) FROM hot_items_side").fetchall()
    assert stored == side["total"]

    shown = runner.invoke(app, ["dlq", "list", "--pipelines-dir", str(folder)])
    assert shown.exit_code == 0 and "hot_items" in shown.stdout and "orders" in shown.stdout


def test_dlq_list_and_show_read_a_pipelines_side_rows(home, ran):
    folder, counts, path = ran
    where = ["--pipelines-dir", str(folder)]
    listed = _json(["dlq", "list", "--pipeline", "hot_items", *where, "--limit", "500", "--json"])
    rows = listed["rows"]
    assert len(rows) == listed["total"] == counts["dead_letters"] + counts["late_events"]
    assert sum(r["kind"] == "late" for r in rows) == counts["late_events"]
    dead = [r for r in rows if r["kind"] == "dead_letter"]
    assert len(dead) == counts["dead_letters"] and all(r["reason"] for r in dead)
    only = _json(
        ["dlq", "list", "--pipeline", "hot_items", *where, "--reason", "%watermark%", "--json"]
    )
    assert {r["kind"] for r in only["rows"]} == {"late"}

    summary = _json(["dlq", "show", "--pipeline", "hot_items", *where])
    assert summary["path"] == str(path) and summary["query"].startswith("SELECT * FROM")
    one = _json(["dlq", "show", "--pipeline", "hot_items", "--row", str(dead[0]["row"]), *where])
    assert one["kind"] == "dead_letter" and one["row"] == dead[0]["row"]
    assert one["payload"].startswith(dead[0]["payload"][:50])
    assert json.loads(one["payload"])  # the whole row, as committed

    missing = runner.invoke(
        app, ["dlq", "show", "--pipeline", "hot_items", "--row", "9999", *where]
    )
    assert missing.exit_code == 2 and "--row" in missing.output
    unknown = runner.invoke(app, ["dlq", "list", "--pipeline", "nope", *where])
    assert (
        unknown.exit_code == 2 and "--pipeline" in unknown.output and "hot_items" in unknown.output
    )


def test_a_side_output_held_by_a_running_pipeline_says_so(home, ran):
    folder, _, path = ran
    with holding_duckdb_writer(path):
        listed = _json(["dlq", "list", "--pipelines-dir", str(folder), "--json"])
    (side,) = listed["pipelines"]
    assert side["counts"] is None and "in use" in side["note"] and side["path"] == str(path)
