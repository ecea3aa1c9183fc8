"""Plugins in processes started while another thread was using them (issue 17): with
multiprocessing's fork (the Linux default), forkserver and spawn, a child calls a plugin
the parent had loaded and a deadline still fires there, although at the fork another
thread of the parent was inside a call (its instance checked out of a pool of one) and
held the plugin's lock and the compile cache's lock. Without the reset in the child, the
call waits for ever for the instance (or the lock) the vanished thread had."""

from __future__ import annotations

import multiprocessing
import queue
import threading

import polars as pl
import pytest

from dataflare_platform.plugins import Limits, Plugin, PluginError
from dataflare_platform.plugins.engine import deadline_ticks, plugin_cache, shared_engine
from dataflare_platform_tests.plugins.hostile import DEADLINE_MS, LOOP, MANIFEST, module
from dataflare_platform_tests.waits import wait_until

SHORT = Limits(deadline_ms=DEADLINE_MS, memory_bytes=8 * 1024 * 1024, max_failures=1000)
# The busy call's deadline is never reached: the test ends it by moving the epoch on.
LONG_MS = 600_000
LONG = Limits(deadline_ms=LONG_MS, memory_bytes=8 * 1024 * 1024, max_failures=1000)

_PARENT: dict[str, Plugin] = {}  # inherited by a forked child only


def x(first: int, n: int = 10) -> pl.DataFrame:
    return pl.DataFrame({"x": [first, *range(1, n)]}, schema={"x": pl.Int64})


def _child(wat: str, cache_dir: str, out: multiprocessing.Queue) -> None:
    try:
        busy, short = _PARENT.get("busy"), _PARENT.get("short")
        if busy is None or short is None:  # forkserver / spawn: nothing is inherited
            busy = Plugin(MANIFEST, wat, limits=LONG, cache_dir=cache_dir)
            short = Plugin(MANIFEST, wat, limits=SHORT, cache_dir=cache_dir)
        report = {"call": busy.map(x(0))["y"].to_list()}
        try:
            short.map(x(LOOP))
            report["deadline"] = "returned"
        except PluginError as err:
            report["deadline"] = err.kind
        # A plugin loaded in the child goes through the compile cache (its lock).
        fresh = Plugin(MANIFEST, wat, limits=SHORT, cache_dir=cache_dir)
        report["fresh"] = fresh.map(x(0, 4))["y"].to_list()
        out.put(report)
    except BaseException as err:  # reported, not lost in the child's stderr
        out.put({"error": f"{type(err).__name__}: {err}"})


def _hold(lock: threading.Lock, held: threading.Event, release: threading.Event) -> None:
    with lock:
        held.set()
        release.wait()


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_a_child_started_while_a_plugin_is_busy_can_call_it(cache_dir, method):
    wat = module()
    busy = Plugin(MANIFEST, wat, limits=LONG, cache_dir=cache_dir)
    short = Plugin(MANIFEST, wat, limits=SHORT, cache_dir=cache_dir)
    _PARENT.update(busy=busy, short=short)
    outcome: dict[str, object] = {}

    def loop() -> None:
        try:
            busy.map(x(LOOP))
        except PluginError as err:
            outcome["kind"] = err.kind

    caller = threading.Thread(target=loop, daemon=True)
    caller.start()
    release = threading.Event()
    holders = []
    ctx = multiprocessing.get_context(method)
    out = ctx.Queue()
    child = ctx.Process(target=_child, args=(wat, str(cache_dir), out))
    try:
        # Wait (by progress, generously) until the caller has the only instance checked
        # out, before the locks are taken: the caller may need the compile cache's lock
        # to build its instance (on a loaded machine it had not yet when the holder took
        # it, and the check below failed with the holders left holding the session's
        # cache lock: a later test using that cache then waited for ever).
        wait_until(
            "the busy call to hold the only instance",
            lambda: busy._pool.live == 1 and not busy._pool._idle,
            120,
            poll_s=0.05,
        )
        assert caller.is_alive()
        for lock in (busy._lock, plugin_cache(cache_dir)._lock):
            held = threading.Event()
            holder = threading.Thread(target=_hold, args=(lock, held, release), daemon=True)
            holder.start()
            holders.append(holder)
            assert held.wait(60)
        child.start()
        assert caller.is_alive()  # the fork happened with the call in flight
        release.set()  # the parent's own threads go on
        try:
            got = out.get(timeout=240)  # generous: only a hang gets near it
        except queue.Empty:
            got = {"error": "hung: the child waited for what the parent's threads held"}
    finally:
        release.set()
        _PARENT.clear()
        # End the parent's busy call: its deadline passes when the epoch moves on.
        engine = shared_engine(False)
        for _ in range(deadline_ticks(LONG_MS) + 2):
            engine.increment_epoch()
        caller.join(60)
        for holder in holders:
            holder.join(60)
        if child.pid is not None:  # started (a failed wait above never starts it)
            if child.is_alive():
                child.kill()
            child.join(60)
    assert got == {
        "call": list(range(10)),
        "deadline": "timeout",
        "fresh": [0, 1, 2, 3],
    }
    assert outcome == {"kind": "timeout"}
    assert busy.map(x(0))["y"].to_list() == list(range(10))  # the parent's pool is whole
