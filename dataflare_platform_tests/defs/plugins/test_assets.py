"""The plugin runtime resource, and an asset masking persons with it, materialized
in process."""

import hashlib
import shutil

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
from dataflare_platform.plugins.lock import LOCK_FILE, LockAuth, PinnedPlugin, write_lock


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("plugins")
    build_plugin(SAMPLES_DIR / "pii_mask", out)
    return out


def pin(home, plugin_dir) -> str:
    """Pin the module as a reviewer would (``dataflare plugin lock``) in the home's lock."""
    data = (plugin_dir / "pii_mask.wasm").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    auth = LockAuth.for_home(home.root)
    write_lock(home.root / LOCK_FILE, {"pii_mask": PinnedPlugin(sha256=digest)}, auth=auth)
    return digest


def materialize(home, plugin_dir, rows=30, pinned=True, **kwargs):
    if pinned:
        pin(home, plugin_dir)
    return dg.materialize(
        [masked_persons_sample],
        resources={
            "dataflare": ProjectHomeResource(path=str(home.root)),
            "plugins": PluginRuntimeResource(plugin_dir=str(plugin_dir), build_missing=False),
        },
        run_config={"ops": {"plugins__masked_persons_sample": {"config": {"rows": rows}}}},
        **kwargs,
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


def test_resource_loads_by_name_and_refuses_bad_config(home, plugin_dir):
    pin(home, plugin_dir)
    # A deadline unlike the default (1 s) and above a load's or call's time on a loaded
    # machine: the test checks the setting reaches the plugin, not how fast it runs.
    resource = PluginRuntimeResource(plugin_dir=str(plugin_dir), deadline_ms=5000, memory_mb=64)
    plugin = resource.load("pii_mask", columns={"text": "t"})
    assert plugin.limits.deadline_ms == 5000 and plugin.limits.memory_bytes == 64 * 2**20
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


def refusals(home) -> list:
    from dataflare_platform.compliance.audit import AuditLog

    with AuditLog(f"sqlite:///{home.root / 'audit.db'}") as log:
        return [e for e in log.tail(50) if e.action == "plugin_refused"]


def test_a_swapped_module_fails_the_run_and_is_audited_with_both_digests(
    audited_home, plugin_dir, tmp_path
):
    home = audited_home
    folder = tmp_path / "swapped"
    shutil.copytree(plugin_dir, folder)
    pinned = pin(home, folder)
    # The module in the folder is replaced after review (another sample's code).
    build_plugin(SAMPLES_DIR / "currency", tmp_path / "other")
    shutil.copy(tmp_path / "other" / "currency.wasm", folder / "pii_mask.wasm")
    swapped = hashlib.sha256((folder / "pii_mask.wasm").read_bytes()).hexdigest()
    with pytest.raises(dg.Failure) as err:
        materialize(home, folder, pinned=False)
    assert pinned in str(err.value) and swapped in str(err.value)
    (entry,) = refusals(home)
    assert entry.subject == "pii_mask"
    details = entry.payload()
    assert details["sha256"] == swapped and details["expected_sha256"] == pinned
    assert details["reason"] == "digest_mismatch"
    assert details["lock"] == str(home.root / LOCK_FILE)


def test_an_unpinned_module_is_refused_by_the_deployment_and_audited(audited_home, plugin_dir):
    home = audited_home
    with pytest.raises(dg.Failure, match="not pinned by any lock file"):
        materialize(home, plugin_dir, pinned=False)
    (entry,) = refusals(home)
    assert entry.payload()["reason"] == "unpinned"
    assert entry.payload()["expected_sha256"] is None


def test_a_refusal_in_a_run_is_audited_as_the_runs_principal_with_its_run_id(
    audited_home, plugin_dir
):
    """A real Dagster run (in process) tagged with the principal the run coordinator
    records: the ``plugin_refused`` entry names that principal and the run, not
    ``system`` with no run."""
    from dataflare_platform.access.principal import PRINCIPAL_TAG

    home = audited_home
    instance = dg.DagsterInstance.ephemeral()
    with pytest.raises(dg.Failure):
        materialize(
            home,
            plugin_dir,
            pinned=False,
            instance=instance,
            tags={PRINCIPAL_TAG: "service:nightly-etl"},
        )
    (entry,) = refusals(home)
    (run,) = instance.get_runs()
    assert entry.actor == "service:nightly-etl"
    assert entry.payload()["run_id"] == run.run_id


def test_a_tampered_deployment_lock_fails_the_run_and_is_audited(audited_home, plugin_dir):
    import json

    home = audited_home
    pin(home, plugin_dir)
    lock = home.root / LOCK_FILE
    raw = json.loads(lock.read_text())
    raw["plugins"]["pii_mask"]["sha256"] = "0" * 64
    lock.write_text(json.dumps(raw))
    with pytest.raises(dg.Failure, match="does not match its authenticator"):
        materialize(home, plugin_dir, pinned=False)
    (entry,) = refusals(home)
    assert entry.payload()["reason"] == "lock_unauthenticated"
