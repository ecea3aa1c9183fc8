"""Dagster definitions made from declarative pipelines: adding a YAML file adds a
pipeline, with no Python code.

For each pipeline: source topics as observable external assets (``topics.py``: a sensor
reports an observation whenever producers append), the output as an asset that runs
the pipeline over an offset range of its sources (run config ``until``; topic, NATS,
Redis and file sources, see ``connectors.registry``), a job selecting it, and a sensor
whose cursor is the last range it requested (none with ``catalog.micro_batch: false``).
Each request has a run key made of that range, so a repeated tick never launches it
twice, and the engine's checkpoint (committed with the output) makes an overlapping range
process nothing twice. The sensor requests nothing while the pipeline runs continuously
(``<name>_continuous``, see ``continuous.py``) or as worker runs (``<name>_workers``): all
write the same output and checkpoint; its skip reason names which, with the run ids.
Nor does it request a range the checkpoint already covers (``covered_offsets``: the
offsets the asset's latest materialization recorded, by a micro-batch, continuous or demo
run), so a fresh sensor cursor over processed topics launches no empty run.

The job runs in process: one asset per run, then its checks, one after the other; the
multiprocess executor (the code location's default, ``defs/pools.py``) would start a
process per step that loads the code location again (seconds each, every run).

``sensor_interval_s`` overrides every pipeline's ``catalog.sensor_interval`` (the code
location passes ``DATAFLARE_SENSOR_INTERVAL`` when set, e.g. for tests and demos).
"""

import json
import time

import dagster as dg
from opentelemetry.trace import SpanKind
from pydantic import Field

from dataflare_platform.defs.metadata import PLUGINS, column_schema
from dataflare_platform.defs.plugins.resources import PluginRuntimeResource
from dataflare_platform.defs.pools import stream_pool
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.defs.streams.continuous import (
    continuous_definitions,
    micro_batch_skip_reason,
)
from dataflare_platform.defs.streams.lag import (
    lag_check_result,
    lag_check_spec,
    lag_metadata,
    lag_sensor,
)
from dataflare_platform.defs.streams.topics import (
    DEFAULT_OBSERVATION_INTERVAL_S,
    topic_key,
    topic_observation_definitions,
)
from dataflare_platform.defs.streams.workers import partitioned_sources, worker_definitions
from dataflare_platform.engine.durations import to_ms
from dataflare_platform.events.log import EventLog
from dataflare_platform.observability import tracing
from dataflare_platform.plugins.specs import load_plugins, plugin_steps
from dataflare_platform.streams.lag import has_lag, pipeline_lag
from dataflare_platform.streams.ranges import (
    output_schema,
    pending_range,
    run_range,
    source_ends,
    topics_of,
)
from dataflare_platform.streams.spec import PipelineSpec

TOPICS_GROUP = "topics"


class StreamRange(dg.Config):
    """End offset per ``source/partition`` to process up to; empty means everything
    committed to the sources when the run starts."""

    until: dict[str, int] = Field(default_factory=dict)


def output_key(spec: PipelineSpec) -> dg.AssetKey:
    return dg.AssetKey(["streams", spec.name])


def topic_specs(specs: list[PipelineSpec]) -> list[dg.AssetSpec]:
    topics = sorted({t for spec in specs for t in topics_of(spec).values()})
    return [
        dg.AssetSpec(
            topic_key(t),
            group_name=TOPICS_GROUP,
            kinds={"dataflare"},
            description=(
                f"Topic {t!r} of the embedded event log, appended by producers and"
                " observed by the topic_observations sensor (end offsets, newest event)."
            ),
        )
        for t in topics
    ]


