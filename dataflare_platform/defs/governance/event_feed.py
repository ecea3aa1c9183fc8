"""Reading what happened in the Dagster instance since a cursor: run launches and
outcomes, materializations and asset-check evaluations. Sensors for the audit trail and
for alerting read the same feed, each with its own cursor, so every event is handled
once even when a tick is skipped or retried.

The queries are the ones every event-log storage answers with a cursor, including the
embedded run-sharded SQLite one: run status changes by type, materializations per asset
key (as they happen, so a long continuous run's checkpoints are seen at once), and a
run's check evaluations when the run ends (checks run inside runs).
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg
from dagster import AssetRecordsFilter, DagsterEventType

RUN_TYPES = (
    DagsterEventType.RUN_START,
    DagsterEventType.RUN_SUCCESS,
    DagsterEventType.RUN_FAILURE,
    DagsterEventType.RUN_CANCELED,
)
RUN_ENDS = (
    DagsterEventType.RUN_SUCCESS,
    DagsterEventType.RUN_FAILURE,
    DagsterEventType.RUN_CANCELED,
)
BATCH = 500


@dataclass(frozen=True)
class FeedEvent:
    kind: DagsterEventType
    storage_id: int
    run_id: str
    timestamp: datetime
    event: dg.EventLogEntry


def read_cursor(cursor: str | None) -> dict:
    return json.loads(cursor) if cursor else {}


def _feed(kind: DagsterEventType, record) -> FeedEvent:
    entry = record.event_log_entry
    return FeedEvent(
        kind, record.storage_id, entry.run_id, datetime.fromtimestamp(entry.timestamp, UTC), entry
    )


def _run_events(instance: dg.DagsterInstance, cursor: dict, kinds) -> Iterator[FeedEvent]:
    positions = cursor.setdefault("runs", {})
    for kind in kinds:
        while True:
            result = instance.fetch_run_status_changes(
                kind, limit=BATCH, cursor=positions.get(kind.value), ascending=True
            )
            for record in result.records:
                yield _feed(kind, record)
                if kind in RUN_ENDS:
                    yield from check_evaluations(instance, record.event_log_entry.run_id)
            if result.records:
                positions[kind.value] = result.cursor
            if not result.has_more:
                break


def check_evaluations(instance: dg.DagsterInstance, run_id: str) -> Iterator[FeedEvent]:
    kind = DagsterEventType.ASSET_CHECK_EVALUATION
    connection = instance.get_records_for_run(run_id, of_type=kind, limit=10_000)
    for record in connection.records:
        yield _feed(kind, record)


def _materializations(instance: dg.DagsterInstance, cursor: dict) -> Iterator[FeedEvent]:
    positions = cursor.setdefault("assets", {})
    kind = DagsterEventType.ASSET_MATERIALIZATION
    for key in instance.get_asset_keys():
        name = key.to_user_string()
        while True:
            result = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=key, after_storage_id=positions.get(name)),
                limit=BATCH,
                ascending=True,
            )
            for record in result.records:
                yield _feed(kind, record)
                positions[name] = record.storage_id
            if not result.has_more:
                break


def events_since(
    instance: dg.DagsterInstance,
    cursor: dict,
    runs: tuple[DagsterEventType, ...] = RUN_TYPES,
    materializations: bool = True,
) -> Iterator[FeedEvent]:
    """Events after ``cursor``: run status changes of the ``runs`` types (with each ended
    run's check evaluations) and, if asked, every asset's new materializations.
    ``cursor`` is advanced in place as events are yielded (persist it afterwards)."""
    yield from _run_events(instance, cursor, runs)
    if materializations:
        yield from _materializations(instance, cursor)


def asset_path(key: dg.AssetKey | None) -> str | None:
    return None if key is None else "/".join(key.path)


def plain_metadata(metadata: dict) -> dict[str, object]:
    """Numbers and short texts of a metadata dict (what audit and alerts can use)."""
    out: dict[str, object] = {}
    for name, value in (metadata or {}).items():
        raw = getattr(value, "value", value)
        if isinstance(raw, bool | int | float) or (isinstance(raw, str) and len(raw) <= 200):
            out[name] = raw
    return out


def actor_of(run: dg.DagsterRun | None) -> str:
    """Who launched a run, as the audit log spells actors."""
    if run is None:
        return "system"
    tags = run.tags
    if "dagster/sensor_name" in tags:
        return f"sensor:{tags['dagster/sensor_name']}"
    if "dagster/schedule_name" in tags:
        return f"schedule:{tags['dagster/schedule_name']}"
    if "dataflare/client" in tags:
        return f"client:{tags['dataflare/client']}"
    if "dataflare/launched_by" in tags:
        return f"client:{tags['dataflare/launched_by']}"
    if "dagster/backfill" in tags:
        return f"user:backfill-{tags['dagster/backfill']}"
    if "dataflare/restart_of" in tags or "dagster/parent_run_id" in tags:
        return "system"
    return f"user:{tags.get('dataflare/user', 'ui')}"
