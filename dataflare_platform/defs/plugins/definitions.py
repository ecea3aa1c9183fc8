"""The plugins domain's definitions, merged by the root definitions."""

import dagster as dg

from dataflare_platform.defs.plugins import admission, assets, usage

defs = dg.Definitions(
    assets=[
        assets.masked_persons_sample,
        admission.plugin_submissions,
        usage.usage_daily_by_plugin,
        usage.usage_daily_by_publisher,
    ],
    jobs=[admission.plugin_admission_job],
)
