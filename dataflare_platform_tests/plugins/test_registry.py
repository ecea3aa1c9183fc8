"""Plugins by name from a directory, in YAML pipelines, with per-operator metrics."""

from __future__ import annotations

import shutil
import textwrap

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from dataflare_platform.engine import CollectSink, Runner, RunnerConfig
from dataflare_platform.errors import ConfigError
from dataflare_platform.plugins.registry import PluginRegistry, RegistryConfig, sample_names
from dataflare_platform.plugins.specs import build_with_plugins, load_plugins
from dataflare_platform.streams.spec import PipelineSpec
from dataflare_platform_tests.engine.helpers import T0


@pytest.fixture(scope="module")
def plugin_dir(built, tmp_path_factory):
    out = tmp_path_factory.mktemp("registry")
    for name in ("currency", "pii_mask"):
        shutil.copy(built[name], out / f"{name}.wasm")
        shutil.copy(built[name].with_suffix(".json"), out / f"{name}.json")
    return out


@pytest.fixture
def registry(plugin_dir, cache_dir) -> PluginRegistry:
    return PluginRegistry(plugin_dir, RegistryConfig(deadline_ms=500, cache_dir=cache_dir))


def people(n: int, seed: int = 3) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    ids = np.arange(n)
    emails = [f"user{i}@host{i % 7}.example.org" if i % 11 else None for i in ids]
    cards = [f"4{i % 1000:03d} 1111 2222 {i:04d}" for i in ids]
    return pl.DataFrame(
        {
            "id": ids,
            "price": rng.integers(0, 10**9, n),
            "email": emails,
            "card": cards,
            "date_time": pl.Series(T0 + ids * 10).cast(pl.Datetime("ms")),
        }
    )


