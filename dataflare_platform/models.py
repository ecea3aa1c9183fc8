"""The one strict pydantic base: settings, specs and records refuse unknown fields (a
misspelt key is an error, not a silently ignored default; a record read back from a file
means exactly what was written) and are frozen (a validated spec cannot drift after its
checks ran). Validating raises a ``ConfigError`` that names each bad field rather than
pydantic's own exception."""

from __future__ import annotations

from typing import Any, Self, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from dataflare_platform.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

PIPELINE_NAME = r"^[A-Za-z][A-Za-z0-9_-]{0,100}$"
"""A pipeline's name, as its spec accepts it (``PipelineSpec.name``) and as the client
checks it before it reaches a job name (``<name>_workers``): here, below both."""


class StrictModel(BaseModel):
    """Unknown fields refused, instances frozen. Subclasses add to ``model_config``
    (``populate_by_name``...); pydantic merges it with this one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def validated(cls, data: Any, what: str) -> Self:
        """``data`` validated, or a ``ConfigError`` about ``what`` naming each field."""
        return validated(cls, what, data)


def validated(model: type[M], what: str, data: Any) -> M:
    """Validate ``data`` as ``model`` (strict or not), raising a ``ConfigError`` about
    ``what`` that names each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError.from_validation(what, err) from None
