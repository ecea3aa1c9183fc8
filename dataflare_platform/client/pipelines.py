"""Stream pipelines as a Dagster web server sees them: their mode, current run and
progress (``dataflare pipelines status``), and starting / stopping their continuous job
(``dataflare pipelines start|stop``). Everything goes through the web server's GraphQL
API; only the lag per partition also reads the topics' committed ends from the local
event log (the data plane's ``streams.progress.partition_lag``), where the pipeline and
its topics are known here.

A pipeline is a code location's ``<name>_continuous`` job; its asset is
``streams/<name>``, its micro-batch job ``<name>_job`` and sensor ``<name>_sensor``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from dataflare_platform.client.documents import LATEST_MATERIALIZATION_QUERY
from dataflare_platform.client.errors import DataflareClientError
from dataflare_platform.client.results import metadata_value

if TYPE_CHECKING:
    from dataflare_platform.client.client import DataflareClient
    from dataflare_platform.events.log import EventLog
    from dataflare_platform.streams.spec import PipelineSpec

CONTINUOUS_SUFFIX = "_continuous"
IN_PROGRESS = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"]

SENSORS_QUERY = """
query DataflarePipelineSensors {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection {
      nodes { sensors { name sensorState { status } } }
    }
    ... on Error { message }
  }
}
"""


class PipelineNotFoundError(DataflareClientError, LookupError):
    """No ``<name>_continuous`` job on the web server."""

    def __init__(self, name: str, known: list[str]) -> None:
        shown = ", ".join(known) or "none"
        super().__init__(f"no pipeline {name!r} on the web server (pipelines: {shown})")


class PipelineStateError(DataflareClientError):
    """Starting a pipeline that runs, or stopping one that does not."""


@dataclass
class PipelineStatus:
    name: str
    mode: str  # continuous | micro-batch | idle
    run_id: str | None  # the continuous run in progress, else the newest run
    run_status: str | None
    offsets: dict[str, int] = field(default_factory=dict)
    lag: dict[str, int] | None = None  # events behind per source/partition
    events_per_s: float | None = None  # the current (windowed) rate
    watermark_ms: int | None = None
    last_checkpoint: float | None = None  # seconds since the epoch
    dead_lettered: int | None = None  # by the run that recorded the progress

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def pipeline_names(client: DataflareClient) -> list[str]:
    """Every pipeline of every code location (the ``<name>_continuous`` jobs)."""
    return sorted(
        {
            ref.name[: -len(CONTINUOUS_SUFFIX)]
            for ref in client.jobs()
            if ref.name.endswith(CONTINUOUS_SUFFIX)
        }
    )


def _require(client: DataflareClient, name: str) -> None:
    known = pipeline_names(client)
    if name not in known:
        raise PipelineNotFoundError(name, known)


def _sensor_states(client: DataflareClient) -> dict[str, str]:
    result = client.query(SENSORS_QUERY)["repositoriesOrError"]
    if result["__typename"] != "RepositoryConnection":
        raise DataflareClientError(f"cannot list sensors: {result.get('message')}")
    return {
        s["name"]: s["sensorState"]["status"] for node in result["nodes"] for s in node["sensors"]
    }


def _latest_progress(client: DataflareClient, name: str) -> tuple[dict[str, Any], float | None]:
    """Metadata and time (epoch seconds) of the pipeline asset's latest materialization."""
    result = client.query(LATEST_MATERIALIZATION_QUERY, {"key": {"path": ["streams", name]}})[
        "assetOrError"
    ]
    if result["__typename"] != "Asset" or not result["assetMaterializations"]:
        return {}, None
    latest = result["assetMaterializations"][0]
    metadata = {e["label"]: metadata_value(e) for e in latest["metadataEntries"]}
    return metadata, float(latest["timestamp"]) / 1000.0


