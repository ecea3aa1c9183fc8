"""Landing directory: every record of every file is either a row or a dead letter
(rows in = rows out + dead letters), nothing is ingested twice (ledger, restarts),
half-written files wait, and the Source view has dense offsets that mean the same rows
after a restart, so engine runs over it are exactly-once."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import os
import threading
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflare_platform.connectors import landing as landing_connector
from dataflare_platform.connectors.landing.decode import FileDecoder
from dataflare_platform.connectors.landing.directory import (
    FileChangedError,
    LandingDirectory,
    LandingDirectorySource,
)
from dataflare_platform.connectors.settings import OpenContext
from dataflare_platform.engine import CollectSink, Pipeline, Runner, RunnerConfig, TableSource
from dataflare_platform.errors import ConfigError
from dataflare_platform.events.codec import DEAD_LETTER_SCHEMA, encode_json
from dataflare_platform.queries.nexmark import BUILDERS, NexmarkSources
from dataflare_platform_tests.connectors.contract import DeadLetterContract, SourceCase
from dataflare_platform_tests.connectors.sink_helpers import same_rows

SCHEMA = pa.schema(
    [
        pa.field("auction", pa.int64(), nullable=False),
        pa.field("bidder", pa.int64()),
        pa.field("price", pa.int64()),
        pa.field("date_time", pa.timestamp("ms"), nullable=False),
    ]
)


@pytest.fixture(scope="module")
def bids(small_nexmark) -> pa.Table:
    return small_nexmark["bids"].select(SCHEMA.names).cast(SCHEMA)


def write(path, table: pa.Table) -> None:
    """``table`` as the format of ``path``'s suffix (.parquet, .csv, .ndjson, + .gz)."""
    name = path.name.removesuffix(".gz")
    if name.endswith(".parquet"):
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        data = sink.getvalue().to_pybytes()
    elif name.endswith(".csv"):
        sink = pa.BufferOutputStream()
        pa_csv.write_csv(table, sink)
        data = sink.getvalue().to_pybytes()
    else:
        data = b"".join(line + b"\n" for line in encode_json(table))
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


def ingest_all(landing: LandingDirectory):
    results = []
    for file in landing.scan():
        result = landing.ingest(file)
        assert result.rows_in == result.table.num_rows + result.dead.num_rows, file.name
        assert result.dead.schema.equals(DEAD_LETTER_SCHEMA)
        assert landing.mark_done(file, result)
        results.append(result)
    return results


# -- settings ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"directory": "/nonexistent/landing"}, "directory"),
        ({"schema": "auction int64"}, "schema"),
        ({"settle_s": -1}, "settle_s"),
        ({"formats": {"xml"}}, "formats"),
    ],
)
def test_bad_landing_settings_are_refused_naming_the_field(tmp_path, kwargs, field):
    values = {"directory": tmp_path, "schema": SCHEMA, **kwargs}
    with pytest.raises(ConfigError) as err:
        LandingDirectory(**values)
    assert err.value.fields[0].startswith(field)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"time_column": "price"}, "time_column"), ({"time_column": "nope"}, "time_column")],
)
def test_bad_source_settings_are_refused_naming_the_field(tmp_path, kwargs, field):
    with pytest.raises(ConfigError) as err:
        LandingDirectorySource("bids", tmp_path, SCHEMA, **kwargs)
    assert err.value.fields == [field]


