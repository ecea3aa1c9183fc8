"""Many worker processes, one endpoint: sums across fork and spawn, dead workers' gauges
gone, counters never backwards across a restart (prometheus_client multiprocess mode)."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import stat
import urllib.request

from dataflare_platform import observability
from dataflare_platform.observability.endpoint import MetricsServer
from dataflare_platform.observability.prometheus import exposition, pids
from dataflare_platform_tests.observability.scrape import value

RECORDS = "dataflare_engine_records_in_total"
LAG = "dataflare_source_records_lag"


def _count(n: int, pipeline: str) -> None:
    """A worker: its instruments come from the environment (spawn) or the parent (fork)."""
    inst = observability.instruments()
    assert inst is not None
    for _ in range(n):
        inst[RECORDS].record(1, (pipeline,))


def _hold_gauge(partition: str, lag: float, ready, release) -> None:
    inst = observability.instruments()
    assert inst is not None
    inst[LAG].record(lag, ("p", "s", partition))
    inst[RECORDS].record(10, ("p",))
    ready.set()
    release.wait(60)


def _run(ctx, target, *args) -> None:
    p = ctx.Process(target=target, args=args)
    p.start()
    p.join(120)
    assert p.exitcode == 0


def test_counters_from_forked_and_spawned_workers_sum(metrics_dir):
    inst = observability.instruments()
    inst[RECORDS].record(5, ("p",))  # the parent's own count, before it forks
    for method, n in (("fork", 100), ("fork", 200), ("spawn", 300), ("spawn", 400)):
        _run(mp.get_context(method), _count, n, "p")
    text = exposition(metrics_dir)
    # A forked child does not re-report the parent's 5 (prometheus_client starts new
    # files on a pid change), so the sum is exact.
    assert value(text, RECORDS, pipeline="p") == 5 + 100 + 200 + 300 + 400
    assert len(pids(metrics_dir)) == 5
    assert stat.S_IMODE(metrics_dir.stat().st_mode) == 0o700


def test_a_killed_workers_gauges_disappear_and_counters_never_go_back(metrics_dir):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    worker = ctx.Process(target=_hold_gauge, args=("0", 42.0, ready, release))
    worker.start()
    assert ready.wait(120)
    text = exposition(metrics_dir)
    assert value(text, LAG, pipeline="p", source="s", partition="0") == 42.0
    assert value(text, RECORDS, pipeline="p") == 10
    os.kill(worker.pid, signal.SIGKILL)
    worker.join(60)  # reaped: the pid is gone, not a zombie
    text = exposition(metrics_dir)  # the endpoint marks the dead pid before collecting
    assert value(text, LAG, pipeline="p", source="s", partition="0") is None
    assert value(text, RECORDS, pipeline="p") == 10  # the dead worker's count stays
    # The worker restarts (a new process) and counts on: the total only grows.
    ready2, release2 = ctx.Event(), ctx.Event()
    restarted = ctx.Process(target=_hold_gauge, args=("0", 7.0, ready2, release2))
    restarted.start()
    assert ready2.wait(120)
    text = exposition(metrics_dir)
    assert value(text, RECORDS, pipeline="p") == 20
    assert value(text, LAG, pipeline="p", source="s", partition="0") == 7.0
    release2.set()
    restarted.join(60)
    assert restarted.exitcode == 0


def test_the_endpoint_serves_on_loopback_only(metrics_dir):
    observability.instruments()[RECORDS].record(3, ("q",))
    server = MetricsServer(metrics_dir, port=0).start()
    try:
        assert server.server.server_address[0] == "127.0.0.1"
        with urllib.request.urlopen(server.url, timeout=30) as response:
            text = response.read()
            assert response.headers["Content-Type"].startswith("text/plain")
        assert value(text, RECORDS, pipeline="q") == 3
        try:
            urllib.request.urlopen(server.url.replace("/metrics", "/other"), timeout=30)
            raise AssertionError("only /metrics is served")
        except urllib.error.HTTPError as err:
            assert err.code == 404
    finally:
        server.stop()
