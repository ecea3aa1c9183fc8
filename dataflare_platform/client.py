"""A small Python client for launching and watching runs through Dagster's GraphQL API.

It talks to a running web server (``make ui`` / ``dataflare ui`` starts one on
127.0.0.1:3000)::

    from dataflare_platform.client import DataflareClient

    client = DataflareClient(port=3000)
    run_id = client.launch_job("nexmark_ingest_job", tags={"who": "me"})
    client.wait(run_id, timeout_s=600)  # "SUCCESS"
    client.asset_metadata("nexmark/bids")  # {"dagster/row_count": 123, ...}
    run_id = client.materialize(["nexmark/daily_seller_stats"], partition="2024-01-01")

Launching, run status and termination go through ``dagster_graphql.DagsterGraphQLClient``;
what it does not cover (listing jobs and assets for clear errors, logs, asset metadata) is a
plain GraphQL query over HTTP. Every failure is a ``DataflareClientError`` whose message
says what to fix.

Runs are launched by the server's run coordinator: with the default (queued) coordinator
a run waits in QUEUED until ``dagster-daemon`` picks it up, which ``dagster dev`` (``make
ui``) runs next to the web server.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from dataflare_platform.errors import DataflareError

ASSET_JOB = "__ASSET_JOB"
PARTITION_TAG = "dagster/partition"
TERMINAL_STATUSES = frozenset({"SUCCESS", "FAILURE", "CANCELED"})

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
                tags={str(k): str(v) for k, v in (tags or {}).items()},
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
