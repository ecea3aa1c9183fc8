"""Replay: an event-time interval or an offset range of a topic, re-processed through a
pipeline into another table or over the pipeline's own output (idempotently)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from dataflare_platform.cli import app as dataflare_app
from dataflare_platform.connectors.duckdb import DuckDBSink
from dataflare_platform.connectors.parquet_dataset.sink import ParquetDatasetSink
from dataflare_platform.engine import CollectSink, Runner, RunnerConfig, TableSource
from dataflare_platform.events.engine_io import LogSource
from dataflare_platform.events.log import EventLog, Topic
from dataflare_platform.queries.nexmark import BUILDERS, COLUMNS, NexmarkSources
from dataflare_platform.replay.factories import for_nexmark, for_spec
from dataflare_platform.replay.plan import (
    IntervalPlan,
    Ownership,
    plan_days,
    plan_interval,
    plan_owned,
)
from dataflare_platform.replay.run import (
    DuckDBTarget,
    ParquetTarget,
    ReplayError,
    ReplayRequest,
    replay,
)
from dataflare_platform.sql_names import quote_identifier
from dataflare_platform.streams import bind
from dataflare_platform.streams.spec import PipelineSpec
from dataflare_platform.times import epoch_ms

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

T0 = epoch_ms("2026-01-01T00:00:00")  # the generator's first event time
START, END = T0 + 7_500, T0 + 18_200  # not aligned to any window
CONFIG = RunnerConfig(batch_rows=300, checkpoint_every=3)


@pytest.fixture
def log(tmp_path: Path) -> EventLog:
    return EventLog(tmp_path / "log")


def _publish(log: EventLog, name: str, table: pa.Table, rows: int = 250) -> Topic:
    """Several appends over 2 partitions (each append goes whole to the next one)."""
    topic = log.create_topic(name, table.schema, partitions=2)
    for start in range(0, table.num_rows, rows):
        topic.append(table.slice(start, rows))
    return topic


@pytest.fixture
def bids(log: EventLog, small_nexmark) -> Topic:
    return _publish(log, "bids", small_nexmark["bids"])


def _run_original(topic: Topic, query: str, db: Path, until: dict[str, int] | None = None):
    """The pipeline's own run over the topic, into ``nexmark_<query>``."""
    source = LogSource(topic, COLUMNS[query]["bids"], bounded=until is None)
    sink = DuckDBSink(db, f"nexmark_{query}")
    result = Runner(BUILDERS[query](NexmarkSources(bids=source), sink), CONFIG).run(until=until)
    assert result.metrics.late_events == 0  # what exact reproduction assumes
    return result


def _table(db: Path, table: str) -> pl.DataFrame:
    with duckdb.connect(str(db)) as conn:
        frame = pl.from_arrow(conn.sql(f"SELECT * FROM {quote_identifier(table)}").arrow())
    assert isinstance(frame, pl.DataFrame)
    return frame.sort(pl.all())


def _owned(frame: pl.DataFrame, plan: IntervalPlan) -> pl.DataFrame:
    ms = pl.col(plan.column).cast(pl.Int64)
    return frame.filter((ms >= plan.owned_start_ms) & (ms < plan.owned_end_ms))


# -- what an interval owns ------------------------------------------------------------------


def test_plan_widens_the_interval_to_whole_windows():
    tumbling = plan_interval(Ownership(size_ms=10, slide_ms=10, column="w"), 75, 182)
    assert (tumbling.owned_start_ms, tumbling.owned_end_ms) == (70, 190)
    assert (tumbling.read_start_ms, tumbling.read_end_ms) == (70, 190)
    # Sliding 10/2: every window overlapping [100, 200) starts in (90, 200).
    sliding = plan_interval(Ownership(size_ms=10, slide_ms=2, column="w"), 100, 200)
    assert (sliding.owned_start_ms, sliding.owned_end_ms) == (92, 200)
    assert (sliding.read_start_ms, sliding.read_end_ms) == (92, 208)
    # Stateless: rows are owned by their own event time, nothing is widened.
    rows = plan_interval(Ownership(size_ms=1, slide_ms=1, column="t"), 75, 182)
    assert (rows.owned_start_ms, rows.owned_end_ms) == (75, 182)
    assert (rows.read_start_ms, rows.read_end_ms) == (75, 182)


def test_whole_unit_plans_own_the_windows_starting_in_them():
    sliding = Ownership(size_ms=10, slide_ms=2, column="w")
    plan = plan_owned(sliding, 100, 200)
    assert (plan.owned_start_ms, plan.owned_end_ms, plan.read_end_ms) == (100, 200, 208)
    day = plan_days(sliding, T0 + 5, T0 + 86_400_001)  # two UTC days
    assert (day.owned_start_ms, day.owned_end_ms) == (T0, T0 + 2 * 86_400_000)
    with pytest.raises(ReplayError, match="aligned"):
        plan_owned(sliding, 101, 200)


