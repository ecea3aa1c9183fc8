"""Polars SQL expressions users write (pipeline steps, route rules), bounded before Polars
parses them.

Polars' SQL parser and planner recurse once per chained operator: a 10 000-term filter
overflowed the stack (the process died with SIGSEGV — a code location loading it too)
and a 5 000-term one planned in quadratic time on every batch. So the text is measured
first: at most ``MAX_EXPR_CHARS`` characters, ``MAX_EXPR_TOKENS`` tokens (names, literals,
operators: 1024 is a 256-term ``OR`` chain, about 50 ms per 10 000 rows) and
``MAX_EXPR_DEPTH`` levels of parentheses.
"""

from __future__ import annotations

import re

import polars as pl

from dataflare_platform.errors import InvalidInputError

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


def check_expr_size(text: str) -> None:
    """Refuse (``InvalidInputError``, one line) an expression over the bounds."""
    if len(text) > MAX_EXPR_CHARS:
        raise InvalidInputError(
            f"expression of {len(text)} characters is over the limit of {MAX_EXPR_CHARS}"
        )
    tokens, depth = expr_shape(text)
    if tokens > MAX_EXPR_TOKENS:
        raise InvalidInputError(
            f"expression of {tokens} terms and operators is over the limit of"
            f" {MAX_EXPR_TOKENS}: split it over several steps or use a join"
        )
    if depth > MAX_EXPR_DEPTH:
        raise InvalidInputError(
            f"expression nests parentheses {depth} deep, over the limit of {MAX_EXPR_DEPTH}"
        )


def parse_expr(text: str) -> pl.Expr:
    """``pl.sql_expr(text)`` within the bounds; ``InvalidInputError`` (one line, the text
    cut short) for an expression over them or one Polars cannot parse."""
    check_expr_size(text)
    try:
        return pl.sql_expr(text)
    except Exception as err:  # polars raises several error types for bad SQL
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        if len(reason) > 200:
            reason = reason[:197] + "..."
        raise InvalidInputError(f"not a valid expression {clip(text)}: {reason}") from None


def clip(text: str, limit: int = 80) -> str:
    """``repr(text)`` cut to ``limit`` characters: an error stays one readable line."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."
