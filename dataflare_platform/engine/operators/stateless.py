"""Operators that keep no state between batches: each batch's output depends on that batch
alone (filters, projections, computed columns, explode, per-batch distinct)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import polars as pl

from dataflare_platform.engine.operators.base import WM_COL, Emit, Operator


class Filter(Operator):
    def __init__(self, predicate: pl.Expr) -> None:
        self.predicate = predicate

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        return batch.filter(self.predicate), None


class WithColumns(Operator):
    def __init__(self, exprs: Sequence[pl.Expr]) -> None:
        self.exprs = list(exprs)

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        return batch.with_columns(self.exprs), None


class Select(Operator):
    """Projection; the hidden watermark column always travels along."""

    def __init__(self, exprs: Sequence[pl.Expr | str]) -> None:
        self.exprs = list(exprs)
        # Plain column names are picked without a query plan (a tenth of the cost on
        # small batches, where Polars' per-call overhead dominates).
        self._names = list(exprs) if all(isinstance(e, str) for e in exprs) else None

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        out = batch[self._names] if self._names is not None else batch.select(self.exprs)
        if WM_COL in batch.columns and WM_COL not in out.columns:
            out = out.with_columns(batch.get_column(WM_COL))
        return out, None


class MapBatches(Operator):
    """Any DataFrame → DataFrame function; it must keep ``__wm`` on rows it emits if a
    time-aware operator follows (row-preserving functions do so automatically)."""

    def __init__(self, fn: Callable[[pl.DataFrame], pl.DataFrame], name: str | None = None):
        self.fn = fn
        self._name = name or getattr(fn, "__name__", "map_batches")

    @property
    def name(self) -> str:
        return self._name

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        out = self.fn(batch)
        if WM_COL not in out.columns and out.height == batch.height and WM_COL in batch.columns:
            out = out.with_columns(batch.get_column(WM_COL))
        return out, None


class FlatMap(Operator):
    """One row per element of a list column (``explode``)."""

    def __init__(self, column: str) -> None:
        self.column = column

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        return batch.explode(self.column), None


class Unique(Operator):
    """Distinct rows within each batch; exact for window outputs, which fire whole."""

    def __init__(self, subset: list[str] | None = None) -> None:
        self.subset = subset

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        return batch.unique(subset=self.subset, maintain_order=True), None
