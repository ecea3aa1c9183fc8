"""Plugin names are plain identifiers: no name reaches a file outside the plugin folder,
whichever way it comes in (YAML, a Python caller that skipped validation, the resource)."""

from __future__ import annotations

import shutil
import textwrap

import pytest

from dataflare_platform.errors import ConfigError
from dataflare_platform.plugins.registry import PluginRegistry, RegistryConfig
from dataflare_platform.plugins.specs import load_plugins
from dataflare_platform.streams.spec import PipelineSpec
from dataflare_platform.streams.steps import PluginSpec

TRICKS = [
    "../outside/evil",
    "../evil",
    "..",
    ".",
    "/tmp/evil",
    "a/b",
    "evil.wasm",
    "evil\x00",
    "ev il",
    "Evil",
    "еvil",  # Cyrillic е: looks like a plugin name, is not one
    "currency/../currency",
    "",
]


@pytest.fixture
def folders(built, tmp_path):
    plugins = tmp_path / "plugins"
    outside = tmp_path / "outside"
    plugins.mkdir()
    outside.mkdir()
    for name in ("currency",):
        shutil.copy(built[name], plugins / f"{name}.wasm")
        shutil.copy(built[name].with_suffix(".json"), plugins / f"{name}.json")
    # The attacker's module, a real plugin, one folder up from the plugin folder.
    shutil.copy(built["currency"], outside / "evil.wasm")
    shutil.copy(built["currency"].with_suffix(".json"), outside / "evil.json")
    shutil.copy(built["currency"], tmp_path / "evil.wasm")
    shutil.copy(built["currency"].with_suffix(".json"), tmp_path / "evil.json")
    return plugins, outside


@pytest.mark.parametrize("name", TRICKS)
def test_registry_refuses_path_tricks_naming_the_field(folders, cache_dir, name):
    plugins, _ = folders
    registry = PluginRegistry(plugins, RegistryConfig(cache_dir=cache_dir, build_missing=True))
    with pytest.raises(ConfigError) as err:
        registry.load(name)
    assert err.value.fields == ["plugin.name"]
    with pytest.raises(ConfigError):
        registry.manifest(name)


def test_yaml_pipeline_refuses_a_path_as_plugin_name_at_load(tmp_path):
    text = """
    name: evil
    sources:
      people: {path: people.parquet}
    streams:
      s:
        from: people
        steps:
          - plugin: {name: ../outside/evil}
    output: s
    sink: {discard: {}}
    """
    path = tmp_path / "pipeline.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(ConfigError) as err:
        PipelineSpec.from_yaml(path)
    # The spec names a step as steps.<i>, then the step's own field.
    assert [(f, m.split(":")[0]) for f, m in err.value.problems] == [
        ("streams.s.steps.0", "plugin.name")
    ]


def test_a_step_that_skipped_validation_is_still_refused_at_load(folders, cache_dir, tmp_path):
    """A Python caller building specs with ``model_construct`` skips pydantic: the load
    itself refuses, naming the step's field, and the outside module never runs."""
    plugins, _ = folders
    text = """
    name: ok
    sources:
      people: {path: people.parquet}
    streams:
      s:
        from: people
        steps:
          - plugin: {name: currency}
    output: s
    sink: {discard: {}}
    """
    path = tmp_path / "pipeline.yaml"
    path.write_text(textwrap.dedent(text))
    spec = PipelineSpec.from_yaml(path)
    step = spec.streams["s"].steps[0]
    object.__setattr__(step, "arg", PluginSpec.model_construct(name="../outside/evil"))
    registry = PluginRegistry(plugins, RegistryConfig(cache_dir=cache_dir))
    with pytest.raises(ConfigError) as err:
        load_plugins(spec, registry)
    assert err.value.fields == ["streams.s.steps[0].plugin.name"]


def test_names_lists_only_identifiers(folders, cache_dir):
    plugins, _ = folders
    shutil.copy(plugins / "currency.wasm", plugins / "Bad Name.wasm")
    shutil.copy(plugins / "currency.json", plugins / "Bad Name.json")
    assert PluginRegistry(plugins, RegistryConfig(cache_dir=cache_dir)).names() == ["currency"]
