"""The Dagster instance exporter: the orchestrator's health as Prometheus metrics.

Dagster OSS has no metrics endpoint (dagster-io/dagster#4480) and ``dagster-prometheus``
can only push from inside ops, so queued or crashed runs never report. This exporter is
one long-running process (``dataflare metrics instance``) that reads the instance
through the ``DagsterInstance`` Python API (not the UI's GraphQL schema nor raw tables)
every ``interval`` seconds and records into the same multiprocess directory as the
workers, so ``dataflare metrics serve`` shows both. Its gauges are ``livemax``: when the
exporter dies its series disappear (absent, rather than frozen at a stale value).

Finished runs are counted once each: a collection reads the runs updated since the last
one (``RunsFilter(updated_after=...)``) with a small overlap, remembering the ids already
counted (bounded to the most recent ``_SEEN_MAX``).
"""

from __future__ import annotations

import time
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.definitions.freshness import (
    CronFreshnessPolicy,
    FreshnessPolicy,
    TimeWindowFreshnessPolicy,
)
from dagster._core.events import DagsterEventType
from dagster._core.scheduler.instigation import InstigatorStatus, TickStatus
from dagster._core.storage.dagster_run import RunsFilter
from dagster._time import get_timezone
from dagster._utils.schedules import get_latest_completed_cron_tick

from dataflare_platform.observability import Instruments

ACTIVE = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)
FINISHED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
_OVERLAP = timedelta(seconds=30)  # clock skew between run workers and this process
_SEEN_MAX = 10_000
_CHECKS_PER_PASS = 10_000


def freshness_policies(defs: dg.Definitions) -> dict[dg.AssetKey, FreshnessPolicy]:
    """Every asset's Dagster ``FreshnessPolicy`` (``AssetSpec(freshness_policy=...)``,
    or the pre-1.11 metadata form) in a code location's definitions.

    The instance stores materializations but not the policies: those live in code, so
    the exporter is handed them (``dataflare metrics instance --definitions``)."""
    policies = {}
    for node in defs.resolve_asset_graph().asset_nodes:
        policy = node.freshness_policy_or_from_metadata
        if policy is not None:
            policies[node.key] = policy
    return policies


def freshness_limit(policy: FreshnessPolicy, now: float) -> tuple[str, float] | None:
    """(policy kind, the largest materialization age the policy allows at ``now``).

    time_window: its ``fail_window``. cron: the asset must have materialized after the
    last completed deadline tick minus ``lower_bound_delta`` (Dagster's own evaluator,
    ``CronFreshnessPolicyEvaluator``), i.e. be at most ``now`` minus that instant old."""
    if isinstance(policy, TimeWindowFreshnessPolicy):
        return "time_window", policy.fail_window.to_timedelta().total_seconds()
    if isinstance(policy, CronFreshnessPolicy):
        current = datetime.fromtimestamp(now, get_timezone(policy.timezone))
        tick = get_latest_completed_cron_tick(policy.deadline_cron, current, policy.timezone)
        lower = tick - policy.lower_bound_delta
        return "cron", max(now - lower.timestamp(), 0.0)
    return None


