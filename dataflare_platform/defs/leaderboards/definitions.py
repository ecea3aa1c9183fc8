"""The leaderboards domain's definitions. Their ``on_cron`` condition is evaluated by
the code location's one automation sensor (``defs/automation.py``)."""

import dagster as dg

from dataflare_platform.defs.leaderboards import assets

hourly_job = dg.define_asset_job(
    "hourly_hot_auctions_job",
    selection=[assets.hourly_hot_auctions],
    description="One UTC hour of hot-auction leaderboards (one run per partition).",
)

defs = dg.Definitions(
    assets=[assets.hourly_hot_auctions],
    jobs=[hourly_job],
    schedules=[
        dg.build_schedule_from_partitioned_job(
            hourly_job,
            minute_of_hour=15,
            description="Every hour at :15, the hour that just ended.",
        )
    ],
)
