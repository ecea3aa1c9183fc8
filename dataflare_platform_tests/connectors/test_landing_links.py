"""The landing directory reads regular files inside its folder only: a symlink (to a
file or a folder outside), a FIFO or a device is refused, never read, and a file swapped
for a link between the scan and the read is not followed."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from dataflare_platform.connectors.landing.directory import (
    FileChangedError,
    LandingDirectory,
    LandingDirectorySource,
)
from dataflare_platform_tests.connectors.test_landing import SCHEMA, write

SECRET = b"SECRET-LINE-do-not-ingest"


@pytest.fixture
def bids(small_nexmark) -> pa.Table:
    return small_nexmark["bids"].select(SCHEMA.names).cast(SCHEMA).slice(0, 500)


@pytest.fixture
def folders(tmp_path, bids):
    landing, outside = tmp_path / "landing", tmp_path / "outside"
    landing.mkdir()
    outside.mkdir()
    write(landing / "good.parquet", bids)
    # Outside the landing folder: lines that would land as dead letters if read.
    (outside / "secret.ndjson").write_bytes(SECRET + b"\n" + SECRET + b"\n")
    (outside / "inner").mkdir()
    (outside / "inner" / "more.ndjson").write_bytes(SECRET + b"\n")
    return landing, outside


def everything(source: LandingDirectorySource) -> pa.Table:
    end = source.end_offset("0")
    return source.read("0", 0, end + 1)


def test_links_fifos_and_devices_are_refused_and_never_read(folders, bids):
    landing, outside = folders
    (landing / "linked.ndjson").symlink_to(outside / "secret.ndjson")
    (landing / "linked_dir").symlink_to(outside / "inner")
    (landing / "zero.csv").symlink_to("/dev/zero")
    os.mkfifo(landing / "pipe.csv")  # opening it for reading would block a naive scan
    source = LandingDirectorySource("bids", landing, SCHEMA, settle_s=0)
    try:
        rows = everything(source)
        assert rows.num_rows == bids.num_rows
        dead = source.dead_letters()
        assert dead.num_rows == 0
        assert not any(SECRET in bytes(p or b"") for p in dead.column("payload").to_pylist())
        assert sorted(e.name for e in source.landing.entries()) == ["good.parquet"]
        refused = source.landing.refused
        assert sorted(refused) == ["linked.ndjson", "linked_dir", "pipe.csv", "zero.csv"]
        assert "symbolic link" in refused["linked.ndjson"]
        assert "not a regular file" in refused["pipe.csv"]
    finally:
        source.close()


def test_a_file_swapped_for_a_link_after_the_scan_is_not_followed(folders):
    landing, outside = folders
    directory = LandingDirectory(landing, SCHEMA, settle_s=0)
    try:
        (file,) = directory.scan()
        (landing / "good.parquet").replace(outside / "moved.parquet")
        (landing / "good.parquet").symlink_to(outside / "moved.parquet")
        with pytest.raises(FileChangedError, match="symbolic link"):
            directory.ingest(file)
        assert directory.entries() == []
    finally:
        directory.close()


def test_a_landing_folder_reached_through_a_link_still_works(folders, tmp_path, bids):
    """The folder itself may be configured through a link (a mount point, say): what is
    refused is a file whose real place is outside it."""
    landing, _ = folders
    (tmp_path / "alias").symlink_to(landing)
    source = LandingDirectorySource("bids", tmp_path / "alias", SCHEMA, settle_s=0)
    try:
        assert everything(source).num_rows == bids.num_rows
    finally:
        source.close()
