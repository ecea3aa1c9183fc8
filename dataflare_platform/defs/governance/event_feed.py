"""Reading what happened in the Dagster instance since a cursor: run launches and
outcomes, materializations and asset-check evaluations. Sensors for the audit trail and
for alerting read the same feed, each with its own cursor, so every event is handled
once even when a tick is skipped or retried.

The queries are the ones every event-log storage answers with a cursor, including the
embedded run-sharded SQLite one: run status changes by type, materializations per asset
key (as they happen, so a long continuous run's checkpoints are seen at once), and a
run's check evaluations when the run ends (checks run inside runs).
"""

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg
from dagster import AssetRecordsFilter, DagsterEventType

from dataflare_platform.access.principal import PRINCIPAL_TAG

RUN_TYPES = (
    DagsterEventType.RUN_START,
    DagsterEventType.RUN_SUCCESS,
    DagsterEventType.RUN_FAILURE,
    DagsterEventType.RUN_CANCELING,
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


def parse_cursor(cursor: str | None) -> tuple[dict, str | None]:
    """A sensor's cursor as the dict it writes, and the raw text when it is not one (not
    JSON, or JSON but not an object: anyone who may set cursors can write anything there,
    and a sensor that fails on it at every tick would be silenced by it)."""
    if not cursor:
        return {}, None
    try:
        value = json.loads(cursor)
    except ValueError:
        return {}, cursor
    return (value, None) if isinstance(value, dict) else ({}, cursor)


def read_cursor(cursor: str | None) -> dict:
    """The cursor's dict; an unusable cursor reads as none (start again)."""
    return parse_cursor(cursor)[0]


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


# Tags a caller sets freely: kept as what the run *claims*, never as its actor.
CLAIM_TAGS = ("dataflare/client", "dataflare/launched_by", "dataflare/user", "USER", "user")
OUT_OF_BAND = "host:out-of-band"
# Principal.id: kind:name, or kind:<provider>/name for a user of an external directory.
_PRINCIPAL_ID = re.compile(
    r"^(user|service|sensor|schedule|backfill|system):(?:(?:oidc|ldap)/)?(.+)$"
)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+\-]{0,127}$")


def actor_of(run: dg.DagsterRun | None) -> str:
    """Who launched a run, as the audit log spells actors (see :func:`attribution`)."""
    return attribution(run)[0]


def attribution(run: dg.DagsterRun | None) -> tuple[str, dict[str, str]]:
    """``(actor, claims)`` of a run.

    The actor comes from what callers cannot set: the principal the run coordinator wrote
    (:data:`PRINCIPAL_TAG`), else the Dagster-owned sensor/schedule/backfill tags of a run
    the daemon launched, else ``host:out-of-band`` (launched around the coordinator, e.g.
    in process). Caller-set tags (``dataflare/client``, ``USER``...) only land in
    ``claims``, sanitized, as what the run said about itself.
    """
    if run is None:
        return "system", {}
    tags = run.tags
    claims = {k: safe_text(tags[k], 200) for k in CLAIM_TAGS if k in tags}
    principal = tags.get(PRINCIPAL_TAG)
    if isinstance(principal, str):
        match = _PRINCIPAL_ID.match(principal)
        if match and _SAFE_NAME.match(match.group(2)):
            return principal, claims
        claims[PRINCIPAL_TAG] = safe_text(principal, 200)  # malformed: not trusted
    for tag, kind in (
        ("dagster/sensor_name", "sensor"),
        ("dagster/schedule_name", "schedule"),
        ("dagster/backfill", "backfill"),
    ):
        name = tags.get(tag)
        if isinstance(name, str) and _SAFE_NAME.match(name):
            return f"{kind}:{name}", claims
    return OUT_OF_BAND, claims


def safe_text(value: object, limit: int = 1000) -> str:
    """Any value as text an audit entry can always hold: lone surrogates escaped, NUL and
    other controls escaped by the JSON encoding, and text over ``limit`` characters cut,
    naming its full length and SHA-256 (so the cut is evident and the original provable)."""
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    text = text.replace("\x00", "\\x00")  # PostgreSQL text cannot hold NUL
    if len(text) > limit:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        text = f"{text[:limit]}...[{len(text)} chars, sha256 {digest}]"
    return text


def safe_tags(tags: dict, limit: int = 100) -> dict[str, str]:
    """Run tags as safe text (Dagster-internal ``.`` tags left out); at most ``limit``
    tags, the rest counted under ``...``."""
    out: dict[str, str] = {}
    items = sorted(
        ((k, v) for k, v in tags.items() if not str(k).startswith(".")), key=lambda kv: str(kv[0])
    )
    for key, value in items[:limit]:
        out[safe_text(key, 200)] = safe_text(value)
    if len(items) > limit:
        out["..."] = f"{len(items) - limit} more tags"
    return out
