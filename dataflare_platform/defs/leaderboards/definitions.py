"""The leaderboards domain's definitions.

``leaderboards_automation`` evaluates the leaderboards' automation conditions. Dagster
would otherwise put them under its implicit ``default_automation_condition_sensor``,
which is created STOPPED (1.13: ``AutomationConditionSensorDefinition`` defaults to
``DefaultSensorStatus.STOPPED``), so nothing would ever be requested on a fresh
deployment. Its interval follows ``DATAFLARE_SENSOR_INTERVAL`` like the stream sensors.
"""

import dagster as dg

from dataflare_platform.defs.leaderboards import assets
from dataflare_platform.defs.streams.definitions import sensor_interval_override

AUTOMATION_SENSOR = "leaderboards_automation"
DEFAULT_AUTOMATION_INTERVAL_S = 30

hourly_job = dg.define_asset_job(
    "hourly_hot_auctions_job",
    selection=[assets.hourly_hot_auctions],
    description="One UTC hour of hot-auction leaderboards (one run per partition).",
)

automation_sensor = dg.AutomationConditionSensorDefinition(
    AUTOMATION_SENSOR,
    target=dg.AssetSelection.groups(assets.GROUP),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=sensor_interval_override() or DEFAULT_AUTOMATION_INTERVAL_S,
    description="Requests each leaderboard hour when its on_cron condition holds.",
)

defs = dg.Definitions(
    assets=[assets.hourly_hot_auctions],
    jobs=[hourly_job],
    sensors=[automation_sensor],
    schedules=[
        dg.build_schedule_from_partitioned_job(
            hourly_job,
            minute_of_hour=15,
            description="Every hour at :15, the hour that just ended.",
        )
    ],
)
