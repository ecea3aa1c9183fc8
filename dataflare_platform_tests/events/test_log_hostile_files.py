"""Hostile files where the event log expects its own: a FIFO, a directory or a symbolic
link in a segment's place, and an unreadable ``topic.json``. Each is reported naming the
file (a damaged segment is moved aside like any damage), never a hang, a traceback from
the JSON parser or a read of whatever a link points to. Opening runs in a child process
with a ceiling, so a hang fails the test instead of stalling the suite."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from dataflare_platform.errors import ConfigError
from dataflare_platform.events.log import EventLog

CEILING_S = 120  # generous: a hang is what fails, not slowness


def _rows(n: int, first: int = 0) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(first, first + n), pa.int64()),
            "date_time": pa.array(range(first, first + n), pa.timestamp("ms")),
        }
    )


def _log(root: Path) -> list[Path]:
    topic = EventLog(root).create_topic("t", _rows(0).schema)
    for i in range(3):
        topic.append(_rows(10, i * 10))
    return sorted((root / "t" / "p00000").glob("*.arrow"))


def _open_in_child(root: Path) -> subprocess.CompletedProcess:
    code = textwrap.dedent(
        f"""
        from dataflare_platform.events.log import EventLog
        from dataflare_platform.errors import DataflareError
        try:
            print("ROWS", EventLog({str(root)!r}).topic("t").read_all().num_rows)
        except DataflareError as err:
            print("REFUSED", str(err).splitlines()[0])
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=CEILING_S
    )


@pytest.mark.parametrize("kind", ["fifo", "directory", "symlink"])
def test_a_segment_that_is_not_a_regular_file_is_damage_not_a_hang(tmp_path, kind):
    segments = _log(tmp_path)
    last = segments[-1]
    last.unlink()
    if kind == "fifo":
        os.mkfifo(last)
    elif kind == "directory":
        last.mkdir()
    else:
        outside = tmp_path / "outside.arrow"
        outside.write_bytes(segments[0].read_bytes())
        last.symlink_to(outside)
    done = _open_in_child(tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    # Recovery moves the odd file aside (it is the last segment): 20 intact rows stay.
    assert done.stdout.split() == ["ROWS", "20"], done.stdout + done.stderr[-2000:]
    assert "not a regular file" in done.stderr
    assert not last.exists() and not last.is_symlink()


@pytest.mark.parametrize("text", ["", '{"name": 5', "\x00\xff", "[1, 2]"])
def test_an_unreadable_topic_json_is_a_config_error_naming_the_file(tmp_path, text):
    _log(tmp_path)
    (tmp_path / "t" / "topic.json").write_text(text, errors="surrogateescape")
    with pytest.raises(ConfigError, match=r"topic\.json"):
        EventLog(tmp_path).topic("t")


@pytest.mark.parametrize("keep", [0, 3, 7, 12, 20])
def test_a_truncated_commit_record_is_an_error_naming_the_file(tmp_path, keep):
    """A commit record cut short (a torn copy, a hostile edit) raised struct.error,
    JSONDecodeError or KeyError from the decoder."""
    from dataflare_platform.errors import CorruptInputError
    from dataflare_platform.events.log.commits import COMMIT_FILE, Commit, read_commit

    record = Commit("w", 3, {0: 10}, b"checkpoint").encode()
    (tmp_path / COMMIT_FILE).write_bytes(record[:keep])
    with pytest.raises(CorruptInputError, match=COMMIT_FILE):
        read_commit(tmp_path)


def _append_in_child(root: Path) -> subprocess.CompletedProcess:
    code = textwrap.dedent(
        f"""
        import pyarrow as pa
        from dataflare_platform.events.log import EventLog
        from dataflare_platform.errors import DataflareError
        rows = pa.table({{"id": pa.array([99], pa.int64()),
                          "date_time": pa.array([99], pa.timestamp("ms"))}})
        try:
            EventLog({str(root)!r}).topic("t").append(rows)
            print("APPENDED")
        except DataflareError as err:
            print("REFUSED", str(err).splitlines()[0])
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=CEILING_S
    )


@pytest.mark.parametrize("kind", ["fifo", "directory", "symlink"])
def test_a_lock_file_that_is_not_a_regular_file_is_refused_naming_it(tmp_path, kind):
    """The partition's ``.lock`` replaced by a FIFO (open could hang), a directory (a raw
    IsADirectoryError) or a symlink (append-open would create or touch its target)."""
    _log(tmp_path / "log")
    lock = tmp_path / "log" / "t" / "p00000" / ".lock"
    lock.unlink(missing_ok=True)
    target = tmp_path / "elsewhere"
    {
        "fifo": lambda: os.mkfifo(lock),
        "directory": lambda: lock.mkdir(),
        "symlink": lambda: lock.symlink_to(target),
    }[kind]()
    done = _append_in_child(tmp_path / "log")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("REFUSED"), done.stdout + done.stderr[-2000:]
    assert ".lock" in done.stdout and "move it aside" in done.stdout
    assert not target.exists()  # a link is never followed
    # Moved aside as the message says, the log is whole and takes appends again.
    lock.rename(tmp_path / "moved-aside")
    assert _append_in_child(tmp_path / "log").stdout.startswith("APPENDED")
    assert EventLog(tmp_path / "log").topic("t").read_all().num_rows == 31
