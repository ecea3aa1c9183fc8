"""Consumer lag of stream assets in Dagster: metadata, the ``lag`` check, and the
``stream_lag`` sensor that evaluates the check when no run happens.

Lag grows while nothing runs (a stopped sensor, a pipeline that falls behind, a producer
outpacing it), so a check evaluated only inside materializations would go quiet exactly
when it matters. Dagster 1.13 lets a sensor report check results without a run
(``SensorResult(asset_events=[AssetCheckEvaluation(...)])``, stored by the daemon
through ``report_runless_asset_event``); that is cheaper and closer to the data than a
check job launched on a schedule (a run per evaluation: seconds of overhead and a slot
in the stream's pool, to read a few file names). So:

- the ``lag`` check is an ``AssetCheckSpec`` of the stream asset: every run (sensor range
  or manual) evaluates it when it commits, against the sources' end *now*;
- the ``stream_lag`` sensor (running by default, at the topic observation cadence)
  computes every pipeline's lag from its sink's committed checkpoint and the event log
  (``streams.lag``) and reports an evaluation of the check whenever the inputs changed
  (source ends, checkpoint offsets or bounds; cursor: a digest per pipeline), so an idle
  pipeline over an idle topic writes nothing. While a run holds the sink's file (DuckDB
  has one writing process per file; a continuous run holds it all along), the sensor
  takes the checkpoint the asset's latest materialization recorded instead (its
  ``offsets``, and the processed event times of ``lag_per_partition`` when present;
  continuous runs record their progress as materializations with ``offsets``).

Bounds come from the pipeline's ``catalog.max_lag`` (``{events, seconds, severity}``);
without bounds the check reports the lag and passes.
"""

import hashlib
import json

import dagster as dg

from dataflare_platform.connectors.broker import BrokerError
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.engine.checkpoint import Checkpoint
from dataflare_platform.events.log import EventLog, TopicNotFoundError
from dataflare_platform.streams.lag import (
    CheckpointUnavailableError,
    PipelineLag,
    committed_checkpoint,
    pipeline_lag,
)
from dataflare_platform.streams.spec import PipelineSpec

LAG_CHECK = "lag"
LAG_SENSOR = "stream_lag"


def lag_check_spec(spec: PipelineSpec, key: dg.AssetKey) -> dg.AssetCheckSpec:
    bounds = spec.catalog.max_lag
    judged = []
    if bounds.events is not None:
        judged.append(f"at most {bounds.events} events")
    if bounds.seconds is not None:
        judged.append(f"at most {bounds.seconds:g} s of event time")
    what = " and ".join(judged) if judged else "no bound set: reported, never failed"
    return dg.AssetCheckSpec(
        LAG_CHECK,
        asset=key,
        description=(
            f"Consumer lag behind the sources' committed ends: {what} (catalog.max_lag)."
            f" Evaluated by every run and by the {LAG_SENSOR} sensor between runs."
        ),
    )


def lag_metadata(lag: PipelineLag) -> dict[str, dg.MetadataValue]:
    """Numbers plot in the UI; the per-partition figures are a JSON value."""
    metadata: dict[str, dg.MetadataValue] = {
        "lag_events": dg.MetadataValue.int(lag.events_behind),
        "lag_per_partition": dg.MetadataValue.json(lag.per_partition()),
    }
    if lag.seconds_behind is not None:
        metadata["lag_seconds"] = dg.MetadataValue.float(lag.seconds_behind)
    return metadata


def _verdict(spec: PipelineSpec, lag: PipelineLag) -> tuple[bool, str, dict]:
    bounds = spec.catalog.max_lag
    over = []
    if bounds.events is not None and lag.events_behind > bounds.events:
        over.append(f"{lag.events_behind} events behind > max_lag.events {bounds.events}")
    seconds = lag.seconds_behind
    if bounds.seconds is not None and seconds is not None and seconds > bounds.seconds:
        over.append(f"{seconds:g} s behind > max_lag.seconds {bounds.seconds:g}")
    limits = {
        "max_lag_events": bounds.events if bounds.events is not None else "none",
        "max_lag_seconds": bounds.seconds if bounds.seconds is not None else "none",
    }
    text = "; ".join(over) or f"{lag.events_behind} events, {seconds or 0:g} s behind"
    return not over, text, limits


def _severity(spec: PipelineSpec) -> dg.AssetCheckSeverity:
    if spec.catalog.max_lag.severity == "error":
        return dg.AssetCheckSeverity.ERROR
    return dg.AssetCheckSeverity.WARN


def lag_check_result(spec: PipelineSpec, lag: PipelineLag) -> dg.AssetCheckResult:
    """The check's result as a run reports it."""
    passed, text, limits = _verdict(spec, lag)
    return dg.AssetCheckResult(
        check_name=LAG_CHECK,
        passed=passed,
        severity=_severity(spec),
        description=text,
        metadata={**lag_metadata(lag), **limits},
    )


