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
