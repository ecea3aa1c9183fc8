"""Mergeable aggregations: each is a partial state that batches update and windows merge.

Only decomposable aggregates are allowed (count, sum, min, max, mean as sum+count), so a
window's result can be built from per-batch partials and per-pane partials without ever
keeping raw events. ``count_distinct`` is exact: its partial is the list of the distinct
non-null values seen (per key and pane), merged by union. That state grows with the
number of distinct values, not with the number of events, and lives and dies with the
window's panes (so it is bounded by the window, and checkpointed like any partial); an
approximate count in constant space is the ``hll_distinct`` plugin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import polars as pl

AggKind = Literal["count", "sum", "min", "max", "mean", "count_distinct"]


@dataclass(frozen=True)
class Agg:
    kind: AggKind
    column: str | None
    alias: str

    def partial_columns(self) -> list[str]:
        if self.kind == "mean":
            return [f"__{self.alias}__sum", f"__{self.alias}__n"]
        return [f"__{self.alias}"]

    def partial(self) -> list[pl.Expr]:
        """Per-group partial state from raw rows."""
        col = pl.col(self.column) if self.column else None
        p = self.partial_columns()
        match self.kind:
            case "count":
                return [(col.count() if col is not None else pl.len()).cast(pl.Int64).alias(p[0])]
            case "sum":
                return [col.sum().alias(p[0])]
            case "min":
                return [col.min().alias(p[0])]
            case "max":
                return [col.max().alias(p[0])]
            case "mean":
                return [col.sum().cast(pl.Float64).alias(p[0]), col.count().alias(p[1])]
            case "count_distinct":
                return [col.drop_nulls().unique().alias(p[0])]
        raise AssertionError(f"unknown aggregation {self.kind!r}")  # the spec model refuses it

    def merge(self) -> list[pl.Expr]:
        """Combine partial states (after a concat) within a group."""
        p = self.partial_columns()
        match self.kind:
            case "count" | "sum":
                return [pl.col(p[0]).sum()]
            case "min":
                return [pl.col(p[0]).min()]
            case "max":
                return [pl.col(p[0]).max()]
            case "mean":
                return [pl.col(p[0]).sum(), pl.col(p[1]).sum()]
            case "count_distinct":
                return [pl.col(p[0]).explode().drop_nulls().unique()]
        raise AssertionError(f"unknown aggregation {self.kind!r}")  # the spec model refuses it

    def final(self) -> pl.Expr:
        p = self.partial_columns()
        if self.kind == "mean":
            return (pl.col(p[0]) / pl.col(p[1])).alias(self.alias)
        if self.kind == "count_distinct":
            return pl.col(p[0]).list.len().cast(pl.Int64).alias(self.alias)
        return pl.col(p[0]).alias(self.alias)


def count(alias: str = "count", column: str | None = None) -> Agg:
    return Agg("count", column, alias)


def sum_(column: str, alias: str | None = None) -> Agg:
    return Agg("sum", column, alias or f"sum_{column}")


def min_(column: str, alias: str | None = None) -> Agg:
    return Agg("min", column, alias or f"min_{column}")


def max_(column: str, alias: str | None = None) -> Agg:
    return Agg("max", column, alias or f"max_{column}")


def mean(column: str, alias: str | None = None) -> Agg:
    return Agg("mean", column, alias or f"mean_{column}")


def count_distinct(column: str, alias: str | None = None) -> Agg:
    """Exact number of distinct non-null values of ``column`` (SQL ``count(DISTINCT c)``;
    with a column that is null outside a condition, ``count(DISTINCT c) FILTER (...)``)."""
    return Agg("count_distinct", column, alias or f"distinct_{column}")


def partial_exprs(aggs: list[Agg]) -> list[pl.Expr]:
    return [e for a in aggs for e in a.partial()]


def merge_exprs(aggs: list[Agg]) -> list[pl.Expr]:
    return [e for a in aggs for e in a.merge()]


def final_exprs(aggs: list[Agg]) -> list[pl.Expr]:
    return [a.final() for a in aggs]


def partial_names(aggs: list[Agg]) -> list[str]:
    return [c for a in aggs for c in a.partial_columns()]
