"""The audit trail, written by Dagster sensors — not by each asset: every run launch
(and who or what launched it), run outcome, materialization, check result, plugin load
and retention deletion in the instance becomes an entry of the hash-chained audit log,
and a change of any governed configuration file becomes a ``config_changed`` entry.

A schedule signs a checkpoint of the chain head (the ``governance/audit_log`` asset)
and its check recomputes the whole chain and every signature.
"""

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from dagster import DagsterEventType

from dataflare_platform.defs.governance.event_feed import (
    FeedEvent,
    actor_of,
    asset_path,
    events_since,
    plain_metadata,
    read_cursor,
)
from dataflare_platform.defs.governance.resources import GovernanceResource
from dataflare_platform.defs.metadata import PLUGINS

if TYPE_CHECKING:  # imported where used, not at every code-location load (SQLModel)
    from dataflare_platform.compliance.audit import AuditLog

AUDIT_LOG_KEY = dg.AssetKey(["governance", "audit_log"])
RETENTION_ACTIONS = "retention_actions"  # metadata key of the retention asset
CONFIG_CURSOR = "config"


def config_digests(files: Iterable[Path]) -> dict[str, str]:
    return {
        str(path): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(files)
        if path.is_file()
    }


def record(log: "AuditLog", instance: dg.DagsterInstance, item: FeedEvent) -> int:
    """Append the entries one event stands for; returns how many."""
    event = item.event.dagster_event
    if event is None:
        return 0
    run = instance.get_run_by_id(item.run_id) if item.run_id else None
    job = run.job_name if run else None
    if item.kind == DagsterEventType.RUN_START:
        tags = {k: v for k, v in (run.tags if run else {}).items() if not k.startswith(".")}
        log.append(actor_of(run), "run_launched", item.run_id, {"job": job, "tags": tags})
        return 1
    if item.kind in (DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE):
        outcome = "run_succeeded" if item.kind == DagsterEventType.RUN_SUCCESS else "run_failed"
        log.append("system", outcome, item.run_id, {"job": job})
        return 1
    if item.kind == DagsterEventType.ASSET_MATERIALIZATION:
        materialization = event.step_materialization_data.materialization
        asset = asset_path(materialization.asset_key) or "?"
        metadata = materialization.metadata or {}
        details = {
            "run_id": item.run_id,
            "partition": materialization.partition,
            "metadata": plain_metadata(metadata),
        }
        log.append(actor_of(run), "materialization", asset, details)
        written = 1
        plugins = getattr(metadata.get(PLUGINS), "value", None) or {}
        for name, digest in sorted(plugins.items()):
            log.append(
                "system",
                "plugin_loaded",
                name,
                {"sha256": digest, "asset": asset, "run_id": item.run_id},
            )
            written += 1
        actions = getattr(metadata.get(RETENTION_ACTIONS), "value", None) or []
        for action in actions:
            log.append("system", "retention_deleted", str(action.get("dataset")), action)
            written += 1
        return written
    if item.kind == DagsterEventType.ASSET_CHECK_EVALUATION:
        evaluation = event.event_specific_data
        subject = f"{asset_path(evaluation.asset_key)}:{evaluation.check_name}"
        details = {
            "run_id": item.run_id,
            "passed": evaluation.passed,
            "severity": evaluation.severity.value if evaluation.severity else None,
            "description": (evaluation.description or "")[:500],
        }
        log.append("system", "check_result", subject, details)
        return 1
    return 0


def audit_definitions(config_files: list[Path], interval_s: int) -> dg.Definitions:
    @dg.sensor(
        name="audit_trail",
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Appends every run launch and outcome, materialization, check result, plugin "
            "load, retention deletion and governed-config change to the audit log."
        ),
    )
    def audit_trail(context: dg.SensorEvaluationContext, governance: GovernanceResource):
        cursor = read_cursor(context.cursor)
        written = 0
        with governance.audit_log() as log:
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
                written += record(log, context.instance, item)
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
                    pass
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