def lag_evaluation(
    spec: PipelineSpec, key: dg.AssetKey, lag: PipelineLag
) -> dg.AssetCheckEvaluation:
    """The same result as a runless evaluation, as the sensor reports it."""
    passed, text, limits = _verdict(spec, lag)
    return dg.AssetCheckEvaluation(
        asset_key=key,
        check_name=LAG_CHECK,
        passed=passed,
        severity=_severity(spec),
        description=text,
        metadata={**lag_metadata(lag), **limits, "evaluated_by": LAG_SENSOR},
    )


def _digest(spec: PipelineSpec, lag: PipelineLag) -> str:
    """Everything the evaluation depends on: ends, checkpoint offsets, processed times
    and the bounds (event times do not move with the clock, so equal inputs mean an
    equal result)."""
    inputs = [
        [p.key, p.end_offset, p.checkpoint_offset, p.processed_event_ms, p.newest_event_ms]
        for p in lag.partitions
    ]
    payload = json.dumps([inputs, spec.catalog.max_lag.model_dump()], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def recorded_checkpoint(instance: dg.DagsterInstance, key: dg.AssetKey) -> Checkpoint | None:
    """The checkpoint the asset's latest materialization recorded (offsets, and the
    newest processed event time per partition when its metadata has them), or None."""
    event = instance.get_latest_materialization_event(key)
    materialization = event.asset_materialization if event is not None else None
    if materialization is None or "offsets" not in materialization.metadata:
        return None
    offsets = {k: int(v) for k, v in materialization.metadata["offsets"].value.items()}
    partitions = materialization.metadata.get("lag_per_partition")
    figures = partitions.value if partitions is not None else {}
    processed = {
        k: int(v["processed_event_ms"])
        for k, v in figures.items()
        if v.get("processed_event_ms") is not None
    }
    return Checkpoint(offsets=offsets, watermark={"max_seen": processed})


def _checkpoint(
    spec: PipelineSpec, key: dg.AssetKey, default_dir, instance: dg.DagsterInstance | None
) -> Checkpoint | None:
    try:
        return committed_checkpoint(spec, default_dir)
    except CheckpointUnavailableError:
        recorded = recorded_checkpoint(instance, key) if instance is not None else None
        if recorded is None:
            raise
        return recorded


def lag_evaluations(
    specs: list[PipelineSpec],
    keys: dict[str, dg.AssetKey],
    log: EventLog,
    default_dir,
    seen: dict[str, str],
    instance: dg.DagsterInstance | None = None,
) -> tuple[list[dg.AssetCheckEvaluation], dict[str, str], list[str]]:
    """Evaluations for the pipelines whose lag inputs changed since ``seen`` (pipeline →
    digest), the digests to remember, and why others were left out. ``instance`` gives
    the recorded checkpoint of a pipeline whose sink is busy."""
    evaluations, digests, notes = [], dict(seen), []
    for spec in specs:
        try:
            checkpoint = _checkpoint(spec, keys[spec.name], default_dir, instance)
            lag = pipeline_lag(spec, log, checkpoint)
        except CheckpointUnavailableError as err:
            notes.append(f"{err}; no materialization recorded a checkpoint either")
            continue
        except (TopicNotFoundError, BrokerError) as err:
            notes.append(f"pipeline {spec.name!r}: source not there yet ({err})")
            continue
        digest = _digest(spec, lag)
        if seen.get(spec.name) == digest:
            continue
        evaluations.append(lag_evaluation(spec, keys[spec.name], lag))
        digests[spec.name] = digest
    return evaluations, digests, notes


def lag_sensor(
    specs: list[PipelineSpec], keys: dict[str, dg.AssetKey], interval_s: int
) -> dg.SensorDefinition:
    @dg.sensor(
        name=LAG_SENSOR,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Evaluates each stream asset's lag check between runs (no run launched): the"
            " sink's committed checkpoint against the sources' ends, reported when either moved."
        ),
    )
    def stream_lag(context: dg.SensorEvaluationContext, dataflare: ProjectHomeResource):
        seen = json.loads(context.cursor) if context.cursor else {}
        home = dataflare.home
        evaluations, digests, notes = lag_evaluations(
            specs, keys, EventLog(home.event_log_dir), home.root / "streams", seen, context.instance
        )
        for note in notes:
            context.log.info(note)
        if not evaluations:
            return dg.SkipReason(
                "lag unchanged since the last tick" + "".join(f"; {n}" for n in notes)
            )
        return dg.SensorResult(asset_events=evaluations, cursor=json.dumps(digests, sort_keys=True))

    return stream_lag
