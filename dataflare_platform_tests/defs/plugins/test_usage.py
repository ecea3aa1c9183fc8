"""The daily usage roll-ups as real Dagster materializations (``execute_in_process`` on a
test instance) over usage events a real WASM plugin wrote into the home's event log, and
the error-rate regression check after an upgrade."""

from datetime import UTC, datetime

import dagster as dg
import polars as pl
import pytest

from dataflare_platform.definitions import defs as shipped
from dataflare_platform.defs.plugins.usage import (
    BY_PLUGIN,
    BY_PUBLISHER,
    REGRESSION_CHECK,
    usage_daily_by_plugin,
    usage_daily_by_publisher,
)
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.errors import BatchRejectedError
from dataflare_platform.events.log import EventLog
from dataflare_platform.plugins import Limits, Plugin
from dataflare_platform.plugins.usage import PluginUsage, UsageSettings, record_install
from dataflare_platform_tests.plugins.hostile import MANIFEST, TRAP, module

DAY = "2026-12-04"
AT = datetime(2026, 12, 4, 15, 0, tzinfo=UTC).timestamp()
SETTINGS = UsageSettings(tenant="t1", tenant_salt="salt-for-the-tests-0123")


def _use(home, tmp_path, version: str, ok: int, failing: int, publisher: str = "acme") -> None:
    """Calls of the hostile map plugin ``version`` recorded at ``AT`` in the home's log."""
    manifest = MANIFEST.model_copy(update={"version": version})
    plugin = Plugin(
        manifest,
        module(),
        limits=Limits(max_failures=10_000),
        pool_size=1,
        cache_dir=tmp_path / "module-cache",
    )
    log = EventLog(home.event_log_dir)
    usage = PluginUsage.attach(plugin, log, SETTINGS, "orders", publisher, clock=lambda: AT)
    good = pl.DataFrame({"x": [7] * 10})
    bad = pl.DataFrame({"x": [TRAP] + [7] * 9})
    for _ in range(ok):
        plugin.map(good)
    for _ in range(failing):
        with pytest.raises(BatchRejectedError):
            plugin.map(bad)
    usage.close()


def _run(home, threshold: float = 0.05, min_calls: int = 10):
    job = dg.Definitions(
        assets=[usage_daily_by_plugin, usage_daily_by_publisher],
        resources={"dataflare": ProjectHomeResource(path=str(home.root))},
        jobs=[dg.define_asset_job("usage_rollup", selection=[BY_PLUGIN, BY_PUBLISHER])],
    ).resolve_job_def("usage_rollup")
    config = {"regression_threshold": threshold, "min_calls": min_calls}
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance,
            partition_key=DAY,
            run_config={"ops": {"plugins__usage_daily_by_plugin": {"config": config}}},
        )
        assert result.success
        (check,) = result.get_asset_check_evaluations()
        mats = {
            m.asset_key: {k: getattr(v, "value", v) for k, v in m.metadata.items()}
            for m in result.get_asset_materialization_events()
            for m in [m.event_specific_data.materialization]
        }
        stored = instance.get_latest_materialization_event(BY_PLUGIN)
        assert stored is not None and stored.dagster_event.partition == DAY
    return check, mats


def test_rollups_and_a_regression_after_an_upgrade(home, tmp_path):
    _use(home, tmp_path, "1.0.0", ok=95, failing=5)  # 5 %
    _use(home, tmp_path, "1.1.0", ok=60, failing=40)  # 40 % after the upgrade
    _use(home, tmp_path, "0.9.0", ok=1, failing=0, publisher="other")
    record_install(EventLog(home.event_log_dir), SETTINGS, "hostile", "1.1.0", "acme", now=AT)
    check, mats = _run(home)
    assert check.check_name == REGRESSION_CHECK and not check.passed
    assert "1.1.0" in check.description and "1.0.0" in check.description
    by_plugin = pl.read_parquet(mats[BY_PLUGIN]["path"])
    got = {r["version"]: r for r in by_plugin.iter_rows(named=True)}
    assert (got["1.0.0"]["calls"], got["1.0.0"]["errors"]) == (100, 5)
    assert (got["1.1.0"]["calls"], got["1.1.0"]["errors"], got["1.1.0"]["installs"]) == (
        100,
        40,
        1,
    )
    assert got["1.1.0"]["rows"] == 1000 and got["1.1.0"]["error_rate"] == pytest.approx(0.4)
    assert mats[BY_PLUGIN]["calls"] == 201
    by_publisher = pl.read_parquet(mats[BY_PUBLISHER]["path"]).sort("publisher")
    assert by_publisher["publisher"].to_list() == ["acme", "other"]
    assert by_publisher["calls"].to_list() == [200, 1]
    assert by_publisher["errors"].to_list() == [45, 0]


def test_no_regression_within_the_threshold_and_an_empty_day(home, tmp_path):
    _use(home, tmp_path, "1.0.0", ok=95, failing=5)
    _use(home, tmp_path, "1.1.0", ok=93, failing=7)  # +2 points
    check, _ = _run(home, threshold=0.05)
    assert check.passed
    check, _ = _run(home, threshold=0.01)  # configurable: 2 points now count
    assert not check.passed


def test_an_empty_day_materializes_an_empty_rollup(home):
    check, mats = _run(home)
    assert check.passed and mats[BY_PLUGIN]["dagster/row_count"] == 0


def test_shipped_definitions_include_the_rollups():
    keys = shipped.resolve_all_asset_keys()
    assert BY_PLUGIN in keys and BY_PUBLISHER in keys
    assert shipped.resolve_assets_def(BY_PLUGIN).partitions_def is not None
