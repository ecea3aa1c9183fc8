"""Alerting in Dagster: a sensor turns what happens in the instance into alert events —
failed runs, failed asset checks (even in runs that succeeded, which Dagster itself does
not alert on), freshness checks, errored sensor/schedule ticks, and the numbers stream
assets report (dead-letter rate, lag, p99 batch latency) for metric rules — and a
schedule advances escalation on its ticks. Rules, channels and state are the alerting
library's (``<home>/alerts.yaml`` by default; no file, no alerting).
"""

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import dagster as dg
from dagster import DagsterEventType
from dagster._core.scheduler.instigation import TickStatus
from pydantic import Field

from dataflare_platform.defs.governance.event_feed import (
    FeedEvent,
    asset_path,
    events_since,
    plain_metadata,
    read_cursor,
)
from dataflare_platform.defs.governance.resources import GovernanceResource

if TYPE_CHECKING:  # imported where used, not at every code-location load (SQLModel)
    from dataflare_platform.alerting import AlertManager

# Check evaluations arrive with the end of their run (any outcome: failed checks in
# green runs alert too); failures alert on their own.
ALERT_RUN_TYPES = (
    DagsterEventType.RUN_SUCCESS,
    DagsterEventType.RUN_FAILURE,
    DagsterEventType.RUN_CANCELED,
)
TICKS_CURSOR = "ticks_after"
FRESHNESS_MARKER = "freshness"


def _no_rules(governance: GovernanceResource) -> dg.SkipReason:
    return dg.SkipReason(f"alerting is off: no rules file at {governance.rules_path()}")


def metric_values(metadata: dict) -> dict[str, float]:
    """Numeric metadata, plus the dead-letter rate of a stream run."""
    values = {k: float(v) for k, v in plain_metadata(metadata).items() if not isinstance(v, str)}
    events_in = values.get("events_in")
    if events_in:
        values["dead_letter_rate"] = values.get("dead_lettered", 0.0) / events_in
    return values


def observe(manager: "AlertManager", instance: dg.DagsterInstance, item: FeedEvent) -> int:
    """Feed one Dagster event to the rules; returns the alerts it touched."""
    from dataflare_platform.alerting import AlertEvent

    event = item.event.dagster_event
    if event is None:
        return 0
    if item.kind == DagsterEventType.RUN_FAILURE:
        run = instance.get_run_by_id(item.run_id)
        message = (event.message or "run failed") + "".join(
            f"\n{step}: {error}" for step, error in step_errors(instance, item.run_id)
        )
        alert = AlertEvent(
            "run_failed",
            item.timestamp,
            job=run.job_name if run else None,
            run_id=item.run_id,
            message=message,
        )
        return len(manager.observe(alert, item.timestamp))
    if item.kind == DagsterEventType.ASSET_CHECK_EVALUATION:
        evaluation = event.event_specific_data
        if evaluation.passed:
            return 0
        asset = asset_path(evaluation.asset_key)
        severity = evaluation.severity.value if evaluation.severity else "ERROR"
        fields = {
            "asset": asset,
            "check": evaluation.check_name,
            "run_id": item.run_id,
            "severity": severity,
            "message": evaluation.description or f"{asset}:{evaluation.check_name} failed",
            "metadata": plain_metadata(evaluation.metadata or {}),
        }
        touched = manager.observe(
            AlertEvent("check_failed", item.timestamp, **fields), item.timestamp
        )
        if FRESHNESS_MARKER in evaluation.check_name:
            touched += manager.observe(
                AlertEvent("freshness_violated", item.timestamp, **fields), item.timestamp
            )
        return len(touched)
    if item.kind == DagsterEventType.ASSET_MATERIALIZATION:
        materialization = event.step_materialization_data.materialization
        values = metric_values(materialization.metadata or {})
        if not values:
            return 0
        asset = asset_path(materialization.asset_key) or "?"
        return len(manager.observe_metric(asset, values, item.timestamp))
    return 0


def step_errors(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, str]]:
    """(step, first line of its error) of a run's failed steps: what a person paged
    about a failed run needs first."""
    records = instance.get_records_for_run(
        run_id, of_type=DagsterEventType.STEP_FAILURE, limit=20
    ).records
    found = []
    for record in records:
        event = record.event_log_entry.dagster_event
        error = getattr(getattr(event, "step_failure_data", None), "error", None)
        while error is not None and error.cause is not None:  # the user's own exception
            error = error.cause
        text = (error.message.strip().splitlines() or [""])[0] if error else "failed"
        found.append((event.step_key if event else "?", text[:300]))
    return found


def errored_ticks(instance: dg.DagsterInstance, after: float) -> list[tuple[str, float, str]]:
    """(sensor or schedule name, tick time, error) of failed ticks after ``after``."""
    found = []
    for state in instance.all_instigator_state():
        ticks = instance.get_ticks(
            state.instigator_origin_id,
            state.selector_id,
            after=after,
            statuses=[TickStatus.FAILURE],
        )
        for tick in ticks:
            error = tick.error.message.strip() if tick.error else "tick failed"
            found.append((state.instigator_name, tick.timestamp, error[:500]))
    return sorted(found, key=lambda t: t[1])


class AcknowledgeConfig(dg.Config):
    alert: str = Field(description="Alert id or fingerprint (dataflare alerts list).")
    by: str = Field(description="Who acknowledges.")
    note: str = ""


def alerting_definitions(interval_s: int) -> dg.Definitions:
    @dg.sensor(
        name="governance_alerts",
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Fires alert rules on failed runs, failed asset checks (also in green runs), "
            "freshness, errored ticks and stream metrics."
        ),
    )
    def governance_alerts(context: dg.SensorEvaluationContext, governance: GovernanceResource):
        manager = governance.alert_manager()
        if manager is None:
            return _no_rules(governance)
        from dataflare_platform.alerting import AlertEvent

        cursor = read_cursor(context.cursor)
        touched = 0
        try:
            for item in events_since(context.instance, cursor, ALERT_RUN_TYPES):
                touched += observe(manager, context.instance, item)
            after = float(cursor.get(TICKS_CURSOR, 0.0))
            for name, at, error in errored_ticks(context.instance, after):
                when = datetime.fromtimestamp(at, UTC)
                alert = AlertEvent("instigator_errored", when, instigator=name, message=error)
                touched += len(manager.observe(alert, when))
                cursor[TICKS_CURSOR] = at
        finally:
            manager.close()
        context.update_cursor(json.dumps(cursor, sort_keys=True))
        return dg.SkipReason(f"{touched} alert(s) opened or updated")

    @dg.schedule(
        name="alert_escalation",
        cron_schedule="* * * * *",
        job=escalation_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Each minute: escalate unacknowledged alerts whose tier timed out.",
    )
    def alert_escalation(context: dg.ScheduleEvaluationContext, governance: GovernanceResource):
        manager = governance.alert_manager()
        if manager is None:
            return _no_rules(governance)
        now = context.scheduled_execution_time or datetime.now(UTC)
        try:
            escalated = manager.tick(now)
        finally:
            manager.close()
        return dg.SkipReason(f"{len(escalated)} alert(s) escalated at {now.isoformat()}")

    return dg.Definitions(
        jobs=[acknowledge_job, escalation_job],
        sensors=[governance_alerts],
        schedules=[alert_escalation],
    )


@dg.op(description="Acknowledge an alert: its escalation stops.")
def acknowledge_alert(
    context: dg.OpExecutionContext, config: AcknowledgeConfig, governance: GovernanceResource
) -> None:
    from dataflare_platform.compliance.override_refusals import actor_from_tags

    manager = governance.alert_manager()
    if manager is None:
        raise dg.Failure(str(_no_rules(governance).skip_message))
    # The acknowledgement stops escalation: audited under the run's authenticated
    # principal (the run coordinator's tag), with ``by`` as claimed; the log is opened
    # (keys checked) before anything changes.
    try:
        with governance.audit_log() as audit:
            alert = manager.acknowledge(
                int(config.alert) if config.alert.isdigit() else config.alert,
                config.by,
                datetime.now(UTC),
                config.note,
            )
            audit.append(
                actor_from_tags(context.run.tags),
                "alert_acknowledged",
                f"alert:{alert.fingerprint}",
                {"id": alert.id, "by": config.by, "note": config.note, "run": context.run_id},
            )
    finally:
        manager.close()
    context.log.info(f"acknowledged {alert.fingerprint} (tier {alert.tier}) by {config.by}")


@dg.job(description="Acknowledge an alert by id or fingerprint (stops its escalation).")
def acknowledge_job():
    acknowledge_alert()


@dg.op(description="Escalate unacknowledged alerts whose tier timed out, now.")
def escalate_alerts(context: dg.OpExecutionContext, governance: GovernanceResource) -> None:
    manager = governance.alert_manager()
    if manager is None:
        context.log.info(str(_no_rules(governance).skip_message))
        return
    try:
        escalated = manager.tick(datetime.now(UTC))
    finally:
        manager.close()
    context.log.info(f"{len(escalated)} alert(s) escalated")


@dg.job(
    description=(
        "Escalation, run on demand; the alert_escalation schedule does the same on each "
        "tick without launching a run."
    )
)
def escalation_job():
    escalate_alerts()
