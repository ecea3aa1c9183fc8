"""Files as a source (Parquet and Arrow IPC parts of a folder) opened through the
registry, under the source contract."""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataflare_platform.bench.parquet_input import write_parquet_copy
from dataflare_platform.connectors.files import (
    FileSource,
    FileSourceSettings,
    ParquetSink,
    open_source,
)
from dataflare_platform.connectors.settings import OpenContext
from dataflare_platform.datagen import NexmarkConfig, write_nexmark
from dataflare_platform.engine import CollectSink, Runner, RunnerConfig
from dataflare_platform.errors import CorruptInputError
from dataflare_platform.queries.nexmark import BUILDERS, COLUMNS, NexmarkSources
from dataflare_platform_tests.connectors.contract import SourceCase, SourceContract
from dataflare_platform_tests.processes import duckdb_run_survives_sigkills, nexmark_run


class TestFileSourceContract(SourceContract):
    KIND = "file"

    @pytest.fixture
    def source_case(self, tmp_path) -> SourceCase:
        def store(table: pa.Table):
            folder = tmp_path / "bids"
            folder.mkdir()
            # Three parts of both formats, several row groups each: offsets run across.
            third = table.num_rows // 3
            pq.write_table(table.slice(0, third), folder / "00.parquet", row_group_size=100)
            out = pa.OSFile(str(folder / "01.arrow"), "wb")
            with out, pa.ipc.new_file(out, table.schema) as writer:
                writer.write_table(table.slice(third, third), max_chunksize=70)
            pq.write_table(table.slice(2 * third), folder / "02.parquet", row_group_size=150)
            settings = FileSourceSettings(path=folder)
            return lambda: open_source(settings, OpenContext("contract", "bids"))

        return SourceCase(store)


# --- Parquet decoded ahead (issue 21 §4) -------------------------------------------------

COLUMNS_Q1 = ["auction", "bidder", "price", "date_time"]


@pytest.fixture
def parquet_parts(tmp_path, medium_nexmark) -> tuple[pa.Table, list]:
    """~55k bids in two Parquet files with row groups larger than a decoded slice
    (``MIN_SLICE_ROWS``), and an Arrow IPC part between them: offsets run across files,
    row groups, slices and formats."""
    bids = medium_nexmark["bids"]
    third = bids.num_rows // 3
    paths = [tmp_path / "00.parquet", tmp_path / "01.arrow", tmp_path / "02.parquet"]
    pq.write_table(bids.slice(0, third), paths[0], row_group_size=17_000)
    with pa.OSFile(str(paths[1]), "wb") as out, pa.ipc.new_file(out, bids.schema) as writer:
        writer.write_table(bids.slice(third, third), max_chunksize=9_000)
    pq.write_table(bids.slice(2 * third), paths[2], row_group_size=12_345)
    assert pq.ParquetFile(paths[0]).metadata.num_row_groups > 1
    return bids, paths


def _read_all(source: FileSource, offset: int, batch: int) -> list[pa.Table]:
    parts = []
    end = source.end_offset("0")
    while offset < end:
        got = source.read("0", offset, batch)
        # Every read but the last fills the batch, across slice, row group and file ends.
        assert got.num_rows == min(batch, end - offset)
        parts.append(got)
        offset += got.num_rows
    assert source.read("0", offset, batch).num_rows == 0
    return parts


@pytest.mark.parametrize("batch", [1, 37, 100_000])
@pytest.mark.parametrize("read_ahead", [0, 2])
def test_parquet_read_ahead_gives_every_row_once_in_order(parquet_parts, batch, read_ahead):
    bids, paths = parquet_parts
    source = FileSource("bids", paths, columns=COLUMNS_Q1, read_ahead=read_ahead)
    try:
        parts = _read_all(source, 0, batch)
    finally:
        source.close()
    assert pa.concat_tables(parts).equals(bids.select(COLUMNS_Q1))


