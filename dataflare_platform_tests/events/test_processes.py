"""The log shared by real processes: concurrent producers and a consumer, and a producer
killed in the middle of its appends."""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from dataflare_platform.events.groups import ConsumerGroup
from dataflare_platform.events.log import EventLog
from dataflare_platform_tests.events.procs import SCHEMA, batch

pytestmark = pytest.mark.e2e

PROCS = [sys.executable, "-m", "dataflare_platform_tests.events.procs"]


def _expected_checksum(producer: int, batches: int, rows: int) -> int:
    return sum(
        int(np.asarray(batch(producer, s, rows).column("value")).sum()) for s in range(batches)
    )


def test_two_producers_and_a_consumer_at_once_lose_and_duplicate_nothing(tmp_path: Path):
    root = tmp_path / "log"
    EventLog(root).create_topic("events", SCHEMA, partitions=2)
    batches, rows = 150, 200
    expected = 2 * batches * rows
    consumer = subprocess.Popen(
        [*PROCS, "consume", str(root), "events", "g1", str(expected), "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    producers = [
        subprocess.Popen(
            [*PROCS, "produce", str(root), "events", str(p), "0", str(batches), str(rows)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for p in (1, 2)
    ]
    acks = []
    for proc in producers:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        acks.extend(json.loads(line) for line in out.decode().splitlines())
    out, err = consumer.communicate(timeout=120)
    assert consumer.returncode == 0, err.decode()
    seen = json.loads(out)

    assert len(acks) == 2 * batches
    assert seen["rows"] == expected
    assert seen["batches"] == 2 * batches
    assert seen["checksum"] == _expected_checksum(1, batches, rows) + _expected_checksum(
        2, batches, rows
    )
    topic = EventLog(root).topic("events")
    # Appends never interleave inside a batch: each acknowledged range holds exactly it.
    for ack in acks:
        got = topic.read(ack["partition"], ack["start"], ack["end"] - ack["start"])
        assert pc.unique(got.column("seq")).to_pylist() == [ack["seq"]]
        assert got.num_rows == rows
    assert sum(topic.end_offsets().values()) == expected
    assert ConsumerGroup(topic, "g1").lag() == {0: 0, 1: 0}


def test_producer_killed_mid_append_leaves_every_acknowledged_batch(tmp_path: Path):
    root = tmp_path / "log"
    EventLog(root).create_topic("events", SCHEMA, partitions=2, fsync=True)
    rng = random.Random(11)
    acked: list[dict] = []
    first = 0
    for _ in range(4):
        proc = subprocess.Popen(
            [*PROCS, "produce", str(root), "events", "1", str(first), "100000", "20000"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        # Kill it in the middle of its appends: after the first acknowledgement (process
        # start-up takes a while on a loaded machine), at a random moment.
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "the producer acknowledged nothing in 120 s"
        first_line = proc.stdout.readline()
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        text = (first_line + out).decode()
        lines = [json.loads(line) for line in text.splitlines() if line.endswith("}")]
        assert lines
        acked.extend(lines)
        # The next producer (a new process) carries on after what the killed one published.
        topic = EventLog(root).topic("events")
        first = max(a["seq"] for a in acked) + 1
        # Published but not acknowledged is allowed (killed between rename and print);
        # nothing else, and nothing half-written is visible.
        assert sum(topic.end_offsets().values()) >= sum(a["end"] - a["start"] for a in acked)
    topic = EventLog(root).topic("events")
    for ack in acked:
        got = topic.read(ack["partition"], ack["start"], ack["end"] - ack["start"])
        assert got.equals(batch(1, ack["seq"], 20000))
    everything = topic.read_all()
    assert everything.num_rows % 20000 == 0
    assert not list(topic.dir.glob("p*/.tmp-*")), "temporary files of dead writers remain"
