"""Ticking the ``topic_observations`` sensor in process, storing what it reports the way
the daemon does (``instance.report_runless_asset_event`` per asset event)."""

from __future__ import annotations

import dagster as dg

from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.defs.streams.topics import DATA_VERSION_TAG, TOPIC_OBSERVATIONS_SENSOR
from dataflare_platform.home import ProjectHome


def tick_topic_observations(
    defs: dg.Definitions, instance: dg.DagsterInstance, home: ProjectHome, cursor: str | None
) -> tuple[dg.SensorResult | dg.SkipReason, str | None]:
    """One tick; returns its result and the cursor the next tick starts from."""
    sensor = defs.resolve_sensor_def(TOPIC_OBSERVATIONS_SENSOR)
    resources = {"dataflare": ProjectHomeResource(path=str(home.root))}
    with dg.build_sensor_context(cursor=cursor, instance=instance, resources=resources) as ctx:
        result = sensor(ctx)
    if isinstance(result, dg.SensorResult):
        for event in result.asset_events:
            instance.report_runless_asset_event(event)
        return result, result.cursor
    assert isinstance(result, dg.SkipReason), result
    return result, cursor


def observations(instance: dg.DagsterInstance, key: dg.AssetKey) -> list[dg.AssetObservation]:
    """Stored observations of ``key``, oldest first."""
    records = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=key), limit=1000, ascending=True
    ).records
    return [r.asset_observation for r in records if r.asset_observation is not None]


def data_version(observation: dg.AssetObservation) -> str:
    return observation.tags[DATA_VERSION_TAG]
