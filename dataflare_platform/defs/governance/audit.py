"""The audit trail, written by Dagster sensors — not by each asset: every run launch
(and who or what launched it), run outcome and termination, materialization, check
result, plugin load and retention deletion in the instance becomes an entry of the
hash-chained audit log, and so do a change of any governed configuration file
(``config_changed``), a deleted run (``run_deleted``), a sensor or schedule switched on or
off (``instigator_changed``) and a sensor cursor set from outside its ticks
(``sensor_cursor_set``).

The sensor cannot be silenced by moving its cursor: the positions it has read up to are
themselves recorded in the chain (``audit_cursor``), and a Dagster cursor that differs
from them is recorded as an ``audit_gap`` and ignored (the skipped range is re-read). No
event can stop it either: every value is stored as safe text, and an event that still
cannot be recorded becomes an ``audit_record_failed`` entry instead of failing the tick
forever.

A schedule signs a checkpoint of the chain head (the ``governance/audit_log`` asset)
and its check recomputes the whole chain and every signature.
"""

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from dagster import DagsterEventType

from dataflare_platform.defs.governance.event_feed import (
    FeedEvent,
    asset_path,
    attribution,
    events_since,
    parse_cursor,
    plain_metadata,
    safe_tags,
    safe_text,
)
from dataflare_platform.defs.governance.resources import GovernanceResource
from dataflare_platform.defs.metadata import PLUGINS

if TYPE_CHECKING:  # imported where used, not at every code-location load (SQLModel)
    from dataflare_platform.compliance.audit import AuditLog

AUDIT_LOG_KEY = dg.AssetKey(["governance", "audit_log"])
RETENTION_ACTIONS = "retention_actions"  # metadata key of the retention asset
CONFIG_CURSOR = "config"
RUNS_CURSOR = "run_count"
INSTIGATORS_CURSOR = "instigators"
TRACKED = ("runs", "assets", CONFIG_CURSOR, RUNS_CURSOR, INSTIGATORS_CURSOR)
CURSOR_ACTION = "audit_cursor"
AUDIT_SENSOR = "audit_trail"


def config_digests(files: Iterable[Path]) -> dict[str, str]:
    return {
        str(path): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(files)
        if path.is_file()
    }


def launch_entry(run: dg.DagsterRun | None) -> tuple[str, dict]:
    """The actor and details of a run launch: any tag content becomes safe text."""
    actor, claims = attribution(run)
    details: dict = {
        "job": run.job_name if run else None,
        "tags": safe_tags(run.tags if run else {}),
    }
    if claims:
        details["claimed_by"] = claims
    return actor, details


def record(log: "AuditLog", instance: dg.DagsterInstance, item: FeedEvent) -> int:
    """Append the entries one event stands for; returns how many."""
    event = item.event.dagster_event
    if event is None:
        return 0
    run = instance.get_run_by_id(item.run_id) if item.run_id else None
    job = run.job_name if run else None
    actor = attribution(run)[0]
    subject = safe_text(item.run_id, 200)
    if item.kind == DagsterEventType.RUN_START:
        actor, details = launch_entry(run)
        log.append(actor, "run_launched", subject, details)
        return 1
    ends = {
        DagsterEventType.RUN_SUCCESS: "run_succeeded",
        DagsterEventType.RUN_FAILURE: "run_failed",
        DagsterEventType.RUN_CANCELING: "run_canceling",
        DagsterEventType.RUN_CANCELED: "run_canceled",
    }
    if item.kind in ends:
        details = {"job": job}
        if item.kind in (DagsterEventType.RUN_CANCELING, DagsterEventType.RUN_CANCELED):
            details["message"] = safe_text(event.message or "", 500)
        log.append("system", ends[item.kind], subject, details)
        return 1
    if item.kind == DagsterEventType.ASSET_MATERIALIZATION:
        materialization = event.step_materialization_data.materialization
        asset = safe_text(asset_path(materialization.asset_key) or "?", 500)
        metadata = materialization.metadata or {}
        details = {
            "run_id": subject,
            "partition": None
            if materialization.partition is None
            else safe_text(materialization.partition, 200),
            "metadata": {
                safe_text(k, 200): safe_text(v) if isinstance(v, str) else v
                for k, v in plain_metadata(metadata).items()
            },
        }
        log.append(actor, "materialization", asset, details)
        written = 1
        plugins = getattr(metadata.get(PLUGINS), "value", None) or {}
        for name, digest in sorted(plugins.items()):
            log.append(
                "system",
                "plugin_loaded",
                safe_text(name, 200),
                {"sha256": safe_text(digest, 100), "asset": asset, "run_id": subject},
            )
            written += 1
        actions = getattr(metadata.get(RETENTION_ACTIONS), "value", None) or []
        for action in actions:
            log.append("system", "retention_deleted", safe_text(action.get("dataset")), action)
            written += 1
        return written
    if item.kind == DagsterEventType.ASSET_CHECK_EVALUATION:
        evaluation = event.event_specific_data
        name = f"{asset_path(evaluation.asset_key)}:{evaluation.check_name}"
        details = {
            "run_id": subject,
            "passed": evaluation.passed,
            "severity": evaluation.severity.value if evaluation.severity else None,
            "description": safe_text(evaluation.description or "", 500),
        }
        log.append("system", "check_result", safe_text(name, 500), details)
        return 1
    return 0


