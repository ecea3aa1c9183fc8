"""Continuous runs of a declarative pipeline: checkpoints reported while events trickle in,
a graceful stop commits the batch in flight, and the next run resumes with no event read
twice."""

import time

import duckdb
import polars as pl
import pytest

from dataflare_platform.engine import Runner, RunnerConfig, TableSource
from dataflare_platform.engine.sinks import CollectSink
from dataflare_platform.events.log import EventLog
from dataflare_platform.queries.nexmark import BUILDERS, NexmarkSources
from dataflare_platform.streams.continuous import ContinuousRun
from dataflare_platform.streams.ranges import load_specs


@pytest.fixture
def hot_items():
    (spec,) = [s for s in load_specs() if s.name == "hot_items"]
    return spec


def _wait_for(reports, predicate, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    seen = []
    for report in reports:
        seen.append(report)
        if predicate(report):
            return seen
        if time.monotonic() >= deadline:
            pytest.fail(f"no matching report within {timeout_s:g} s: {seen[-3:]}")
    raise AssertionError(f"the run ended first: {seen[-3:]}")


def _output(home) -> pl.DataFrame:
    with duckdb.connect(str(home.root / "streams" / "hot_items.duckdb")) as conn:
        return pl.from_arrow(conn.sql("SELECT * FROM hot_items").to_arrow_table())


def test_stop_and_resume_reads_every_event_once(home, hot_items, small_nexmark):
    bids = small_nexmark["bids"]
    topic = EventLog(home.event_log_dir).create_topic("nexmark.bids", bids.schema)
    topic.append(bids.slice(0, 1000))
    config = RunnerConfig(batch_rows=400, checkpoint_every=1000, checkpoint_interval_s=0.2)

    def start():
        log = EventLog(home.event_log_dir)
        return ContinuousRun(hot_items, log, home.root / "streams", config=config).start()

    run = start()
    reports = run.reports()
    # Checkpoints by time (checkpoint_every is far away) as events arrive.
    seen = _wait_for(reports, lambda r: r.events_in_total == 1000)
    assert seen[-1].lag_events == 0 and seen[-1].offsets == {"bids/0": 1000}
    assert seen[-1].lag_by_partition == {"bids/0": 0} and seen[-1].checkpoint_at > 0
    assert seen[-1].events_per_s_lifetime > 0
    topic.append(bids.slice(1000, 1000))
    seen = _wait_for(reports, lambda r: r.events_in_total == 2000)
    assert seen[-1].events_in == 2000 and seen[-1].events_out > 0
    assert isinstance(seen[-1].watermark_ms, int) and seen[-1].watermark_ms > 0
    assert run.stop(30)
    rest = list(reports)  # the final checkpoint, if anything changed since
    assert all(r.events_in_total == 2000 for r in rest)
    assert run.result.checkpoint.offsets == {"bids/0": 2000}

    # Events appended while nothing runs are read by the next run, from the checkpoint.
    topic.append(bids.slice(2000))
    run = start()
    reports = run.reports()
    seen = _wait_for(reports, lambda r: r.events_in_total == bids.num_rows)
    assert seen[-1].events_in == bids.num_rows - 2000  # this run's own count
    assert run.stop(30)
    list(reports)

    got = _output(home)
    assert got.height > 0 and got.unique().height == got.height
    whole = CollectSink()
    source = TableSource.single("bids", bids.select(["auction", "date_time"]))
    Runner(BUILDERS["q5"](NexmarkSources(bids=source), whole), RunnerConfig()).run()
    expected = whole.result().filter(pl.col("window_start") <= got["window_start"].max())
    assert got.sort(got.columns).equals(expected.select(got.columns).sort(got.columns))


def test_an_engine_error_is_raised_by_reports(home, hot_items):
    # No topic: the pipeline cannot be built; the error comes out of reports().
    run = ContinuousRun(hot_items, EventLog(home.event_log_dir), home.root / "streams").start()
    with pytest.raises(Exception, match=r"nexmark\.bids"):
        list(run.reports())
    assert not run.running


def test_checkpoint_interval_must_be_positive():
    with pytest.raises(ValueError, match="checkpoint_interval_s"):
        RunnerConfig(checkpoint_interval_s=0)


def test_a_landing_sources_quarantined_files_are_in_the_checkpoint_reports(home, tmp_path):
    """A file name that is not UTF-8 is reported by its escaped name in the run's
    reports (the continuous asset's metadata), with the landing counts."""
    import os

    from dataflare_platform.streams.spec import PipelineSpec

    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "good.ndjson").write_bytes(b'{"id": 1, "date_time": "2026-01-01T00:00:00"}\n')
    (landing / os.fsdecode(b"bad\xff.ndjson")).write_bytes(b'{"id": 2}\n')
    spec = PipelineSpec.load(
        {
            "name": "orders",
            "catalog": {"micro_batch": False},
            "sources": {
                "orders": {
                    "kind": "landing",
                    "directory": str(landing),
                    "settle_s": 0,
                    "scan_interval_s": 0.05,
                    "schema": {"id": "int64", "date_time": "timestamp[ms]"},
                }
            },
            "streams": {"all": {"from": "orders"}},
            "output": "all",
            "sink": {"kind": "duckdb", "table": "orders"},
        }
    )
    config = RunnerConfig(checkpoint_interval_s=0.1)
    run = ContinuousRun(spec, EventLog(home.event_log_dir), home.root / "streams", config=config)
    reports = run.start().reports()
    seen = _wait_for(reports, lambda r: r.events_in_total == 1 and r.sources.get("orders"))
    assert run.stop(30)
    list(reports)
    landed = seen[-1].sources["orders"]
    assert landed["quarantined"] == ["bad\\xff.ndjson"]
    assert (landed["rows_in"], landed["rows_out"], landed["dead_letters"]) == (2, 1, 1)
    assert "sources" in seen[-1].metadata()
