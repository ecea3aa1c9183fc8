"""Usage statistics of a real WASM plugin written to a real event log: one event per flush
window (not per call), errors by kind, p99, a salted tenant hash (the raw tenant never
reaches the log), Prometheus metrics, and the daily roll-up and regression rule."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

import numpy as np
import polars as pl
import pytest

from dataflare_platform.errors import BatchRejectedError
from dataflare_platform.events.log import EventLog
from dataflare_platform.observability.prometheus import exposition
from dataflare_platform.plugins import Limits, Plugin
from dataflare_platform.plugins.usage import (
    PluginUsage,
    UsageSettings,
    daily_rollup,
    day_events,
    error_rate_regressions,
    record_install,
    usage_topic,
    utc_day,
    version_key,
)
from dataflare_platform_tests.observability.fixtures import metrics_dir
from dataflare_platform_tests.observability.scrape import value
from dataflare_platform_tests.plugins.hostile import BAD_STATUS, MANIFEST, TRAP, module

__all__ = ["metrics_dir"]

T0 = datetime(2026, 12, 5, 10, 0).timestamp()  # local time; only differences matter
SETTINGS = UsageSettings(
    tenant="Acme Corp", tenant_salt="deployment-salt-0123456789", flush_interval_s=60
)


def _batch(first: int = 7, n: int = 100) -> pl.DataFrame:
    x = np.full(n, 7, dtype=np.int64)
    x[0] = first
    return pl.DataFrame({"x": x})


def _plugin(cache_dir, version: str = "0.0.1") -> Plugin:
    manifest = MANIFEST.model_copy(update={"version": version})
    # no quarantine: the tests make the plugin fail on purpose, many times
    limits = Limits(max_failures=1000)
    return Plugin(manifest, module(), limits=limits, pool_size=1, cache_dir=cache_dir)


def _calls(plugin: Plugin, ok: int, failing: dict[int, int]) -> None:
    for _ in range(ok):
        plugin.map(_batch())
    for mode, n in failing.items():
        for _ in range(n):
            with pytest.raises(BatchRejectedError):
                plugin.map(_batch(mode))


def test_one_event_per_window_with_errors_by_kind_and_a_salted_tenant(tmp_path, cache_dir):
    log = EventLog(tmp_path / "log")
    clock = [T0]
    plugin = _plugin(cache_dir)
    usage = PluginUsage.attach(plugin, log, SETTINGS, "orders", "acme", clock=lambda: clock[0])
    _calls(plugin, 40, {TRAP: 2, BAD_STATUS: 1})
    topic = usage_topic(log)
    assert topic.read_all().num_rows == 0  # nothing written per call
    clock[0] = T0 + 61  # the next call closes the window
    plugin.map(_batch())
    _calls(plugin, 5, {})
    usage.close()
    rows = topic.read_all().to_pylist()
    assert [r["calls"] for r in rows] == [44, 5]
    first = rows[0]
    assert first["rows"] == 4400 and first["errors"] == 3
    assert json.loads(first["errors_by_kind"]) == {"status": 1, "trap": 2}
    assert (first["plugin"], first["publisher"], first["version"], first["pipeline"]) == (
        "hostile",
        "acme",
        "0.0.1",
        "orders",
    )
    assert first["p99_ms"] > 0
    expected = hashlib.sha256(b"deployment-salt-0123456789\x00Acme Corp").hexdigest()
    assert first["tenant_hash"] == expected
    for path in topic.segment_paths():
        assert b"Acme Corp" not in path.read_bytes()


def test_flushed_windows_are_exported_as_metrics(tmp_path, cache_dir, metrics_dir):
    log = EventLog(tmp_path / "log")
    plugin = _plugin(cache_dir, "1.2.0")
    usage = PluginUsage.attach(plugin, log, SETTINGS, "orders", "acme")
    _calls(plugin, 3, {TRAP: 1})
    usage.flush()
    record_install(log, SETTINGS, "hostile", "1.2.0", "acme")
    text = exposition(metrics_dir)
    labels = {"plugin": "hostile", "version": "1.2.0", "publisher": "acme"}
    assert value(text, "dataflare_plugin_usage_calls_total", **labels) == 4
    assert value(text, "dataflare_plugin_usage_rows_total", **labels) == 400
    assert value(text, "dataflare_plugin_usage_errors_total", kind="trap", **labels) == 1
    assert value(text, "dataflare_plugin_usage_p99_seconds", **labels) > 0
    assert value(text, "dataflare_plugin_installs_total", **labels) == 1


def test_daily_rollup_and_the_error_rate_regression_rule(tmp_path, cache_dir):
    log = EventLog(tmp_path / "log")
    clock = [T0]
    old, new = _plugin(cache_dir, "1.9.0"), _plugin(cache_dir, "1.10.0")
    for plugin, ok, bad in ((old, 19, 1), (new, 15, 5)):
        usage = PluginUsage.attach(plugin, log, SETTINGS, "orders", "acme", clock=lambda: clock[0])
        _calls(plugin, ok, {TRAP: bad})
        usage.flush()
    record_install(log, SETTINGS, "hostile", "1.10.0", "acme", now=T0)
    events = day_events(usage_topic(log), utc_day(T0))
    by_version = daily_rollup(events, ["plugin", "version"])
    got = {r["version"]: r for r in by_version.iter_rows(named=True)}
    assert (got["1.9.0"]["calls"], got["1.9.0"]["errors"]) == (20, 1)
    assert (got["1.10.0"]["calls"], got["1.10.0"]["errors"], got["1.10.0"]["installs"]) == (
        20,
        5,
        1,
    )
    assert got["1.10.0"]["error_rate"] == pytest.approx(0.25)
    by_publisher = daily_rollup(events, ["publisher"]).to_dicts()
    assert by_publisher[0]["publisher"] == "acme" and by_publisher[0]["calls"] == 40
    assert json.loads(by_publisher[0]["errors_by_kind"]) == {"trap": 6}
    # 1.10.0 is newer than 1.9.0 (semantic, not string, order): 25% vs 5% errors
    (found,) = error_rate_regressions(by_version, threshold=0.1)
    assert (found.previous, found.current) == ("1.9.0", "1.10.0")
    assert error_rate_regressions(by_version, threshold=0.3) == []
    assert error_rate_regressions(by_version, threshold=0.1, min_calls=21) == []
    # the day after holds none of it
    assert day_events(usage_topic(log), utc_day(T0 + 86_400 * 2)).is_empty()


def test_version_order():
    assert sorted(["1.10.0", "1.9.0", "1.10.0-rc.1"], key=version_key) == [
        "1.9.0",
        "1.10.0-rc.1",
        "1.10.0",
    ]


def test_the_deployment_registry_records_usage_when_the_salt_is_set(
    home, built, tmp_path, monkeypatch
):
    """``DATAFLARE_PLUGIN_USAGE_SALT`` turns usage on for every load through the
    deployment's registry; the publisher comes from the install record; the last window is
    flushed when the plugin goes away."""
    import gc
    import shutil

    from dataflare_platform.plugins.registry import deployment_registry, licence_settings

    folder = tmp_path / "plugins"
    folder.mkdir()
    for suffix in (".wasm", ".json"):
        shutil.copy(built["currency"].with_suffix(suffix), folder / f"currency{suffix}")
    target = {"target": "acme/currency/1.0.0.wasm", "version": "1.0.0", "sha256": "x"}
    (folder / ".marketplace.json").write_text(json.dumps({"currency": target}))
    monkeypatch.setenv("DATAFLARE_TENANT", "Acme Corp")
    monkeypatch.setenv("DATAFLARE_PLUGIN_USAGE_SALT", "a-deployment-salt-of-ours")
    assert "a-deployment-salt-of-ours" not in repr(
        deployment_registry(folder, home.root).config
    )  # a secret: never shown
    plugin = deployment_registry(folder, home.root).load("currency", pipeline="orders")
    for _ in range(3):
        plugin.map(pl.DataFrame({"price": [100, 200]}))
    del plugin
    gc.collect()
    rows = usage_topic(EventLog(home.event_log_dir)).read_all().to_pylist()
    assert [(r["plugin"], r["publisher"], r["pipeline"], r["calls"], r["rows"]) for r in rows] == [
        ("currency", "acme", "orders", 3, 6)
    ]
    assert (
        rows[0]["tenant_hash"]
        == hashlib.sha256(b"a-deployment-salt-of-ours\x00Acme Corp").hexdigest()
    )
    assert licence_settings(home.root, {}) == {}  # unset: off


def test_a_short_salt_is_refused_without_showing_it(home):
    from dataflare_platform.errors import ConfigError
    from dataflare_platform.plugins.registry import deployment_config

    env = {"DATAFLARE_PLUGIN_USAGE_SALT": "short-Secret"}
    with pytest.raises(ConfigError) as refused:
        deployment_config(home.root, environ=env)
    assert "usage_tenant_salt" in str(refused.value)
    assert "short-Secret" not in str(refused.value)
