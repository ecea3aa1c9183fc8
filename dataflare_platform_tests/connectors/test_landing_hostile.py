"""Landing files a hostile or careless sender drops: names that are not UTF-8, columns
that are misspelled, missing or extra. Nothing blocks the source, nothing is silently
null: the file is moved aside or its records dead-lettered, counted, and named."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataflare_platform.connectors.landing.directory import LandingDirectorySource
from dataflare_platform_tests.connectors.test_landing import SCHEMA, write


def _source(directory: Path, **kwargs) -> LandingDirectorySource:
    return LandingDirectorySource("bids", directory, SCHEMA, settle_s=0, **kwargs)


def test_a_file_name_that_is_not_utf8_is_quarantined_and_the_rest_ingested(tmp_path, small_nexmark):
    bids = small_nexmark["bids"].select(SCHEMA.names).cast(SCHEMA)
    d = tmp_path / "landing"
    d.mkdir()
    write(d / "01-good.ndjson", bids.slice(0, 100))
    bad = os.fsdecode(b"02-caf\xe9.csv")  # Latin-1, not UTF-8
    write(d / bad, bids.slice(100, 50))
    (d / os.fsdecode(b"sub\xff")).mkdir()
    write(d / os.fsdecode(b"sub\xff") / "03.ndjson", bids.slice(150, 10))
    write(d / "04-good.csv", bids.slice(200, 100))

    source = _source(d)
    assert source.end_offset("0") == 200  # the two good files, not blocked
    assert source.read("0", 0, 1000).num_rows == 200
    state = d / "_dataflare" / "quarantine"
    assert state.stat().st_mode & 0o777 == 0o700
    moved = sorted(p.name for p in state.iterdir())
    assert len(moved) == 2 and all(m.encode() for m in moved)  # UTF-8 names now
    assert any(m.endswith("02-caf\\xe9.csv") for m in moved)
    assert not (d / bad).exists()
    dead = source.dead_letters().to_pylist()
    names = {r["source"] for r in dead}
    assert names == {"02-caf\\xe9.csv", "sub\\xff/03.ndjson"}
    assert all("is not valid UTF-8" in r["reason"] and "moved to" in r["reason"] for r in dead)
    assert [q["name"] for q in source.landing.quarantined] == [
        "02-caf\\xe9.csv",
        "sub\\xff/03.ndjson",
    ]
    failed = [e for e in source.landing.entries() if e.status == "failed"]
    assert len(failed) == 2
    # A second scan (another run) finds nothing new and does not trip.
    source.close()
    again = _source(d)
    assert again.end_offset("0") == 200
    assert len(again.dead_letters()) == 2


def _counts(source: LandingDirectorySource) -> tuple[int, int, int]:
    entries = source.landing.entries()
    return (
        sum(e.rows_in for e in entries),
        sum(e.rows_out for e in entries),
        sum(e.dead for e in entries),
    )


NDJSON_MISSPELLED = (
    b'{"auction": 1, "bidder": 2, "price": 3, "date_time": "2026-01-01T00:00:00"}\n'
    b'{"auction": 4, "bidder": 5, "pirce": 6, "date_time": "2026-01-01T00:00:01"}\n'
    b'{"auction": 7, "bidder": 8, "date_time": "2026-01-01T00:00:02"}\n'
    b'{"auction": 9, "bidder": null, "price": 1, "date_time": "2026-01-01T00:00:03"}\n'
)
CSV_MISSPELLED = (
    b"auction,bidder,pirce,date_time\n1,2,3,2026-01-01 00:00:00\n4,5,6,2026-01-01 00:00:01\n"
)


def test_misspelled_or_missing_columns_are_dead_lettered_by_default(tmp_path):
    d = tmp_path / "landing"
    d.mkdir()
    (d / "a.ndjson").write_bytes(NDJSON_MISSPELLED)
    (d / "b.csv").write_bytes(CSV_MISSPELLED)
    source = _source(d)
    assert source.end_offset("0") == 2
    rows = source.read("0", 0, 100)
    # Only the records that match: no row with a silently null price.
    assert rows.column("auction").to_pylist() == [1, 9]
    dead = {(r["source"], r["offset"]): r["reason"] for r in source.dead_letters().to_pylist()}
    assert "unknown field(s) ['pirce']" in dead[("a.ndjson", 2)]
    assert "missing field(s) ['price']" in dead[("a.ndjson", 2)]
    assert "missing field(s) ['price']" in dead[("a.ndjson", 3)]
    assert dead[("b.csv", 2)].startswith("header: unknown field(s) ['pirce']")
    assert ("b.csv", 3) in dead
    assert _counts(source) == (6, 2, 4)  # in = out + dead


def test_refuse_file_policy_refuses_the_whole_file_naming_the_line(tmp_path):
    d = tmp_path / "landing"
    d.mkdir()
    (d / "a.ndjson").write_bytes(NDJSON_MISSPELLED)
    (d / "b.csv").write_bytes(CSV_MISSPELLED)
    source = _source(d, on_schema_mismatch="refuse_file")
    assert source.end_offset("0") == 0
    failed = {e.name: e.reason for e in source.landing.entries()}
    assert "line 2: unknown field(s) ['pirce']" in failed["a.ndjson"]
    assert "header: unknown field(s) ['pirce']" in failed["b.csv"]


def test_allow_extra_ignores_unknown_fields_but_not_missing_ones(tmp_path):
    d = tmp_path / "landing"
    d.mkdir()
    (d / "a.ndjson").write_bytes(
        b'{"auction": 1, "bidder": 2, "price": 3, "extra": 0, "date_time": "2026-01-01T00:00:00"}\n'
        b'{"auction": 4, "bidder": 5, "pirce": 6, "date_time": "2026-01-01T00:00:01"}\n'
    )
    source = _source(d, on_schema_mismatch="allow_extra")
    assert source.end_offset("0") == 1
    assert source.read("0", 0, 10).column("auction").to_pylist() == [1]
    [dead] = source.dead_letters().to_pylist()
    assert dead["offset"] == 2 and "missing field(s) ['price']" in dead["reason"]


def test_a_bad_policy_is_refused_naming_the_field(tmp_path):
    from dataflare_platform.errors import ConfigError

    try:
        _source(tmp_path, on_schema_mismatch="ignore")
    except ConfigError as err:
        assert err.fields == ["on_schema_mismatch"]
    else:
        raise AssertionError("an unknown policy was accepted")


_NAME = st.text(st.characters(codec="utf-8", exclude_characters="\n\r,\"'"), min_size=1, max_size=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    columns=st.lists(
        st.one_of(st.sampled_from(SCHEMA.names), _NAME), min_size=1, max_size=6, unique=True
    ),
    rows=st.integers(0, 5),
    fmt=st.sampled_from(["csv", "ndjson", "parquet"]),
    policy=st.sampled_from(["dead_letter", "refuse_file", "allow_extra"]),
    name=st.binary(min_size=1, max_size=12),
)
def test_random_column_sets_and_names_never_yield_silent_nulls(columns, rows, fmt, policy, name):
    """Any column set, any file name bytes: the source never crashes, counts hold, and a
    row is ingested only from a file whose columns cover the schema."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "landing"
        d.mkdir()
        table = pa.table(
            {
                c: pa.array(
                    [f"2026-01-01 00:00:0{i}" if c == "date_time" else str(i) for i in range(rows)],
                    pa.string(),
                )
                for c in columns
            }
        )
        stem = name.replace(b"/", b"_").replace(b"\x00", b"_").lstrip(b"._") or b"f"
        path = d / (os.fsdecode(stem) + f".{fmt}")
        try:
            write(path, table)
        except OSError:
            return  # a name the file system refuses (too long, reserved)
        source = _source(d, on_schema_mismatch=policy)
        source.end_offset("0")
        got = source.read("0", 0, 100)
        rows_in, rows_out, dead = _counts(source)
        assert rows_in == rows_out + dead
        assert got.num_rows == rows_out
        covers = set(SCHEMA.names) <= set(columns)
        exact = set(columns) == set(SCHEMA.names)
        if got.num_rows:
            assert covers and (exact or policy == "allow_extra")
        source.close()