# -- (a) scan / ingest / mark_done ------------------------------------------------------
def test_rows_in_equal_rows_out_plus_dead_letters_over_good_and_bad_files(tmp_path, bids):
    d = tmp_path / "landing"
    d.mkdir()
    write(d / "01-good.parquet", bids.slice(0, 500))
    write(d / "02-good.csv", bids.slice(500, 500))
    write(d / "03-good.ndjson", bids.slice(1000, 500))
    write(d / "04-good.ndjson.gz", bids.slice(1500, 500))
    good_csv = (d / "02-good.csv").read_bytes().splitlines()
    (d / "05-bad.csv").write_bytes(
        b"\n".join(
            [
                good_csv[0],  # header, line 1
                good_csv[1],  # good, line 2
                b"x,1,2,2026-01-01 00:00:00.000",  # auction not a number: line 3
                b"",  # blank: not a record
                b"7,1,2",  # too few fields: line 5
                b'8,1,2,""',  # required date_time empty: line 6
                b'9,1,"multi',  # a quoted newline: one record over lines 7-8
                b'line",2026-01-01 00:00:00.000',
                good_csv[2],  # good, line 9
            ]
        )
        + b"\n"
    )
    good_ndjson = encode_json(bids.slice(2000, 2))
    (d / "06-bad.ndjson").write_bytes(
        b"\n".join([good_ndjson[0], b"{not json", b"", b'{"auction": 1}', good_ndjson[1]])
    )
    (d / "07-corrupt.parquet").write_bytes(b"PAR1 this is not parquet")
    (d / "08-unknown.xml").write_bytes(b"<ignored/>")

    landing = LandingDirectory(d, SCHEMA, settle_s=0)
    results = ingest_all(landing)
    by_name = {r.file.name: r for r in results}
    assert sorted(by_name) == [
        "01-good.parquet",
        "02-good.csv",
        "03-good.ndjson",
        "04-good.ndjson.gz",
        "05-bad.csv",
        "06-bad.ndjson",
        "07-corrupt.parquet",
    ]
    good = pa.concat_tables(by_name[n].table for n in sorted(by_name)[:4])
    assert good.equals(bids.slice(0, 2000))

    bad_csv = by_name["05-bad.csv"]
    assert bad_csv.rows_in == 6 and bad_csv.table.num_rows == 2
    dead = bad_csv.dead.to_pylist()
    assert [r["offset"] for r in dead] == [3, 5, 6, 7]
    assert dead[0]["payload"] == b"x,1,2,2026-01-01 00:00:00.000"
    assert "auction" in dead[0]["reason"]
    assert "expected 4 fields" in dead[1]["reason"]
    assert "date_time" in dead[2]["reason"]
    assert dead[3]["payload"] == b'9,1,"multi\nline",2026-01-01 00:00:00.000'
    assert all(r["source"] == "05-bad.csv" for r in dead)

    bad_ndjson = by_name["06-bad.ndjson"]
    assert bad_ndjson.rows_in == 4 and bad_ndjson.table.num_rows == 2
    assert [r["offset"] for r in bad_ndjson.dead.to_pylist()] == [2, 4]

    corrupt = by_name["07-corrupt.parquet"]
    assert corrupt.failed and "unreadable parquet" in corrupt.failed
    assert corrupt.dead.column("offset").to_pylist() == [-1]
    assert corrupt.dead.column("payload").to_pylist() == [b"PAR1 this is not parquet"]

    rows_in = sum(r.rows_in for r in results)
    rows_out = sum(r.table.num_rows for r in results)
    dead_letters = sum(r.dead.num_rows for r in results)
    assert rows_in == 2000 + 6 + 4 + 1 == rows_out + dead_letters
    entries = {e.name: e for e in landing.entries()}
    assert entries["07-corrupt.parquet"].status == "failed"
    assert all(e.rows_in == e.rows_out + e.dead for e in entries.values())

    # A restart (new instance, same ledger) ingests nothing twice, the failed file
    # included; touching a file (same bytes) does not make it new either.
    landing.close()
    touched = time.time() - 100  # a new mtime, in the past so the quiet period is over
    os.utime(d / "01-good.parquet", (touched, touched))
    again = LandingDirectory(d, SCHEMA, settle_s=0)
    assert again.scan() == []


def test_same_name_with_new_content_is_a_new_file(tmp_path, bids):
    landing = LandingDirectory(tmp_path, SCHEMA, settle_s=0)
    write(tmp_path / "bids.csv", bids.slice(0, 10))
    assert [r.table.num_rows for r in ingest_all(landing)] == [10]
    write(tmp_path / "bids.csv", bids.slice(10, 20))
    (new,) = landing.scan()
    assert landing.ingest(new).table.equals(bids.slice(10, 20))
    landing.mark_done(new)
    write(tmp_path / "bids.csv", bids.slice(0, 10))  # back to the first content: known
    assert landing.scan() == []
    assert len(landing.entries()) == 2


# -- half-written files -----------------------------------------------------------------
def test_files_being_written_are_not_taken(tmp_path, bids):
    landing = LandingDirectory(tmp_path, SCHEMA, settle_s=0)
    for name in ["a.csv.tmp", "b.csv._COPYING_", ".c.csv", "_d.csv", "e.parquet.part"]:
        write(tmp_path / name, bids.slice(0, 5))
    (tmp_path / "_dataflare_other").mkdir()
    write(tmp_path / "_dataflare_other" / "f.csv", bids.slice(0, 5))
    assert landing.scan() == []
    (tmp_path / "a.csv.tmp").rename(tmp_path / "a.csv")  # the writer is done
    assert [f.name for f in landing.scan()] == ["a.csv"]