def record_safely(log: "AuditLog", instance: dg.DagsterInstance, item: FeedEvent) -> int:
    """:func:`record`, but an event that cannot be recorded becomes an
    ``audit_record_failed`` entry naming it, so one bad event never stops the trail (the
    tick would otherwise fail on it forever). A failure to write to the log itself still
    raises: then nothing is skipped, the tick is retried."""
    from dataflare_platform.errors import DataflareError

    try:
        return record(log, instance, item)
    except (DataflareError, ValueError, TypeError, KeyError, AttributeError) as err:
        log.append(
            "system",
            "audit_record_failed",
            safe_text(item.run_id or "-", 200),
            {
                "event": item.kind.value,
                "storage_id": item.storage_id,
                "error": type(err).__name__,
                "reason": safe_text(str(err).splitlines()[0] if str(err) else "", 300),
            },
        )
        return 1


def _alert(governance: GovernanceResource, message: str) -> None:
    """Tell the alert rules (``instigator_errored`` of ``audit_trail``) that the trail
    found something wrong with itself; alerting being off or failing never stops the
    recording (the entry is in the chain either way)."""
    from dataflare_platform.alerting import AlertEvent
    from dataflare_platform.errors import DataflareError

    try:
        manager = governance.alert_manager()
        if manager is None:
            return
        try:
            now = datetime.now(UTC)
            event = AlertEvent("instigator_errored", now, instigator=AUDIT_SENSOR, message=message)
            manager.observe(event, now)
        finally:
            manager.close()
    except DataflareError as err:
        dg.get_dagster_logger().warning(f"audit alert not sent: {type(err).__name__}")


def _positions(cursor: dict) -> dict:
    """The parts of the cursor that say how far the trail has read."""
    return {k: cursor[k] for k in sorted(cursor) if k in TRACKED}


def reconcile_cursor(
    log: "AuditLog", cursor: dict, unreadable: str | None = None
) -> tuple[dict, int]:
    """The cursor to read from: the positions last recorded in the chain win over the
    Dagster cursor, which anyone with instance access can move. A difference is recorded
    as an ``audit_gap`` (which parts moved, from what to what) and the recorded positions
    are used, so a range skipped by moving the cursor ahead is re-read and one rewound is
    not recorded twice; a missing cursor is an ``audit_cursor_reset``; a cursor that is
    not the trail's own (``unreadable``: its raw text) is a gap as well, with the text made
    safe. Returns ``(cursor, gap entries written)``."""
    last = log.last(CURSOR_ACTION)
    if unreadable is not None:
        details = {"moved": ["cursor"], "found_unreadable": safe_text(unreadable, 200)}
        if last is not None:
            details["recorded_at_seq"] = last.seq
        log.append("host:out-of-band", "audit_gap", "audit_trail", details)
        # With nothing recorded yet, reading from the start loses nothing.
        return ({**cursor, **last.payload()} if last is not None else cursor), 1
    if last is None:
        return cursor, 0  # the first tick (or the first since upgrading): nothing to hold
    recorded = last.payload()
    found = _positions(cursor)
    if found == recorded:
        return cursor, 0
    if not found:
        # No cursor at all (reset, or a tick run by hand as the demo does): nothing can be
        # skipped by it, the recorded positions are simply taken up again.
        log.append("system", "audit_cursor_reset", "audit_trail", {"resumed_at_seq": last.seq})
        return {**cursor, **recorded}, 0
    moved = sorted(k for k in recorded.keys() | found.keys() if recorded.get(k) != found.get(k))
    details = {
        "moved": moved,
        "recorded_at_seq": last.seq,
        "recorded": {k: recorded.get(k) for k in moved if k != CONFIG_CURSOR},
        "found": {k: found.get(k) for k in moved if k != CONFIG_CURSOR},
    }
    log.append("host:out-of-band", "audit_gap", "audit_trail", _bounded(details))
    return {**cursor, **recorded}, 1


