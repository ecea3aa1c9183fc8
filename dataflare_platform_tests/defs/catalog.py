"""The code location's catalog as plain data: what a reviewer should see change when the
asset graph changes (keys, deps, checks and whether they block, groups, kinds, owners,
tags, automation conditions, pools, partitions, jobs, sensors and schedules).

Descriptions and metadata are left out: they change with wording, not with the graph.
"""

from __future__ import annotations

from typing import Any

import dagster as dg


def _condition(node) -> str | None:
    condition = node.automation_condition
    if condition is None:
        return None
    return condition.get_label() or condition.name


def _partitions(node) -> str | None:
    partitions = node.partitions_def
    return None if partitions is None else type(partitions).__name__


def _asset(graph, key: dg.AssetKey) -> dict[str, Any]:
    node = graph.get(key)
    checks = {}
    for check_key in sorted(node.check_keys, key=lambda k: k.name):
        spec = graph.get_check_spec(check_key)
        checks[check_key.name] = {"blocking": spec.blocking}
    return {
        "deps": sorted(k.to_user_string() for k in node.parent_keys),
        "group": node.group_name,
        "kinds": sorted(node.kinds),
        "owners": sorted(node.owners),
        "tags": {k: v for k, v in sorted(node.tags.items()) if not k.startswith("dagster/kind/")},
        "automation_condition": _condition(node),
        "partitions": _partitions(node),
        "pools": sorted(node.pools or []),
        "executable": node.is_executable,
        "observable": node.is_observable,
        "checks": checks,
    }


def _job(job) -> dict[str, Any]:
    selection = getattr(job, "asset_layer", None)
    keys = sorted(k.to_user_string() for k in selection.executable_asset_keys) if selection else []
    return {
        "assets": keys,
        "ops": sorted(node.name for node in job.graph.node_defs) if not keys else [],
        "partitioned": job.partitions_def is not None,
        "tags": {k: v for k, v in sorted(job.tags.items())},
    }


def _sensor(sensor: dg.SensorDefinition) -> dict[str, Any]:
    targets = sorted(t.job_name for t in sensor.targets if t.has_job_def) if sensor.targets else []
    return {
        "type": sensor.sensor_type.value,
        "jobs": targets,
        "minimum_interval_seconds": sensor.minimum_interval_seconds,
        "default_status": sensor.default_status.value,
    }


def _schedule(schedule: dg.ScheduleDefinition) -> dict[str, Any]:
    return {
        "job": schedule.job_name,
        "cron": schedule.cron_schedule,
        "timezone": schedule.execution_timezone,
        "default_status": schedule.default_status.value,
    }


def _name(definition) -> str:
    return definition.name


def catalog(defs: dg.Definitions) -> dict[str, Any]:
    repository = defs.get_repository_def()
    graph = repository.asset_graph
    jobs = {j.name: j for j in repository.get_all_jobs() if not j.name.startswith("__")}
    return {
        "assets": {
            key.to_user_string(): _asset(graph, key) for key in sorted(graph.get_all_asset_keys())
        },
        "jobs": {name: _job(jobs[name]) for name in sorted(jobs)},
        "sensors": {
            s.name: _sensor(s) for s in sorted(repository.sensor_defs, key=lambda s: s.name)
        },
        "schedules": {
            s.name: _schedule(s) for s in sorted(repository.schedule_defs, key=lambda s: s.name)
        },
    }
