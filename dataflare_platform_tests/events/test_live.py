"""The live Nexmark producer: paced, stamped with the wall clock, reproducible per seed,
and stopped cleanly by SIGTERM (the quickstart and `produce --nexmark --live` rely on it)."""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pytest

from dataflare_platform.events.live import (
    NEXMARK_TOPICS,
    LiveNexmarkProducer,
    batch_events_for,
)
from dataflare_platform.events.log import EventLog


def _all_rows(log: EventLog, kind: str) -> pa.Table:
    return log.topic(NEXMARK_TOPICS[kind][0]).read_all()


def _events(log: EventLog) -> int:
    return sum(sum(log.topic(name).end_offsets().values()) for name, _ in NEXMARK_TOPICS.values())


def test_batches_hold_whole_epochs_of_the_nexmark_mix():
    assert batch_events_for(1000, 0.5) == 500
    assert batch_events_for(10, 0.5) == 50  # at least one epoch of 50
    assert batch_events_for(2333, 0.5) % 50 == 0


def test_a_bounded_run_is_paced_to_its_rate(tmp_path):
    """2 s at 2000 events/s: exactly the four batches due by then, never faster than the
    token bucket lets them out (each batch waits for its tokens)."""
    log = EventLog(tmp_path / "log")
    now = [100.0]  # a pacing clock that only the token waits move: no wall clock here

    def wait(seconds: float) -> bool:
        now[0] += seconds
        return False

    released: list[tuple[float, int]] = []
    producer = LiveNexmarkProducer(
        log, rate=2000, seed=1, max_seconds=2.0, monotonic=lambda: now[0], wait=wait
    )
    final = producer.run(on_batch=lambda p: released.append((now[0] - 100.0, p.events)))
    assert final.events == _events(log) == 4000
    # Each 1000-event batch is let out exactly when its tokens have accrued (k * 0.5 s).
    assert released == [(0.5, 1000), (1.0, 2000), (1.5, 3000), (2.0, 4000)]
    assert final.seconds == 2.0
    assert final.end_offsets["nexmark.bids"] == log.topic("nexmark.bids").end_offsets()
    # Every topic the shipped pipelines read exists, keyed over two partitions.
    for name, key in NEXMARK_TOPICS.values():
        described = log.topic(name).describe()
        assert (described["partitions"], described["key"]) == (2, key)


def test_event_times_are_now_within_the_out_of_order_bound(tmp_path):
    log = EventLog(tmp_path / "log")
    before_ms = int(time.time() * 1000)
    LiveNexmarkProducer(log, rate=5000, seed=2, max_events=5000, max_out_of_order_ms=1500).run()
    after_ms = int(time.time() * 1000)
    for kind in NEXMARK_TOPICS:
        times = _all_rows(log, kind).column("date_time").cast(pa.int64()).to_pylist()
        assert times, kind
        assert before_ms - 1500 <= min(times) and max(times) <= after_ms, kind
    auctions = _all_rows(log, "auctions")
    expires = auctions.column("expires").cast(pa.int64()).to_pylist()
    starts = auctions.column("date_time").cast(pa.int64()).to_pylist()
    assert all(e > s for e, s in zip(expires, starts, strict=True))


def _content(log: EventLog, kind: str) -> pa.Table:
    rows = _all_rows(log, kind)
    drop = [c for c in ("date_time", "expires") if c in rows.column_names]
    return rows.drop_columns(drop).sort_by([("id" if kind != "bids" else "auction", "ascending")])


def test_the_same_seed_gives_the_same_events(tmp_path):
    logs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        logs[name] = EventLog(tmp_path / name)
        LiveNexmarkProducer(logs[name], rate=10_000, seed=seed, max_events=2_000).run()
    for kind in NEXMARK_TOPICS:
        a, b, c = (_content(logs[n], kind) for n in "abc")
        assert a.num_rows == b.num_rows == c.num_rows > 0
        assert a.equals(b), kind
    assert not _content(logs["a"], "bids").equals(_content(logs["c"], "bids"))


def test_zero_rate_is_refused(tmp_path):
    with pytest.raises(ValueError, match="rate"):
        LiveNexmarkProducer(EventLog(tmp_path / "log"), rate=0, seed=1)


def test_sigterm_stops_the_cli_producer_cleanly_with_a_final_count(tmp_path):
    log_dir = tmp_path / "log"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "dataflare_platform.cli", "produce", "--nexmark", "--live"),
            *("--rate", "2000", "--seed", "5", "--log-dir", str(log_dir)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        # Follow progress: wait until the producer has appended something.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if (log_dir / "nexmark.bids").exists() and _events(EventLog(log_dir)) > 0:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["seed"] == 5
    assert summary["events"] == _events(EventLog(log_dir)) > 0
    assert "stopped:" in err and "events/s" in err