@pytest.mark.parametrize("query", ["q7", "q5", "q1"])
def test_interval_replay_into_a_new_table_equals_the_original_owned_rows(
    log, bids, tmp_path, query
):
    db = tmp_path / "out.duckdb"
    _run_original(bids, query, db)
    original = _table(db, f"nexmark_{query}")
    request = ReplayRequest(
        topic="bids", start=START, end=END, target=DuckDBTarget(path=db, table="replayed")
    )
    result = replay(log, request, for_nexmark(query))
    assert result.plan is not None and result.late_events == 0
    want = _owned(original, result.plan)
    assert want.height > 0 and result.rows_out == want.height
    assert _table(db, "replayed").equals(want)
    assert result.events_read < sum(bids.end_offsets().values())  # only the overlap is read
    if query == "q7":  # windows [0 s, 10 s) and [10 s, 20 s) overlap [7.5 s, 18.2 s)
        assert (result.plan.owned_start_ms, result.plan.owned_end_ms) == (T0, T0 + 20_000)
    if query == "q5":  # the edge windows were computed from part of their events
        assert result.rows_discarded > 0
    if query == "q1":
        assert (result.plan.owned_start_ms, result.plan.owned_end_ms) == (START, END)
    # The same replay again changes nothing.
    replay(log, request, for_nexmark(query))
    assert _table(db, "replayed").equals(want)


def test_interval_replay_in_memory_of_a_two_source_window_join(log, small_nexmark, tmp_path):
    persons = _publish(log, "persons", small_nexmark["persons"], rows=20)
    auctions = _publish(log, "auctions", small_nexmark["auctions"], rows=50)
    sink = CollectSink()
    sources = NexmarkSources(
        persons=LogSource(persons, COLUMNS["q8"]["persons"], bounded=True),
        auctions=LogSource(auctions, COLUMNS["q8"]["auctions"], bounded=True),
    )
    Runner(BUILDERS["q8"](sources, sink), CONFIG).run()
    original = sink.result().sort(pl.all())
    request = ReplayRequest(
        topic={"persons": "persons", "auctions": "auctions"}, start=START, end=END
    )
    result = replay(log, request, for_nexmark("q8"))
    assert result.plan is not None and result.output is not None
    want = _owned(original, result.plan)
    assert want.height > 0
    assert result.output.sort(pl.all()).equals(want)


# -- overwriting the original output --------------------------------------------------------


def _corrupt(db: Path, table: str, plan: IntervalPlan, outside: str) -> None:
    """Lose some owned rows, damage the rest, add a bogus one; damage a row outside."""
    ms = f"epoch_ms(CAST({quote_identifier(plan.column)} AS TIMESTAMP))"
    inside = f"{ms} >= {plan.owned_start_ms} AND {ms} < {plan.owned_end_ms}"
    quoted = quote_identifier(table)
    with duckdb.connect(str(db)) as conn:
        first = conn.execute(f"SELECT min({ms}) FROM {quoted} WHERE {inside}").fetchone()
        assert first is not None and first[0] is not None
        conn.execute(f"DELETE FROM {quoted} WHERE {ms} = {first[0]}")
        conn.execute(f"INSERT INTO {quoted} SELECT * FROM {quoted} WHERE {inside} LIMIT 1")
        conn.execute(f"UPDATE {quoted} SET {outside} WHERE NOT ({inside})")


