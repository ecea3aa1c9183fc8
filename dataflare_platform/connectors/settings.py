"""Validation shared by the connectors' settings: a bad value is refused at construction
with a ``ConfigError`` naming the field, before anything is opened or written."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from dataflare_platform.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

# Lower-case SQL identifiers: the same with or without quotes, so the table a user queries
# by hand (unquoted, folded to lower case) is the table the sink writes.
SQL_IDENTIFIER = r"^[a-z_][a-z0-9_]*$"
PG_MAX_IDENTIFIER = 63  # NAMEDATALEN - 1: PostgreSQL silently truncates longer names


def validated(model: type[M], what: str, values: dict[str, Any]) -> M:
    try:
        return model.model_validate(values)
    except ValidationError as err:
        raise ConfigError.from_validation(what, err) from None
