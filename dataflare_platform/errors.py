"""Errors the platform raises on bad input, each carrying what a user needs to fix it.

Every exception class a user can meet derives from ``DataflareError``, so the CLI has one
error boundary (``dataflare_platform.cli._common``) that catches that class alone. Library
code raises the typed kinds below for bad input (``InvalidInputError``, ``NotFoundError``,
``UserPathError``...); each keeps the builtin base callers caught before (``ValueError``,
``KeyError``, ``OSError``), and ``user_path`` / ``user_file`` turn the operating system's
errors about a user's path into messages naming it. Tests walk the package to hold the
rule (docs/extending.md, "A user-facing error"). Cheap to import (pydantic only for type
hints): ``dataflare --help`` imports it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class DataflareError(Exception):
    """Base class: a user-facing error whose message is meant to be read, not debugged."""


class InvalidInputError(DataflareError, ValueError):
    """A value a user gave is refused: a name, an offset, a partition, an option, a file's
    contents. Also a ``ValueError``, so a pydantic validator may raise it (pydantic turns it
    into a ``ValidationError`` like any ``ValueError``) and older ``except ValueError``
    callers keep working."""


class WrongTypeError(DataflareError, TypeError):
    """What a user named has the wrong type for its use: a freshness column that is not a
    time, a filter plugin used as a map. Also a ``TypeError`` for callers that catch it."""


class NotFoundError(DataflareError, KeyError):
    """Something a user named does not exist: a topic, a rule, an alert, a table, a column.

    Also a ``KeyError`` (hence a ``LookupError``) for callers that catch those; unlike
    ``KeyError`` its text is the message, not the message's repr."""

    def __str__(self) -> str:
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class ConflictError(DataflareError, RuntimeError):
    """Another writer holds what this one wants to write: a lock that did not come free, a
    table or topic owned by another pipeline. Also a ``RuntimeError`` (what these sites
    raised before)."""


class UserPathError(DataflareError, OSError):
    """A path a user gave cannot be used: missing, not a directory, unreadable.

    Raise it where library code opens a user's path, turning the operating system's
    ``OSError`` into a message that names the path (``from_os_error``). Also an
    ``OSError``; ``MissingPathError`` is also a ``FileNotFoundError``."""

    def __init__(self, message: str) -> None:
        # OSError's constructor would read a 2-tuple as (errno, strerror): one argument
        # keeps ``str()`` the message.
        super().__init__(message)

    def __str__(self) -> str:
        return str(self.args[0])

    @classmethod
    def from_os_error(
        cls, err: OSError, what: str = "", path: Path | str | None = None
    ) -> UserPathError:
        """``<what> <path>: <reason>`` from the operating system's error (a missing file
        becomes a ``MissingPathError``). ``path`` is named when the error carries none
        (pyarrow's errors say the path in their text)."""
        if err.filename is not None:
            path, reason = err.filename, err.strerror or str(err)
        else:
            reason = re.sub(r"^\[Errno \d+\] ", "", str(err))
            if path is not None and str(path) in reason:
                path = None  # said once is enough
        head = " ".join(part for part in (what, str(path or "")) if part)
        message = f"{head}: {reason}" if head else reason
        error_cls = MissingPathError if isinstance(err, FileNotFoundError) else cls
        return error_cls(message)


class MissingPathError(UserPathError, FileNotFoundError):
    """A path a user gave (or files the user's path should hold) does not exist."""


@contextmanager
def user_path(what: str = "", path: Path | str | None = None) -> Iterator[None]:
    """Where library code opens a path a user gave: the operating system's ``OSError``
    (no such file, permission denied, is a directory...) becomes a ``UserPathError``
    naming ``what`` and the path; a ``DataflareError`` passes through untouched."""
    try:
        yield
    except DataflareError:
        raise
    except OSError as err:
        raise UserPathError.from_os_error(err, what, path) from err


@contextmanager
def user_file(path: Path | str, what: str = "input file") -> Iterator[None]:
    """Where library code reads a data file a user gave (Parquet, Arrow IPC, NDJSON): as
    ``user_path``, and a reader's ``ValueError`` about the bytes (pyarrow's
    ``ArrowInvalid``: not Parquet, truncated, bad footer) becomes a
    ``CorruptInputError`` naming the file. Keep the block to the reading itself, so a
    ``ValueError`` from elsewhere is not mistaken for a bad file."""
    with user_path(what, path):
        try:
            yield
        except DataflareError:
            raise
        except ValueError as err:
            raise CorruptInputError(Path(path), str(err)) from err


def _shortened(text: str, limit: int) -> str:
    """``text``, or its start and end around a note of how much was left out."""
    if len(text) <= limit:
        return text
    keep = (limit - 40) // 2
    return f"{text[:keep]} ... ({len(text) - 2 * keep} characters left out) ... {text[-keep:]}"


class ConfigError(DataflareError):
    """A configuration was refused at load; the message names each offending field."""

    def __init__(self, what: str, problems: list[tuple[str, str]]) -> None:
        self.what = what
        # A message may echo what was given (pydantic: "Input tag '<value>' found using
        # 'kind' does not match..."), and a field name may hold a user's key: both are
        # cut to a readable length, whatever the input's size.
        self.problems = [(_shortened(field, 200), _shortened(msg, 500)) for field, msg in problems]
        lines = "\n".join(f"  - {field}: {msg}" for field, msg in self.problems)
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


class AccessDeniedError(DataflareError, PermissionError):
    """The authorization policy refused an action (or a submission carried what only the
    platform may set). The message names the principal, the action and the reason; the
    decision itself is in the audit log."""


class CorruptInputError(DataflareError):
    """An input file could not be read or does not have the expected schema."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"corrupt input file {self.path}: {reason}")


class BatchRejectedError(DataflareError):
    """An operator could not process one batch (a plugin trapped, timed out, broke the
    ABI...): the engine dead-letters that batch with this message and goes on."""


class AuthenticationError(DataflareError):
    """A login was refused. The message says why in terms safe to show the person logging
    in: never a password, token, code or secret, and the same words for a wrong password
    and an unknown user (telling them apart would let anyone enumerate accounts)."""


class InvalidCredentialsError(AuthenticationError):
    """The name and password (or the code handed back by the identity provider) do not
    identify anyone. One message for every cause, on purpose."""

    def __init__(self, message: str = "invalid user name or password") -> None:
        super().__init__(message)


class IdentityProviderError(AuthenticationError):
    """The identity provider could not be asked or answered something unusable (down,
    timed out, a malformed discovery document, an ID token that fails verification). The
    front shows a generic failure and logs this message (which names no secret)."""


class SecretUnavailableError(DataflareError):
    """A secret named in the settings (an environment variable or a 0600 file) is missing,
    empty or readable by others. The message names where the secret should be, never its
    value."""


class DeploymentOverrideError(DataflareError):
    """A run tried to change a setting that belongs to the deployment (the home, the
    plugin folder, the audit keys, sandbox limits, broker settings...): those come from
    the deployment's own configuration and environment, never from a launch. The message
    names each refused ``resources.<name>.config.<field>`` path, never its value (a value
    may be a credential)."""

    def __init__(self, paths: list[str], where: str = "run config") -> None:
        self.paths = list(paths)
        named = ", ".join(self.paths)
        super().__init__(
            f"{where} may not override deployment settings: {named} (they come from the "
            "deployment's configuration and environment; see docs/security.md)"
        )
