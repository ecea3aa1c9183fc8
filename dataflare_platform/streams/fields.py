"""Field types a pipeline spec's models share: durations and Polars SQL expressions
checked at load, the strict base of the spec's models, and the watermark settings.

A bad value is refused by pydantic with a message of ours (``PydanticCustomError``, no
"Value error," prefix) and the loaders turn it into a ``ConfigError`` naming the field.
"""

from __future__ import annotations

from typing import Annotated

import polars as pl
from pydantic import AfterValidator, ConfigDict, field_validator
from pydantic_core import PydanticCustomError

from dataflare_platform.engine.durations import to_ms
from dataflare_platform.models import StrictModel

Duration = int | str

PLUGIN_NAME = r"^[a-z][a-z0-9_\-]{0,63}$"
"""A plugin's name: a plain identifier. It becomes a file name (``<dir>/<name>.wasm``), so
no separator, dot, ``..`` or absolute path can ever be one (``plugins.names``)."""


def refusal(kind: str, message: str) -> PydanticCustomError:
    """A validator's error that pydantic reports as ``message`` exactly (a ValueError
    would read "Value error, ..."); ``message`` may hold braces (user text)."""
    return PydanticCustomError(kind, "{message}", {"message": message})


class SpecModel(StrictModel):
    """Base of the spec's models: strict, frozen, fields also by their Python name
    (``with_`` for ``with``)."""

    model_config = ConfigDict(populate_by_name=True)


def check_duration(value: Duration) -> Duration:
    """``500ms``, ``10s``, ``5m``... or milliseconds; the value is kept as given."""
    try:
        to_ms(value)
    except ValueError as err:
        raise refusal("duration", str(err)) from None
    return value


def check_expr(text: str) -> str:
    """A Polars SQL expression (``"auction % 123 = 0"``), parsed once at load."""
    try:
        pl.sql_expr(text)
    except Exception as err:  # polars raises several error types for bad SQL
        raise refusal("expression", f"not a valid expression {text!r}: {err}") from None
    return text


DurationField = Annotated[Duration, AfterValidator(check_duration)]
Expr = Annotated[str, AfterValidator(check_expr)]


class WatermarkSpec(SpecModel):
    out_of_orderness: Duration = "4s"
    idle_timeout: Duration | None = None
    max_future: Duration = "1h"

    _check = field_validator("out_of_orderness", "max_future")(check_duration)