def _sensor_interval_s(spec: PipelineSpec) -> int:
    return max(1, to_ms(spec.catalog.sensor_interval) // 1000)


# Dagster kind tags (icons in the UI) of the sink kinds that have one.
_SINK_TAGS = {"duckdb": "duckdb", "file": "parquet", "parquet_dataset": "parquet"}
_SINK_TAGS |= {"postgres": "postgres", "topic": "dataflare", "discard": "dataflare"}


def _kinds(spec: PipelineSpec) -> set[str]:
    kinds = {"polars", _SINK_TAGS[spec.sink.kind]}
    if plugin_steps(spec):
        kinds.add("wasm")
    return kinds


def _run_metadata(result, seconds: float) -> dict[str, object]:
    """Numeric values, so the UI plots them run after run (the lag comes separately:
    against the sources' ends now, not the range the run was given)."""
    m = result.metrics
    counts = m.this_run()
    latency = m.latency.summary()
    return {
        "events_in": counts["events_in"],
        "events_out": counts["events_out"],
        "dead_lettered": counts["dead_letters"],
        "late_events": counts["late_events"],
        "events_per_s": round(counts["events_in"] / seconds, 1) if seconds > 0 else 0.0,
        "p99_batch_ms": latency["p99_ms"] or 0.0,
        "watermark_ms": m.watermark_ms or 0,
        "events_in_total": m.events_in,
        "offsets": dg.MetadataValue.json(result.checkpoint.offsets),
    }


def covered_offsets(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, int]:
    """End offset per ``source/partition`` that the pipeline's checkpoint covers, as the
    asset's latest materialization recorded it (``offsets``: micro-batch, continuous and
    demo runs all record it); empty before the first one. Read from the instance, not
    from the sink: a running pipeline holds its DuckDB file, which no other process may
    open meanwhile, and every sink kind is covered alike."""
    event = instance.get_latest_materialization_event(key)
    materialization = event.asset_materialization if event else None
    value = materialization.metadata.get("offsets") if materialization else None
    offsets = getattr(value, "data", None)
    if not isinstance(offsets, dict):
        return {}
    return {k: int(v) for k, v in offsets.items() if isinstance(v, int)}


def pipeline_definitions(
    spec: PipelineSpec, sensor_interval_s: int | None = None
) -> dg.Definitions:
    key = output_key(spec)
    catalog = spec.catalog
    interval_s = sensor_interval_s or _sensor_interval_s(spec)

    @dg.asset(
        key=key,
        pool=stream_pool(spec.name),
        deps=[topic_key(t) for t in topics_of(spec).values()],
        group_name=catalog.group,
        owners=catalog.owners or None,
        tags=catalog.tags or None,
        kinds=_kinds(spec),
        description=catalog.description or f"Pipeline {spec.name!r} (declarative).",
        check_specs=[
            dg.AssetCheckSpec(
                "dead_letter_rate",
                asset=key,
                description=(
                    "Share of the run's events dead-lettered, at most"
                    f" {catalog.max_dead_letter_rate:.2%} (catalog.max_dead_letter_rate)."
                ),
            ),
            *([lag_check_spec(spec, key)] if has_lag(spec) else []),
        ],
    )
    def stream_output(
        context: dg.AssetExecutionContext,
        config: StreamRange,
        dataflare: ProjectHomeResource,
        plugins: PluginRuntimeResource,
    ) -> dg.MaterializeResult:
        home = dataflare.home
        log = EventLog(home.event_log_dir)
        until = config.until or source_ends(spec, log)
        loaded = load_plugins(spec, plugins.registry()) if plugin_steps(spec) else None
        started = time.perf_counter()
        # Inside the step's span (instance/run_spans.py): the engine's spans nest below.
        result = run_range(spec, log, until, home.root / "streams", plugins=loaded)
        seconds = time.perf_counter() - started
        context.log.info(f"{spec.name}: {json.dumps(result.metrics.this_run())} up to {until}")
        metadata = _run_metadata(result, seconds)
        lag = pipeline_lag(spec, log, result.checkpoint) if has_lag(spec) else None
        if lag is not None:
            metadata.update(lag_metadata(lag))
        if loaded:
            # Which module each plugin step ran, recorded by the audit trail.
            metadata[PLUGINS] = dg.MetadataValue.json(
                {f"{p.name}@{step}": p.sha256 for step, p in loaded.items()}
            )
        schema = output_schema(spec, home.root / "streams")
        if schema is not None:
            metadata["dagster/column_schema"] = column_schema(schema)
        counts = result.metrics.this_run()
        rate = counts["dead_letters"] / counts["events_in"] if counts["events_in"] else 0.0
        check = dg.AssetCheckResult(
            check_name="dead_letter_rate",
            passed=rate <= catalog.max_dead_letter_rate,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "dead_letter_rate": rate,
                "dead_lettered": counts["dead_letters"],
                "events_in": counts["events_in"],
                "max_dead_letter_rate": catalog.max_dead_letter_rate,
            },
        )
        checks = [check] if lag is None else [check, lag_check_result(spec, lag)]
        return dg.MaterializeResult(metadata=metadata, check_results=checks)

    # In process: no child process per step loading the code location again.
    job = dg.define_asset_job(
        f"{spec.name}_job", selection=[key], executor_def=dg.in_process_executor
    )
    op_name = key.to_python_identifier()

    # A pipeline declared with ``autoscaling:`` runs as workers its autoscaler sizes
    # (running by default): a micro-batch run beside them would make them refuse, and
    # once they have taken over (``streams.split``) it refuses itself. Its ranges can
    # still be turned on by hand.
    @dg.sensor(
        name=f"{spec.name}_sensor",
        job=job,
        minimum_interval_seconds=interval_s,
        default_status=(
            dg.DefaultSensorStatus.STOPPED
            if spec.autoscaling is not None
            else dg.DefaultSensorStatus.RUNNING
        ),
        description=f"Requests a run of {spec.name} for each new range of its topics.",
    )
    def stream_sensor(context: dg.SensorEvaluationContext, dataflare: ProjectHomeResource):
        standing_aside = micro_batch_skip_reason(context.instance, spec)
        if standing_aside is not None:
            return dg.SkipReason(standing_aside)
        requested = json.loads(context.cursor) if context.cursor else {}
        done = covered_offsets(context.instance, key)
        seen = {k: max(requested.get(k, 0), done.get(k, 0)) for k in requested.keys() | done}
        ends = pending_range(spec, EventLog(dataflare.home.event_log_dir), seen)
        if ends is None:
            return dg.SkipReason("no new events in " + ", ".join(sorted(spec.sources)))
        context.update_cursor(json.dumps(ends, sort_keys=True))
        run_key = spec.name + ":" + ",".join(f"{k}={v}" for k, v in sorted(ends.items()))
        tags = {"dataflare/pipeline": spec.name, "dataflare/trigger": "sensor"}
        # The tick that decides the run is the trace's root (traces on): the run continues
        # it from the tag (instance/run_spans.py).
        with tracing.continued(
            f"dataflare.sensor {spec.name}_sensor",
            attributes={"dataflare.pipeline": spec.name, "dagster.run_key": run_key},
            kind=SpanKind.PRODUCER,
        ):
            tags = tracing.inject(tags)
        tracing.flush()
        return dg.RunRequest(
            run_key=run_key,
            run_config={"ops": {op_name: {"config": {"until": ends}}}},
            tags=tags,
        )

    # Sensor ranges only where every source has readable end offsets (the spec refuses
    # micro_batch over other kinds); the continuous job is there for every pipeline.
    sensors = [stream_sensor] if catalog.micro_batch else []
    parts = [
        dg.Definitions(assets=[stream_output], jobs=[job], sensors=sensors),
        continuous_definitions(spec, key),
    ]
    if partitioned_sources(spec):  # partitioned sources: it may also run as workers
        parts.append(worker_definitions(spec, key))
    return dg.Definitions.merge(*parts)


def topic_definitions(
    specs: list[PipelineSpec], sensor_interval_s: int | None = None
) -> dg.Definitions:
    """The topics ``specs`` read, once for all of them (pipelines share topics): observable
    assets and the topic_observations sensor, which observes as often as the most eager
    pipeline reading them looks; and the stream_lag sensor evaluating every pipeline's lag
    check at the same cadence. What the streams domain adds beside the components."""
    observe_s = sensor_interval_s or min(
        (_sensor_interval_s(s) for s in specs), default=DEFAULT_OBSERVATION_INTERVAL_S
    )
    topics = topic_observation_definitions(topic_specs(specs), observe_s)
    lagging = [s for s in specs if has_lag(s)]
    if not lagging:
        return topics
    keys = {s.name: output_key(s) for s in lagging}
    return dg.Definitions.merge(
        topics, dg.Definitions(sensors=[lag_sensor(lagging, keys, observe_s)])
    )


def stream_definitions(
    specs: list[PipelineSpec], sensor_interval_s: int | None = None
) -> dg.Definitions:
    return dg.Definitions.merge(
        topic_definitions(specs, sensor_interval_s),
        *(pipeline_definitions(s, sensor_interval_s) for s in specs),
    )
