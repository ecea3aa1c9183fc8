"""The ``<pipeline>_autoscaler`` sensor: sizes a pipeline's partition-parallel workers
from what they report, with ``streams.autoscaling`` deciding (the Flink autoscaler's
model: true processing rate from busy time, target rate from arrivals plus lag,
utilization bounds, alignment to the partitions, cool-downs).

Measurements are Dagster's own events: each worker run logs an ``AssetObservation`` of
the pipeline's asset at every ``log_interval_s`` (the sum of its partitions' checkpoint
reports: events read, mean busy seconds, lag, commit time), so the sensor reads them
from the instance with nothing else to run or store. Per running worker run it takes
the last two observations (``autoscaling.sample``), sums them (``measure``), decides
(``decide``), and applies a change the way ``dataflare scale`` does: terminate the
running worker runs (each stops gracefully: last batch, checkpoint, leases released) and
request N new ones, whose units wait for the leases. Every decision that changes N, or
says why it does not in a new way, is an ``AssetObservation`` of the pipeline with the
numbers behind it; every change is also an audit entry by ``sensor:<name>``. The cursor
keeps the last change's time (cool-down) and the last lag (arrival rate).
"""

import json
import time
from typing import Any

import dagster as dg

from dataflare_platform.defs.streams.continuous import IN_PROGRESS
from dataflare_platform.streams.autoscaling import ScalingDecision, decide, measure, sample
from dataflare_platform.streams.fields import ScalingPolicy
from dataflare_platform.streams.spec import PipelineSpec

MEASURE_KEY = "dataflare/worker_report"  # metadata key marking a worker's observation
DECISION_KEY = "dataflare/autoscaler"


def observation(
    key: dg.AssetKey, index: int, workers: int, partitions: int, reports: list[Any]
) -> dg.AssetObservation:
    """A worker run's measurement: its units' checkpoint reports summed (busy time as
    the mean over units: they share the run's process)."""
    report = {
        "index": index,
        "workers": workers,
        "partitions": partitions,
        "events_in": sum(r.events_in for r in reports),
        "busy_s": sum(r.busy_s for r in reports) / max(len(reports), 1),
        "lag_events": sum(r.lag_events for r in reports),
        "checkpoint_at": max(r.checkpoint_at for r in reports),
    }
    return dg.AssetObservation(asset_key=key, metadata={MEASURE_KEY: report})


class _Report:
    def __init__(self, values: dict[str, Any]) -> None:
        self.checkpoint_at = float(values["checkpoint_at"])
        self.events_in = int(values["events_in"])
        self.busy_s = float(values["busy_s"])
        self.lag_events = int(values["lag_events"])


def _reports(instance: dg.DagsterInstance, run_id: str, key: dg.AssetKey) -> list[dict]:
    found = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION):
        event = entry.dagster_event
        obs = event.asset_observation_data.asset_observation if event else None
        if obs is None or obs.asset_key != key or MEASURE_KEY not in obs.metadata:
            continue
        found.append(obs.metadata[MEASURE_KEY].value)
    return found


def autoscaler_definitions(
    spec: PipelineSpec, key: dg.AssetKey, job_name: str, policy: ScalingPolicy
) -> dg.Definitions:
    name = f"{spec.name}_autoscaler"
    op = f"run_{job_name}"

    @dg.sensor(
        name=name,
        job_name=job_name,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.STOPPED,
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
    running = instance.get_runs(dg.RunsFilter(job_name=job_name, statuses=IN_PROGRESS))
    samples, partitions = [], 0
    for run in running:
        reports = _reports(instance, run.run_id, key)
        if reports:
            partitions = max(partitions, int(reports[-1]["partitions"]))
        if len(reports) >= 2:
            got = sample(_Report(reports[-2]), _Report(reports[-1]))
            if got is not None:
                samples.append(got)
    if running and (len(samples) < len(running) or partitions == 0):
        state["waiting"] = "measurements"
        return dg.SensorResult(
            skip_reason=f"{len(samples)} of {len(running)} worker runs measured twice so far",
            cursor=json.dumps(state),
        )
    inputs = measure(samples, partitions or policy.max_workers, state.get("lag"))
    since = now - state["changed_at"] if "changed_at" in state else None
    decision = decide(inputs, policy, seconds_since_change=since)
    state["lag"] = inputs.lag_events
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