class InstanceExporter:
    def __init__(
        self,
        instance: dg.DagsterInstance,
        instruments: Instruments,
        policies: Mapping[dg.AssetKey, FreshnessPolicy] | None = None,
    ) -> None:
        self.instance = instance
        self.i = instruments
        self.policies = dict(policies or {})
        self._since: datetime | None = None
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._tick_since: dict[str, float] = {}  # instigator selector id -> last tick seen
        self._check_cursor: int | None = None  # storage id of the last check evaluation

    def collect(self, now: float | None = None) -> None:
        """One pass over the instance; records gauges and the newly finished runs.
        ``now`` (epoch seconds, default the clock) is the instant ages are measured at."""
        now = time.time() if now is None else now
        runs = self.i["dataflare_dagster_runs"]
        for status in ACTIVE:
            count = self.instance.get_runs_count(RunsFilter(statuses=[status]))
            runs.record(count, (status.value,))
        oldest = self.instance.get_run_records(
            RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]), limit=1, ascending=True
        )
        age = now - oldest[0].create_timestamp.timestamp() if oldest else 0.0
        self.i["dataflare_dagster_oldest_queued_run_age_seconds"].record(max(age, 0.0), ())
        self._finished_runs()
        self._ticks(now)
        self._checks()
        self._freshness(now)
        heartbeat = self.i["dataflare_dagster_daemon_heartbeat_age_seconds"]
        for daemon, beat in self.instance.get_daemon_heartbeats().items():
            heartbeat.record(max(now - beat.timestamp, 0.0), (str(daemon),))

    def _finished_runs(self) -> None:
        started = datetime.now(UTC)
        filters = RunsFilter(
            statuses=list(FINISHED),
            updated_after=None if self._since is None else self._since - _OVERLAP,
        )
        finished = self.i["dataflare_dagster_runs_finished_total"]
        duration = self.i["dataflare_dagster_run_duration_seconds"]
        for record in self.instance.get_run_records(filters, ascending=True):
            run = record.dagster_run
            if run.run_id in self._seen:
                continue
            self._seen[run.run_id] = None
            if len(self._seen) > _SEEN_MAX:
                self._seen.popitem(last=False)
            origin = run.remote_job_origin
            location = origin.location_name if origin is not None else ""
            labels = (run.job_name, location)
            finished.record(1, (*labels, run.status.value))
            if record.start_time is not None and record.end_time is not None:
                duration.record(max(record.end_time - record.start_time, 0.0), labels)
        self._since = started

    def _ticks(self, now: float) -> None:
        """Tick lag of running sensors/schedules, and their failed ticks counted once."""
        if self.instance.schedule_storage is None:  # an ephemeral instance: no ticks
            return
        age = self.i["dataflare_dagster_tick_age_seconds"]
        failures = self.i["dataflare_dagster_tick_failures_total"]
        for state in self.instance.all_instigator_state(
            instigator_statuses={
                InstigatorStatus.RUNNING,
                InstigatorStatus.DECLARED_IN_CODE,
                InstigatorStatus.AUTOMATICALLY_RUNNING,
            }
        ):
            labels = (state.instigator_name, state.instigator_type.value)
            origin, selector = state.instigator_origin_id, state.selector_id
            (last,) = self.instance.get_ticks(origin, selector, limit=1) or (None,)
            if last is None:
                continue
            age.record(max(now - last.timestamp, 0.0), labels)
            since = self._tick_since.get(selector)
            failed = self.instance.get_ticks(
                origin, selector, after=since, statuses=[TickStatus.FAILURE]
            )
            # The first pass counts the failures already recorded, later passes the new.
            fresh = [t for t in failed if since is None or t.timestamp > since]
            if fresh:
                failures.record(len(fresh), labels)
            self._tick_since[selector] = last.timestamp

    def _checks(self) -> None:
        """Asset check evaluations recorded since the previous pass (event log storage ids
        only grow, so each is counted once); at most ``_CHECKS_PER_PASS`` per pass, the
        rest on the next."""
        # Deprecated for Dagster 2.0, and the only cursor-based read of every check's
        # evaluations: the per-check history needs the check keys, which only the code
        # locations know, not the instance. Pinned by test_exporter on 1.13.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Function `EventMethods.get_event_records`")
            records = self.instance.get_event_records(
                dg.EventRecordsFilter(
                    event_type=DagsterEventType.ASSET_CHECK_EVALUATION,
                    after_cursor=self._check_cursor,
                ),
                limit=_CHECKS_PER_PASS,
                ascending=True,
            )
        counter = self.i["dataflare_dagster_asset_checks_total"]
        for record in records:
            self._check_cursor = record.storage_id
            event = record.event_log_entry.dagster_event
            evaluation = event.event_specific_data if event is not None else None
            if evaluation is None:
                continue
            outcome = "passed" if evaluation.passed else "failed"
            asset = evaluation.asset_key.to_user_string()
            counter.record(1, (asset, evaluation.check_name, outcome))

    def _freshness(self, now: float) -> None:
        """Age of every materialized asset's last materialization (the asset records the
        instance keeps: one read, no event scan), and for assets with a freshness policy
        its limit, whether it is met and by how much it is overdue. An asset with a
        policy that never materialized is not fresh (its overdue seconds: the limit)."""
        age = self.i["dataflare_dagster_asset_materialization_age_seconds"]
        ages: dict[dg.AssetKey, float] = {}
        for record in self.instance.get_asset_records():
            last = record.asset_entry.last_materialization_record
            if last is not None:
                key = record.asset_entry.asset_key
                ages[key] = max(now - last.timestamp, 0.0)
                age.record(ages[key], (key.to_user_string(),))
        limit_gauge = self.i["dataflare_dagster_asset_freshness_limit_seconds"]
        fresh_gauge = self.i["dataflare_dagster_asset_fresh"]
        overdue_gauge = self.i["dataflare_dagster_asset_overdue_seconds"]
        for key, policy in self.policies.items():
            found = freshness_limit(policy, now)
            if found is None:
                continue
            kind, limit = found
            asset = key.to_user_string()
            limit_gauge.record(limit, (asset, kind))
            current = ages.get(key)
            overdue = limit if current is None else max(current - limit, 0.0)
            fresh = current is not None and current < limit
            fresh_gauge.record(1.0 if fresh else 0.0, (asset,))
            overdue_gauge.record(overdue, (asset,))

    def run_forever(self, interval_s: float, stop=None) -> None:
        """Collect every ``interval_s`` until ``stop`` (a ``threading.Event``) is set."""
        while stop is None or not stop.is_set():
            self.collect()
            if stop is None:
                time.sleep(interval_s)
            else:
                stop.wait(interval_s)


def run_exporter(
    interval_s: float, policies: Mapping[dg.AssetKey, FreshnessPolicy] | None = None
) -> None:
    """``dataflare metrics instance``: metrics on (whatever DATAFLARE_METRICS says: this
    process exists to export), the instance from $DAGSTER_HOME; ``policies`` are the
    freshness policies of the code location's assets (``freshness_policies``)."""
    from dataflare_platform import observability

    settings = observability.ObservabilitySettings.from_env().model_copy(update={"enabled": True})
    instruments = observability.configure(settings)
    assert instruments is not None
    with dg.DagsterInstance.get() as instance:
        InstanceExporter(instance, instruments, policies).run_forever(interval_s)
