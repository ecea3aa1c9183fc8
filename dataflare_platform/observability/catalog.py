"""The metric list: every metric the platform exports, with its type, labels and meaning.

One list, so the instruments (``observability.instruments``), the Prometheus endpoint and
``docs/observability.md`` (generated from it, a test holds them equal) cannot drift apart.
Names follow Prometheus conventions (``_total`` counters, base units: seconds, bytes); the
``known_as`` column maps each to the Flink FLIP-33 / Kafka name operators already know.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge", "histogram"]

# Bounded buckets (seconds) for latencies: 1 ms .. 60 s, roughly 1-2-5 spaced.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
    60.0,
)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Kind
    labels: tuple[str, ...]
    description: str
    known_as: str = ""  # the FLIP-33 / Kafka name, for the docs
    unit: str = ""
    # prometheus_client multiprocess mode for gauges: "livemax"/"livesum" drop a dead
    # worker's series once ``mark_process_dead`` ran for it.
    multiprocess_mode: str = "livemax"
    buckets: tuple[float, ...] = LATENCY_BUCKETS_S


P = ("pipeline",)
OP = ("pipeline", "operator")
PART = ("pipeline", "source", "partition")

METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "dataflare_engine_records_in_total",
        "counter",
        P,
        "Records read from the pipeline's sources (valid and dead-lettered).",
        "numRecordsIn (task)",
    ),
    MetricSpec(
        "dataflare_engine_records_out_total",
        "counter",
        P,
        "Records written to the pipeline's sink (the output table's rows).",
        "numRecordsOut (sink)",
    ),
    MetricSpec(
        "dataflare_engine_batches_total",
        "counter",
        P,
        "Micro-batches taken from the sources.",
    ),
    MetricSpec(
        "dataflare_source_records_in_total",
        "counter",
        PART,
        "Records read per source partition.",
        "numRecordsIn per split / Kafka records-consumed-total",
    ),
    MetricSpec(
        "dataflare_source_records_lag",
        "gauge",
        PART,
        "Records between the partition's end and the next offset the pipeline processes.",
        "pendingRecords (FLIP-33) / Kafka records-lag",
    ),
    MetricSpec(
        "dataflare_operator_records_in_total",
        "counter",
        OP,
        "Rows handed to an operator.",
        "numRecordsIn (operator)",
    ),
    MetricSpec(
        "dataflare_operator_records_out_total",
        "counter",
        OP,
        "Rows an operator emitted.",
        "numRecordsOut (operator)",
    ),
    MetricSpec(
        "dataflare_operator_state_rows",
        "gauge",
        OP,
        "Rows an operator holds in its state (windows, joins, keyed state).",
        "state size",
        multiprocess_mode="livesum",
    ),
    MetricSpec(
        "dataflare_engine_late_records_total",
        "counter",
        OP,
        "Rows behind the watermark by more than the allowed lateness (side output 'late').",
        "numLateRecordsDropped",
    ),
    MetricSpec(
        "dataflare_engine_dead_letters_total",
        "counter",
        ("pipeline", "reason"),
        "Rows sent to dead letters, by reason: schema_mismatch, null_event_time,"
        " future_event_time, batch_rejected, expression_failed, step_failed.",
        "numRecordsInErrors",
    ),
    MetricSpec(
        "dataflare_engine_watermark_lag_seconds",
        "gauge",
        P,
        "Wall clock minus the pipeline's current watermark.",
        "watermarkLag (currentInputWatermark vs now)",
        unit="s",
    ),
    MetricSpec(
        "dataflare_engine_emit_event_time_lag_seconds",
        "gauge",
        P,
        "Wall clock minus the newest event time of the last batch processed.",
        "currentEmitEventTimeLag (FLIP-33)",
        unit="s",
    ),
    MetricSpec(
        "dataflare_engine_latency_seconds",
        "histogram",
        P,
        "End-to-end latency of a batch: read from the source to committed in the sink.",
        "latency (end to end)",
        unit="s",
    ),
    MetricSpec(
        "dataflare_engine_busy_seconds_total",
        "counter",
        P,
        "Time the operators spent processing (rate() = busy fraction).",
        "busyTimeMsPerSecond",
        unit="s",
    ),
    MetricSpec(
        "dataflare_engine_idle_seconds_total",
        "counter",
        P,
        "Time the operator thread waited for input (rate() = idle fraction).",
        "idleTimeMsPerSecond",
        unit="s",
    ),
    MetricSpec(
        "dataflare_engine_backpressured_seconds_total",
        "counter",
        ("pipeline", "stage"),
        "Time a stage was blocked on a full queue: stage=source (operators behind),"
        " stage=operators (sink behind).",
        "backPressuredTimeMsPerSecond",
        unit="s",
    ),
    MetricSpec(
        "dataflare_engine_checkpoints_total",
        "counter",
        P,
        "Checkpoints taken.",
        "numberOfCompletedCheckpoints",
    ),
    MetricSpec(
        "dataflare_engine_checkpoint_failures_total",
        "counter",
        ("pipeline", "phase"),
        "Checkpoints that failed: phase=snapshot (taking the operators' state) or commit"
        " (the sink's transaction with the output). The run stops; its retry resumes from"
        " the last checkpoint that committed.",
        "numberOfFailedCheckpoints",
    ),
    MetricSpec(
        "dataflare_engine_checkpoint_duration_seconds",
        "histogram",
        P,
        "Time to snapshot the operators' state for a checkpoint.",
        "lastCheckpointDuration",
        unit="s",
    ),
    MetricSpec(
        "dataflare_engine_checkpoint_state_bytes",
        "gauge",
        P,
        "In-memory size of the operator state in the last checkpoint.",
        "lastCheckpointSize",
        unit="By",
    ),
    MetricSpec(
        "dataflare_sink_commit_seconds",
        "histogram",
        P,
        "Time the sink took to commit output and checkpoint in one transaction.",
        "sink commit latency",
        unit="s",
    ),
)

PLUGIN_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "dataflare_plugin_calls_total",
        "counter",
        OP,
        "Calls into a WASM plugin (one per batch).",
        "Fluvio SmartModule invocations",
    ),
    MetricSpec("dataflare_plugin_rows_total", "counter", OP, "Rows handed to a WASM plugin."),
    MetricSpec(
        "dataflare_plugin_errors_total",
        "counter",
        OP,
        "Plugin calls that failed (trap, timeout, fuel, memory, ABI): the batch is"
        " dead-lettered with reason batch_rejected.",
    ),
    MetricSpec(
        "dataflare_plugin_seconds_total",
        "counter",
        OP,
        "Time spent in plugin calls, marshalling included.",
        unit="s",
    ),
)

LOG_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "dataflare_log_records_appended_total",
        "counter",
        ("topic", "partition"),
        "Records appended to the embedded event log (rate() = append rate).",
        "Kafka records-produced / log end offset growth",
    ),
    MetricSpec(
        "dataflare_log_records_read_total",
        "counter",
        ("topic", "partition"),
        "Records read from the embedded event log by consumers and pipelines (scan rate).",
        "Kafka records-consumed-total",
    ),
    MetricSpec(
        "dataflare_log_consumer_lag",
        "gauge",
        ("topic", "group", "partition"),
        "Records between the partition's end and a consumer group's committed offset, as"
        " of the group's last commit.",
        "Kafka consumer-group lag (records-lag)",
    ),
)

# Data lost, truncated, quarantined or skipped anywhere in the platform: each increase is
# also one WARNING log line with the same count (observability/logs.py, report_dropped).
DATA_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "dataflare_data_dropped_total",
        "counter",
        ("component", "reason"),
        "Records (or a log's offsets, or files) dropped, truncated or quarantined, each"
        " logged at WARNING with the count: engine dead_lettered/late, event_log"
        " segment_quarantined, landing file_quarantined.",
        "numRecordsInErrors + numLateRecordsDropped (all components)",
    ),
)

# Dagster runs take seconds to hours.
RUN_BUCKETS_S: tuple[float, ...] = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)

# The Dagster instance exporter (instance/exporter.py): the orchestrator's own health,
# read through the DagsterInstance API by one long-running process.
INSTANCE_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "dataflare_dagster_runs",
        "gauge",
        ("status",),
        "Runs now in a non-final status (QUEUED, NOT_STARTED, STARTING, STARTED, CANCELING).",
        "Kafka-style queue depth",
    ),
    MetricSpec(
        "dataflare_dagster_oldest_queued_run_age_seconds",
        "gauge",
        (),
        "Age of the oldest queued run (0 when none is queued).",
        unit="s",
    ),
    MetricSpec(
        "dataflare_dagster_runs_finished_total",
        "counter",
        ("job", "code_location", "status"),
        "Runs the exporter saw finish (SUCCESS, FAILURE, CANCELED) since it started.",
    ),
    MetricSpec(
        "dataflare_dagster_run_duration_seconds",
        "histogram",
        ("job", "code_location"),
        "Start to end of each finished run.",
        unit="s",
        buckets=RUN_BUCKETS_S,
    ),
    MetricSpec(
        "dataflare_dagster_tick_age_seconds",
        "gauge",
        ("instigator", "type"),
        "Time since the last tick of each running sensor or schedule (tick lag).",
        unit="s",
    ),
    MetricSpec(
        "dataflare_dagster_tick_failures_total",
        "counter",
        ("instigator", "type"),
        "Failed sensor or schedule ticks the exporter saw since it started.",
    ),
    MetricSpec(
        "dataflare_dagster_asset_checks_total",
        "counter",
        ("asset", "check", "outcome"),
        "Asset check evaluations the exporter saw since it started (outcome passed/failed;"
        " a failed check's severity is in Dagster).",
    ),
    MetricSpec(
        "dataflare_dagster_asset_materialization_age_seconds",
        "gauge",
        ("asset",),
        "Time since each asset's last materialization (compare with its freshness policy"
        " in an alert rule).",
        unit="s",
    ),
    MetricSpec(
        "dataflare_dagster_daemon_heartbeat_age_seconds",
        "gauge",
        ("daemon",),
        "Time since each Dagster daemon's last heartbeat.",
        unit="s",
    ),
)

METRICS = METRICS + PLUGIN_METRICS + LOG_METRICS + DATA_METRICS + INSTANCE_METRICS

# -- Connectors, plugin limits, governance, asset freshness (issue 18 §1, the rest) ------
# Kept as one block of additions: ``connector`` is one of nats, redis, postgres, log.
CONN = ("connector", "stream", "operation")

CONNECTOR_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "dataflare_connector_requests_total",
        "counter",
        (*CONN, "outcome"),
        "Round trips to a broker or database by operation (publish, append, fetch, claim,"
        " ack, commit), outcome ok or error; stream is the stream, topic or table.",
        "Kafka request-total",
    ),
    MetricSpec(
        "dataflare_connector_request_seconds",
        "histogram",
        CONN,
        "Latency of each round trip, from the request to the broker's answer.",
        "Kafka request-latency-avg/max",
        unit="s",
    ),
    MetricSpec(
        "dataflare_connector_redeliveries_total",
        "counter",
        ("connector", "stream"),
        "Messages delivered again because an earlier delivery was not acked in time (NATS"
        " num_delivered > 1; Redis entries re-read from the pending list or claimed).",
        "redelivered messages",
    ),
    MetricSpec(
        "dataflare_connector_acks_total",
        "counter",
        ("connector", "stream", "outcome"),
        "Messages settled with the broker, outcome ack; outcome nack for messages handed"
        " back for redelivery (no connector nacks today: unacked messages time out).",
        "acks / nacks",
    ),
)

PLUGIN_LIMIT_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "dataflare_plugin_deadline_hits_total",
        "counter",
        OP,
        "Plugin calls stopped at their deadline (epoch interruption; error kind timeout).",
    ),
    MetricSpec(
        "dataflare_plugin_fuel_hits_total",
        "counter",
        OP,
        "Plugin calls stopped when their fuel ran out (error kind fuel).",
    ),
    MetricSpec(
        "dataflare_plugin_memory_hits_total",
        "counter",
        OP,
        "Plugin calls that failed at the memory limit (error kind out_of_memory).",
    ),
    MetricSpec(
        "dataflare_plugin_pool_waits_total",
        "counter",
        OP,
        "Calls that waited for a plugin instance because all pool_size were busy.",
    ),
    MetricSpec(
        "dataflare_plugin_pool_wait_seconds_total",
        "counter",
        OP,
        "Time calls spent waiting for a plugin instance (rate() = pool contention).",
        unit="s",
    ),
    MetricSpec(
        "dataflare_plugin_restarts_total",
        "counter",
        OP,
        "Plugin instances thrown away after a failed call and rebuilt.",
    ),
)

GOVERNANCE_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "dataflare_quality_expectations_total",
        "counter",
        ("suite", "expectation", "outcome"),
        "Great Expectations expectations evaluated in the data plane (run_suite), outcome"
        " passed or failed.",
    ),
    MetricSpec(
        "dataflare_audit_entries_appended_total",
        "counter",
        ("action",),
        "Entries appended to the tamper-evident audit log, by action.",
    ),
    MetricSpec(
        "dataflare_alerts_total",
        "counter",
        ("rule", "event"),
        "Alert lifecycle events of the platform's alert manager: event fired (a new alert"
        " notified), repeated, escalated (next tier), acknowledged, resolved.",
    ),
    MetricSpec(
        "dataflare_alert_webhook_requests_total",
        "counter",
        ("outcome",),
        "Requests to the Alertmanager receiver (`dataflare alerts receive`): outcome"
        " accepted, error (the store failed: Alertmanager retries) or the refusal's reason"
        " (token, path, method, length, size, schema); audit_failed counts refusals whose"
        " audit entry could not be written.",
    ),
)

FRESHNESS_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "dataflare_dagster_asset_freshness_limit_seconds",
        "gauge",
        ("asset", "policy"),
        "The largest materialization age the asset's Dagster FreshnessPolicy allows now:"
        " fail_window (policy time_window), or now minus the last cron deadline's window"
        " start (policy cron).",
        unit="s",
    ),
    MetricSpec(
        "dataflare_dagster_asset_fresh",
        "gauge",
        ("asset",),
        "1 when the asset's last materialization is within its freshness policy's limit,"
        " 0 when overdue or never materialized.",
    ),
    MetricSpec(
        "dataflare_dagster_asset_overdue_seconds",
        "gauge",
        ("asset",),
        "Materialization age beyond the freshness policy's limit (0 while fresh).",
        unit="s",
    ),
)

# -- Plugin usage statistics (issue 20 §4), written when a usage window is flushed -------
# No pipeline or tenant label: both are unbounded; the event log keeps them.
PV = ("plugin", "version", "publisher")

PLUGIN_USAGE_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "dataflare_plugin_usage_calls_total",
        "counter",
        PV,
        "Calls into a plugin version, counted by its usage recorder (every pipeline and"
        " tenant; added at each flush of a usage window).",
    ),
    MetricSpec(
        "dataflare_plugin_usage_rows_total",
        "counter",
        PV,
        "Rows handed to a plugin version (usage recorder, at each flush).",
    ),
    MetricSpec(
        "dataflare_plugin_usage_errors_total",
        "counter",
        (*PV, "kind"),
        "Failed calls of a plugin version by error kind (timeout, fuel, trap, ...).",
    ),
    MetricSpec(
        "dataflare_plugin_usage_p99_seconds",
        "gauge",
        PV,
        "p99 call latency of the plugin version's last flushed usage window.",
        unit="s",
    ),
    MetricSpec(
        "dataflare_plugin_installs_total",
        "counter",
        PV,
        "Installs of a plugin version recorded as usage events.",
    ),
)

METRICS = (
    METRICS
    + CONNECTOR_METRICS
    + PLUGIN_LIMIT_METRICS
    + GOVERNANCE_METRICS
    + FRESHNESS_METRICS
    + PLUGIN_USAGE_METRICS
)

BY_NAME: dict[str, MetricSpec] = {m.name: m for m in METRICS}

# A plugin operator's own counters (``Plugin.stats`` as ``OperatorMetrics.own``) →
# the metric each is exported as.
PLUGIN_STATS: dict[str, str] = {
    "plugin_calls": "dataflare_plugin_calls_total",
    "plugin_rows": "dataflare_plugin_rows_total",
    "plugin_errors": "dataflare_plugin_errors_total",
    "plugin_seconds": "dataflare_plugin_seconds_total",
    "plugin_deadline_hits": "dataflare_plugin_deadline_hits_total",
    "plugin_fuel_hits": "dataflare_plugin_fuel_hits_total",
    "plugin_memory_hits": "dataflare_plugin_memory_hits_total",
    "plugin_pool_waits": "dataflare_plugin_pool_waits_total",
    "plugin_pool_wait_seconds": "dataflare_plugin_pool_wait_seconds_total",
    "plugin_restarts": "dataflare_plugin_restarts_total",
}


def markdown_table() -> str:
    """The metric list as the Markdown table of docs/observability.md."""
    lines = [
        "| Metric | Type | Labels | Meaning | Flink / Kafka name |",
        "|---|---|---|---|---|",
    ]
    for m in METRICS:
        labels = ", ".join(f"`{label}`" for label in m.labels)
        lines.append(f"| `{m.name}` | {m.kind} | {labels} | {m.description} | {m.known_as} |")
    return "\n".join(lines) + "\n"
