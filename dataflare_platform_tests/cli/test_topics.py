"""``dataflare topics / produce / consume`` against a real log directory."""

from __future__ import annotations

import json

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from dataflare_platform.cli import app
from dataflare_platform.events.codec import encode_json
from dataflare_platform.events.log import EventLog

runner = CliRunner()


def _ok(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result


def test_create_produce_describe_consume(tmp_path, small_nexmark):
    log_dir = str(tmp_path / "log")
    bids = small_nexmark["bids"]
    pq.write_table(bids, tmp_path / "bids.parquet", row_group_size=1000)
    _ok(
        ["topics", "create", "bids", "--nexmark", "bids", "--partitions", "2", "--log-dir", log_dir]
    )
    produced = json.loads(
        _ok(["produce", "bids", str(tmp_path / "bids.parquet"), "--log-dir", log_dir]).stdout
    )
    assert produced["appended"] == bids.num_rows and produced["dead_lettered"] == 0

    described = json.loads(_ok(["topics", "describe", "bids", "--log-dir", log_dir]).stdout)
    assert described["rows"] == bids.num_rows and described["partitions"] == 2
    assert "bids" in _ok(["topics", "list", "--log-dir", log_dir]).stdout

    # A group reads 100, commits; the next read with the group continues after them.
    first = _ok(["consume", "bids", "--group", "g", "--max", "100", "--log-dir", log_dir])
    rest = _ok(["consume", "bids", "--group", "g", "--log-dir", log_dir])
    lines = [json.loads(x) for x in (first.stdout + rest.stdout).splitlines()]
    assert len(lines) == bids.num_rows
    got = pl.DataFrame(lines).select(pl.col("auction"), pl.col("price")).sort(pl.all())
    assert got.equals(pl.from_arrow(bids).select("auction", "price").sort(pl.all()))


def test_ndjson_with_bad_lines_is_dead_lettered_and_counted(tmp_path, small_nexmark):
    log_dir = tmp_path / "log"
    bids = small_nexmark["bids"].slice(0, 500)
    good = encode_json(bids)
    no_time = b'{"auction": 1, "bidder": 2, "price": 3, "channel": "c", "url": "u", "extra": ""}'
    bad = [b"{not json", b'{"auction": "x"}', b"", b"[1, 2]", no_time]
    lines = good[:100] + bad + good[100:]
    (tmp_path / "bids.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    _ok(["topics", "create", "bids", "--nexmark", "bids", "--log-dir", str(log_dir)])
    result = json.loads(
        _ok(["produce", "bids", str(tmp_path / "bids.ndjson"), "--log-dir", str(log_dir)]).stdout
    )
    assert result["appended"] == len(good) and result["dead_lettered"] == len(bad)
    assert result["appended"] + result["dead_lettered"] == len(lines)  # in = out + dead
    log = EventLog(log_dir)
    dlq = pl.from_arrow(log.topic("bids.dlq").read_all())
    assert dlq["offset"].to_list() == [100, 101, 102, 103, 104]  # line numbers in the file
    assert dlq["payload"].to_list() == bad
    assert dlq["reason"].str.len_chars().min() > 0
    assert pl.from_arrow(log.topic("bids").read_all()).equals(
        pl.from_arrow(bids.cast(log.topic("bids").schema))
    )


def test_errors_are_clear(tmp_path):
    log_dir = str(tmp_path / "log")
    missing = runner.invoke(app, ["topics", "describe", "nope", "--log-dir", log_dir])
    assert missing.exit_code == 2 and "no topic 'nope'" in missing.output
    bad = runner.invoke(
        app,
        ["topics", "create", "x", "--nexmark", "bids", "--partitions", "0", "--log-dir", log_dir],
    )
    assert bad.exit_code == 2 and "partitions" in bad.output
    schema_file = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1]}), schema_file)
    no_time = runner.invoke(
        app, ["topics", "create", "t", "--schema-from", str(schema_file), "--log-dir", log_dir]
    )
    assert no_time.exit_code == 2 and "time_column" in no_time.output