def test_a_file_waits_for_its_quiet_period(tmp_path, bids):
    landing = LandingDirectory(tmp_path, SCHEMA, settle_s=60)
    path = tmp_path / "sub" / "bids.parquet"
    path.parent.mkdir()
    write(path, bids.slice(0, 5))
    assert landing.scan() == []  # modified just now: maybe still being written
    past = time.time() - 120
    os.utime(path, (past, past))
    assert [f.name for f in landing.scan()] == ["sub/bids.parquet"]


def test_a_file_changed_after_the_scan_is_not_ingested_half(tmp_path, bids):
    landing = LandingDirectory(tmp_path, SCHEMA, settle_s=0)
    path = tmp_path / "bids.ndjson"
    write(path, bids.slice(0, 5))
    (file,) = landing.scan()
    with path.open("ab") as f:  # the writer was not finished after all
        f.write(b"".join(line + b"\n" for line in encode_json(bids.slice(5, 5))))
    with pytest.raises(FileChangedError):
        landing.ingest(file)
    (whole,) = landing.scan()
    assert landing.ingest(whole).table.equals(bids.slice(0, 10))


# -- (b) the engine Source --------------------------------------------------------------
def land_three(d, bids: pa.Table) -> None:
    write(d / "a.parquet", bids.slice(0, 1000))
    write(d / "b.csv", bids.slice(1000, 1000))
    (d / "bad.ndjson").write_bytes(b"{oops\n")
    write(d / "c.ndjson", bids.slice(2000))


def test_engine_run_over_the_landing_source_equals_the_table(tmp_path, bids):
    land_three(tmp_path, bids)
    source = LandingDirectorySource("bids", tmp_path, SCHEMA, settle_s=0)
    sink = CollectSink()
    config = RunnerConfig(batch_rows=300, checkpoint_every=2)
    Runner(BUILDERS["q7"](NexmarkSources(bids=source), sink), config).run()
    whole = CollectSink()
    table = TableSource.single("bids", bids)
    Runner(BUILDERS["q7"](NexmarkSources(bids=table), whole), config).run()
    assert sink.result().height > 0
    assert same_rows(sink.result(), whole.result())
    dead = source.dead_letters()
    assert dead.column("source").to_pylist() == ["bad.ndjson"]


@pytest.mark.parametrize("ledger", [None, "state/bids.sqlite"])
def test_offsets_are_dense_and_mean_the_same_rows_after_a_restart(tmp_path, bids, ledger):
    landing = tmp_path / "landing"
    landing.mkdir()
    kwargs = {"settle_s": 0, "ledger": None if ledger is None else tmp_path / ledger}
    land_three(landing, bids)
    first = LandingDirectorySource("bids", landing, SCHEMA, **kwargs)
    assert first.end_offset("0") == bids.num_rows
    assert first.read("0", 990, 20).equals(bids.slice(990, 20))  # across two files
    first.close()
    (landing / "a.parquet").unlink()  # archived away: reads come from the segments
    write(landing / "d.csv", bids.slice(0, 7))
    restarted = LandingDirectorySource("bids", landing, SCHEMA, **kwargs)
    assert restarted.read("0", 0, 5000).equals(bids)  # what was taken before, unchanged
    assert restarted.end_offset("0") == bids.num_rows + 7  # the new file comes after
    assert restarted.read("0", bids.num_rows, 100).equals(bids.slice(0, 7))
    ranges = [(e.start_offset, e.rows_out) for e in restarted.landing.entries()]
    ends = 0
    for start, rows in sorted(ranges):
        assert start == ends  # dense: each file starts where the previous one ended
        ends = start + rows
    restarted.close()
    state = landing / "_dataflare" if ledger is None else tmp_path / "state"
    assert sorted(p.name for p in state.iterdir() if not p.name.endswith(("-wal", "-shm"))) == [
        f"{Path(ledger or 'ledger.sqlite').stem}.lock",
        f"{Path(ledger or 'ledger.sqlite').stem}.segments",
        Path(ledger or "ledger.sqlite").name,
    ]


def test_a_stopped_run_resumes_exactly_once_with_new_files(tmp_path, bids):
    def pipeline(source, sink):
        return Pipeline("landing").source(source).sink(sink)

    write(tmp_path / "a.parquet", bids.slice(0, 1000))
    write(tmp_path / "b.csv", bids.slice(1000, 1000))
    sink = CollectSink()
    config = RunnerConfig(batch_rows=128, checkpoint_every=3)
    first = LandingDirectorySource("bids", tmp_path, SCHEMA, settle_s=0)
    Runner(pipeline(first, sink), config).run(until={"bids/0": 1_500})
    first.close()
    write(tmp_path / "c.ndjson", bids.slice(2000))
    second = LandingDirectorySource("bids", tmp_path, SCHEMA, settle_s=0)
    result = Runner(pipeline(second, sink), config).run()
    assert result.finished
    got = sink.result()
    assert got.height == bids.num_rows
    assert same_rows(got, pl.from_arrow(bids))


