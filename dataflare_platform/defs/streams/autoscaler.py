"""The ``<pipeline>_autoscaler`` sensor: sizes a pipeline's partition-parallel workers
from what they report, with ``streams.autoscaling`` deciding (the Flink autoscaler's
model: true processing rate from busy time, target rate from arrivals plus lag,
utilization bounds, alignment to the partitions, cool-downs).

Measurements are Dagster's own events: each worker run logs an ``AssetObservation`` of
the pipeline's asset twice per ``interval_s`` of its policy (its partitions' latest
checkpoint reports, each with the time its numbers describe: events read, busy seconds,
lag), so the sensor reads them from the instance with nothing else to run or store. Per
running worker run it diffs each unit's numbers in its last observations
(``run_sample``: ``autoscaling.sample`` per unit, over the unit's own times, ``combine``
per run), sums the runs (``measure``), decides (``decide``), and applies a change the
way ``dataflare scale`` does: terminate the running worker runs (each stops gracefully:
last batch, checkpoint, leases released) and request N new ones, whose units wait for
the leases. Every decision that changes N, or says why it does not in a new way, is an
``AssetObservation`` of the pipeline with the numbers behind it; every change is also an
audit entry by ``sensor:<name>``. The cursor keeps the last change's time (cool-down)
and the last reason recorded.
"""

import json
import time
from typing import Any

import dagster as dg

from dataflare_platform.defs.streams.continuous import (
    IN_PROGRESS,
    MAX_RETRIES_TAG,
    single_runs_in_progress,
)
from dataflare_platform.streams.autoscaling import (
    ScalingDecision,
    WorkerSample,
    combine,
    decide,
    measure,
    sample,
)
from dataflare_platform.streams.fields import ScalingPolicy
from dataflare_platform.streams.spec import PipelineSpec

MEASURE_KEY = "dataflare/worker_report"  # metadata key marking a worker's observation
DECISION_KEY = "dataflare/autoscaler"


def observation(
    key: dg.AssetKey,
    index: int,
    workers: int,
    partitions: int,
    units: dict[int, Any],
    now: float | None = None,
) -> dg.AssetObservation:
    """A worker run's measurement now, from its units' latest checkpoint reports (by
    partition). Each unit's numbers carry the time they describe: its checkpoint's, or
    now when it has read nothing since (a quiet stream commits no checkpoint, and its
    counters standing still over time is what shows the worker idle). The run's sums
    (busy time as the mean over units: they share the run's process) are for reading;
    the sensor diffs each unit over its own times (``autoscaling.combine``)."""
    now = time.time() if now is None else now
    reports = list(units.values())
    report = {
        "at": now,
        "index": index,
        "workers": workers,
        "partitions": partitions,
        "events_in": sum(r.events_in for r in reports),
        "busy_s": sum(r.busy_s for r in reports) / max(len(reports), 1),
        "lag_events": sum(r.lag_events for r in reports),
        "units": {
            str(p): {
                "at": now if r.read_since() == 0 else r.checkpoint_at,
                "events_in": r.events_in,
                "busy_s": r.busy_s,
                "lag_events": r.lag_events,
            }
            for p, r in units.items()
        },
    }
    return dg.AssetObservation(asset_key=key, metadata={MEASURE_KEY: report})


class _Report:
    def __init__(self, values: dict[str, Any]) -> None:
        self.checkpoint_at = float(values["at"])
        self.events_in = int(values["events_in"])
        self.busy_s = float(values["busy_s"])
        self.lag_events = int(values["lag_events"])


MEASUREMENTS_READ = 8  # per run and tick: how far back a unit's previous checkpoint is sought


def _reports(instance: dg.DagsterInstance, run_id: str, key: dg.AssetKey) -> list[dict]:
    """The run's last few measurements, oldest first (read newest first with a limit: a
    worker run lives for days and logs one every few seconds)."""
    found: list[dict] = []
    records = instance.get_records_for_run(
        run_id,
        of_type=dg.DagsterEventType.ASSET_OBSERVATION,
        limit=2 * MEASUREMENTS_READ,
        ascending=False,
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        obs = event.asset_observation_data.asset_observation if event else None
        if obs is None or obs.asset_key != key or MEASURE_KEY not in obs.metadata:
            continue
        found.append(obs.metadata[MEASURE_KEY].value)
        if len(found) == MEASUREMENTS_READ:
            break
    return found[::-1]


def run_sample(measurements: list[dict]) -> WorkerSample | None:
    """What a worker run did lately, from its measurements (oldest first): per unit, from
    its numbers in the newest one back to the latest earlier ones with an older time (a
    unit that read but has not committed since the previous measurement is diffed
    against the one before). None while any unit has no such pair yet, or restarted."""
    if len(measurements) < 2:
        return None
    latest = measurements[-1]
    if "units" not in latest:  # a worker of a release before per-unit times
        return sample(_Report(measurements[-2]), _Report(latest))
    units = []
    for partition, values in latest["units"].items():
        later = _Report(values)
        for older in reversed(measurements[:-1]):
            before = older.get("units", {}).get(partition)
            if before is None:
                return None  # the unit started since: not measured twice yet
            if float(before["at"]) < later.checkpoint_at:
                got = sample(_Report(before), later)
                if got is None:
                    return None
                units.append(got)
                break
        else:
            return None
    return combine(units)


def autoscaler_definitions(
    spec: PipelineSpec, key: dg.AssetKey, job_name: str, policy: ScalingPolicy
) -> dg.Definitions:
    name = f"{spec.name}_autoscaler"
    op = f"run_{job_name}"

    @dg.sensor(
        name=name,
        job_name=job_name,
        minimum_interval_seconds=max(1, round(policy.interval_s)),
        # Declaring ``autoscaling:`` is asking for it: on by default, as the pipeline's
        # micro-batch sensor is off by default then (defs/streams/factory.py).
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Sizes {spec.name}'s partition-parallel workers from their reports"
            " (streams.autoscaling); decisions are observations of its asset and audited."
        ),
    )
    def autoscaler(
        context: dg.SensorEvaluationContext,
        governance: dg.ResourceParam[Any],  # GovernanceResource (defs.governance imports us)
    ) -> dg.SensorResult:
        return evaluate(context, governance, spec, key, job_name, op, policy, name)

    return dg.Definitions(sensors=[autoscaler])