@pytest.mark.parametrize(
    ("query", "damage"),
    [("q7", "price = -1"), ("q5", "num = -1"), ("q1", "price = -1")],
)
def test_overwrite_restores_the_interval_and_is_idempotent(log, bids, tmp_path, query, damage):
    db = tmp_path / "out.duckdb"
    _run_original(bids, query, db)
    table = f"nexmark_{query}"
    original = _table(db, table)
    request = ReplayRequest(
        topic="bids",
        start=START,
        end=END,
        target=DuckDBTarget(path=db, table=table, overwrite=True),
    )
    plan = replay(log, request, for_nexmark(query)).plan  # a no-op on a good table
    assert plan is not None
    assert _table(db, table).equals(original)
    _corrupt(db, table, plan, damage)
    assert not _owned(_table(db, table), plan).equals(_owned(original, plan))
    for _ in range(2):
        result = replay(log, request, for_nexmark(query))
        assert result.replaced == "range"
        repaired = _table(db, table)
        assert _owned(repaired, plan).equals(_owned(original, plan))
        # Rows the replay does not own are left alone, damage included.
        column = damage.split(" ")[0]
        rest = repaired.join(_owned(repaired, plan), on=repaired.columns, how="anti")
        assert rest.height == original.height - _owned(original, plan).height
        assert (rest.get_column(column) == -1).all()
    with duckdb.connect(str(db)) as conn:  # nothing left behind
        tables = {
            r[0]
            for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
    assert f"{table}__replay" not in tables


def _dataset(root: Path) -> pl.DataFrame:
    frame = pl.read_parquet(str(root / "**" / "*.parquet"), hive_partitioning=True)
    return frame.sort(pl.all())


def test_overwrite_of_a_parquet_dataset_swaps_whole_days(log, bids, tmp_path):
    root = tmp_path / "q7"
    source = LogSource(bids, COLUMNS["q7"]["bids"], bounded=True)
    sink = ParquetDatasetSink(root, time_column="window_start", fsync=False)
    Runner(BUILDERS["q7"](NexmarkSources(bids=source), sink), CONFIG).run()
    original = _dataset(root)
    damaged = original.head(1).drop("date").with_columns(pl.lit(-1).alias("price"))
    ParquetDatasetSink(root, time_column="window_start", fsync=False).replace_partitions(damaged)
    assert not _dataset(root).equals(original)
    target = ParquetTarget(root=root, time_column="window_start", overwrite=True)
    request = ReplayRequest(topic="bids", start=START, end=END, target=target)
    for _ in range(2):
        result = replay(log, request, for_nexmark("q7"))
        assert result.plan is not None
        assert (result.plan.owned_start_ms, result.plan.owned_end_ms) == (T0, T0 + 86_400_000)
        assert _dataset(root).equals(original)
    wrong = ParquetTarget(root=root, time_column="date_time", overwrite=True)
    with pytest.raises(ReplayError, match="partitioned by 'date_time', but"):
        replay(log, request.model_copy(update={"target": wrong}), for_nexmark("q7"))
    assert _dataset(root).equals(original)


def test_overwrite_is_refused_until_the_original_has_passed_the_interval(log, bids, tmp_path):
    db = tmp_path / "out.duckdb"
    _run_original(bids, "q7", db, until={"bids/0": 1000, "bids/1": 1000})
    before = _table(db, "nexmark_q7")
    request = ReplayRequest(
        topic="bids",
        start=START,
        end=END,
        target=DuckDBTarget(path=db, table="nexmark_q7", overwrite=True),
    )
    with pytest.raises(ReplayError, match="has not yet written the interval"):
        replay(log, request, for_nexmark("q7"))
    assert _table(db, "nexmark_q7").equals(before)


def test_overwrite_needs_a_way_to_find_the_rows(log, bids, tmp_path):
    db = tmp_path / "out.duckdb"
    _run_original(bids, "q2", db)  # q2's rows (auction, price) carry no event time
    before = _table(db, "nexmark_q2")
    target = DuckDBTarget(path=db, table="nexmark_q2", overwrite=True)
    request = ReplayRequest(topic="bids", start=T0, end=T0 + 30_000, target=target)
    with pytest.raises(ReplayError, match="no event-time column"):
        replay(log, request, for_nexmark("q2"))
    assert _table(db, "nexmark_q2").equals(before)
    # Into a table of its own it works: the interval's rows replace the table.
    into = ReplayRequest(
        topic="bids", start=T0, end=T0 + 30_000, target=DuckDBTarget(path=db, table="q2_copy")
    )
    assert replay(log, into, for_nexmark("q2")).replaced == "table"
    assert _table(db, "q2_copy").equals(before)
    with pytest.raises(ValidationError, match="cannot overwrite"):
        ReplayRequest(topic="bids", offsets={0: (0, 10)}, target=target)


def test_pipelines_with_state_across_windows_are_refused(log, small_nexmark):
    _publish(log, "auctions", small_nexmark["auctions"])
    _publish(log, "bids", small_nexmark["bids"])
    request = ReplayRequest(topic={"auctions": "auctions", "bids": "bids"}, start=T0, end=END)
    with pytest.raises(ReplayError, match="keeps state across windows"):
        replay(log, request, for_nexmark("q4"))
    with pytest.raises(ReplayError, match="map every source"):
        replay(log, ReplayRequest(topic={"bids": "bids"}, start=T0, end=END), for_nexmark("q4"))


# -- offset ranges --------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["q7", "q1"])
def test_offset_range_replay_equals_processing_that_range(log, bids, tmp_path, query):
    ranges = {0: (250, 1000), 1: (0, 500)}
    columns = COLUMNS[query]["bids"]
    tables = {str(p): bids.read(p, lo, hi - lo, columns) for p, (lo, hi) in ranges.items()}
    sink = CollectSink()
    source = TableSource("bids", tables)
    Runner(BUILDERS[query](NexmarkSources(bids=source), sink), CONFIG).run()
    want = sink.result().sort(pl.all())
    result = replay(log, ReplayRequest(topic="bids", offsets=ranges), for_nexmark(query))
    assert result.output is not None and result.plan is None
    assert result.output.sort(pl.all()).equals(want)
    assert result.events_read == 1250
    # Into a table: the table is the range's output, however often it is replayed.
    db = tmp_path / "out.duckdb"
    into = ReplayRequest(topic="bids", offsets=ranges, target=DuckDBTarget(path=db, table="r"))
    for _ in range(2):
        assert replay(log, into, for_nexmark(query)).replaced == "table"
        assert _table(db, "r").equals(want)


def test_offsets_outside_the_log_are_refused(log, bids):
    end = bids.end_offsets()[0]
    request = ReplayRequest(topic="bids", offsets={0: (0, end + 1)})
    with pytest.raises(ReplayError, match="past the end"):
        replay(log, request, for_nexmark("q1"))


def test_request_validation():
    at = ReplayRequest(topic="t", start="2026-01-01T00:00:07.5", end="2026-01-01T02:00:00+01:00")
    assert (at.start, at.end) == (T0 + 7_500, T0 + 3_600_000)  # naive means UTC
    for bad in (
        {"start": T0},
        {"start": T0, "end": T0},
        {"start": T0, "end": T0 + 1, "offsets": {0: (0, 1)}},
        {"offsets": {0: (5, 1)}},
        {},
    ):
        with pytest.raises(ValidationError):
            ReplayRequest(topic="t", **bad)


# -- the command ----------------------------------------------------------------------------


def _cli() -> typer.Typer:
    return dataflare_app  # the real `dataflare` app, with its error boundary


def test_cli_overwrite_and_into_by_query(log, bids, tmp_path):
    db = tmp_path / "out.duckdb"
    _run_original(bids, "q7", db)
    original = _table(db, "nexmark_q7")
    with duckdb.connect(str(db)) as conn:
        conn.execute("DELETE FROM nexmark_q7")
    common = ["replay", "--query", "q7", "--topic", "bids", "--log", str(log.root)]
    interval = ["--from-time", "2026-01-01T00:00:00", "--to-time", "2026-01-01T00:00:30"]
    got = CliRunner().invoke(_cli(), [*common, *interval, "--duckdb", str(db), "--overwrite"])
    assert got.exit_code == 0, got.output
    assert '"replaced": "range"' in got.stdout
    assert _table(db, "nexmark_q7").equals(original)
    offsets = ["--from-offset", "0", "--to-offset", "0:1000", "--to-offset", "1:1000"]
    got = CliRunner().invoke(_cli(), [*common, *offsets, "--duckdb", str(db), "--into", "part"])
    assert got.exit_code == 0, got.output
    assert '"events_read": 2000' in got.stdout
    # Refusals exit with 2 and say why.
    both = [*common, *interval, "--duckdb", str(db), "--into", "x", "--overwrite"]
    got = CliRunner().invoke(_cli(), both)
    assert got.exit_code == 2 and "one of --into TABLE or --overwrite" in got.output
    got = CliRunner().invoke(_cli(), [*common, *interval, "--into", "x"])
    assert got.exit_code == 2 and "--duckdb is needed" in got.output


def test_cli_overwrite_by_spec_uses_its_sink(log, bids, tmp_path):
    spec_file = tmp_path / "hot.yaml"
    spec_file.write_text(
        """
name: hot-items
sources:
  bids: {path: unused, columns: [auction, date_time]}
streams:
  hot:
    from: bids
    steps:
      - key_by: [auction]
      - window: {sliding: {size: 10s, slide: 2s}, agg: {num: count}, top: {by: num}}
output: hot
sink: {duckdb: {path: out.duckdb, table: hot_items}}
"""
    )
    spec = PipelineSpec.from_yaml(spec_file)
    db = tmp_path / "out.duckdb"
    sink = bind.open_sink(spec, bind.context(spec))
    pipeline = for_spec(spec).build({"bids": LogSource(bids, bounded=True)}, sink)
    Runner(pipeline, CONFIG).run()
    original = _table(db, "hot_items")
    with duckdb.connect(str(db)) as conn:
        conn.execute("UPDATE hot_items SET num = 0")
    args = ["replay", "--spec", str(spec_file), "--topic", "bids", "--log", str(log.root)]
    interval = ["--from-time", str(T0), "--to-time", str(T0 + 40_000)]
    got = CliRunner().invoke(_cli(), [*args, *interval, "--overwrite"])
    assert got.exit_code == 0, got.output
    assert _table(db, "hot_items").equals(original)
