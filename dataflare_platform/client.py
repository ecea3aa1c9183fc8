"""A small Python client for launching and watching runs through Dagster's GraphQL API.

It talks to a running web server (``make ui`` / ``dataflare ui`` starts one on
127.0.0.1:3000)::

    from dataflare_platform.client import DataflareClient

    client = DataflareClient(port=3000)
    run_id = client.launch_job("nexmark_ingest_job", tags={"who": "me"})
    client.wait(run_id, timeout_s=600)  # "SUCCESS"
    client.asset_metadata("nexmark/bids")  # {"dagster/row_count": 123, ...}
    run_id = client.materialize(["nexmark/daily_seller_stats"], partition="2024-01-01")
    backfill_id = client.backfill(
        "nexmark_daily_stats_job", partition_range=("2026-01-01", "2026-01-07")
    )
    client.wait_backfill(backfill_id, timeout_s=1800)  # "COMPLETED_SUCCESS"

Launching, run status and termination go through ``dagster_graphql.DagsterGraphQLClient``;
what it does not cover (listing jobs and assets for clear errors, logs, asset metadata) is a
plain GraphQL query over HTTP. Every failure is a ``DataflareClientError`` whose message
says what to fix.

Runs are launched by the server's run coordinator: with the default (queued) coordinator
a run waits in QUEUED until ``dagster-daemon`` picks it up, which ``dagster dev`` (``make
ui``) runs next to the web server.
"""

from __future__ import annotations

import getpass
import re
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from dataflare_platform.errors import DataflareError

# Who launched a run through the client (the audit trail's actor ``client:<user>``);
# a caller's own tag of that name wins.
CLIENT_TAG = "dataflare/client"

