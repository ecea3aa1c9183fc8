import json
import subprocess
import sys

import dagster as dg

from dataflare_platform.definitions import defs
from dataflare_platform.defs.resources import ProjectHomeResource


def test_definitions_load_and_validate():
    dg.Definitions.validate_loadable(defs)


def test_assets_checks_jobs_and_schedule_are_registered():
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert {
        "nexmark/landing/persons",
        "nexmark/landing/auctions",
        "nexmark/landing/bids",
        "nexmark/persons",
        "nexmark/auctions",
        "nexmark/bids",
        "nexmark/daily_seller_stats",
    } <= keys
    graph = defs.resolve_asset_graph()
    check_names = {key.name for key in graph.asset_check_keys}
    assert {"bids_valid", "auctions_valid", "daily_seller_stats_rules"} <= check_names
    assert defs.resolve_job_def("nexmark_ingest_job")
    daily = defs.resolve_job_def("nexmark_daily_stats_job")
    assert daily.partitions_def is not None
    schedule = defs.resolve_schedule_def("nexmark_daily_stats_job_schedule")
    assert schedule.job_name == "nexmark_daily_stats_job"


def test_lineage_runs_from_landing_files_to_daily_stats():
    graph = defs.resolve_asset_graph()
    stats = dg.AssetKey(["nexmark", "daily_seller_stats"])
    parents = graph.get(stats).parent_keys
    assert parents == {dg.AssetKey(["nexmark", "auctions"]), dg.AssetKey(["nexmark", "bids"])}
    assert graph.get(dg.AssetKey(["nexmark", "bids"])).parent_keys == {
        dg.AssetKey(["nexmark", "landing", "bids"])
    }


def test_project_home_resource_comes_from_the_environment():
    resource = defs.resources["dataflare"]
    assert isinstance(resource, ProjectHomeResource)
    assert isinstance(resource.path, dg.EnvVar) or "DATAFLARE_HOME" in str(resource.path)


# Libraries the code location has no use for at load: every Dagster run worker (and the
# code server) loads it first, so each would cost every run its import time (about 1 s
# for pandas through pyarrow.dataset, 0.3 s for SQLModel, 4-5 s for GX; SQLAlchemy comes
# with Dagster's storage in a run, but not in a plain import). Commands, ops and checks
# import them where they use them.
NOT_AT_LOAD = (
    # The fan-out executors' libraries (defs/fanout.py): imported when their run starts.
    "celery",
    "confluent_kafka",  # the Kafka connector imports it when a Kafka source or sink opens
    "dagster_celery",
    "dagster_k8s",
    "kombu",
    "kubernetes",
    "great_expectations",
    "pandas",
    "pyarrow.dataset",
    "sqlalchemy",
    "sqlmodel",
)


def test_loading_the_code_location_imports_no_heavy_library(home):
    code = (
        "import json, sys\n"
        "import dataflare_platform.definitions\n"
        f"print(json.dumps([m for m in {NOT_AT_LOAD!r} if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []
