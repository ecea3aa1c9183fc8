"""Retention as a scheduled asset: each governed dataset with a retention period loses
what is older than it, and the asset's metadata lists what was deleted — which the
audit sensor turns into ``retention_deleted`` entries.

Each dataset is handled on its own: a store that fails (gone, misconfigured) or stays
locked by another process (a continuous stream run writing its DuckDB file) is reported
by name in the metadata (``errors``, ``locked``) and by the ``retention_applied`` check,
and the other datasets are still cleaned. A locked store is retried with backoff first
(``lock_attempts``); if still locked the check warns (WARN: nothing is wrong with the
data, the next scheduled run tries again), while any other failure is an ERROR."""

from datetime import UTC, datetime

import dagster as dg
import duckdb
from pydantic import Field

from dataflare_platform.compliance.retention import (
    RetentionAction,
    delete_duckdb_rows,
    delete_parquet_partitions,
    delete_topic_segments,
)
from dataflare_platform.compliance.spec import GovernedDataset
from dataflare_platform.defs.governance.audit import RETENTION_ACTIONS
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.events.log import EventLog
from dataflare_platform.warehouse.connection import StoreLockedError

RETENTION_KEY = dg.AssetKey(["governance", "retention"])


class RetentionConfig(dg.Config):
    dry_run: bool = Field(default=False, description="Report what would go; delete nothing.")
    as_of: str = Field(
        default="", description="ISO time to apply retention as of (default: now, UTC)."
    )
    lock_attempts: int = Field(
        default=5, ge=1, description="Tries to open a DuckDB store another process holds."
    )
    lock_backoff_s: float = Field(
        default=0.5, gt=0, description="First wait between those tries (doubles, up to 8 s)."
    )


def apply_retention(
    spec: GovernedDataset,
    root,
    now: datetime,
    dry_run: bool,
    lock_attempts: int = 5,
    lock_backoff_s: float = 0.5,
) -> RetentionAction:
    policy, target = spec.retention, spec.retention_target
    assert policy is not None and target is not None
    if target.duckdb is not None:
        path = target.duckdb.path if target.duckdb.path.is_absolute() else root / target.duckdb.path
        return delete_duckdb_rows(
            path,
            target.duckdb.table,
            policy,
            now,
            spec.asset,
            dry_run,
            lock_attempts=lock_attempts,
            lock_backoff_s=lock_backoff_s,
        )
    if target.parquet is not None:
        folder = target.parquet if target.parquet.is_absolute() else root / target.parquet
        return delete_parquet_partitions(folder, policy, now, spec.asset, dry_run)
    from dataflare_platform.home import ProjectHome

    log = EventLog(ProjectHome.resolve(root).event_log_dir)
    return delete_topic_segments(log, target.topic, policy, now, spec.asset, dry_run)


def retention_definitions(specs: list[GovernedDataset]) -> dg.Definitions:
    governed = [s for s in specs if s.retention is not None]
    if not governed:
        return dg.Definitions()
    listing = ", ".join(f"{s.asset} ({s.retention.keep})" for s in governed)  # type: ignore[union-attr]

    @dg.asset(
        key=RETENTION_KEY,
        group_name="governance",
        kinds={"duckdb", "parquet"},
        owners=["team:compliance"],
        description=f"Deletes data older than each dataset's retention period: {listing}.",
        check_specs=[
            dg.AssetCheckSpec(
                "retention_applied",
                asset=RETENTION_KEY,
                description="Every dataset's retention was applied; names each dataset whose "
                "store failed (ERROR) or stayed locked by another process (WARN).",
            )
        ],
    )
    def retention(
        context: dg.AssetExecutionContext, config: RetentionConfig, dataflare: ProjectHomeResource
    ) -> dg.MaterializeResult:
        now = datetime.fromisoformat(config.as_of) if config.as_of else datetime.now(UTC)
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        actions, errors, locked = [], {}, {}
        for spec in governed:
            try:
                action = apply_retention(
                    spec,
                    dataflare.home.root,
                    now,
                    config.dry_run,
                    lock_attempts=config.lock_attempts,
                    lock_backoff_s=config.lock_backoff_s,
                )
            except StoreLockedError as err:  # still held by a writer: next run tries again
                locked[spec.asset] = str(err)
                context.log.warning(f"retention of {spec.asset} skipped: {err}")
                continue
            except (OSError, ValueError, KeyError, duckdb.Error) as err:  # spoils no other
                errors[spec.asset] = f"{type(err).__name__}: {err}"
                context.log.error(f"retention of {spec.asset} failed: {err}")
                continue
            actions.append(action.to_audit())
            mode = " (dry run)" if config.dry_run else ""
            context.log.info(
                f"{spec.asset}: {action.rows_deleted} rows, {action.files_deleted} files"
                f" older than {action.cutoff:%Y-%m-%d %H:%M}{mode}"
            )
        problems = {**errors, **locked}
        check = dg.AssetCheckResult(
            check_name="retention_applied",
            passed=not problems,
            severity=dg.AssetCheckSeverity.ERROR if errors else dg.AssetCheckSeverity.WARN,
            description="; ".join(f"{k}: {v}" for k, v in problems.items()) or "all applied",
            metadata={
                "errors": dg.MetadataValue.json(errors),
                "locked": dg.MetadataValue.json(locked),
            },
        )
        return dg.MaterializeResult(
            metadata={
                "rows_deleted": sum(a["rows_deleted"] for a in actions),
                "files_deleted": sum(a["files_deleted"] for a in actions),
                "datasets": len(actions),
                "datasets_locked": len(locked),
                "locked": dg.MetadataValue.json(locked),
                "errors": dg.MetadataValue.json(errors),
                "dry_run": config.dry_run,
                RETENTION_ACTIONS: dg.MetadataValue.json(actions),
            },
            check_results=[check],
        )

    job = dg.define_asset_job(
        "retention_job", selection=[RETENTION_KEY], description="Apply every retention period."
    )
    schedule = dg.ScheduleDefinition(
        name="retention_schedule",
        job=job,
        cron_schedule="15 2 * * *",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every day at 02:15 UTC, delete data past its retention period.",
    )
    return dg.Definitions(assets=[retention], jobs=[job], schedules=[schedule])