def test_a_gzip_bomb_is_refused_by_max_file_bytes_not_inflated(tmp_path):
    """2 MB of gzip inflating to 2 GiB of newlines took 18 GB of memory and four minutes
    (then ingested nothing, with no dead letter). Inflation now stops at max_file_bytes
    (here 1 MiB, and the bomb 64 MiB, so that the test is cheap)."""
    import gzip

    d = tmp_path / "landing"
    d.mkdir()
    (d / "bomb.ndjson.gz").write_bytes(gzip.compress(b"\n" * (64 << 20), compresslevel=9))
    good = b'{"auction": 1, "bidder": 2, "price": 3, "date_time": "2026-01-01 00:00:00"}\n'
    (d / "good.ndjson.gz").write_bytes(gzip.compress(good))
    source = _source(d, max_file_bytes=1 << 20)
    assert source.end_offset("0") == 1
    assert source.read("0", 0, 10).column("auction").to_pylist() == [1]
    (reason,) = [r["reason"] for r in source.dead_letters().to_pylist()]
    assert "decompresses to more than max_file_bytes (1048576 bytes)" in reason
    assert (d / "bomb.ndjson.gz").exists()  # left in place
    assert _counts(source) == (2, 1, 1)


def test_a_file_larger_than_max_file_bytes_is_not_read(tmp_path):
    d = tmp_path / "landing"
    d.mkdir()
    line = b'{"auction": 1, "bidder": 2, "price": 3, "date_time": "2026-01-01 00:00:00"}\n'
    (d / "big.ndjson").write_bytes(line * 20_000)  # 1.5 MB
    source = _source(d, max_file_bytes=1 << 20)
    assert source.end_offset("0") == 0
    (reason,) = [r["reason"] for r in source.dead_letters().to_pylist()]
    assert "exceeds max_file_bytes (1048576 bytes)" in reason
    assert (d / "big.ndjson").exists()  # left in place


def test_max_file_bytes_is_a_landing_source_setting():
    from dataflare_platform.connectors.landing import LandingSourceSettings

    s = LandingSourceSettings.model_validate(
        {
            "directory": "/tmp",
            "schema": {"a": "int64", "date_time": "timestamp[ms]"},
            "max_file_bytes": 1024,
        }
    )
    assert s.max_file_bytes == 1024


def test_a_csv_header_naming_a_column_twice_is_a_mismatch(tmp_path):
    """``price,price`` was read taking one of the two values without a word."""
    d = tmp_path / "landing"
    d.mkdir()
    (d / "a.csv").write_bytes(
        b"auction,bidder,price,price,date_time\n1,2,3,4,2026-01-01 00:00:00\n"
    )
    source = _source(d)
    assert source.end_offset("0") == 0
    (reason,) = [r["reason"] for r in source.dead_letters().to_pylist()]
    assert "duplicate field(s) ['price']" in reason
    assert _counts(source) == (1, 0, 1)
