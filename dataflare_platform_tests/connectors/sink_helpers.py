"""Shared pieces of the sink tests: Nexmark sources, comparison, and the SIGKILL loop
(the pattern of ``engine/test_exactly_once.py``, driving ``crash_worker``)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import polars as pl
import pyarrow as pa

from dataflare_platform.engine import CollectSink, Runner, RunnerConfig, TableSource
from dataflare_platform.queries.nexmark import BUILDERS, COLUMNS, NexmarkSources


def sources(query: str, tables: dict[str, pa.Table]) -> NexmarkSources:
    return NexmarkSources(
        **{k: TableSource.single(k, tables[k].select(c)) for k, c in COLUMNS[query].items()}
    )


def collect(query: str, tables: dict[str, pa.Table], config: RunnerConfig) -> pl.DataFrame:
    sink = CollectSink()
    Runner(BUILDERS[query](sources(query, tables), sink), config).run()
    return sink.result()


def same_rows(got: pl.DataFrame, expected: pl.DataFrame) -> bool:
    """Equal as multisets of rows, after casting ``got`` to ``expected``'s column types
    (a database may hand timestamps back in microseconds)."""
    got = got.select(expected.columns).cast(dict(expected.schema))
    return got.sort(got.columns).equals(expected.sort(expected.columns))


def kill_until_done(command: list[str], seed: int = 7, max_kills: int = 4) -> tuple[dict, int]:
    """Run ``command``, SIGKILL it at random moments up to ``max_kills`` times, restart
    it each time, and return the final run's JSON summary and the number of kills."""
    rng = random.Random(seed)
    kills = 0
    while True:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + rng.uniform(1.5, 3.5)
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


def worker(*args: str) -> list[str]:
    return [sys.executable, "-m", "dataflare_platform_tests.connectors.crash_worker", *args]
