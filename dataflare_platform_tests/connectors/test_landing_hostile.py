"""Landing files a hostile or careless sender drops: names that are not UTF-8, columns
that are misspelled, missing or extra. Nothing blocks the source, nothing is silently
null: the file is moved aside or its records dead-lettered, counted, and named."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

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
