"""Pinned plugins: ``dataflare plugin lock`` writes the digests, a module that differs
from its pin is refused with both digests (and the refusal reported to the deployment's
hook), an unpinned one is refused where the registry says so, the pipeline's own lock
comes first, and shipped samples pin themselves to what their source compiles to."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import textwrap

import pytest
from typer.testing import CliRunner

from dataflare_platform.cli import app
from dataflare_platform.errors import ConfigError
from dataflare_platform.plugins.lock import FORMAT, PluginPinError, read_lock
from dataflare_platform.plugins.registry import PluginRegistry, RegistryConfig
from dataflare_platform.plugins.specs import load_plugins
from dataflare_platform.streams.spec import PipelineSpec


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lock_cli(*args: str) -> dict:
    result = CliRunner().invoke(app, ["plugin", "lock", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_plugin_lock_writes_the_digests(plugin_dir, tmp_path):
    lock = tmp_path / "plugins.lock"
    out = lock_cli("--dir", str(plugin_dir), "--lock", str(lock))
    digests = {n: sha(plugin_dir / f"{n}.wasm") for n in ("currency", "pii_mask")}
    assert out == {"lock": str(lock), "plugins": digests}
    raw = json.loads(lock.read_text())
    assert raw["format"] == FORMAT
    assert {n: p["sha256"] for n, p in raw["plugins"].items()} == digests
    assert raw["plugins"]["currency"]["size_bytes"] == (plugin_dir / "currency.wasm").stat().st_size
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600  # owner-only, like every file of the home


def refusing(plugin_dir, lock, cache_dir, seen=None, **config) -> PluginRegistry:
    settings = RegistryConfig(
        cache_dir=cache_dir, lock_files=(lock,), allow_unpinned=False, **config
    )
    return PluginRegistry(plugin_dir, settings, on_refused=None if seen is None else seen.append)


def test_a_module_that_differs_from_its_pin_is_refused_with_both_digests(
    plugin_dir, tmp_path, cache_dir
):
    lock = tmp_path / "plugins.lock"
    lock_cli("currency", "--dir", str(plugin_dir), "--lock", str(lock))
    seen: list[PluginPinError] = []
    registry = refusing(plugin_dir, lock, cache_dir, seen)
    assert registry.load("currency").sha256 == sha(plugin_dir / "currency.wasm")
    pinned = sha(plugin_dir / "currency.wasm")
    # Someone with write access to the plugin folder swaps the module.
    shutil.copy(plugin_dir / "pii_mask.wasm", plugin_dir / "currency.wasm")
    swapped = sha(plugin_dir / "currency.wasm")
    with pytest.raises(PluginPinError) as err:
        registry.load("currency")
    assert err.value.fields == ["plugin.name"]
    assert pinned in str(err.value) and swapped in str(err.value)
    assert str(lock) in str(err.value)
    assert [(e.plugin, e.expected, e.actual) for e in seen] == [("currency", pinned, swapped)]


def test_an_unpinned_plugin_is_refused_unless_allowed(plugin_dir, tmp_path, cache_dir):
    lock = tmp_path / "plugins.lock"
    lock_cli("currency", "--dir", str(plugin_dir), "--lock", str(lock))
    seen: list[PluginPinError] = []
    with pytest.raises(PluginPinError, match="not pinned by any lock file") as err:
        refusing(plugin_dir, lock, cache_dir, seen).load("pii_mask")
    assert err.value.expected is None and err.value.actual == sha(plugin_dir / "pii_mask.wasm")
    assert len(seen) == 1
    allowed = RegistryConfig(cache_dir=cache_dir, lock_files=(lock,), allow_unpinned=True)
    assert PluginRegistry(plugin_dir, allowed).load("pii_mask").name == "pii_mask"
    # A pin still binds where unpinned plugins are allowed.
    shutil.copy(plugin_dir / "pii_mask.wasm", plugin_dir / "currency.wasm")
    with pytest.raises(PluginPinError):
        PluginRegistry(plugin_dir, allowed).load("currency")


def test_a_malformed_lock_is_refused_naming_the_field(plugin_dir, tmp_path, cache_dir):
    lock = tmp_path / "plugins.lock"
    lock.write_text(json.dumps({"format": FORMAT, "plugins": {"currency": {"sha256": "abc"}}}))
    with pytest.raises(ConfigError) as err:
        refusing(plugin_dir, lock, cache_dir).load("currency")
    assert err.value.fields == ["plugins.currency.sha256"]
    lock.write_text(json.dumps({"format": FORMAT, "plugins": {"../evil": {"sha256": "0" * 64}}}))
    with pytest.raises(ConfigError):
        read_lock(lock)


PIPELINE = """
name: pinned
sources:
  people: {path: people.parquet}
