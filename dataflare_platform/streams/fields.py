"""Field types a pipeline spec's models share: durations and Polars SQL expressions
checked at load, the strict base of the spec's models, and the watermark settings.

A bad value is refused by pydantic with a message of ours (``PydanticCustomError``, no
"Value error," prefix) and the loaders turn it into a ``ConfigError`` naming the field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from dataflare_platform.engine.durations import bounded_ms, to_ms
from dataflare_platform.engine.expressions import parse_expr
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
    """``500ms``, ``10s``, ``5m``... or milliseconds; the value is kept as given.
    Negative, malformed and over-100-years values are refused (``durations.to_ms``)."""
    try:
        to_ms(value)
    except ValueError as err:
        raise refusal("duration", str(err)) from None
    return value


def _bounded(positive: bool) -> Callable[[Duration], Duration]:
    def check(value: Duration) -> Duration:
        try:
            bounded_ms(value, positive=positive)
        except ValueError as err:
            raise refusal("duration", str(err)) from None
        return value

    return check


check_size = _bounded(positive=True)
"""A window size, slide, session gap, dedup horizon or interval: positive, at most a year
(``durations.MAX_WINDOW_MS``)."""
check_delay = _bounded(positive=False)
"""An allowed lateness or a watermark delay: zero or more, at most a year."""


def check_expr(text: str) -> str:
    """A Polars SQL expression (``"auction % 123 = 0"``), bounded in size and nesting
    (``engine.expressions``) and then parsed once at load."""
    try:
        parse_expr(text)
    except ValueError as err:
        raise refusal("expression", str(err)) from None
    return text


DurationField = Annotated[Duration, AfterValidator(check_duration)]
SizeField = Annotated[Duration, AfterValidator(check_size)]
DelayField = Annotated[Duration, AfterValidator(check_delay)]
Expr = Annotated[str, AfterValidator(check_expr)]


class WatermarkSpec(SpecModel):
    out_of_orderness: Duration = "4s"
    idle_timeout: Duration | None = None
    max_future: Duration = "1h"

    _check = field_validator("out_of_orderness", "max_future")(check_delay)

    @field_validator("idle_timeout")
    @classmethod
    def _idle(cls, value: Duration | None) -> Duration | None:
        return None if value is None else check_size(value)


class ScalingPolicy(BaseModel):
    """A pipeline's ``autoscaling:`` block (``streams.autoscaling`` says how it is used:
    the ``<pipeline>_autoscaler`` sensor sizes its partition-parallel workers)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_workers: int = Field(1, ge=1)
    max_workers: int = Field(..., ge=1, description="never more workers than this")
    target_utilization: float = Field(0.7, gt=0.0, le=1.0)
    utilization_boundary: float = Field(0.2, ge=0.0, lt=1.0)
    catch_up_s: float = Field(300.0, gt=0.0, description="clear the lag within this long")
    scale_up_cooldown_s: float = Field(60.0, ge=0.0)
    scale_down_cooldown_s: float = Field(300.0, ge=0.0)
    interval_s: float = Field(
        30.0,
        ge=1.0,
        description=(
            "decide at most this often; each worker reports its measurements twice per"
            " interval, so every decision has a fresh sample of every worker"
        ),
    )

    @model_validator(mode="after")
    def _bounds(self) -> ScalingPolicy:
        if self.min_workers > self.max_workers:
            raise ValueError(
                f"min_workers ({self.min_workers}) is above max_workers ({self.max_workers})"
            )
        return self
