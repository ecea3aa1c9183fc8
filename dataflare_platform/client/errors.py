"""Every error the client raises: a ``DataflareClientError`` (so a ``DataflareError``)
whose message says what to fix; the timeouts are ``TimeoutError`` as well."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dataflare_platform.errors import DataflareError


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
                "(`make ui` starts both, behind the front)"
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
            "to the web server (`make ui` starts both, behind the front)"
            if status == "REQUESTED"
            else ""
        )
        super().__init__(f"backfill {backfill_id} still {status} after {timeout_s:g} s{hint}")


def _span(keys: Sequence[str]) -> str:
    if not keys:
        return "none"
    return keys[0] if len(keys) == 1 else f"{keys[0]} … {keys[-1]} ({len(keys)} keys)"


class PartitionError(DataflareClientError):
    """The partition key of a launch does not fit the job or assets (checked before the
    launch, so no run is created)."""


class NotPartitionedError(PartitionError):
    """A partition key was given for a job or assets that have no partitions."""

    def __init__(self, what: str, key: str) -> None:
        self.key = key
        super().__init__(f"partition: {what} is not partitioned; drop the partition {key!r}")


class MissingPartitionError(PartitionError):
    """A partitioned job or asset was launched without a partition key."""

    def __init__(self, what: str, keys: Sequence[str]) -> None:
        self.available = list(keys)
        latest = f"; e.g. the latest, {keys[-1]!r}" if keys else ""
        super().__init__(
            f"partition: {what} is partitioned and needs a partition key "
            f"(its partitions: {_span(keys)}){latest}"
        )


class MalformedPartitionError(PartitionError):
    """The key is not written in the partitions' time format (e.g. not a date)."""

    def __init__(self, what: str, key: str, fmt: str, example: str) -> None:
        self.key = key
        self.fmt = fmt
        super().__init__(
            f"partition: {key!r} is not a partition key of {what}: expected format {fmt} "
            f"(e.g. {example!r})"
        )


class UnknownPartitionError(PartitionError):
    """The key is well formed but not one of the partitions; ``nearest`` lists the closest
    valid keys."""

    def __init__(self, what: str, key: str, nearest: Sequence[str], keys: Sequence[str]) -> None:
        self.key = key
        self.nearest = list(nearest)
        super().__init__(
            f"partition: no partition {key!r} in {what} (its partitions: {_span(keys)}); "
            f"nearest: {', '.join(self.nearest) or 'none'}"
        )