streams:
  s:
    from: people
    steps:
      - plugin: {name: currency, params: {rate: 0.5}}
output: s
sink: {discard: {}}
"""


def test_the_pipelines_own_lock_comes_first_and_names_the_step(plugin_dir, tmp_path, cache_dir):
    folder = tmp_path / "pipeline"
    folder.mkdir()
    (folder / "defs.yaml").write_text(textwrap.dedent(PIPELINE))
    deployment = tmp_path / "deployment.lock"
    lock_cli("--dir", str(plugin_dir), "--lock", str(deployment))
    out = lock_cli("--pipeline", str(folder), "--dir", str(plugin_dir))
    assert out["lock"] == str(folder / "plugins.lock")
    assert list(out["plugins"]) == ["currency"]
    spec = PipelineSpec.from_yaml(folder / "defs.yaml")
    registry = refusing(plugin_dir, deployment, cache_dir)
    assert load_plugins(spec, registry)["currency"].name == "currency"
    # The pipeline's lock pins another module than the deployment's: it decides.
    own = json.loads((folder / "plugins.lock").read_text())
    own["plugins"]["currency"]["sha256"] = "0" * 64
    (folder / "plugins.lock").write_text(json.dumps(own))
    with pytest.raises(ConfigError) as err:
        load_plugins(spec, registry)
    assert err.value.fields == ["streams.s.steps[0].plugin.name"]
    assert "0" * 64 in str(err.value) and str(folder / "plugins.lock") in str(err.value)


def test_a_shipped_sample_pins_itself_to_what_its_source_compiles_to(tmp_path, cache_dir):
    plugin_dir, lock = tmp_path / "plugins", tmp_path / "home.lock"
    registry = refusing(plugin_dir, lock, cache_dir, build_missing=True)
    loaded = registry.load("currency")  # built from the shipped source, then pinned
    assert read_lock(lock).plugins["currency"].sha256 == loaded.sha256
    assert registry.load("currency").sha256 == loaded.sha256
    # A tampered sample module is not rebuilt over: it is refused against its pin.
    (plugin_dir / "currency.wasm").write_bytes(
        (plugin_dir / "currency.wasm").read_bytes() + b"\x00"
    )
    with pytest.raises(PluginPinError):
        registry.load("currency")


def test_plugin_run_by_name_checks_the_homes_pin(plugin_dir, tmp_path, monkeypatch):
    import polars as pl

    monkeypatch.setenv("DATAFLARE_HOME", str(tmp_path / "home"))
    lock_cli("currency", "--dir", str(plugin_dir))
    assert read_lock(tmp_path / "home" / "plugins.lock").plugins["currency"]
    pl.DataFrame({"price": [100, 200]}).write_parquet(tmp_path / "in.parquet")
    args = ["plugin", "run", "currency", "--dir", str(plugin_dir)]
    args += ["--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out.parquet")]
    assert CliRunner().invoke(app, args).exit_code == 0
    shutil.copy(plugin_dir / "pii_mask.wasm", plugin_dir / "currency.wasm")
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code != 0
    assert sha(plugin_dir / "currency.wasm") in refused.output


def test_where_a_spec_was_found_is_not_part_of_what_it_says(tmp_path):
    folder = tmp_path / "pipeline"
    folder.mkdir()
    (folder / "defs.yaml").write_text(textwrap.dedent(PIPELINE))
    spec = PipelineSpec.from_yaml(folder / "defs.yaml")
    assert spec.folder == folder
    moved = spec.with_folder(tmp_path)
    assert moved.folder == tmp_path and moved == spec


def test_a_swapped_manifest_is_refused_like_a_swapped_module(plugin_dir, tmp_path, cache_dir):
    """The sidecar declares kind, columns and capabilities: it is pinned too."""
    lock = tmp_path / "plugins.lock"
    lock_cli("currency", "--dir", str(plugin_dir), "--lock", str(lock))
    assert read_lock(lock).plugins["currency"].manifest_sha256 == sha(plugin_dir / "currency.json")
    manifest = json.loads((plugin_dir / "currency.json").read_text())
    manifest["capabilities"] = ["log"]
    (plugin_dir / "currency.json").write_text(json.dumps(manifest))
    with pytest.raises(PluginPinError, match="currency' manifest has sha256") as err:
        refusing(plugin_dir, lock, cache_dir).load("currency")
    assert err.value.actual == sha(plugin_dir / "currency.json")
