"""Topics as observable external assets: Dagster learns when producers append to them.

Producers write topics outside Dagster, so nothing materializes a ``topics/<topic>``
asset. Without events on them, automation conditions downstream (``on_cron`` waits for
its deps to update) and freshness checks see nothing happen, ever. So:

- every topic is an *observable* source asset (one ``@multi_observable_source_asset``
  for all of them, subsettable: "Observe" in the UI works per topic). Dagster 1.13 counts
  an observation of such an asset as an update only when its data version changed
  (``CachingInstanceQueryer._asset_partition_versions_updated_after_cursor``); for a
  plain ``AssetSpec`` (unexecutable) it ignores observations entirely;
- the ``topic_observations`` sensor (running by default) reads every topic's state each
  tick and reports an observation only for a topic whose end offsets moved since its
  cursor (topic → data version), so an idle topic writes nothing to the event log and
  no run is launched for observing.

The data version is a digest of the committed end offsets (so it moves only when events
are appended, never on retention or compaction); the metadata carries the end offsets,
event counts, bytes stored (in total, an integer the UI plots, and per partition in a
table), the newest event time, and ``dagster/last_updated_timestamp`` (the wall-clock
time of the last append), which Dagster's last-update freshness checks read from
observations.
"""

import json
import warnings

import dagster as dg

from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.events.log import EventLog
from dataflare_platform.events.topic_state import TopicState, topic_state, topic_states

TOPIC_OBSERVATIONS_SENSOR = "topic_observations"
DEFAULT_OBSERVATION_INTERVAL_S = 30
# Tag and metadata keys Dagster reads (dagster._core.definitions.data_version and
# asset_check_factories.utils; not re-exported by ``dagster``).
DATA_VERSION_TAG = "dagster/data_version"
LAST_UPDATED_TIMESTAMP = "dagster/last_updated_timestamp"


def topic_key(topic: str) -> dg.AssetKey:
    return dg.AssetKey(["topics", topic])


def topic_of(key: dg.AssetKey) -> str:
    return key.path[-1]


def observation_metadata(state: TopicState) -> dict[str, dg.MetadataValue]:
    """Numbers plot in the UI; the timestamps are what freshness and people look at."""
    metadata: dict[str, dg.MetadataValue] = {
        "end_offsets": dg.MetadataValue.json({str(p): e for p, e in state.end_offsets.items()}),
        "total_events": dg.MetadataValue.int(state.total_events),
        "retained_events": dg.MetadataValue.int(state.retained_events),
        "partitions": dg.MetadataValue.int(len(state.end_offsets)),
        "bytes": dg.MetadataValue.int(state.total_bytes),
        "partition_state": _partition_table(state),
    }
    if state.newest_event_ms is not None:
        metadata["newest_event_time"] = dg.MetadataValue.timestamp(state.newest_event_ms / 1000)
    if state.last_append_ms is not None:
        metadata[LAST_UPDATED_TIMESTAMP] = dg.MetadataValue.timestamp(state.last_append_ms / 1000)
    return metadata


_PARTITION_COLUMNS = dg.TableSchema(
    columns=[
        dg.TableColumn("partition", "int"),
        dg.TableColumn("start_offset", "int"),
        dg.TableColumn("end_offset", "int"),
        dg.TableColumn("bytes", "int"),
        dg.TableColumn("newest_event_ms", "int", description="epoch ms; empty: no event time"),
    ]
)


def _partition_table(state: TopicState) -> dg.MetadataValue:
    """Per partition: offsets, bytes stored and newest event time (a table in the UI)."""
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord(
                {
                    "partition": p,
                    "start_offset": state.start_offsets.get(p, 0),
                    "end_offset": end,
                    "bytes": state.partition_bytes.get(p, 0),
                    "newest_event_ms": state.partition_newest_ms.get(p),
                }
            )
            for p, end in sorted(state.end_offsets.items())
        ],
        schema=_PARTITION_COLUMNS,
    )


def observe_result(state: TopicState) -> dg.ObserveResult:
    """What the observable asset reports when a run observes the topic."""
    return dg.ObserveResult(
        asset_key=topic_key(state.topic),
        data_version=dg.DataVersion(state.version),
        metadata=observation_metadata(state),
    )


def asset_observation(state: TopicState) -> dg.AssetObservation:
    """The same observation as a runless event, as a sensor reports it."""
    return dg.AssetObservation(
        asset_key=topic_key(state.topic),
        metadata=observation_metadata(state),
        tags={DATA_VERSION_TAG: state.version},
    )


def changed_observations(
    states: dict[str, TopicState], seen: dict[str, str]
) -> tuple[list[dg.AssetObservation], dict[str, str]]:
    """Observations of the topics whose version differs from ``seen`` (topic → data
    version), and the versions to remember next."""
    changed = [s for name, s in sorted(states.items()) if seen.get(name) != s.version]
    return [asset_observation(s) for s in changed], {
        **seen,
        **{s.topic: s.version for s in changed},
    }


def topic_assets(specs: list[dg.AssetSpec]) -> dg.AssetsDefinition:
    """One observable source asset per topic spec (observing reads segment names only).

    ``multi_observable_source_asset`` is beta in 1.13, and the only public way to make an
    external asset whose observations automation counts (an ``AssetSpec`` is
    unexecutable); the tests pin that behaviour, so its warning is not repeated on every
    load of the code location."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        decorator = dg.multi_observable_source_asset(
            name="observe_topics",
            specs=specs,
            can_subset=True,
            required_resource_keys={"dataflare"},
            description="Reads each selected topic's end offsets and newest event time.",
        )

    @decorator
    def observe_topics(context: dg.AssetExecutionContext):
        dataflare: ProjectHomeResource = context.resources.dataflare
        log = EventLog(dataflare.home.event_log_dir)
        for key in sorted(context.selected_asset_keys):
            name = topic_of(key)
            if not log.exists(name):
                context.log.info(f"topic {name!r} does not exist yet; nothing to observe")
                continue
            yield observe_result(topic_state(log.topic(name)))

    return observe_topics


def topic_observation_sensor(topics: list[str], interval_s: int) -> dg.SensorDefinition:
    @dg.sensor(
        name=TOPIC_OBSERVATIONS_SENSOR,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Reports an observation of each topic whose end offsets moved (data version ="
            " digest of the end offsets), so automation and freshness see producers' appends."
        ),
    )
    def topic_observations(context: dg.SensorEvaluationContext, dataflare: ProjectHomeResource):
        seen = json.loads(context.cursor) if context.cursor else {}
        states = topic_states(EventLog(dataflare.home.event_log_dir), topics)
        observations, versions = changed_observations(states, seen)
        if not observations:
            missing = sorted(set(topics) - set(states))
            reason = f"no topic appended to since the last tick ({len(states)} observed)"
            if missing:
                reason += "; not created yet: " + ", ".join(missing)
            return dg.SkipReason(reason)
        return dg.SensorResult(asset_events=observations, cursor=json.dumps(versions))

    return topic_observations


def topic_observation_definitions(
    specs: list[dg.AssetSpec], interval_s: int = DEFAULT_OBSERVATION_INTERVAL_S
) -> dg.Definitions:
    """The topics as observable assets plus the sensor that observes them."""
    if not specs:
        return dg.Definitions()
    topics = sorted(topic_of(spec.key) for spec in specs)
    return dg.Definitions(
        assets=[topic_assets(specs)], sensors=[topic_observation_sensor(topics, interval_s)]
    )