def evaluate(
    context: dg.SensorEvaluationContext,
    governance: Any,
    spec: PipelineSpec,
    key: dg.AssetKey,
    job_name: str,
    op: str,
    policy: ScalingPolicy,
    name: str,
) -> dg.SensorResult:
    instance = context.instance
    state = json.loads(context.cursor) if context.cursor else {}
    now = time.time()
    single = single_runs_in_progress(instance, spec)
    if single:  # workers would refuse to start beside it (defs/streams/workers.py)
        return dg.SensorResult(
            skip_reason=f"{spec.name} runs as one run ({', '.join(single)}), not as workers",
            cursor=context.cursor,
        )
    running = instance.get_runs(dg.RunsFilter(job_name=job_name, statuses=IN_PROGRESS))
    refused = None if running else _refused(instance, job_name)
    if refused is not None:  # starting more would only be refused again, every tick
        return dg.SensorResult(
            skip_reason=(
                f"the last worker run {refused} was refused (its log says why); once that"
                f" is fixed, `dataflare scale {spec.name} N` starts workers again"
            ),
            cursor=context.cursor,
        )
    samples, partitions = [], 0
    for run in running:
        reports = _reports(instance, run.run_id, key)
        if reports:
            partitions = max(partitions, int(reports[-1]["partitions"]))
        got = run_sample(reports)
        if got is not None:
            samples.append(got)
    if running and (len(samples) < len(running) or partitions == 0):
        state["waiting"] = "measurements"
        return dg.SensorResult(
            skip_reason=f"{len(samples)} of {len(running)} worker runs measured twice so far",
            cursor=json.dumps(state),
        )
    inputs = measure(samples, partitions or policy.max_workers)
    since = now - state["changed_at"] if "changed_at" in state else None
    decision = decide(inputs, policy, seconds_since_change=since)
    events: list[dg.AssetObservation] = []
    if decision.changes or decision.reason.split(":")[0] != state.get("reason"):
        state["reason"] = decision.reason.split(":")[0]
        events.append(_recorded(key, decision, inputs))
    if not decision.changes:
        return dg.SensorResult(
            asset_events=events, skip_reason=decision.reason, cursor=json.dumps(state)
        )
    for run in running:  # graceful: each finishes its batch, checkpoints, releases
        instance.run_coordinator.cancel_run(run.run_id)
    state["changed_at"] = now
    with governance.audit_log() as audit:
        audit.append(
            f"sensor:{name}",
            "workers_rescaled",
            f"pipeline:{spec.name}",
            {"from": decision.current, "to": decision.workers, "reason": decision.reason},
        )
    requests = [
        dg.RunRequest(
            run_key=f"{name}-{int(now * 1000)}-{i}",
            run_config={"ops": {op: {"config": {"workers": decision.workers, "index": i}}}},
            tags={"dataflare/autoscaled": "true"},
        )
        for i in range(decision.workers)
    ]
    return dg.SensorResult(run_requests=requests, asset_events=events, cursor=json.dumps(state))


def _refused(instance: dg.DagsterInstance, job_name: str) -> str | None:
    """The newest worker run, if it failed and opted out of its retries: a worker
    refusing to start (defs/streams/workers.py ``_refuse``) for a reason that relaunching
    does not change (state that cannot be split by partition, too many workers, ...)."""
    newest = instance.get_runs(dg.RunsFilter(job_name=job_name), limit=1)
    if not newest:
        return None
    run = newest[0]
    if run.status == dg.DagsterRunStatus.FAILURE and run.tags.get(MAX_RETRIES_TAG) == "0":
        return run.run_id
    return None


def _recorded(key: dg.AssetKey, decision: ScalingDecision, inputs: Any) -> dg.AssetObservation:
    return dg.AssetObservation(
        asset_key=key,
        metadata={
            DECISION_KEY: {
                **decision.as_dict(),
                "arrival_rate": round(inputs.arrival_rate, 3),
                "processed_rate": round(inputs.processed_rate, 3),
                "busy_ratio": round(inputs.busy_ratio, 4),
                "lag_events": inputs.lag_events,
                "partitions": inputs.partitions,
            }
        },
    )
