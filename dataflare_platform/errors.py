"""Errors the platform raises on bad input, each carrying what a user needs to fix it.

Every exception class a user can meet derives from ``DataflareError``, so the CLI has one
error boundary (``dataflare_platform.cli._common``) instead of a tuple per command. A class
that callers also catch as a builtin keeps that base too, e.g.
``class TopicNotFoundError(DataflareError, KeyError)``; a test walks the package to hold
the rule. Cheap to import (pydantic only for type hints): ``dataflare --help`` imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class DataflareError(Exception):
    """Base class: a user-facing error whose message is meant to be read, not debugged."""


class ConfigError(DataflareError):
    """A configuration was refused at load; the message names each offending field."""

    def __init__(self, what: str, problems: list[tuple[str, str]]) -> None:
        self.what = what
        self.problems = problems
        lines = "\n".join(f"  - {field}: {msg}" for field, msg in problems)
        super().__init__(f"invalid {what}:\n{lines}")

    @property
    def fields(self) -> list[str]:
        return [field for field, _ in self.problems]

    @classmethod
    def from_validation(cls, what: str, err: ValidationError) -> ConfigError:
        problems = []
        for item in err.errors():
            field = ".".join(str(part) for part in item["loc"]) or "<root>"
            # A validator's ValueError reads "Value error, <message>": the message is
            # what the user needs.
            problems.append((field, item["msg"].removeprefix("Value error, ")))
        return cls(what, problems)


class CorruptInputError(DataflareError):
    """An input file could not be read or does not have the expected schema."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"corrupt input file {self.path}: {reason}")


class BatchRejectedError(DataflareError):
    """An operator could not process one batch (a plugin trapped, timed out, broke the
    ABI...): the engine dead-letters that batch with this message and goes on."""