ASSET_JOB = "__ASSET_JOB"
PARTITION_TAG = "dagster/partition"
TERMINAL_STATUSES = frozenset({"SUCCESS", "FAILURE", "CANCELED"})
# A backfill is REQUESTED while the daemon submits its runs and they run; a job backfill
# turns COMPLETED_SUCCESS / COMPLETED_FAILED only once every run has finished.
BACKFILL_TERMINAL_STATUSES = frozenset(
    {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
)

AssetKeyLike = str | Sequence[str] | Any  # "a/b", ["a", "b"] or a dagster AssetKey


class DataflareClientError(DataflareError):
    """Base class of every error this client raises."""


class ServerUnreachableError(DataflareClientError):
    """No Dagster web server answered at host:port (or it did not answer in time)."""


class UnknownJobError(DataflareClientError):
    """The job is not defined in any loaded code location; the message lists the jobs."""

    def __init__(self, job: str, available: Sequence[str]) -> None:
        self.job = job
        self.available = list(available)
        listed = (
            ", ".join(self.available) if self.available else "(none: is a code location loaded?)"
        )
        super().__init__(f"unknown job {job!r}; available jobs: {listed}")


class UnknownAssetError(DataflareClientError):
    """An asset key is not defined in any loaded code location."""

    def __init__(self, missing: Sequence[str], available: Sequence[str]) -> None:
        self.missing = list(missing)
        self.available = list(available)
        super().__init__(
            f"unknown asset(s) {', '.join(self.missing)}; available assets: "
            + (", ".join(self.available) or "(none)")
        )


@dataclass(frozen=True)
class ConfigProblem:
    path: str  # e.g. "root:ops:nexmark__bids:config"
    message: str
    reason: str | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class RunConfigError(DataflareClientError):
    """The run config does not match the job's config schema; one line per problem."""

    def __init__(self, job: str, problems: Sequence[ConfigProblem]) -> None:
        self.job = job
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid run config for job {job!r}:\n{lines}")


class LaunchError(DataflareClientError):
    """The server refused to launch the run for another reason (its message is kept)."""


class RunNotFoundError(DataflareClientError):
    """No run with this id exists in the instance."""


class RunTimeoutError(DataflareClientError, TimeoutError):
    """``wait`` gave up before the run reached a final status."""

    def __init__(self, run_id: str, status: str, timeout_s: float) -> None:
        self.run_id = run_id
        self.status = status
        hint = ""
        if status == "QUEUED":
            hint = (
                "; queued runs start only when dagster-daemon runs next to the web server "
                "(`make ui` runs `dagster dev`, which starts both)"
            )
        super().__init__(f"run {run_id} still {status} after {timeout_s:g} s{hint}")


class BackfillNotFoundError(DataflareClientError):
    """No backfill with this id exists in the instance."""


class BackfillTimeoutError(DataflareClientError, TimeoutError):
    """``wait_backfill`` gave up before the backfill reached a final status."""

    def __init__(self, backfill_id: str, status: str, timeout_s: float) -> None:
        self.backfill_id = backfill_id
        self.status = status
        hint = (
            "; backfills are submitted and followed by dagster-daemon, which must run next "
            "to the web server (`make ui` runs `dagster dev`, which starts both)"
            if status == "REQUESTED"
            else ""
        )
        super().__init__(f"backfill {backfill_id} still {status} after {timeout_s:g} s{hint}")


@dataclass(frozen=True)
class BackfillStatus:
    """Where a backfill stands: its status, the partitions it targets and, per partition
    it launched a run for, that run's id and status (absent: not launched yet)."""

    backfill_id: str
    status: str
    partitions: list[str]
    runs: dict[str, tuple[str, str]]  # partition -> (run id, run status)
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.status in BACKFILL_TERMINAL_STATUSES


@dataclass(frozen=True)
class JobRef:
    location: str
    repository: str
    name: str


def asset_key_path(key: AssetKeyLike) -> list[str]:
    """``"a/b"`` / ``["a", "b"]`` / ``AssetKey(["a", "b"])`` -> ``["a", "b"]``."""
    path = getattr(key, "path", key)
    if isinstance(path, str):
        parts = [part for part in path.split("/") if part]
    else:
        parts = [str(part) for part in path]
    if not parts:
        raise DataflareClientError(f"empty asset key: {key!r}")
    return parts


def _top_level_fields(shape: str) -> list[str]:
    """Field names of the outermost ``{ a?: ... b: ... }`` in Dagster's config type text."""
    fields, depth, token = [], 0, ""
    for char in shape:
        if char in "{[(":
            depth += 1
            token = ""
        elif char in "}])":
            depth -= 1
            token = ""
        elif depth == 1 and char == ":":
            name = token.strip().rstrip("?")
            if name.isidentifier():
                fields.append(name)
            token = ""
        elif depth == 1:
            token = "" if char.isspace() else token + char
    return fields


def config_problem(error: Mapping[str, Any]) -> ConfigProblem:
    """A GraphQL run config error as one readable line: the config path it is about
    (with the offending field), the message, and the fields expected there."""
    message = error.get("message") or ""
    path = ":".join(["root", *(error.get("path") or [])])
    at = re.search(r" at path (\S+?)\.?(?:\s|$)", message)
    if at:
        path = at.group(1)
    unexpected = re.search(r'unexpected config entry "([^"]+)"', message)
    if unexpected:
        path = f"{path}:{unexpected.group(1)}"
    head, sep, expected = message.partition(' Expected: "')
    if sep:
        fields = _top_level_fields(expected)
        if fields:
            message = f"{head} Expected fields: {', '.join(fields)}."
        elif len(expected) > 200:
            message = f'{head} Expected: "{expected[:200]}..."'
    return ConfigProblem(path=path, message=message, reason=error.get("reason"))


def _metadata_value(entry: Mapping[str, Any]) -> Any:
    """One GraphQL metadata entry as a plain Python value."""
    kind = entry["__typename"]
    if kind == "IntMetadataEntry":
        # intValue is a 32-bit GraphQL Int (null when larger); intRepr always holds it.
        return int(entry["intRepr"]) if entry.get("intRepr") is not None else entry["intValue"]
    if kind == "FloatMetadataEntry":
        return entry["floatValue"]
    if kind == "BoolMetadataEntry":
        return entry["boolValue"]
    if kind == "TextMetadataEntry":
        return entry["text"]
    if kind == "UrlMetadataEntry":
        return entry["url"]
    if kind in ("PathMetadataEntry", "NotebookMetadataEntry"):
        return entry["path"]
    if kind == "MarkdownMetadataEntry":
        return entry["mdStr"]
    if kind == "JsonMetadataEntry":
        import json

        return json.loads(entry["jsonString"])
    if kind == "TimestampMetadataEntry":
        return entry["timestamp"]
    if kind == "PipelineRunMetadataEntry":
        return entry["runId"]
    if kind == "AssetMetadataEntry":
        return "/".join(entry["assetKey"]["path"])
    if kind == "JobMetadataEntry":
        return entry["jobName"]
    if kind == "TableSchemaMetadataEntry":
        return {c["name"]: c["type"] for c in entry["schema"]["columns"]}
    if kind == "NullMetadataEntry":
        return None
    return entry.get("description")  # other kinds: no plain value; keep the label visible


_METADATA_FRAGMENT = """
  __typename label description
  ... on IntMetadataEntry { intValue intRepr }
  ... on FloatMetadataEntry { floatValue }
  ... on BoolMetadataEntry { boolValue }
  ... on TextMetadataEntry { text }
  ... on UrlMetadataEntry { url }
  ... on PathMetadataEntry { path }
  ... on NotebookMetadataEntry { path }
  ... on MarkdownMetadataEntry { mdStr }
  ... on JsonMetadataEntry { jsonString }
  ... on TimestampMetadataEntry { timestamp }
  ... on PipelineRunMetadataEntry { runId }
  ... on AssetMetadataEntry { assetKey { path } }
  ... on JobMetadataEntry { jobName }
  ... on TableSchemaMetadataEntry { schema { columns { name type } } }
"""

JOBS_QUERY = """
query DataflareJobs {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection { nodes { name location { name } jobs { name } } }
    ... on Error { message }
  }
}
"""

ASSETS_QUERY = """
query DataflareAssets {
  assetNodes { assetKey { path } repository { name location { name } } }
}
"""

LOGS_QUERY = """
query DataflareLogs($runId: ID!, $afterCursor: String, $limit: Int) {
  logsForRun(runId: $runId, afterCursor: $afterCursor, limit: $limit) {
    __typename
    ... on EventConnection {
      cursor hasMore
      events {
        __typename
        ... on MessageEvent { message timestamp level stepKey eventType }
      }
    }
    ... on Error { message }
  }
}
"""

ASSET_METADATA_QUERY = (
    """
query DataflareAssetMetadata($key: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset {
      assetMaterializations(limit: 1, partitions: $partitions) {
        runId partition timestamp
        metadataEntries { """
    + _METADATA_FRAGMENT
    + """ }
      }
    }
    ... on Error { message }
  }
}
"""
)


PARTITION_SETS_QUERY = """
query DataflarePartitionSets($repositorySelector: RepositorySelector!, $job: String!) {
  partitionSetsOrError(repositorySelector: $repositorySelector, pipelineName: $job) {
    __typename
    ... on PartitionSets {
      results {
        name
        partitionsOrError {
          __typename
          ... on Partitions { results { name } }
          ... on Error { message }
        }
      }
    }
    ... on Error { message }
  }
}
"""

LAUNCH_BACKFILL_MUTATION = """
mutation DataflareLaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PartitionKeysNotFoundError { partitionKeys }
    ... on Error { message }
  }
}
"""

BACKFILL_STATE_QUERY = """
query DataflareBackfillState($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status }
    ... on Error { message }
  }
}
"""

BACKFILL_STATUS_QUERY = """
query DataflareBackfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      id status partitionNames
      error { message }
      partitionStatuses { results { partitionName runId runStatus } }
      runs { runId status tags { key value } }
    }
    ... on Error { message }
  }
}
"""


class DataflareClient:
    """Launch jobs and asset materializations on a Dagster web server and follow their runs."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 3000,
        timeout_s: float = 30.0,
        poll_interval_s: float = 0.5,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s
        self.url = f"http://{host}:{port}/graphql"
        self._session = requests.Session()
        self._dagster = DagsterGraphQLClient(
            host, port_number=port, timeout=max(1, round(timeout_s))
        )

    # -- transport ---------------------------------------------------------------------

    def _unreachable(self, err: Exception) -> ServerUnreachableError:
        if isinstance(err, requests.exceptions.Timeout):
            what = f"did not answer within {self.timeout_s:g} s"
        else:
            what = "refused the connection or is not running"
        return ServerUnreachableError(
            f"cannot reach the Dagster web server at {self.host}:{self.port}: it {what}. "
            "Start it with `make ui` (or `dataflare ui --port PORT`), or pass --host/--port."
        )

    def query(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Run a raw GraphQL query; return its ``data`` (raise on transport/GraphQL errors)."""
        try:
            response = self._session.post(
                self.url,
                json={"query": query, "variables": dict(variables or {})},
                timeout=self.timeout_s,
            )
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as err:
            raise self._unreachable(err) from err
        try:
            body = response.json()
        except ValueError:
            raise DataflareClientError(
                f"{self.url} answered HTTP {response.status_code} without JSON: "
                "is this a Dagster web server?"
            ) from None
        if body.get("errors"):
            messages = "; ".join(e.get("message", str(e)) for e in body["errors"])
            raise DataflareClientError(f"GraphQL error from {self.url}: {messages}")
        if response.status_code != 200 or "data" not in body:
            raise DataflareClientError(f"{self.url} answered HTTP {response.status_code}")
        return body["data"]

    def _call_dagster(self, fn, *args, **kwargs):
        """Call a DagsterGraphQLClient method, turning its errors into ours."""
        try:
            with warnings.catch_warnings():
                # gql deprecates the call style dagster_graphql uses; not ours to fix.
                warnings.filterwarnings("ignore", category=DeprecationWarning, module="gql")
                return fn(*args, **kwargs)
        except DagsterGraphQLClientError as err:
            cause: BaseException | None = err
            while cause is not None:
                if isinstance(
                    cause, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)
                ):
                    raise self._unreachable(cause) from err  # type: ignore[arg-type]
                cause = cause.__cause__ or cause.__context__
            raise
        except KeyError as err:  # a result type the library's query has no fields for
            raise LaunchError(f"unexpected answer from the server (missing {err})") from err

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
        try:
            return self._call_dagster(
                self._dagster.submit_job_execution,
                ref.name,
                repository_location_name=ref.location,
                repository_name=ref.repository,
                run_config=dict(run_config or {}),
                tags={
                    CLIENT_TAG: getpass.getuser(),
                    **{str(k): str(v) for k, v in (tags or {}).items()},
                },
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
        runs one partition of a partitioned job (the ``dagster/partition`` tag).
        """
        ref = self._resolve_job(job, repository_location_name)
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
        ref = self._resolve_job(ASSET_JOB, repository_location_name)
        all_tags = dict(tags or {})
        if partition is not None:
            all_tags[PARTITION_TAG] = partition
        return self._launch(ref, run_config, all_tags, asset_selection=wanted)

    # -- backfills -----------------------------------------------------------------------

    def _job_partition_names(self, ref: JobRef) -> tuple[str, list[str]]:
        """The job's partition set name and every partition key, oldest first."""
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
            raise DataflareClientError(f"job {ref.name!r} is not partitioned: nothing to backfill")
        partition_set = result["results"][0]
        names = partition_set["partitionsOrError"]
        if names["__typename"] != "Partitions":
            raise DataflareClientError(
                f"cannot list partitions of {ref.name!r}: {names.get('message')}"
            )
        return partition_set["name"], [p["name"] for p in names["results"]]

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
        return {e["label"]: _metadata_value(e) for e in materializations[0]["metadataEntries"]}

    def terminate(self, run_id: str) -> None:
        """Ask the run to stop (the UI's Terminate button)."""
        try:
            self._call_dagster(self._dagster.terminate_run, run_id)
        except DagsterGraphQLClientError as err:
            kind = err.args[0] if err.args else ""
            if "NotFound" in str(kind):
                raise RunNotFoundError(f"no run with id {run_id!r}") from None
            raise DataflareClientError(f"cannot terminate run {run_id}: {err}") from None
