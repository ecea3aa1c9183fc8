"""The code location's one automation sensor.

Every asset that declares an ``automation_condition`` (the hourly leaderboards'
``on_cron``, the daily statistics' ``eager``) is evaluated by one sensor that runs by
default. Dagster would otherwise put them under its implicit
``default_automation_condition_sensor``, which 1.13 creates STOPPED
(``AutomationConditionSensorDefinition`` defaults to ``DefaultSensorStatus.STOPPED``), so
on a fresh deployment no condition would ever request a run: a condition that is
declared but never evaluated looks like automation and is none. Root definitions apply
it once (``definitions.py``); an operator who wants no automation turns the sensor off
in the UI, which Dagster remembers across restarts. Its interval follows
``DATAFLARE_SENSOR_INTERVAL`` like the stream sensors.
"""

import dagster as dg

from dataflare_platform.defs.streams.intervals import sensor_interval_override

AUTOMATION_SENSOR = "dataflare_automation"
DEFAULT_AUTOMATION_INTERVAL_S = 30


def automation_sensor() -> dg.AutomationConditionSensorDefinition:
    """One sensor over the whole code location; assets without a condition are ignored."""
    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR,
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=sensor_interval_override() or DEFAULT_AUTOMATION_INTERVAL_S,
        description=(
            "Evaluates every asset's automation condition (hourly leaderboards after each"
            " cron tick, daily statistics after each warehouse load) and requests runs."
        ),
    )
