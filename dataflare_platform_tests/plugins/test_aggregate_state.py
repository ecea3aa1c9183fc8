"""Aggregate state is all-or-nothing per batch and tied to its plugin in checkpoints:
a batch that fails in finalize after update committed leaves the state as before the
batch (dead-lettered once, a redrive counts it once); a checkpointed state written by
another plugin, version or module, damaged, or that the plugin cannot decode is refused
at restore with a reason that names the state and what to do."""

from __future__ import annotations

import hashlib
import json
import struct

import polars as pl
import pyarrow as pa
import pytest

from dataflare_platform.engine import CollectSink, Runner, RunnerConfig, Stream, TableSource
from dataflare_platform.plugins import Limits, Plugin, PluginError
from dataflare_platform.plugins.manifest import Manifest
from dataflare_platform.plugins.runtime import STATE_MAGIC
from dataflare_platform_tests.plugins.hostile import AGG_MANIFEST, POISON, aggregate_module

LIMITS = Limits(deadline_ms=500, memory_bytes=8 * 1024 * 1024, max_failures=100)


def load(cache_dir, version: str = "0.0.1", **params) -> Plugin:
    manifest = Manifest.model_validate({**AGG_MANIFEST, "version": version})
    return Plugin(manifest, aggregate_module(), params, LIMITS, cache_dir=cache_dir)


def xs(*values: int) -> pl.DataFrame:
    return pl.DataFrame({"x": list(values)}, schema={"x": pl.Int64})


def envelope(owner: Plugin, raw: bytes, **override: object) -> bytes:
    """A checkpoint envelope as ``snapshot()`` writes it, for ``raw`` (fields overridable)."""
    header = {
        "plugin": owner.name,
        "version": owner.manifest.version,
        "module_sha256": owner.sha256,
        "state_bytes": len(raw),
        "state_sha256": hashlib.sha256(raw).hexdigest(),
        **override,
    }
    data = json.dumps(header).encode()
    return STATE_MAGIC + struct.pack("<I", len(data)) + data + raw


def test_finalize_failure_after_update_rolls_the_state_back(cache_dir):
    plugin = load(cache_dir)
    assert plugin(xs(1, 2, 3))["total"].to_list() == [6]
    before = plugin.snapshot()
    with pytest.raises(PluginError) as err:
        plugin(xs(10, POISON))  # update commits 23, then finalize traps
    assert err.value.kind == "trap"
    assert plugin.snapshot() == before  # the half-applied batch is not visible
    assert plugin(xs(4))["total"].to_list() == [10]
    # the redrive, by a plugin that tolerates the batch, counts it exactly once
    redrive = load(cache_dir, tolerant=True)
    redrive.restore(plugin.snapshot())
    assert redrive(xs(10, POISON))["total"].to_list() == [10 + 10 + POISON]


def test_in_a_pipeline_the_failed_batch_is_dead_lettered_once_and_not_counted(cache_dir):
    plugin = load(cache_dir)
    table = pa.table({"x": [1, 2, 3, 10, POISON, 4], "date_time": [0] * 6})
    sink = CollectSink()
    stream = Stream.source(TableSource.single("v", table)).plugin(plugin).sink(sink)
    result = Runner(stream, RunnerConfig(batch_rows=3)).run()
    assert result.metrics.dead_letters == 3  # the poisoned batch, once
    assert sink.result()["total"].to_list() == [6]  # its rows are not in the state
    assert plugin.state()[8:] == (6).to_bytes(8, "little")


def test_checkpoint_state_round_trips_for_the_same_plugin(cache_dir):
    first = load(cache_dir)
    first(xs(5, 6))
    second = load(cache_dir)
    second.restore(first.snapshot())
    assert second(xs(1))["total"].to_list() == [12]


def test_raw_state_of_the_right_size_is_refused_naming_the_state(cache_dir):
    plugin = load(cache_dir)
    with pytest.raises(PluginError) as err:
        plugin.restore(b"\x01" * 16)  # garbage of exactly state_bytes
    assert err.value.kind == "state"
    assert "checkpointed state" in err.value.detail and "no plugin identity" in err.value.detail
    assert "reset the plugin's state" in err.value.detail and "migrate" in err.value.detail


def test_state_of_another_version_or_module_or_plugin_is_refused(cache_dir):
    old = load(cache_dir, version="0.0.1")
    old(xs(7))
    new = load(cache_dir, version="0.0.2")
    with pytest.raises(PluginError) as err:
        new.restore(old.snapshot())
    assert err.value.kind == "state"
    assert "poison_sum 0.0.1" in err.value.detail and "poison_sum 0.0.2" in err.value.detail
    raw = old.state()
    for field, value in (("module_sha256", "ab" * 32), ("plugin", "other")):
        with pytest.raises(PluginError) as err:
            old.restore(envelope(old, raw, **{field: value}))
        assert err.value.kind == "state" and "was written by plugin" in err.value.detail


def test_damaged_or_undecodable_state_is_refused_and_the_old_state_kept(cache_dir):
    plugin = load(cache_dir)
    plugin(xs(3))
    good = plugin.snapshot()
    damaged = good[:-1] + bytes([good[-1] ^ 0xFF])
    with pytest.raises(PluginError) as err:
        plugin.restore(damaged)
    assert err.value.kind == "state" and "damaged" in err.value.detail
    # a well-formed envelope around state the plugin cannot decode (wrong magic)
    with pytest.raises(PluginError) as err:
        plugin.restore(envelope(plugin, b"\x00" * 16))
    assert err.value.kind == "state" and "does not decode" in err.value.detail
    assert "checkpointed state (16 bytes)" in err.value.detail
    assert plugin.snapshot() == good
    assert plugin(xs(1))["total"].to_list() == [4]