@pytest.mark.parametrize("read_ahead", [0, 2])
def test_a_read_from_inside_a_row_group_starts_exactly_there(parquet_parts, read_ahead):
    bids, paths = parquet_parts
    # Inside the second row group of the first file, then a jump back (a re-read).
    for offset in (17_000 + 4_321, 5, bids.num_rows - 3):
        source = FileSource("bids", paths, columns=COLUMNS_Q1, read_ahead=read_ahead)
        try:
            got = pa.concat_tables(_read_all(source, offset, 10_000))
            back = source.read("0", 1_000, 100)
        finally:
            source.close()
        assert got.equals(bids.select(COLUMNS_Q1).slice(offset))
        assert back.equals(bids.select(COLUMNS_Q1).slice(1_000, 100))


@pytest.mark.parametrize("until", [17_000 + 4_321, 30_001])
def test_a_run_stopped_inside_a_row_group_resumes_exactly_once(parquet_parts, until):
    """q5 (sliding windows: state in the checkpoint) stopped at a checkpoint inside a
    row group and resumed on a fresh source equals one uninterrupted run."""
    bids, paths = parquet_parts
    config = RunnerConfig(batch_rows=1_000, checkpoint_every=2)

    def run(sink, stop=None):
        source = FileSource("bids", paths, columns=COLUMNS["q5"]["bids"])
        try:
            pipeline = BUILDERS["q5"](NexmarkSources(bids=source), sink)
            return Runner(pipeline, config).run(until=stop)
        finally:
            source.close()

    whole = CollectSink()
    assert run(whole).finished
    sink = CollectSink()
    assert not run(sink, {"bids/0": until}).finished
    assert sink.checkpoint is not None
    assert sink.checkpoint.offsets == {"bids/0": until}
    resumed = run(sink)
    assert resumed.finished
    # Counts carry over from the checkpoint: every row counted once over the two runs.
    assert resumed.metrics.events_in == bids.num_rows
    got, expected = sink.result(), whole.result()
    assert got.height == expected.height > 0
    assert got.sort(got.columns).equals(expected.sort(expected.columns))


def _column_chunk(path, row_group: int, name: str) -> tuple[int, int]:
    """(file offset, length) of one column chunk's pages."""
    meta = pq.ParquetFile(path).metadata.row_group(row_group)
    (i,) = [i for i in range(meta.num_columns) if meta.column(i).path_in_schema == name]
    column = meta.column(i)
    start = column.dictionary_page_offset or column.data_page_offset
    return start, column.total_compressed_size


