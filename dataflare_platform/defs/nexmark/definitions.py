"""The Nexmark domain's definitions, merged by the root definitions."""

import dagster as dg

from dataflare_platform.defs.nexmark import assets, checks, jobs

defs = dg.Definitions(
    assets=[
        *assets.landing_specs,
        assets.persons,
        assets.auctions,
        assets.bids,
        assets.daily_seller_stats,
        assets.daily_category_stats,
        assets.daily_person_activity,
    ],
    asset_checks=[checks.bids_valid, checks.auctions_valid],
    # The daily statistics also on Celery workers and as Kubernetes Jobs (defs/fanout.py).
    jobs=[
        jobs.ingest_job,
        jobs.daily_stats_job,
        jobs.daily_stats_celery_job,
        jobs.daily_stats_k8s_job,
    ],
    schedules=[jobs.daily_stats_schedule],
)
