"""Field types a pipeline spec's models share: durations and Polars SQL expressions
checked at load, the strict base of the spec's models, and the watermark settings.

A bad value is refused by pydantic with a message of ours (``PydanticCustomError``, no
"Value error," prefix) and the loaders turn it into a ``ConfigError`` naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated

import polars as pl
from pydantic import AfterValidator, ConfigDict, field_validator
from pydantic_core import PydanticCustomError

from dataflare_platform.engine.durations import bounded_ms, to_ms
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

# Bounds of one Polars SQL expression, checked on its text before it is parsed: Polars'
# SQL parser and planner recurse once per chained operator, so a 10 000-term filter
# overflows the stack (the process dies with SIGSEGV, in a code location too) and a
# 5 000-term one plans in quadratic time on every batch. 1024 tokens is a 256-term OR
# chain (about 5 ms per 10 000 rows); parentheses nest 32 deep at most.
MAX_EXPR_CHARS = 4096
MAX_EXPR_TOKENS = 1024
MAX_EXPR_DEPTH = 32

_TOKEN = re.compile(r"'(?:[^']|'')*'?|\"(?:[^\"]|\"\")*\"?|[A-Za-z_0-9.]+|[^\sA-Za-z_0-9.]")


def expr_shape(text: str) -> tuple[int, int]:
    """``(tokens, deepest parenthesis nesting)`` of an expression's text (a quoted
    string or identifier is one token, whatever it holds)."""
    tokens = depth = deepest = 0
    for match in _TOKEN.finditer(text):
        tokens += 1
        token = match.group()
        if token == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif token == ")":
            depth -= 1
    return tokens, deepest


def check_expr(text: str) -> str:
    """A Polars SQL expression (``"auction % 123 = 0"``), bounded in size and nesting
    (``MAX_EXPR_*``) and then parsed once at load."""
    if len(text) > MAX_EXPR_CHARS:
        raise refusal(
            "expression",
            f"expression of {len(text)} characters is over the limit of {MAX_EXPR_CHARS}",
        )
    tokens, depth = expr_shape(text)
    if tokens > MAX_EXPR_TOKENS:
        raise refusal(
            "expression",
            f"expression of {tokens} terms and operators is over the limit of"
            f" {MAX_EXPR_TOKENS}: split it over several steps or use a join",
        )
    if depth > MAX_EXPR_DEPTH:
        raise refusal(
            "expression",
            f"expression nests parentheses {depth} deep, over the limit of {MAX_EXPR_DEPTH}",
        )
    try:
        pl.sql_expr(text)
    except Exception as err:  # polars raises several error types for bad SQL
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        if len(reason) > 200:
            reason = reason[:197] + "..."
        raise refusal("expression", f"not a valid expression {_clip(text)}: {reason}") from None
    return text


def _clip(text: str, limit: int = 80) -> str:
    """``repr(text)`` cut to ``limit`` characters: an error stays one readable line."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


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