def _damage(path, row_group: int, name: str) -> None:
    """Overwrite the middle of a column chunk's pages with garbage; the footer stays."""
    start, length = _column_chunk(path, row_group, name)
    with path.open("r+b") as f:
        f.seek(start + length // 4)
        f.write(b"\xa5\x5a" * (length // 4))


@pytest.mark.parametrize("read_ahead", [0, 2])
def test_only_the_projected_columns_are_decoded(parquet_parts, read_ahead):
    """Damaged ``url`` pages do not matter to a source that does not read ``url``: the
    projection is applied when decoding, not after. A source that reads it fails, naming
    the file and the row group."""
    bids, paths = parquet_parts
    _damage(paths[2], 1, "url")
    wanted = ["price", "auction"]  # not the file's order: the source's order is kept
    source = FileSource("bids", paths, columns=wanted, read_ahead=read_ahead)
    try:
        assert source.schema.names == wanted
        got = pa.concat_tables(_read_all(source, 0, 4_096))
    finally:
        source.close()
    assert got.equals(bids.select(wanted))
    everything = FileSource("bids", paths, read_ahead=read_ahead)
    try:
        with pytest.raises(CorruptInputError) as caught:
            _read_all(everything, 0, 4_096)
    finally:
        everything.close()
    assert caught.value.path == paths[2]
    assert str(paths[2]) in str(caught.value) and "row group 1" in str(caught.value)


def test_a_file_that_is_not_parquet_is_refused_naming_it(parquet_parts, tmp_path):
    _, paths = parquet_parts
    bad = tmp_path / "03.parquet"
    bad.write_bytes(b"PAR1 this is not a parquet file PAR1")
    with pytest.raises(CorruptInputError) as caught:
        FileSource("bids", [*paths, bad], columns=COLUMNS_Q1)
    assert str(bad) in str(caught.value)


def _decoders() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "df-file-decode"]


def test_read_ahead_workers_end_when_the_source_is_closed_or_dropped(parquet_parts):
    """The runner does not close sources: a dropped source's workers end too, even while
    they wait for room to hand over decoded slices."""
    _, paths = parquet_parts
    before = set(_decoders())
    closed = FileSource("bids", paths, columns=COLUMNS_Q1)
    dropped = FileSource("bids", paths, columns=COLUMNS_Q1)
    assert closed.read("0", 0, 10).num_rows == 10
    assert dropped.read("0", 0, 10).num_rows == 10
    assert len(set(_decoders()) - before) == 4
    closed.close()
    del dropped
    gc.collect()
    deadline = time.monotonic() + 60  # generous: a loaded machine
    while set(_decoders()) - before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not set(_decoders()) - before


# --- The Parquet sink encodes on its own thread ------------------------------------------


def _frames(medium_nexmark, sizes: list[int]) -> list[pl.DataFrame]:
    bids = pl.from_arrow(medium_nexmark["bids"].select(COLUMNS_Q1))
    bids = bids.with_columns(pl.col("price") * 0.908)
    frames, start = [], 0
    for size in sizes:
        frames.append(bids.slice(start, size))
        start += size
    return frames


def test_parquet_sink_writes_every_row_in_order_in_full_row_groups(tmp_path, medium_nexmark):
    frames = _frames(medium_nexmark, [1, 999, 37, 4_000, 0, 2_500, 7])
    sink = ParquetSink(tmp_path / "out" / "q1.parquet", row_group_rows=1_000)
    for i, frame in enumerate(frames):
        sink.write(frame, frame.head(2) if i == 2 else None)
    sink.close()
    written = pq.ParquetFile(tmp_path / "out" / "q1.parquet")
    assert pl.from_arrow(written.read()).equals(pl.concat(frames))
    assert sink.rows == sum(f.height for f in frames) and sink.side_rows == 2
    meta = written.metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    # A row group is flushed once 1000 rows are buffered: whole micro-batches each.
    assert sizes == [1_000, 4_037, 2_500, 7]
    encodings = {
        meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i).encodings
        for i in range(meta.num_columns)
    }
    assert not any("DICTIONARY" in e for e in encodings["price"])  # a float column
    assert any("DICTIONARY" in e for e in encodings["auction"])


def test_parquet_sink_encoding_error_surfaces(medium_nexmark):
    """A write that fails on the encoder thread (no space left on the device) is raised
    to the runner, not lost with the thread."""
    (frame,) = _frames(medium_nexmark, [50_000])
    sink = ParquetSink(Path("/dev/full"), row_group_rows=1_000)
    with pytest.raises(OSError):
        for _ in range(100):
            sink.write(frame, None)
        sink.close()
    sink.close()  # as a runner does after an error: no hang, and the error is not repeated


@pytest.mark.e2e
def test_sigkill_with_parquet_input_then_restart_gives_the_uninterrupted_table(tmp_path):
    """q5 over one Parquet file of large row groups (checkpoints land inside them, with
    decoded slices waiting in the read-ahead queues), SIGKILLed at random points and
    restarted: the DuckDB table equals an uninterrupted run's, with no duplicates."""
    data = tmp_path / "nexmark"
    write_nexmark(NexmarkConfig(events=120_000, events_per_second=1000.0, format="ipc"), data)
    bids = tmp_path / "bids.parquet"
    write_parquet_copy(data / "bids", bids, row_group_rows=25_000)
    args = ["--query", "q5", "--input", str(bids), "--batch-rows", "500"]
    # Paced as the IPC test in engine/test_exactly_once.py: 8 s of data, killed twice.
    args += ["--checkpoint-every", "3", "--rate", "15000"]

    def command(db):
        return nexmark_run("--duckdb", str(db), *args)

    expected, got = duckdb_run_survives_sigkills(command, tmp_path, "nexmark_q5")
    assert got.sort(got.columns).equals(expected.sort(expected.columns))
