"""Parquet input in ``make bench-nexmark`` (issue 21 §4): the Parquet copy of the bench
data, and ``dataflare bench nexmark`` over it reported apart from IPC input."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner
from typer.main import get_command

from dataflare_platform.bench.parquet_input import write_parquet_copy
from dataflare_platform.cli import app
from dataflare_platform.connectors.files import nexmark_files
from dataflare_platform.datagen import NexmarkConfig, write_nexmark


def _ipc_rows(directory) -> pa.Table:
    tables = []
    for path in nexmark_files(directory):
        reader = pa.ipc.open_file(pa.memory_map(str(path)))
        tables.append(reader.read_all())
    return pa.concat_tables(tables)


def test_parquet_copy_holds_every_row_in_order_in_full_row_groups(tmp_path):
    data = tmp_path / "nexmark"
    write_nexmark(
        NexmarkConfig(events=20_000, events_per_second=1_000.0, chunk_events=7_000, format="ipc"),
        data,
    )
    target = tmp_path / "parquet" / "bids.parquet"
    rows = write_parquet_copy(data / "bids", target, row_group_rows=4_000)
    expected = _ipc_rows(data / "bids")
    assert rows == expected.num_rows and len(nexmark_files(data / "bids")) > 1
    copy = pq.ParquetFile(target)
    assert copy.read().equals(expected)
    meta = copy.metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sizes[:-1] == [4_000] * (len(sizes) - 1) and 0 < sizes[-1] <= 4_000
    assert meta.row_group(0).column(0).compression == "SNAPPY"
    assert not (tmp_path / "parquet" / "bids.parquet.partial").exists()


def test_bench_reports_parquet_input_and_the_duckdb_output_baseline(tmp_path):
    data = tmp_path / "nexmark"
    write_nexmark(NexmarkConfig(events=20_000, events_per_second=1_000.0, format="ipc"), data)
    copy = tmp_path / "parquet" / "bids.parquet"
    write_parquet_copy(data / "bids", copy, row_group_rows=5_000)
    runner = CliRunner()
    reports = {}
    for name, source, extra in [
        ("ipc", data / "bids", []),
        ("parquet", copy, []),
        ("output", copy, ["--output", str(tmp_path / "q1.parquet")]),
    ]:
        result = runner.invoke(
            get_command(app),
            ["bench", "nexmark", "--query", "q1", "--input", str(source), *extra],
        )
        assert result.exit_code == 0, result.output
        reports[name] = json.loads(result.output.strip().splitlines()[-1])
    assert reports["ipc"]["input_format"] == "ipc"
    assert reports["parquet"]["input_format"] == "parquet"
    assert reports["parquet"]["events"] == reports["ipc"]["events"]
    assert reports["parquet"]["output_rows"] == reports["ipc"]["output_rows"] > 0
    assert reports["parquet"]["ratio_with_output"] is None
    written = reports["output"]
    assert written["sink"] == "parquet" and written["baseline_output_events_per_s"] > 0
    assert written["ratio_with_output"] > 0
    assert pq.ParquetFile(tmp_path / "q1.parquet").metadata.num_rows == written["output_rows"]
    # DuckDB's copy of the output is removed after timing.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nexmark", "parquet", "q1.parquet"]
