"""Crash tests' process driver: a command SIGKILLed at random moments and restarted,
until it finishes (exactly-once tests of every transactional sink use it)."""

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path


def kill_until_done(
    command: list[str],
    seed: int = 7,
    max_kills: int = 4,
    delay_s: tuple[float, float] = (1.5, 3.5),
) -> tuple[dict, int]:
    """Run ``command``, SIGKILL it at a random moment within ``delay_s`` up to
    ``max_kills`` times, restart it each time, and return the final run's JSON summary
    (its last stdout line) and the number of kills."""
    rng = random.Random(seed)
    kills = 0
    while True:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + rng.uniform(*delay_s)
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None and kills < max_kills:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
            kills += 1
            continue
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
        return json.loads(out.decode().strip().splitlines()[-1]), kills


def nexmark_run(*args: str) -> list[str]:
    """The command line of ``dataflare nexmark run ARGS`` in this interpreter."""
    return [sys.executable, "-m", "dataflare_platform.cli", "nexmark", "run", *args]


def survives_sigkills(command: list[str]) -> dict:
    """``command`` SIGKILLed at random points (at least twice: a run paced too fast to be
    killed twice tests nothing) and restarted until it finishes; its final summary."""
    summary, kills = kill_until_done(command)
    assert kills >= 2, "the run finished before it could be killed twice"
    assert summary["finished"]
    return summary


@contextlib.contextmanager
def holding_duckdb_writer(path, read_only: bool = False) -> Iterator[Callable[[], None]]:
    """Another process holding ``path`` open (for writing, as a running pipeline does:
    DuckDB then lets no other process open it; or read-only, as a reader does: then no
    other process may write it). Yields a function that lets go early."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, sys\nc = duckdb.connect({str(path)!r}, read_only={read_only})\n"
            "print('holding', flush=True)\nsys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )

    def release() -> None:
        if not holder.stdin.closed:
            holder.stdin.close()
        holder.wait(timeout=300)

    try:
        assert holder.stdout.readline().strip() == "holding"  # it has the lock now
        yield release
    finally:
        release()


def duckdb_run_survives_sigkills(command: Callable[[Path], list[str]], tmp_path: Path, table: str):
    """Run ``command(db)`` (a restartable ``dataflare nexmark run --duckdb db ...``) once
    uninterrupted and once SIGKILLed at random points (at least twice) and restarted until
    it finishes; returns both tables (clean, crashed) as Polars frames, the crashed one
    checked free of duplicate rows."""
    import duckdb
    import polars as pl

    from dataflare_platform.sql_names import quote_identifier

    clean, crashed = tmp_path / "clean.duckdb", tmp_path / "crashed.duckdb"
    subprocess.run(command(clean), check=True, capture_output=True, timeout=300)
    survives_sigkills(command(crashed))

    def read(db: Path) -> pl.DataFrame:
        with duckdb.connect(str(db)) as conn:
            return pl.from_arrow(conn.sql(f"SELECT * FROM {quote_identifier(table)}").arrow())

    expected, got = read(clean), read(crashed)
    assert expected.height > 0
    assert got.unique().height == got.height  # no duplicates
    return expected, got