def _lag(
    spec: PipelineSpec | None, log: EventLog | None, offsets: dict[str, int]
) -> dict[str, int] | None:
    """Events behind per partition from the topics' committed ends (None when the
    pipeline or its sources are not readable from here)."""
    if spec is None or log is None:
        return None
    from dataflare_platform.connectors.broker import BrokerError
    from dataflare_platform.events.log import TopicNotFoundError
    from dataflare_platform.streams.progress import partition_lag
    from dataflare_platform.streams.ranges import source_ends

    try:
        ends = source_ends(spec, log)
    except (TopicNotFoundError, BrokerError, OSError):
        return None
    return partition_lag(offsets, ends)


def pipeline_status(
    client: DataflareClient,
    specs: dict[str, PipelineSpec] | None = None,
    log: EventLog | None = None,
) -> list[PipelineStatus]:
    """Every pipeline's mode, run and progress. ``specs`` (by name) and ``log``: where to
    read topic ends for the lag per partition; without them the lag is the one the
    continuous run last recorded (``lag_by_partition``), if any."""
    sensors = _sensor_states(client)
    statuses = []
    for name in pipeline_names(client):
        continuous = client.runs(limit=1, job=name + CONTINUOUS_SUFFIX, statuses=IN_PROGRESS)
        micro = client.runs(limit=1, job=f"{name}_job", statuses=IN_PROGRESS)
        if continuous:
            mode, current = "continuous", continuous[0]
        elif micro or sensors.get(f"{name}_sensor") == "RUNNING":
            mode = "micro-batch"
            current = micro[0] if micro else None
        else:
            mode, current = "idle", None
        if current is None:
            newest = [
                *client.runs(limit=1, job=name + CONTINUOUS_SUFFIX),
                *client.runs(limit=1, job=f"{name}_job"),
            ]
            current = max(newest, key=lambda r: r.created or 0.0, default=None)
        metadata, materialized_at = _latest_progress(client, name)
        offsets = {k: int(v) for k, v in (metadata.get("offsets") or {}).items()}
        lag = _lag((specs or {}).get(name), log, offsets)
        if lag is None and "lag_by_partition" in metadata:
            lag = {k: int(v) for k, v in metadata["lag_by_partition"].items()}
        statuses.append(
            PipelineStatus(
                name=name,
                mode=mode,
                run_id=current.run_id if current else None,
                run_status=current.status if current else None,
                offsets=offsets,
                lag=lag,
                events_per_s=metadata.get("events_per_s"),
                watermark_ms=metadata.get("watermark_ms"),
                last_checkpoint=metadata.get("checkpoint_at", materialized_at),
                dead_lettered=metadata.get("dead_lettered"),
            )
        )
    return statuses


def start_pipeline(
    client: DataflareClient, name: str, run_config: dict[str, Any] | None = None
) -> str:
    """Launch the pipeline's continuous job; its run id. Refused while one runs."""
    _require(client, name)
    running = client.runs(limit=5, job=name + CONTINUOUS_SUFFIX, statuses=IN_PROGRESS)
    if running:
        raise PipelineStateError(
            f"pipeline {name!r} already runs continuously in run {running[0].run_id}"
        )
    return client.launch_job(
        name + CONTINUOUS_SUFFIX,
        run_config=run_config,
        # The job's own dataflare/pipeline tag; no caller tag in the reserved namespace.
        tags={"dataflare/pipeline": name},
    )


def stop_pipeline(client: DataflareClient, name: str) -> list[str]:
    """Terminate the pipeline's continuous run(s) (a graceful stop: the run finishes its
    batch and commits a checkpoint); the ids of the runs asked to stop."""
    _require(client, name)
    running = client.runs(limit=20, job=name + CONTINUOUS_SUFFIX, statuses=IN_PROGRESS)
    if not running:
        raise PipelineStateError(f"pipeline {name!r} does not run continuously")
    for run in running:
        if run.status != "CANCELING":
            client.terminate(run.run_id)
    return [run.run_id for run in running]
