"""Jobs and schedules of the Nexmark domain."""

import dagster as dg

from dataflare_platform.defs.fanout import celery_executor, k8s_executor
from dataflare_platform.defs.nexmark.assets import (
    DAILY_CATEGORY_STATS_KEY,
    DAILY_PERSON_ACTIVITY_KEY,
    DAILY_SELLER_STATS_KEY,
    GROUP,
)
from dataflare_platform.defs.pools import executor as one_writer_per_file_executor

DAILY_STATS_KEYS = (DAILY_SELLER_STATS_KEY, DAILY_CATEGORY_STATS_KEY, DAILY_PERSON_ACTIVITY_KEY)
daily_stats_selection = dg.AssetSelection.assets(*DAILY_STATS_KEYS)

ingest_job = dg.define_asset_job(
    "nexmark_ingest_job",
    selection=dg.AssetSelection.groups(GROUP) - daily_stats_selection,
    description="Load every landed Nexmark file into the warehouse and check the tables.",
    # Each load and check opens warehouse.duckdb: one step at a time, each in its own
    # process (the code location's default executor too; set here so the job keeps it).
    executor_def=one_writer_per_file_executor,
)

daily_stats_job = dg.define_asset_job(
    "nexmark_daily_stats_job",
    selection=daily_stats_selection,
    description="Compute one UTC day of seller, category and person statistics (one run "
    "per partition; a backfill over many days runs one per day).",
    # The three steps all write the one DuckDB file (one writer at a time): running them
    # in the run's own process, one after another, saves two process starts per day and
    # leaves the file's lock to contend only between the runs of a backfill.
    executor_def=dg.in_process_executor,
)

daily_stats_celery_job = dg.define_asset_job(
    "nexmark_daily_stats_celery_job",
    selection=daily_stats_selection,
    description="The daily statistics with each step a task on the Celery workers (broker: "
    "DATAFLARE_CELERY_BROKER_URL); a backfill over many days runs one run per day, the "
    "steps of every run on the workers.",
    # Batch fan-out across processes (defs/fanout.py): the run worker only orchestrates.
    # The three steps write one DuckDB file, so the workers serving this job run with
    # --concurrency 1 beside that file (docs/deploy.md, "Fan-out").
    executor_def=celery_executor,
)

daily_stats_k8s_job = dg.define_asset_job(
    "nexmark_daily_stats_k8s_job",
    selection=daily_stats_selection,
    description="The daily statistics with each step a Kubernetes Job (dagster-k8s's "
    "k8s_job_executor; runs only under the Helm deployment's K8sRunLauncher).",
    # deployments/production/helm-values.yaml; the step pods need the home's volume.
    executor_def=k8s_executor,
)

daily_stats_schedule = dg.build_schedule_from_partitioned_job(
    daily_stats_job,
    hour_of_day=0,
    minute_of_hour=30,
    description="Every day at 00:30 UTC, compute the day that just ended.",
)
