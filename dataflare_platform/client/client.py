"""The client class: launching jobs, materializations and backfills, and following runs.

Launching, run status and termination go through ``dagster_graphql.DagsterGraphQLClient``
(via ``Transport``); the rest is the GraphQL of ``documents``, parsed by ``results``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import requests
from dagster_graphql import DagsterGraphQLClientError
from opentelemetry.trace import SpanKind

from dataflare_platform.client.documents import (
    ASSET_METADATA_QUERY,
    ASSET_PARTITIONS_QUERY,
    ASSETS_QUERY,
    BACKFILL_STATE_QUERY,
    BACKFILL_STATUS_QUERY,
    JOBS_QUERY,
    LAUNCH_BACKFILL_MUTATION,
    LOGS_QUERY,
    PARTITION_SETS_QUERY,
    RUNS_QUERY,
)
from dataflare_platform.client.errors import (
    BackfillNotFoundError,
    BackfillTimeoutError,
    DataflareClientError,
    LaunchError,
    RunConfigError,
    RunNotFoundError,
    RunTimeoutError,
    ServerUnreachableError,
    UnknownAssetError,
    UnknownJobError,
)
from dataflare_platform.client.partitions import check_partition
from dataflare_platform.client.results import (
    ASSET_JOB,
    BACKFILL_TERMINAL_STATUSES,
    IN_PROGRESS_STATUSES,
    LAUNCHING_STATUSES,
    PARTITION_TAG,
    RUN_STATUSES,
    SCALABLE_NAME,
    TERMINAL_STATUSES,
    AssetKeyLike,
    BackfillStatus,
    JobRef,
    RunInfo,
    ScaleResult,
    asset_key_path,
    config_problem,
    metadata_value,
    run_info,
)
from dataflare_platform.client.transport import Transport
from dataflare_platform.observability.tracing import continued, inject

# Formerly the client's claim of who launched (``client:<user>``). No longer sent: a tag a
# caller sets is no identity, the run coordinator refuses the dataflare/ namespace from
# callers and writes the authenticated principal itself (dataflare/principal).
CLIENT_TAG = "dataflare/client"


class DataflareClient:
    """Launch jobs and asset materializations on a Dagster web server and follow their runs."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 3000,
        timeout_s: float = 30.0,
        poll_interval_s: float = 0.5,
        token: str | None = None,
    ) -> None:
        """``token``: a service token for the authenticating front (default:
        ``$DATAFLARE_TOKEN`` or the home's token file, see ``transport.resolve_token``)."""
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s
        self._transport = Transport(host, port, timeout_s, token)
        self._dagster = self._transport.dagster
        self._call_dagster = self._transport.call_dagster

    @property
    def url(self) -> str:
        return self._transport.url

    def query(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Run a raw GraphQL query; return its ``data`` (raise on transport/GraphQL errors)."""
        return self._transport.query(query, variables)

    # -- discovery -----------------------------------------------------------------------

    def jobs(self) -> list[JobRef]:
        """Every job of every loaded code location (``__ASSET_JOB`` included)."""
        result = self.query(JOBS_QUERY)["repositoriesOrError"]
        if result["__typename"] != "RepositoryConnection":
            raise DataflareClientError(f"cannot list jobs: {result.get('message')}")
        return [
            JobRef(node["location"]["name"], node["name"], job["name"])
            for node in result["nodes"]
            for job in node["jobs"]
        ]

    def _resolve_job(self, job: str, location: str | None) -> JobRef:
        refs = self.jobs()
        matches = [r for r in refs if r.name == job and location in (None, r.location)]
        if not matches:
            names = sorted({r.name for r in refs if not r.name.startswith("__")})
            raise UnknownJobError(job, names)
        if len(matches) > 1:
            where = ", ".join(f"{r.location}/{r.repository}" for r in matches)
            raise DataflareClientError(
                f"job {job!r} is defined in several code locations ({where}); "
                "pass repository_location_name"
            )
        return matches[0]

    # -- launching -----------------------------------------------------------------------

    def _launch(
        self,
        ref: JobRef,
        run_config: Mapping[str, Any] | None,
        tags: Mapping[str, str] | None,
        asset_selection: list[list[str]] | None = None,
    ) -> str:
        # The launch is a span (traces on); the run continues its trace from the tag.
        attributes = {"dagster.job": ref.name, "dagster.code_location": ref.location}
        with continued(
            f"dataflare.launch {ref.name}", attributes=attributes, kind=SpanKind.PRODUCER
        ) as span:
            run_id = self._submit(ref, run_config, inject(tags or {}), asset_selection)
            if span is not None:
                span.set_attribute("dagster.run_id", run_id)
        return run_id

    def _submit(
        self,
        ref: JobRef,
        run_config: Mapping[str, Any] | None,
        tags: Mapping[str, str],
        asset_selection: list[list[str]] | None,
    ) -> str:
        try:
            return self._call_dagster(
                self._dagster.submit_job_execution,
                ref.name,
                repository_location_name=ref.location,
                repository_name=ref.repository,
                run_config=dict(run_config or {}),
                # No actor claim: who launched is the authenticated principal the run
                # coordinator writes on the run (the dataflare/ namespace is refused).
                tags={str(k): str(v) for k, v in tags.items()},
                asset_selection=asset_selection,
            )
        except DagsterGraphQLClientError as err:
            kind = err.args[0] if err.args else "Error"
            detail = err.args[1] if len(err.args) > 1 else None
            if kind in ("RunConfigValidationInvalid", "PipelineConfigValidationInvalid"):
                problems = [config_problem(e) for e in detail or []]
                raise RunConfigError(ref.name, problems) from None
            if kind in ("JobNotFoundError", "PipelineNotFoundError"):
                raise UnknownJobError(ref.name, [r.name for r in self.jobs()]) from None
            message = detail if isinstance(detail, str) else str(err)
            raise LaunchError(f"cannot launch {ref.name!r}: {kind}: {message}") from None

    def launch_job(
        self,
        job: str,
        run_config: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        repository_location_name: str | None = None,
        asset_selection: Iterable[AssetKeyLike] | None = None,
        partition: str | None = None,
    ) -> str:
        """Launch ``job`` with ``run_config`` and ``tags``; return the new run's id.

        ``asset_selection`` restricts an asset job to some of its assets; ``partition``
        runs one partition of a partitioned job (the ``dagster/partition`` tag). The key is
        checked first: a partitioned job needs an existing key, an unpartitioned one none
        (``PartitionError`` otherwise, and no run is created).
        """
        ref = self._resolve_job(job, repository_location_name)
        partitioned = self._job_partitions(ref)
        keys = None if partitioned is None else partitioned[1]
        check_partition(partition, keys, f"job {ref.name!r}")
        selection = (
            None if asset_selection is None else [asset_key_path(k) for k in asset_selection]
        )
        all_tags = dict(tags or {})
        if partition is not None:
            all_tags[PARTITION_TAG] = partition
        return self._launch(ref, run_config, all_tags, asset_selection=selection)

    def materialize(
        self,
        asset_keys: Iterable[AssetKeyLike],
        partition: str | None = None,
        tags: Mapping[str, str] | None = None,
        run_config: Mapping[str, Any] | None = None,
        repository_location_name: str | None = None,
    ) -> str:
        """Materialize these assets (one partition of them if given); return the run id."""
        wanted = [asset_key_path(k) for k in asset_keys]
        if not wanted:
            raise DataflareClientError("materialize needs at least one asset key")
        nodes = self.query(ASSETS_QUERY)["assetNodes"]
        known = {"/".join(n["assetKey"]["path"]): n for n in nodes}
        missing = ["/".join(p) for p in wanted if "/".join(p) not in known]
        if missing:
            raise UnknownAssetError(missing, sorted(known))
        if repository_location_name is None:
            locations = {known["/".join(p)]["repository"]["location"]["name"] for p in wanted}
            if len(locations) > 1:
                raise DataflareClientError(
                    f"the assets live in several code locations ({', '.join(sorted(locations))})"
                    "; materialize them separately"
                )
            (repository_location_name,) = locations
        self._check_asset_partition(wanted, partition)
        ref = self._resolve_job(ASSET_JOB, repository_location_name)
        all_tags = dict(tags or {})
        if partition is not None:
            all_tags[PARTITION_TAG] = partition
        return self._launch(ref, run_config, all_tags, asset_selection=wanted)

    # -- backfills -----------------------------------------------------------------------

    def _check_asset_partition(self, wanted: list[list[str]], partition: str | None) -> None:
        """Check ``partition`` against each asset's own partition keys."""
        nodes = self.query(ASSET_PARTITIONS_QUERY, {"keys": [{"path": path} for path in wanted]})[
            "assetNodes"
        ]
        partitioned = [n for n in nodes if n["isPartitioned"]]
        if not partitioned:
            check_partition(partition, None, "asset " + ", ".join("/".join(p) for p in wanted))
        for node in partitioned:
            what = f"asset {'/'.join(node['assetKey']['path'])}"
            check_partition(partition, node["partitionKeys"], what)

    def _job_partitions(self, ref: JobRef) -> tuple[str, list[str]] | None:
        """The job's partition set name and every partition key, oldest first; None
        when the job is not partitioned."""
        result = self.query(
            PARTITION_SETS_QUERY,
            {
                "repositorySelector": {
                    "repositoryName": ref.repository,
                    "repositoryLocationName": ref.location,
                },
                "job": ref.name,
            },
        )["partitionSetsOrError"]
        if result["__typename"] != "PartitionSets":
            raise DataflareClientError(f"cannot list partitions of {ref.name!r}: {result}")
        if not result["results"]:
            return None
        partition_set = result["results"][0]
        names = partition_set["partitionsOrError"]
        if names["__typename"] != "Partitions":
            raise DataflareClientError(
                f"cannot list partitions of {ref.name!r}: {names.get('message')}"
            )
        return partition_set["name"], [p["name"] for p in names["results"]]

    def _job_partition_names(self, ref: JobRef) -> tuple[str, list[str]]:
        """The job's partition set name and every partition key, oldest first."""
        partitioned = self._job_partitions(ref)
        if partitioned is None:
            raise DataflareClientError(f"job {ref.name!r} is not partitioned: nothing to backfill")
        return partitioned

    @staticmethod
    def _slice_range(names: Sequence[str], start: str, end: str, what: str) -> list[str]:
        missing = [key for key in (start, end) if key not in names]
        if missing:
            span = f"{names[0]} … {names[-1]}" if names else "none"
            raise DataflareClientError(
                f"unknown partition(s) {', '.join(missing)} of {what}; its partitions: {span}"
            )
        first, last = names.index(start), names.index(end)
        if first > last:
            raise DataflareClientError(f"empty partition range {start} … {end} of {what}")
        return list(names[first : last + 1])

    def backfill(
        self,
        job: str | None = None,
        *,
        partitions: Sequence[str] | None = None,
        partition_range: tuple[str, str] | None = None,
        asset_selection: Iterable[AssetKeyLike] | None = None,
        tags: Mapping[str, str] | None = None,
        title: str | None = None,
        repository_location_name: str | None = None,
    ) -> str:
        """Launch a backfill; return its id. The daemon submits one run per partition.

        Target either a partitioned ``job`` or an ``asset_selection`` (an asset backfill,
        which also materializes the assets' partitions in dependency order), over either
        the listed ``partitions`` or the inclusive ``partition_range=(first, last)``.
        """
        if (job is None) == (asset_selection is None):
            raise DataflareClientError("backfill needs a job or an asset selection (not both)")
        if (partitions is None) == (partition_range is None):
            raise DataflareClientError("backfill needs partitions or a partition_range (not both)")
        if partitions is not None and not partitions:
            raise DataflareClientError("backfill needs at least one partition")
        params: dict[str, Any] = {
            "tags": [{"key": str(k), "value": str(v)} for k, v in (tags or {}).items()],
        }
        if title is not None:
            params["title"] = title
        if job is not None:
            ref = self._resolve_job(job, repository_location_name)
            partition_set, names = self._job_partition_names(ref)
            if partition_range is not None:
                partitions = self._slice_range(names, *partition_range, what=f"job {job!r}")
            params["selector"] = {
                "partitionSetName": partition_set,
                "repositorySelector": {
                    "repositoryName": ref.repository,
                    "repositoryLocationName": ref.location,
                },
            }
            params["partitionNames"] = list(partitions or [])
            what = f"job {job!r}"
        else:
            wanted = [asset_key_path(k) for k in asset_selection or []]
            if not wanted:
                raise DataflareClientError("backfill needs at least one asset key")
            known = {
                "/".join(n["assetKey"]["path"]) for n in self.query(ASSETS_QUERY)["assetNodes"]
            }
            missing = ["/".join(p) for p in wanted if "/".join(p) not in known]
            if missing:
                raise UnknownAssetError(missing, sorted(known))
            if partition_range is not None:
                start, end = partition_range
                params["partitionsByAssets"] = [
                    {"assetKey": {"path": p}, "partitions": {"range": {"start": start, "end": end}}}
                    for p in wanted
                ]
            else:
                params["assetSelection"] = [{"path": p} for p in wanted]
                params["partitionNames"] = list(partitions or [])
            what = "assets " + ", ".join("/".join(p) for p in wanted)
        result = self.query(LAUNCH_BACKFILL_MUTATION, {"params": params})["launchPartitionBackfill"]
        kind = result["__typename"]
        if kind == "LaunchBackfillSuccess":
            return result["backfillId"]
        if kind == "PartitionKeysNotFoundError":
            raise DataflareClientError(
                f"unknown partition(s) of {what}: {', '.join(result['partitionKeys'])}"
            )
        raise LaunchError(f"cannot backfill {what}: {kind}: {result.get('message')}")

    def _backfill_query(self, query: str, backfill_id: str) -> dict[str, Any]:
        result = self.query(query, {"id": backfill_id})["partitionBackfillOrError"]
        if result["__typename"] != "PartitionBackfill":
            if result["__typename"] == "BackfillNotFoundError":
                raise BackfillNotFoundError(f"no backfill with id {backfill_id!r}")
            raise DataflareClientError(
                f"cannot get the status of backfill {backfill_id}: {result.get('message')}"
            )
        return result

    def backfill_status(self, backfill_id: str) -> BackfillStatus:
        """The backfill's status (REQUESTED, COMPLETED_SUCCESS, COMPLETED_FAILED, FAILED,
        CANCELED, ...) with the run of each partition launched so far."""
        result = self._backfill_query(BACKFILL_STATUS_QUERY, backfill_id)
        runs: dict[str, tuple[str, str]] = {}
        statuses = (result.get("partitionStatuses") or {}).get("results") or []
        for entry in statuses:  # job backfills: one entry per partition
            if entry["runId"]:
                runs[entry["partitionName"]] = (entry["runId"], entry["runStatus"])
        for run in result.get("runs") or []:  # asset backfills: the partition tag of each run
            tags = {t["key"]: t["value"] for t in run["tags"]}
            if PARTITION_TAG in tags:
                runs.setdefault(tags[PARTITION_TAG], (run["runId"], run["status"]))
        return BackfillStatus(
            backfill_id=result["id"],
            status=result["status"],
            partitions=list(result.get("partitionNames") or []),
            runs=runs,
            error=(result.get("error") or {}).get("message"),
        )

    def wait_backfill(self, backfill_id: str, timeout_s: float = 1800.0) -> BackfillStatus:
        """Poll until the backfill ends; return its final ``BackfillStatus``.

        Polls ask for the status alone (the per-partition runs are read once, at the
        end), and a poll the server is too busy to answer in time is retried until the
        deadline: a backfill keeps the machine busy, so a slow answer is expected, unlike
        a refused connection, which still fails at once. Raises ``BackfillTimeoutError``
        (a ``TimeoutError``) naming the backfill and its last status.
        """
        deadline = time.monotonic() + timeout_s
        interval = self.poll_interval_s
        status = "unknown"
        while True:
            try:
                status = self._backfill_query(BACKFILL_STATE_QUERY, backfill_id)["status"]
            except ServerUnreachableError as err:
                if not isinstance(err.__cause__, requests.exceptions.Timeout):
                    # A kept-alive connection the server closed just then fails the same
                    # way as a server that is gone: one fresh attempt tells them apart.
                    status = self._backfill_query(BACKFILL_STATE_QUERY, backfill_id)["status"]
            if status in BACKFILL_TERMINAL_STATUSES:
                return self.backfill_status(backfill_id)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BackfillTimeoutError(backfill_id, status, timeout_s)
            time.sleep(min(interval, remaining))
            # under the web server's 5 s keep-alive, so polls rarely race its closing
            interval = min(interval * 1.5, 4.0)

    # -- following runs ------------------------------------------------------------------

    def status(self, run_id: str) -> str:
        """The run's status: QUEUED, STARTING, STARTED, SUCCESS, FAILURE, CANCELED, ..."""
        try:
            return self._call_dagster(self._dagster.get_run_status, run_id).value
        except DagsterGraphQLClientError as err:
            kind = err.args[0] if err.args else ""
            if "NotFound" in str(kind):
                raise RunNotFoundError(f"no run with id {run_id!r}") from None
            raise DataflareClientError(f"cannot get the status of run {run_id}: {err}") from None

    def runs(
        self,
        limit: int = 20,
        job: str | None = None,
        statuses: Sequence[str] | None = None,
        run_ids: Sequence[str] | None = None,
    ) -> list[RunInfo]:
        """The instance's runs, newest first: at most ``limit``, of ``job`` and in one of
        ``statuses`` (e.g. ``["FAILURE"]``) if given."""
        unknown = sorted({s.upper() for s in statuses or ()} - RUN_STATUSES)
        if unknown:
            raise DataflareClientError(
                f"unknown run status(es) {', '.join(unknown)}; one of "
                + ", ".join(sorted(RUN_STATUSES))
            )
        run_filter: dict[str, Any] = {}
        if job is not None:
            run_filter["pipelineName"] = job
        if statuses:
            run_filter["statuses"] = sorted({s.upper() for s in statuses})
        if run_ids is not None:
            run_filter["runIds"] = list(run_ids)
        result = self.query(RUNS_QUERY, {"filter": run_filter or None, "limit": limit})
        runs = result["runsOrError"]
        if runs["__typename"] != "Runs":
            raise DataflareClientError(f"cannot list runs: {runs.get('message')}")
        return [run_info(node) for node in runs["results"]]

    def run(self, run_id: str) -> RunInfo:
        """One run: its job, status, times and tags."""
        found = self.runs(limit=1, run_ids=[run_id])
        if not found:
            raise RunNotFoundError(f"no run with id {run_id!r}")
        return found[0]

    def wait(self, run_id: str, timeout_s: float = 600.0) -> str:
        """Poll until the run ends; return SUCCESS, FAILURE or CANCELED.

        Raises ``RunTimeoutError`` (a ``TimeoutError``) naming the run and its last status.
        """
        deadline = time.monotonic() + timeout_s
        interval = self.poll_interval_s
        while True:
            current = self.status(run_id)
            if current in TERMINAL_STATUSES:
                return current
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RunTimeoutError(run_id, current, timeout_s)
            time.sleep(min(interval, remaining))
            interval = min(interval * 1.5, 5.0)

    def logs(self, run_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The run's event log, oldest first (the first ``limit`` events if given).

        Each event: ``{"timestamp", "level", "event_type", "step_key", "message"}``.
        """
        events: list[dict[str, Any]] = []
        cursor = None
        while limit is None or len(events) < limit:
            page = None if limit is None else limit - len(events)
            result = self.query(
                LOGS_QUERY, {"runId": run_id, "afterCursor": cursor, "limit": page}
            )["logsForRun"]
            if result["__typename"] != "EventConnection":
                if "NotFound" in result["__typename"]:
                    raise RunNotFoundError(f"no run with id {run_id!r}")
                raise DataflareClientError(f"cannot read logs of run {run_id}: {result}")
            for event in result["events"]:
                if "message" not in event:
                    continue
                events.append(
                    {
                        "timestamp": float(event["timestamp"]) / 1000.0,
                        "level": event["level"],
                        "event_type": event["eventType"],
                        "step_key": event["stepKey"],
                        "message": event["message"],
                    }
                )
            if not result["hasMore"] or cursor == result["cursor"]:
                break
            cursor = result["cursor"]
        return events if limit is None else events[:limit]

    def asset_metadata(self, asset_key: AssetKeyLike, partition: str | None = None) -> dict:
        """Metadata of the asset's latest materialization (of ``partition`` if given), as
        plain values; ``{}`` if it was never materialized."""
        path = asset_key_path(asset_key)
        result = self.query(
            ASSET_METADATA_QUERY,
            {"key": {"path": path}, "partitions": None if partition is None else [partition]},
        )["assetOrError"]
        if result["__typename"] != "Asset":
            nodes = self.query(ASSETS_QUERY)["assetNodes"]
            raise UnknownAssetError(
                ["/".join(path)], sorted("/".join(n["assetKey"]["path"]) for n in nodes)
            )
        materializations = result["assetMaterializations"]
        if not materializations:
            return {}
        return {e["label"]: metadata_value(e) for e in materializations[0]["metadataEntries"]}

    def scale(self, pipeline: str, workers: int) -> ScaleResult:
        """Run stream pipeline ``pipeline`` as ``workers`` partition-parallel workers
        (0: none), one run of its ``<pipeline>_workers`` job each.

        The running workers are stopped gracefully (terminated: each partition finishes
        its batch, checkpoints and releases its lease) and ``workers`` new runs are
        launched at once; a new worker takes each of its partitions as soon as the old
        owner has let go (the lease), so no partition has two owners and none is read
        twice. Refusals (a pipeline whose state cannot be split, more workers than
        partitions, a pipeline running as one run) fail the new runs with the reason.
        """
        if not SCALABLE_NAME.fullmatch(pipeline):
            raise DataflareClientError(f"not a pipeline name: {pipeline!r}")
        if workers < 0:
            raise DataflareClientError(f"workers must be 0 or more, not {workers}")
        job = f"{pipeline}_workers"
        running = self.runs(limit=1000, job=job, statuses=sorted(IN_PROGRESS_STATUSES))
        for run in running:
            self.terminate(run.run_id)
        op = f"run_{job}"
        launched = [
            self.launch_job(
                job, run_config={"ops": {op: {"config": {"workers": workers, "index": i}}}}
            )
            for i in range(workers)
        ]
        return ScaleResult(pipeline, workers, [r.run_id for r in running], launched)

    def terminate(self, run_id: str, starting_timeout_s: float = 300.0) -> None:
        """Ask the run to stop (the UI's Terminate button).

        Dagster refuses to terminate a run whose process is still being launched
        (STARTING; seen under load when scaling workers). Such a run is asked again once
        it has started, polling its status for up to ``starting_timeout_s``; a run that
        ended meanwhile has nothing left to stop."""
        deadline = time.monotonic() + starting_timeout_s
        interval = self.poll_interval_s
        while True:
            try:
                self._call_dagster(self._dagster.terminate_run, run_id)
                return
            except DagsterGraphQLClientError as err:
                kind = err.args[0] if err.args else ""
                if "NotFound" in str(kind):
                    raise RunNotFoundError(f"no run with id {run_id!r}") from None
                current = self.status(run_id)
                if current in TERMINAL_STATUSES:
                    return
                remaining = deadline - time.monotonic()
                if current not in LAUNCHING_STATUSES or remaining <= 0:
                    raise DataflareClientError(f"cannot terminate run {run_id}: {err}") from None
            time.sleep(min(interval, remaining))
            interval = min(interval * 1.5, 5.0)