def _bounded(details: dict) -> dict:
    """Details cut to a size an entry can carry (a cursor over many assets is large)."""
    text = json.dumps(details, sort_keys=True, default=str)
    if len(text) <= 20_000:
        return details
    return {"moved": details["moved"][:100], "truncated": safe_text(text, 20_000)}


def record_deleted_runs(log: "AuditLog", instance: dg.DagsterInstance, cursor: dict) -> int:
    """Runs that disappeared since the last tick: the runs created before the last tick
    are counted again; fewer means some were deleted, and the audited launches no longer
    in the instance are named (``run_deleted``)."""
    from dagster import RunsFilter

    previous = cursor.get(RUNS_CURSOR)
    now = datetime.now(UTC)
    written = 0
    if previous:
        before = datetime.fromtimestamp(previous["before"], UTC)
        count = instance.get_runs_count(RunsFilter(created_before=before))
        if count < previous["count"]:
            present = set(instance.get_run_ids())
            gone = sorted(log.subjects("run_launched") - present - log.subjects("run_deleted"))
            for run_id in gone:
                log.append("system", "run_deleted", run_id, {"observed_by": "audit_trail"})
            unnamed = previous["count"] - count - len(gone)
            if unnamed > 0:
                log.append(
                    "system",
                    "run_deleted",
                    "unknown",
                    {"count": unnamed, "note": "deleted before their launch was audited"},
                )
            written = len(gone) + (1 if unnamed > 0 else 0)
    total = instance.get_runs_count(RunsFilter(created_before=now))
    if not previous or written or total != previous["count"]:
        # Moved on only when runs came or went, so an idle tick changes nothing.
        cursor[RUNS_CURSOR] = {"before": now.timestamp(), "count": total}
    return written


def record_instigator_changes(log: "AuditLog", instance: dg.DagsterInstance, cursor: dict) -> int:
    """Sensors and schedules switched on or off since the last tick, and sensor cursors
    that changed without a tick having written them (set from outside)."""
    before = cursor.get(INSTIGATORS_CURSOR) or {}
    now: dict[str, dict] = {}
    written = 0
    for state in instance.all_instigator_state():
        key = f"{state.instigator_type.value.lower()}:{state.instigator_name}"
        data = state.instigator_data
        # This sensor's own cursor is held by reconcile_cursor, and moves every tick.
        raw = None if key == f"sensor:{AUDIT_SENSOR}" else getattr(data, "cursor", None)
        digest = hashlib.sha256(raw.encode()).hexdigest()[:16] if raw else None
        now[key] = {"status": state.status.value, "cursor": digest}
        old = before.get(key)
        if old is None:
            continue
        subject = safe_text(key, 300)
        if old["status"] != state.status.value:
            log.append(
                "system",
                "instigator_changed",
                subject,
                {"from": old["status"], "to": state.status.value},
            )
            written += 1
        if digest != old.get("cursor"):
            ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
            ticked = bool(ticks) and getattr(ticks[0], "cursor", None) == raw
            if not ticked:
                log.append(
                    "host:out-of-band",
                    "sensor_cursor_set",
                    subject,
                    {"from": old.get("cursor"), "to": digest},
                )
                written += 1
    cursor[INSTIGATORS_CURSOR] = now
    return written


