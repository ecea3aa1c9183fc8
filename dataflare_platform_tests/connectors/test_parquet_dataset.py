"""Parquet dataset sink: the dataset (read by DuckDB and Polars with Hive partitioning)
equals a CollectSink run, rows sit in the partition of their date, a crash at each step
of the commit protocol recovers to exactly the committed commits, replace_partitions is
atomic and idempotent, and SIGKILLed runs restarted give the uninterrupted dataset."""

from __future__ import annotations

import datetime as dt
import json
import re

import duckdb
import polars as pl
import pytest

from dataflare_platform.connectors import parquet_dataset
from dataflare_platform.connectors.parquet_dataset.sink import ParquetDatasetSink
from dataflare_platform.connectors.settings import OpenContext
from dataflare_platform.datagen import NexmarkConfig
from dataflare_platform.engine import Runner, RunnerConfig
from dataflare_platform.engine.checkpoint import Checkpoint
from dataflare_platform.errors import ConfigError
from dataflare_platform.queries.nexmark import BUILDERS
from dataflare_platform_tests.connectors.contract import SinkCase, TransactionalSinkContract
from dataflare_platform_tests.connectors.sink_helpers import (
    collect,
    same_rows,
    sources,
)
from dataflare_platform_tests.nexmark_data import nexmark_tables

# Small batches: at 0.2 events/s a batch of 200 rows spans ~17 minutes of event time,
# inside the runner's one-hour limit on how far a row may run ahead of the stream.
CONFIG = RunnerConfig(batch_rows=200, checkpoint_every=3)


@pytest.fixture(scope="module")
def multi_day():
    """20k events at 0.2 events/s: about 28 hours, so two daily partitions."""
    return nexmark_tables(NexmarkConfig(events=20_000, events_per_second=0.2, seed=3))


@pytest.fixture(scope="module")
def multi_day_q7(multi_day) -> pl.DataFrame:
    """q7 over ``multi_day`` into a CollectSink: what the dataset must hold."""
    return collect("q7", multi_day, CONFIG)


def duck(root) -> pl.DataFrame:
    with duckdb.connect() as conn:
        table = conn.sql(
            f"SELECT * FROM read_parquet('{root}/**/*.parquet', hive_partitioning=true)"
        ).to_arrow_table()
    return pl.from_arrow(table)


def frame(day: int, values: list[int]) -> pl.DataFrame:
    t0 = dt.datetime(2026, 1, day)
    return pl.DataFrame(
        {"v": values, "date_time": [t0 + dt.timedelta(hours=i) for i in range(len(values))]}
    ).with_columns(pl.col("date_time").cast(pl.Datetime("ms")))