def test_produce_generated_nexmark_creates_the_topic(tmp_path):
    log_dir = str(tmp_path / "log")
    args = ["produce", "people", "--nexmark", "--events", "5000", "--kind", "persons"]
    args += ["--partitions", "2", "--seed", "9"]
    result = json.loads(_ok([*args, "--log-dir", log_dir]).stdout)
    topic = EventLog(tmp_path / "log").topic("people")
    assert result["appended"] == sum(topic.end_offsets().values()) == 100  # 1 in 50 is a person
    assert len(topic.parts) == 2
    bad = runner.invoke(
        app, ["produce", "x", "--nexmark", "--events", "10", "--kind", "cats", "--log-dir", log_dir]
    )
    assert bad.exit_code == 2 and "--kind must be one of" in bad.output


def test_produce_of_several_files_checks_all_before_appending(tmp_path, small_nexmark):
    """A bad file among several is named and nothing is appended (a retry after the fix
    must not duplicate the good file's rows): truncated, damaged in a data page, or of
    another schema."""
    log_dir = str(tmp_path / "log")
    bids = small_nexmark["bids"].slice(0, 2000)
    good = tmp_path / "good.parquet"
    pq.write_table(bids, good, row_group_size=500)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(data[: len(data) // 2])
    damaged = tmp_path / "damaged.parquet"
    pq.write_table(bids, damaged, row_group_size=500, compression="none")
    raw = bytearray(damaged.read_bytes())
    meta = pq.ParquetFile(damaged).metadata.row_group(2).column(2)
    page = meta.data_page_offset
    raw[page : page + 64] = b"\xff" * 64  # the page header of a middle row group
    damaged.write_bytes(bytes(raw))
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), other)
    _ok(["topics", "create", "bids", "--nexmark", "bids", "--log-dir", log_dir])
    for bad in (truncated, damaged, other):
        result = runner.invoke(app, ["produce", "bids", str(good), str(bad), "--log-dir", log_dir])
        assert result.exit_code != 0, result.output
        assert bad.name in result.output and "Traceback" not in result.output
        assert EventLog(log_dir).topic("bids").read_all().num_rows == 0
    produced = json.loads(_ok(["produce", "bids", str(good), "--log-dir", log_dir]).stdout)
    assert produced["appended"] == 2000


def test_produce_dead_letters_ndjson_records_with_unknown_or_missing_fields(tmp_path):
    """A misspelled field is not a row with a silent null: dead-lettered by default,
    the file refused with refuse_file, extra fields ignored with allow_extra."""
    log_dir = str(tmp_path / "log")
    schema = pa.schema(
        [("id", pa.int64()), ("price", pa.int64()), ("date_time", pa.timestamp("ms"))]
    )
    log = EventLog(log_dir)
    log.create_topic("t", schema)
    path = tmp_path / "in.ndjson"
    path.write_bytes(
        b'{"id": 1, "price": 10, "date_time": "2026-01-01T00:00:00"}\n'
        b'{"id": 2, "pirce": 20, "date_time": "2026-01-01T00:00:01"}\n'
        b'{"id": 3, "price": null, "date_time": "2026-01-01T00:00:02"}\n'
        b'{"id": 4, "price": 40, "note": "x", "date_time": "2026-01-01T00:00:03"}\n'
    )
    refused = runner.invoke(
        app,
        ["produce", "t", str(path), "--on-schema-mismatch", "refuse_file", "--log-dir", log_dir],
    )
    assert refused.exit_code != 0 and "in.ndjson" in refused.output
    assert "line 2: unknown field(s) ['pirce']" in refused.output
    assert EventLog(log_dir).topic("t").read_all().num_rows == 0

    result = json.loads(_ok(["produce", "t", str(path), "--log-dir", log_dir]).stdout)
    assert (result["appended"], result["dead_lettered"]) == (2, 2)
    topic = EventLog(log_dir).topic("t")
    assert topic.read_all().column("id").to_pylist() == [1, 3]
    dlq = EventLog(log_dir).topic("t.dlq").read_all().to_pylist()
    assert [d["offset"] for d in dlq] == [1, 3]
    assert "unknown field(s) ['pirce']; missing field(s) ['price']" in dlq[0]["reason"]
    assert "unknown field(s) ['note']" in dlq[1]["reason"]

    extra = json.loads(
        _ok(
            ["produce", "t", str(path), "--on-schema-mismatch", "allow_extra", "--log-dir", log_dir]
        ).stdout
    )
    assert (extra["appended"], extra["dead_lettered"]) == (3, 1)