def audit_definitions(config_files: list[Path], interval_s: int) -> dg.Definitions:
    @dg.sensor(
        name=AUDIT_SENSOR,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Appends every run launch and outcome, materialization, check result, plugin "
            "load, retention deletion and governed-config change to the audit log."
        ),
    )
    def audit_trail(context: dg.SensorEvaluationContext, governance: GovernanceResource):
        cursor, unreadable = parse_cursor(context.cursor)
        with governance.audit_log() as log:
            cursor, written = reconcile_cursor(log, cursor, unreadable)
            if written:  # a gap
                _alert(governance, "audit gap: the sensor's cursor was moved; re-read")
            digests = config_digests(config_files)
            before = cursor.get(CONFIG_CURSOR) or {}
            changed = sorted(
                k for k in digests.keys() | before.keys() if digests.get(k) != before.get(k)
            )
            if changed:
                log.append(
                    "system",
                    "config_changed",
                    "configuration",
                    {"files": {k: digests.get(k) for k in changed}, "first_seen": not before},
                )
                written += 1
            cursor[CONFIG_CURSOR] = digests
            for item in events_since(context.instance, cursor):
                written += record_safely(log, context.instance, item)
            written += record_deleted_runs(log, context.instance, cursor)
            written += record_instigator_changes(log, context.instance, cursor)
            last = log.last(CURSOR_ACTION)
            if last is None or last.payload() != _positions(cursor):
                log.append("system", CURSOR_ACTION, "audit_trail", _positions(cursor))
        context.update_cursor(json.dumps(cursor, sort_keys=True))
        return dg.SkipReason(f"appended {written} audit entries")

    @dg.asset(
        key=AUDIT_LOG_KEY,
        group_name="governance",
        kinds={"sqlite", "ed25519"},
        owners=["team:compliance"],
        description=(
            "The hash-chained audit log; each materialization signs a checkpoint of its "
            "head with the deployment's Ed25519 key."
        ),
        check_specs=[
            dg.AssetCheckSpec(
                "chain_verifies",
                asset=AUDIT_LOG_KEY,
                description="Every entry's hash, the chain links and every signed checkpoint.",
            )
        ],
    )
    def audit_log(governance: GovernanceResource) -> dg.MaterializeResult:
        from dataflare_platform.compliance.audit import AuditTamperedError

        public_keys = governance.public_keys()
        anchor = governance.audit_anchor()
        witness = governance.audit_channel_anchor()  # bad settings fail before signing
        signer = governance.signing_key()  # a missing key fails the run, loudly

        def check(log: "AuditLog"):
            anchored = anchor.checkpoints() if anchor is not None else []
            # The tail is what this run is about to sign: accepted here, judged by its
            # age in `dataflare audit verify`.
            return log.verify(public_keys, anchored=anchored, allow_unanchored_tail=True)

        with governance.audit_log() as log:
            report = check(log)
            metadata: dict[str, object] = {
                "entries": report.entries,
                "head_seq": report.head_seq or 0,
                "checkpoints": report.checkpoints,
            }
            if report.ok and report.entries:
                try:
                    checkpoint = log.checkpoint(signer, anchor=anchor)
                    report = check(log)
                    metadata["signed_seq"] = checkpoint.seq
                    metadata["signed_entries"] = checkpoint.entries or 0
                    metadata["key_id"] = checkpoint.key_id
                    metadata["algorithm"] = checkpoint.algorithm or ""
                except AuditTamperedError:
                    checkpoint = None
                if checkpoint is not None and witness is not None:
                    # After the log and the anchor hold it; a failed send fails the run.
                    witness.record(checkpoint)
                    metadata["witness_channel"] = witness.name
        bad = [p.model_dump() for p in report.bad_checkpoints]
        check = dg.AssetCheckResult(
            check_name="chain_verifies",
            passed=report.ok,
            severity=dg.AssetCheckSeverity.ERROR,
            description=report.summary(),
            metadata={
                "entries": report.entries,
                "first_bad_entry": (
                    f"seq {report.first_bad_entry.seq}: {report.first_bad_entry.problem}"
                    if report.first_bad_entry
                    else ""
                ),
                "bad_checkpoints": dg.MetadataValue.json(bad),
            },
        )
        return dg.MaterializeResult(metadata=metadata, check_results=[check])

    audit_job = dg.define_asset_job(
        "audit_checkpoint_job",
        selection=[AUDIT_LOG_KEY],
        description="Verify the audit chain and sign a checkpoint of its head.",
    )
    schedule = dg.ScheduleDefinition(
        name="audit_checkpoint_schedule",
        job=audit_job,
        cron_schedule="0 * * * *",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every hour: verify the audit chain and sign its head.",
    )
    return dg.Definitions(
        assets=[audit_log], jobs=[audit_job], schedules=[schedule], sensors=[audit_trail]
    )