def reference(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(
        pl.col("email").str.replace(r"^[^@]+@", "***@"),
        pl.col("card").str.replace(r"^\d{4} \d{4} \d{4}", "**** **** ****"),
        (pl.col("price") * 0.908).alias("price_eur"),
    )


PIPELINE = """
name: masked
sources:
  people: {path: people.parquet}
streams:
  masked:
    from: people
    steps:
      - plugin: {name: currency, params: {rate: 0.908}}
      - plugin: {name: pii_mask, id: mask_email, columns: {text: email}}
      - plugin:
          name: pii_mask
          id: mask_card
          params: {min_digits: 13, max_digits: 19}
          columns: {text: card}
output: masked
sink: {discard: {}}
"""


def spec_at(tmp_path, text: str = PIPELINE) -> PipelineSpec:
    people(2_000).write_parquet(tmp_path / "people.parquet")
    path = tmp_path / "pipeline.yaml"
    path.write_text(textwrap.dedent(text))
    return PipelineSpec.from_yaml(path)


def test_registry_lists_and_loads_by_name(registry, plugin_dir):
    assert registry.names() == ["currency", "pii_mask"]
    assert registry.manifest("pii_mask").kind == "map"
    plugin = registry.load("currency", {"rate": 2.0}, columns={"price": "p"})
    df = pl.DataFrame({"p": [1, None, 3]})
    assert plugin.map(df)["price_eur"].to_list() == [2.0, None, 6.0]
    assert plugin.limits.deadline_ms == 500


def test_registry_refuses_unknown_names_params_columns_and_limits(registry):
    with pytest.raises(ConfigError) as err:
        registry.load("nope")
    assert err.value.fields == ["plugin.name"]
    assert "currency, pii_mask" in str(err.value)
    with pytest.raises(ConfigError) as err:
        registry.load("currency", {"rate": "high"})
    assert err.value.fields == ["params.rate"]
    with pytest.raises(ConfigError) as err:
        registry.load("currency", columns={"prise": "x"})
    assert err.value.fields == ["columns.prise"]
    with pytest.raises(ConfigError) as err:
        RegistryConfig.load(deadline_ms=0, memory_mb="lots", fuel=-1)
    assert set(err.value.fields) == {"deadline_ms", "memory_mb", "fuel"}


def test_registry_builds_missing_samples_on_demand(tmp_path, cache_dir):
    registry = PluginRegistry(tmp_path, RegistryConfig(build_missing=True, cache_dir=cache_dir))
    assert set(sample_names()) <= set(registry.names())
    plugin = registry.load("currency")
    assert (tmp_path / "currency.wasm").exists() and (tmp_path / "currency.json").exists()
    assert plugin.map(pl.DataFrame({"price": [10]}))["price_eur"].to_list() == [9.08]


def test_yaml_pipeline_with_plugins_equals_polars(tmp_path, registry):
    spec = spec_at(tmp_path)
    sink = CollectSink()
    result = Runner(
        build_with_plugins(spec, registry, sink=sink), RunnerConfig(batch_rows=256)
    ).run()
    expected = reference(people(2_000))
    assert_frame_equal(sink.result().select(expected.columns), expected)

    # metrics: per plugin operator, the engine's counters plus the plugin's own
    ops = result.as_dict()["operators"]
    plugin_ops = {name: op for name, op in ops.items() if "plugin" in name}
    assert len(plugin_ops) == 3
    for op in plugin_ops.values():
        assert op["rows_in"] == op["rows_out"] == op["plugin_rows"] == 2_000
        assert op["plugin_calls"] == 8  # one call per batch of 256
        assert op["plugin_errors"] == op["errors"] == 0
        assert 0 < op["plugin_seconds"] <= op["seconds"]


def test_metrics_are_per_run(tmp_path, registry):
    spec = spec_at(tmp_path)
    plugins = load_plugins(spec, registry)
    for _ in range(2):
        pipeline = spec.build(sink=CollectSink(), plugins=plugins)
        result = Runner(pipeline, RunnerConfig(batch_rows=1_000)).run()
        ops = [m for name, m in result.metrics.operators.items() if "plugin" in name]
        assert [op.own["plugin_calls"] for op in ops] == [2, 2, 2]
    assert plugins["currency"].stats["calls"] == 4  # cumulative on the instance


def test_yaml_refuses_unknown_plugin_and_bad_params_naming_the_field(tmp_path, registry):
    bad = (
        PIPELINE.replace("name: currency, params: {rate: 0.908}", "name: currenzy")
        .replace("min_digits: 13", "min_digits: many")
        .replace("columns: {text: email}", "columns: {txt: email}")
    )
    with pytest.raises(ConfigError) as err:
        build_with_plugins(spec_at(tmp_path, bad), registry)
    assert err.value.fields == [
        "streams.masked.steps[0].plugin.name",
        "streams.masked.steps[1].plugin.columns.txt",
        "streams.masked.steps[2].plugin.params.min_digits",
    ]


def test_two_steps_of_one_plugin_need_ids(tmp_path, registry):
    twice = PIPELINE.replace("id: mask_email, ", "").replace("id: mask_card", "id: pii_mask")
    with pytest.raises(ConfigError) as err:
        build_with_plugins(spec_at(tmp_path, twice), registry)
    assert err.value.fields == ["streams.masked.steps[2].plugin.id"]


def test_load_checks_see_the_pinned_digest_and_can_refuse(plugin_dir, cache_dir, tmp_path):
    """A load check (the marketplace's, in a deployment) runs at every load after the pin
    check, with the digest of the very bytes compiled; its refusal stops the load, and a
    pin refusal stops it before any check runs."""
    import hashlib

    from dataflare_platform.plugins.lock import PinnedPlugin, PluginPinError, write_lock

    module = (plugin_dir / "currency.wasm").read_bytes()
    manifest = (plugin_dir / "currency.json").read_bytes()
    seen: list[tuple[str, str, bytes | None]] = []
    refuse = {"now": False}

    def check(name: str, sha256: str, manifest_bytes: bytes | None) -> None:
        seen.append((name, sha256, manifest_bytes))
        if refuse["now"]:
            raise ConfigError("refused by the check", [("plugin", name)])

    lock = tmp_path / "plugins.lock"
    write_lock(lock, {"currency": PinnedPlugin(sha256=hashlib.sha256(module).hexdigest())})
    config = RegistryConfig(cache_dir=cache_dir, lock_files=(lock,), allow_unpinned=False)
    registry = PluginRegistry(plugin_dir, config, load_checks=[check])
    registry.load("currency")
    assert seen == [("currency", hashlib.sha256(module).hexdigest(), manifest)]
    refuse["now"] = True
    with pytest.raises(ConfigError, match="refused by the check"):
        registry.load("currency")
    write_lock(lock, {"currency": PinnedPlugin(sha256="0" * 64)})
    with pytest.raises(PluginPinError):
        registry.load("currency")
    assert len(seen) == 2  # the pin refused first: the check was not asked
