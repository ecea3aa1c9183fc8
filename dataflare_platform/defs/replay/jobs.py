"""``replay_job``: the event layer's replay with typed run config, for the launchpad and
for programmatic launches (``dataflare launch replay_job --config replay.yaml``)."""

import dagster as dg
from pydantic import Field

from dataflare_platform.defs.plugins.resources import PluginRuntimeResource
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.errors import DataflareError
from dataflare_platform.events.log import EventLog
from dataflare_platform.plugins.specs import load_plugins, plugin_steps
from dataflare_platform.replay.factories import for_spec
from dataflare_platform.replay.run import DuckDBTarget, ReplayRequest, replay
from dataflare_platform.sql_names import SQL_IDENTIFIER
from dataflare_platform.streams.ranges import load_specs, topics_of


class ReplayConfig(dg.Config):
    """An event-time interval (``from_time``/``to_time``, ISO 8601, naive = UTC) or
    offset ranges (``offsets``: partition → [start, end]) of a shipped pipeline's topic,
    written over the pipeline's own table (idempotent) or into ``into_table``."""

    pipeline: str = Field(description="Name of a pipeline in dataflare_platform/pipelines.")
    from_time: str | None = None
    to_time: str | None = None
    offsets: dict[str, list[int]] = Field(default_factory=dict)
    into_table: str | None = Field(
        default=None,
        pattern=SQL_IDENTIFIER,
        max_length=120,
        description="Write here instead of overwriting the pipeline's table.",
    )


@dg.op(
    description="Re-run a pipeline over a range of its topics into its DuckDB output.",
    tags={"dataflare/kind": "replay"},
)
def replay_range(
    context: dg.OpExecutionContext,
    config: ReplayConfig,
    dataflare: ProjectHomeResource,
    plugins: PluginRuntimeResource,
) -> dg.Output:
    specs = {s.name: s for s in load_specs()}
    spec = specs.get(config.pipeline)
    if spec is None:
        raise dg.Failure(f"no pipeline {config.pipeline!r}; known: {', '.join(sorted(specs))}")
    if spec.sink.kind != "duckdb" or spec.sink.path is not None:
        raise dg.Failure(f"pipeline {spec.name!r}: replay writes platform DuckDB outputs only")
    home = dataflare.home
    target = DuckDBTarget(
        path=home.root / "streams" / f"{spec.name}.duckdb",
        table=config.into_table or spec.sink.table,
        overwrite=config.into_table is None,
    )
    topics = topics_of(spec)
    offsets = {int(p): (r[0], r[1] if len(r) > 1 else None) for p, r in config.offsets.items()}
    try:
        request = ReplayRequest(
            topic=next(iter(topics.values())) if len(topics) == 1 else topics,
            start=config.from_time,
            end=config.to_time,
            offsets=offsets or None,
            target=target,
        )
        loaded = load_plugins(spec, plugins.registry()) if plugin_steps(spec) else None
        result = replay(EventLog(home.event_log_dir), request, for_spec(spec, loaded))
    except (DataflareError, ValueError) as err:
        raise dg.Failure(str(err)) from err
    summary = result.as_dict()
    context.log.info(f"replayed {spec.name}: {summary}")
    return dg.Output(
        None,
        metadata={
            "events_read": result.events_read,
            "events_replayed": result.events_replayed,
            "rows_out": result.rows_out,
            "rows_discarded": result.rows_discarded,
            "late_events": result.late_events,
            "dead_letters": result.dead_letters,
            "replaced": result.replaced,
            "summary": dg.MetadataValue.json(summary),
        },
    )


@dg.job(description="Replay a range of a stream pipeline's topics (see ReplayConfig).")
def replay_job():
    replay_range()
