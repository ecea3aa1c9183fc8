"""Plain results of the client and the parsing of GraphQL answers into them (asset keys,
run config problems, metadata entries, runs and backfill statuses)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dataflare_platform.client.errors import ConfigProblem, DataflareClientError
from dataflare_platform.models import PIPELINE_NAME

ASSET_JOB = "__ASSET_JOB"
PARTITION_TAG = "dagster/partition"
TERMINAL_STATUSES = frozenset({"SUCCESS", "FAILURE", "CANCELED"})
# A run being launched: Dagster cannot terminate it until it has STARTED.
LAUNCHING_STATUSES = frozenset({"NOT_STARTED", "STARTING"})
# Dagster's RunStatus enum (what a runs filter accepts).
RUN_STATUSES = frozenset(
    {
        *TERMINAL_STATUSES,
        *("QUEUED", "NOT_STARTED", "MANAGED", "STARTING", "STARTED", "SUSPENDED", "CANCELING"),
    }
)
# Runs that are queued or going (a worker counted as running until it has stopped).
IN_PROGRESS_STATUSES = frozenset({"QUEUED", "NOT_STARTED", "STARTING", "STARTED"})
# A pipeline name as the specs accept it (checked before it reaches a job name).
SCALABLE_NAME = re.compile(PIPELINE_NAME)
# A backfill is REQUESTED while the daemon submits its runs and they run; a job backfill
# turns COMPLETED_SUCCESS / COMPLETED_FAILED only once every run has finished.
BACKFILL_TERMINAL_STATUSES = frozenset(
    {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
)

AssetKeyLike = str | Sequence[str] | Any  # "a/b", ["a", "b"] or a dagster AssetKey


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


def metadata_value(entry: Mapping[str, Any]) -> Any:
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


@dataclass(frozen=True)
class ScaleResult:
    """What ``DataflareClient.scale`` did: the worker runs it stopped and launched."""

    pipeline: str
    workers: int
    stopped: list[str]
    launched: list[str]

    def as_dict(self) -> dict[str, object]:
        return {
            "pipeline": self.pipeline,
            "workers": self.workers,
            "stopped": self.stopped,
            "launched": self.launched,
        }


@dataclass(frozen=True)
class RunInfo:
    """One run as ``runs()`` lists it: times are Unix seconds (None: not started/ended)."""

    run_id: str
    job: str
    status: str
    created: float
    started: float | None
    ended: float | None
    tags: dict[str, str]

    @property
    def partition(self) -> str | None:
        return self.tags.get(PARTITION_TAG)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "job": self.job,
            "status": self.status,
            "partition": self.partition,
            "created": self.created,
            "started": self.started,
            "ended": self.ended,
            "tags": self.tags,
        }


def run_info(node: Mapping[str, Any]) -> RunInfo:
    """A ``Run`` node of ``RUNS_QUERY`` as a ``RunInfo``."""
    return RunInfo(
        run_id=node["runId"],
        job=node["jobName"],
        status=node["status"],
        created=node["creationTime"],
        started=node.get("startTime"),
        ended=node.get("endTime"),
        tags={t["key"]: t["value"] for t in node.get("tags") or []},
    )
