"""The compile cache is authenticated and platform-owned: a planted artifact under a name
anyone can compute (another plugin's genuine one, an unauthenticated one, a forged MAC)
never reaches ``Module.deserialize``; the module is compiled again from the verified
bytes with a warning. Modules are real ones, built from C with the SDK."""

from __future__ import annotations

import json
import logging
import os
import stat

import polars as pl
import pytest
import wasmtime

from dataflare_platform.cli.plugin import MAP_TEMPLATE, _manifest
from dataflare_platform.plugins import load_plugin
from dataflare_platform.plugins.build import build_plugin
from dataflare_platform.plugins.cache import MAGIC, PluginCache, cache_key
from dataflare_platform.plugins.engine import shared_engine
from dataflare_platform.plugins.registry import PluginRegistry

EVIL_BODY = "for (int32_t i = 0; i < n; i++) y[i] = x[i] * factor;"
EVIL_CODE = "for (int32_t i = 0; i < n; i++) y[i] = 666.0;"


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    """Two plugins with the same interface: ``honest`` (y = 2x) and the attacker's own
    ``evil`` (y = 666), both real C built to WASM."""
    root = tmp_path_factory.mktemp("cache-attack")
    out = {}
    for name, code in (("honest", EVIL_BODY), ("evil", EVIL_CODE)):
        src = root / "src" / name
        src.mkdir(parents=True)
        (src / "plugin.c").write_text(MAP_TEMPLATE.replace(EVIL_BODY, code))
        (src / "plugin.json").write_text(json.dumps(_manifest(name, "map")))
        out[name] = build_plugin(src, root / "built")
    return out


@pytest.fixture
def cache(tmp_path) -> PluginCache:
    return PluginCache(tmp_path / "platform" / "plugin-cache")


TABLE = pl.DataFrame({"x": [1.0, 2.0, 3.0]})


def run(wasm, cache) -> list[float]:
    # Both modules are test-built: a library registry over their folder (unpinned allowed);
    # the cache, not the pins, is what this module tests.
    registry = PluginRegistry(wasm.parent)
    return load_plugin(wasm, cache_dir=cache, registry=registry)(TABLE)["y"].to_list()


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "dataflare_platform.plugins.cache"]


def test_another_plugins_artifact_planted_under_a_computed_name_does_not_run(
    modules, cache, caplog
):
    """The reported attack: the attacker's own plugin is loaded (its artifact is genuine),
    then copied under the name the victim's module hashes to."""
    assert run(modules["evil"], cache) == [666.0] * 3
    evil_key = cache_key(modules["evil"].read_bytes(), False)
    honest_key = cache_key(modules["honest"].read_bytes(), False)
    cache.path(honest_key).write_bytes(cache.path(evil_key).read_bytes())
    caplog.set_level(logging.WARNING)
    assert run(modules["honest"], cache) == [2.0, 4.0, 6.0]
    assert cache.rejected == 1
    assert any("MAC does not verify" in m for m in warnings_of(caplog))
    # Recompiled and stored again, authenticated: the next load uses it, silently.
    caplog.clear()
    assert run(modules["honest"], cache) == [2.0, 4.0, 6.0]
    assert cache.rejected == 1
    assert warnings_of(caplog) == []


def test_an_unauthenticated_or_forged_artifact_is_refused(modules, cache, caplog):
    evil = wasmtime.Module(shared_engine(False), modules["evil"].read_bytes()).serialize()
    honest_key = cache_key(modules["honest"].read_bytes(), False)
    caplog.set_level(logging.WARNING)
    planted = [
        evil,  # what the old cache held: a bare serialized module
        MAGIC + b"\x00" * 32 + evil,  # a forged MAC
        MAGIC + os.urandom(32) + evil,
        b"",
    ]
    run(modules["evil"], cache)  # the folder exists (0700) and holds genuine artifacts
    for blob in planted:
        cache.path(honest_key).write_bytes(blob)
        assert run(modules["honest"], cache) == [2.0, 4.0, 6.0]
    assert cache.rejected == len(planted)
    assert len([m for m in warnings_of(caplog) if "refused" in m]) == len(planted)


def test_a_linked_artifact_is_not_followed(modules, cache, tmp_path, caplog):
    honest_key = cache_key(modules["honest"].read_bytes(), False)
    run(modules["evil"], cache)  # creates the folder and key
    elsewhere = tmp_path / "elsewhere.cwasm"
    elsewhere.write_bytes(cache.path(cache_key(modules["evil"].read_bytes(), False)).read_bytes())
    cache.path(honest_key).symlink_to(elsewhere)
    assert run(modules["honest"], cache) == [2.0, 4.0, 6.0]
    assert cache.rejected == 1


def test_the_cache_folder_is_0700_and_its_key_0600(modules, cache):
    run(modules["honest"], cache)
    assert stat.S_IMODE(cache.directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(cache.key_file.stat().st_mode) == 0o600
    assert cache.key_file.parent == cache.directory.parent  # not inside the cache folder
    (artifact,) = cache.directory.glob("*.cwasm")
    assert stat.S_IMODE(artifact.stat().st_mode) == 0o600


def test_a_folder_others_can_reach_is_tightened(modules, tmp_path):
    folder = tmp_path / "shared-cache"
    folder.mkdir()
    folder.chmod(0o777)
    run(modules["honest"], PluginCache(folder))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_folder_or_key_not_ours_is_not_used_at_all(modules, tmp_path, caplog):
    """A cache folder owned by someone else (who could write artifacts) and a key others
    can read are refused: plugins still load, compiled every time, with a warning."""
    caplog.set_level(logging.WARNING)
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 12345, 12345)
    cache = PluginCache(theirs)
    assert run(modules["honest"], cache) == [2.0, 4.0, 6.0]
    assert list(theirs.iterdir()) == []
    assert any("owned by uid 12345" in m for m in warnings_of(caplog))
    key = tmp_path / "open.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o644)
    open_key = PluginCache(tmp_path / "ours", key_file=key)
    assert run(modules["honest"], open_key) == [2.0, 4.0, 6.0]
    assert not list((tmp_path / "ours").glob("*.cwasm"))
    assert any("readable by others" in m for m in warnings_of(caplog))


def test_the_deployment_caches_in_the_platform_folder_not_the_plugin_folder(tmp_path, monkeypatch):
    from dataflare_platform.defs.plugins.resources import PluginRuntimeResource

    monkeypatch.setenv("DATAFLARE_HOME", str(tmp_path / "home"))
    plugins = tmp_path / "plugins"
    config = PluginRuntimeResource(plugin_dir=str(plugins)).registry().config
    assert config.cache_dir == tmp_path / "home" / "platform" / "plugin-cache"
    assert not config.cache_dir.is_relative_to(plugins)
