"""The plugin runtime resource, and an asset masking persons with it, materialized
in process."""

import dagster as dg
import polars as pl
import pytest

from dataflare_platform.definitions import defs
from dataflare_platform.defs.nexmark import assets as nexmark_assets
from dataflare_platform.defs.plugins.assets import masked_persons_sample
from dataflare_platform.defs.plugins.resources import PluginRuntimeResource
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.errors import ConfigError
from dataflare_platform.plugins.build import SAMPLES_DIR, build_plugin


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("plugins")
    build_plugin(SAMPLES_DIR / "pii_mask", out)
    return out


def materialize(home, plugin_dir, rows=30):
    return dg.materialize(
        [masked_persons_sample],
        resources={
            "dataflare": ProjectHomeResource(path=str(home.root)),
            "plugins": PluginRuntimeResource(plugin_dir=str(plugin_dir), build_missing=False),
        },
        run_config={"ops": {"plugins__masked_persons_sample": {"config": {"rows": rows}}}},
    )


def metadata(result) -> dict:
    (mat,) = result.asset_materializations_for_node("plugins__masked_persons_sample")
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def test_masks_generated_persons(home, plugin_dir):
    result = materialize(home, plugin_dir)
    assert result.success
    meta = metadata(result)
    assert meta["dagster/row_count"] == 30
    assert meta["source"] == "generated"
    assert meta["masked_emails"] == 30 and meta["masked_cards"] > 0
    masked = pl.read_parquet(home.root / "plugins" / "masked_persons_sample.parquet")
    assert masked["email_address"].str.starts_with("***@").all()
    assert masked["credit_card"].str.contains(r"\*{4}").all()


def test_masks_warehouse_persons(landed_home, plugin_dir):
    with dg.build_asset_context() as context:
        nexmark_assets.persons(
            context=context, dataflare=ProjectHomeResource(path=str(landed_home.root))
        )
    meta = metadata(materialize(landed_home, plugin_dir, rows=10))
    assert meta["source"] == "warehouse"
    assert meta["dagster/row_count"] == meta["masked_emails"] == 10


def test_resource_loads_by_name_and_refuses_bad_config(plugin_dir):
    resource = PluginRuntimeResource(plugin_dir=str(plugin_dir), deadline_ms=50, memory_mb=64)
    plugin = resource.load("pii_mask", columns={"text": "t"})
    assert plugin.limits.deadline_ms == 50 and plugin.limits.memory_bytes == 64 * 2**20
    assert plugin.map(pl.DataFrame({"t": ["a@b.co"]}))["t"].to_list() == ["***@b.co"]
    with pytest.raises(ConfigError) as err:
        PluginRuntimeResource(plugin_dir=str(plugin_dir), memory_mb=0).load("pii_mask")
    assert err.value.fields == ["memory_mb"]
    with pytest.raises(ConfigError) as err:
        resource.load("pii_mask", {"min_digits": "x"})
    assert err.value.fields == ["params.min_digits"]


def test_registered_in_the_definitions():
    assert isinstance(defs.resources["plugins"], PluginRuntimeResource)
    graph = defs.resolve_asset_graph()
    key = dg.AssetKey(["plugins", "masked_persons_sample"])
    assert graph.get(key).parent_keys == {dg.AssetKey(["nexmark", "persons"])}