# -- settings ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"partition_by": "a/b"}, "partition_by"),
        ({"time_column": ""}, "time_column"),
        ({"compression": "brotli2"}, "compression"),
        ({"lock_timeout_s": -1}, "lock_timeout_s"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(tmp_path, kwargs, field):
    with pytest.raises(ConfigError) as err:
        ParquetDatasetSink(tmp_path, **kwargs)
    assert err.value.fields == [field]


# -- engine runs ------------------------------------------------------------------------
def test_engine_run_equals_collect_sink_partitioned_by_date(tmp_path, multi_day, multi_day_q7):
    root = tmp_path / "q7"
    result = Runner(
        BUILDERS["q7"](sources("q7", multi_day), ParquetDatasetSink(root)), CONFIG
    ).run()
    assert result.finished and result.metrics.dead_letters == 0
    expected = multi_day_q7
    got = duck(root)
    assert expected.height > 1000
    assert same_rows(got.drop("date"), expected)
    assert got.get_column("date").dtype == pl.Date
    assert (got.get_column("date") == got.get_column("date_time").dt.date()).all()
    assert got.get_column("date").n_unique() >= 2
    lazy = pl.scan_parquet(f"{root}/**/*.parquet", hive_partitioning=True).collect()
    assert same_rows(lazy.drop("date"), expected)
    names = [p.relative_to(root).as_posix() for p in root.rglob("*.parquet")]
    assert all(re.fullmatch(r"date=\d{4}-\d\d-\d\d/part-\d{8}-\d{4}\.parquet", n) for n in names)


def test_any_time_column_names_the_partition(tmp_path, small_nexmark):
    root = tmp_path / "q5"
    sink = ParquetDatasetSink(root, time_column="window_start", partition_by="day")
    Runner(BUILDERS["q5"](sources("q5", small_nexmark), sink), CONFIG).run()
    got = duck(root)
    assert same_rows(got.drop("day"), collect("q5", small_nexmark, CONFIG))
    assert (got.get_column("day") == got.get_column("window_start").dt.date()).all()


def test_stop_and_resume_equals_one_run(tmp_path, multi_day, multi_day_q7):
    root = tmp_path / "q7"
    sink = ParquetDatasetSink(root)
    first = Runner(BUILDERS["q7"](sources("q7", multi_day), sink), CONFIG).run(
        until={"bids/0": 7_777}
    )
    assert not first.finished
    second = Runner(BUILDERS["q7"](sources("q7", multi_day), sink), CONFIG).run()
    assert second.finished
    assert same_rows(duck(root).drop("date"), multi_day_q7)


# -- the commit protocol ----------------------------------------------------------------
def _committed(root, rows: list[int], seq: int = 1) -> ParquetDatasetSink:
    sink = ParquetDatasetSink(root)
    sink.open("p")
    sink.write(frame(1, rows), None)
    sink.commit(Checkpoint(offsets={"s/0": seq}))
    return sink


def test_the_checkpoint_in_the_manifest_is_compressed_and_read_back(tmp_path):
    """The manifest (rewritten at every commit) holds the checkpoint with its state
    compressed; the next open reads it back whole."""
    state = pl.DataFrame({"k": list(range(20_000)), "url": ["https://x.example/a"] * 20_000})
    checkpoint = Checkpoint(offsets={"s/0": 3}, states={"op": {"t": state.to_arrow()}})
    sink = ParquetDatasetSink(tmp_path / "ds")
    sink.open("p")
    sink.write(frame(1, [1]), None)
    sink.commit(checkpoint)
    sink.close()
    manifest = parquet_dataset.sink.Manifest.decode(
        (sink.state_dir / parquet_dataset.sink.MANIFEST).read_bytes()
    )
    assert manifest.checkpoint == checkpoint.encode("zstd")
    assert len(manifest.checkpoint) < len(checkpoint.encode()) / 10
    again = ParquetDatasetSink(tmp_path / "ds")
    restored = again.open("p")
    again.close()
    assert restored.offsets == {"s/0": 3}
    assert restored.states["op"]["t"].equals(state.to_arrow())


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs."""


def test_crash_before_the_manifest_leaves_only_the_previous_commit(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    sink = _committed(root, [1, 2])
    sink.write(frame(1, [3]).vstack(frame(2, [4])), None)

    def crash(*args, **kwargs):
        raise Crash

    monkeypatch.setattr(parquet_dataset.sink, "write_atomic", crash)
    with pytest.raises(Crash):
        sink.commit(Checkpoint(offsets={"s/0": 2}))
    monkeypatch.undo()
    sink.close()
    staged = [p.name for p in root.rglob(".*.tmp")]
    assert len(staged) == 2  # the crashed commit's files, under temporary names
    assert sorted(duck(root).get_column("v").to_list()) == [1, 2]  # invisible to readers

    again = ParquetDatasetSink(root)
    assert again.open("p").offsets == {"s/0": 1}
    assert list(root.rglob("*.tmp")) == []
    assert not (root / "date=2026-01-02").exists()  # emptied partition directory removed
    again.close()


def test_crash_after_the_manifest_is_rolled_forward(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    sink = _committed(root, [1, 2])
    sink.write(frame(2, [3, 4]), None)

    def crash(self, manifest):
        raise Crash

    monkeypatch.setattr(ParquetDatasetSink, "_publish", crash)
    with pytest.raises(Crash):
        sink.commit(Checkpoint(offsets={"s/0": 2}))
    monkeypatch.undo()
    sink.close()
    assert sorted(duck(root).get_column("v").to_list()) == [1, 2]  # not published yet

    again = ParquetDatasetSink(root)
    assert again.open("p").offsets == {"s/0": 2}  # committed: rolled forward
    again.close()
    assert sorted(duck(root).get_column("v").to_list()) == [1, 2, 3, 4]
    assert list(root.rglob("*.tmp")) == []


def test_open_deletes_only_our_files_beyond_the_last_commit(tmp_path):
    root = tmp_path / "ds"
    _committed(root, [1, 2]).close()
    day = root / "date=2026-01-01"
    committed = next(day.glob("part-*.parquet"))
    # A final-named file of a later, never committed sequence number, and a stranger's.
    (day / "part-00000009-0000.parquet").write_bytes(committed.read_bytes())
    (day / "notes.txt").write_text("keep me")
    sink = ParquetDatasetSink(root)
    sink.open("p")
    sink.close()
    assert sorted(p.name for p in day.iterdir()) == sorted([committed.name, "notes.txt"])


def test_a_directory_of_part_files_without_a_manifest_is_not_touched(tmp_path):
    root = tmp_path / "foreign"
    (root / "date=2026-01-01").mkdir(parents=True)
    stranger = root / "date=2026-01-01" / "part-00000001-0000.parquet"
    stranger.write_bytes(b"someone else's")
    with pytest.raises(RuntimeError, match="not a dataset written by this sink"):
        ParquetDatasetSink(root).open("p")
    assert stranger.exists()


def test_a_root_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError) as err:
        ParquetDatasetSink(tmp_path / "file")
    assert err.value.fields == ["root"]


def test_side_rows_are_kept_out_of_the_dataset(tmp_path):
    root = tmp_path / "ds"
    sink = ParquetDatasetSink(root)
    sink.open("p")
    side = pl.DataFrame(
        {"kind": ["late"], "operator": ["w"], "reason": ["behind"], "payload": ['{"v":1}']}
    )
    sink.write(frame(1, [1]), side)
    sink.commit(Checkpoint())
    sink.close()
    assert duck(root).height == 1
    assert sink.read_side().equals(side)


def test_replace_partitions_is_atomic_and_idempotent(tmp_path):
    root = tmp_path / "ds"
    sink = ParquetDatasetSink(root)
    sink.open("p")
    sink.write(frame(1, [1, 2]).vstack(frame(2, [3])).vstack(frame(3, [4])), None)
    sink.commit(Checkpoint(offsets={"s/0": 10}))
    sink.write(frame(1, [5]), None)
    sink.commit(Checkpoint(offsets={"s/0": 20}))

    def by_day() -> dict:
        got = duck(root)
        return {
            str(d): sorted(got.filter(pl.col("date") == d).get_column("v").to_list())
            for d in got.get_column("date").unique().sort().to_list()
        }

    assert by_day() == {"2026-01-01": [1, 2, 5], "2026-01-02": [3], "2026-01-03": [4]}
    for _ in range(2):  # replay twice: the same result
        replaced = sink.replace_partitions(frame(1, [10, 11]), dates=["2026-01-03"])
        assert replaced == ["2026-01-01", "2026-01-03"]
        assert by_day() == {"2026-01-01": [10, 11], "2026-01-02": [3]}
    sink.close()
    # A closed sink can replace too, and the stream's checkpoint is untouched.
    ParquetDatasetSink(root).replace_partitions(frame(2, [30]))
    assert by_day() == {"2026-01-01": [10, 11], "2026-01-02": [30]}
    assert ParquetDatasetSink(root).open("p").offsets == {"s/0": 20}
    manifest = json.loads((root / "_dataflare" / "manifest.json").read_text())
    assert manifest["removed"] and manifest["added"]


def test_one_writer_and_one_pipeline_per_dataset(tmp_path):
    root = tmp_path / "ds"
    first = _committed(root, [1])
    with pytest.raises(RuntimeError, match="another writer"):
        ParquetDatasetSink(root, lock_timeout_s=0.2).open("p")
    first.close()
    with pytest.raises(ValueError, match="pipeline 'p'"):
        ParquetDatasetSink(root).open("other")


def test_output_must_keep_the_dataset_schema(tmp_path):
    sink = _committed(tmp_path / "ds", [1])
    sink.write(frame(1, [2]).with_columns(extra=pl.lit(1)), None)
    with pytest.raises(ValueError, match="differ from the dataset"):
        sink.commit(Checkpoint())
    sink.close()


# -- the connector contract -------------------------------------------------------------
class TestParquetDatasetSinkContract(TransactionalSinkContract):
    """Opened through the registry (``kind: parquet_dataset``)."""

    KIND = "parquet_dataset"

    @pytest.fixture
    def sink_case(self, tmp_path) -> SinkCase:
        settings = parquet_dataset.ParquetDatasetSettings(root=tmp_path / "dataset")

        def read() -> pl.DataFrame:
            got = duck(settings.root)
            assert (got.get_column("date") == got.get_column("date_time").dt.date()).all()
            assert list(settings.root.rglob("*.tmp")) == []
            return got.drop("date")

        return SinkCase(
            open=lambda: parquet_dataset.open_sink(settings, OpenContext("contract")),
            read=read,
            settings=settings.model_dump(),
        )