def test_a_following_source_picks_up_files_as_they_land(tmp_path, bids):
    source = LandingDirectorySource(
        "bids", tmp_path, SCHEMA, settle_s=0, follow=True, scan_interval_s=0.05
    )
    assert source.end_offset("0") is None
    sink = CollectSink()
    stop = threading.Event()
    runner = Runner(Pipeline("landing").source(source).sink(sink), RunnerConfig(checkpoint_every=1))
    thread = threading.Thread(target=runner.run, kwargs={"mode": "continuous", "stop": stop})
    thread.start()
    try:
        staging = tmp_path / "_staging"  # ignored: "_" prefix
        staging.mkdir()
        for i, part in enumerate([bids.slice(0, 1000), bids.slice(1000)]):
            write(staging / f"{i}.parquet", part)
            (staging / f"{i}.parquet").rename(tmp_path / f"{i}.parquet")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            offsets = sink.checkpoint.offsets if sink.checkpoint else {}
            if offsets.get("bids/0") == bids.num_rows:
                break
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert same_rows(sink.result(), pl.from_arrow(bids))


# -- CSV decoding, any mix of records ---------------------------------------------------
NAMED = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("name", pa.large_string()),
        pa.field("date_time", pa.timestamp("ms"), nullable=False),
    ]
)
_record = st.one_of(
    st.tuples(
        st.just("good"),
        st.integers(-(2**63), 2**63 - 1),
        st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\x00")),
        st.integers(0, 4_000_000_000_000),
    ),
    st.tuples(st.sampled_from(["not a number", "too few fields", "blank", "no time"])),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_record, max_size=30))
def test_csv_records_become_rows_or_dead_letters_at_their_line(records):
    """Whatever the mix (quoted commas, quotes and newlines in text, malformed rows,
    blank lines), every record is a row or a dead letter numbered by its first line."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "name", "date_time"])
    expected_rows, expected_dead = [], []
    line = 2
    for record in records:
        kind = record[0]
        text = io.StringIO()
        if kind == "good":
            _, id_, name, ms = record
            stamp = dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=ms)
            csv.writer(text, lineterminator="\n").writerow([id_, name, stamp.isoformat(" ")])
            expected_rows.append({"id": id_, "name": name, "date_time": stamp})
        elif kind == "blank":
            text.write("\n")
        else:
            text.write(
                {"not a number": "x,a,2026-01-01", "too few fields": "1,a", "no time": "1,a,"}[kind]
                + "\n"
            )
            expected_dead.append(line)
        out.write(text.getvalue())
        line += text.getvalue().count("\n")
    decoded = FileDecoder(NAMED).decode(out.getvalue().encode(), "csv", False, "f.csv", "p")
    assert decoded.table.to_pylist() == expected_rows
    assert decoded.dead.column("offset").to_pylist() == expected_dead
    assert decoded.rows_in == len(expected_rows) + len(expected_dead)


# -- the connector contract -------------------------------------------------------------
class TestLandingSourceContract(DeadLetterContract):
    """A landing directory opened through the registry (``kind: landing``), bounded to
    the files present when it is opened."""

    KIND = "landing"

    @pytest.fixture
    def source_case(self, tmp_path) -> SourceCase:
        folders = iter(range(100))

        def land(table: pa.Table, bad: int = 0):
            d = tmp_path / f"landing{next(folders)}"
            d.mkdir()
            third = table.num_rows // 3
            write(d / "01.parquet", table.slice(0, third))
            write(d / "02.ndjson", table.slice(third, third))
            write(d / "03.csv", table.slice(2 * third))
            if bad:
                (d / "04-bad.ndjson").write_bytes(
                    b"\n".join(b"{not json %d" % i for i in range(bad)) + b"\n"
                )
            settings = landing_connector.LandingSourceSettings(
                directory=d, schema={f.name: str(f.type) for f in table.schema}, settle_s=0
            )
            context = OpenContext("contract", "bids", bounded=True)
            return lambda: landing_connector.open_source(settings, context)

        return SourceCase(land, land, held_dead=lambda source: source.dead_letters().num_rows)
