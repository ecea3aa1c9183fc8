"""Keyed operators whose state outlives any window: first row per key (dedup) and running
per-key aggregates (reduce). Their output depends on every earlier event, so an interval
replay cannot rebuild it (``stateful``, not ``windowed``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from dataflare_platform.engine.aggregations import (
    Agg,
    final_exprs,
    merge_exprs,
    partial_exprs,
)
from dataflare_platform.engine.operators.base import Emit, FrameState, event_ms


@dataclass
class Dedup(FrameState):
    """Keep the first row per key; drop later rows with that key within ``horizon_ms``
    of the kept row's event time. Keys are forgotten once the watermark has passed
    their horizon plus the allowed lateness, so state stays proportional to live keys."""

    uses_watermark = True
    stateful = True
    state_key = "keys"

    keys: list[str] = field(default_factory=list)
    horizon_ms: int = 0
    lateness_ms: int = 0
    _state: pl.DataFrame | None = field(default=None, init=False)

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        batch, late = self.split_late(batch, self.lateness_ms)
        ts = "__dedup_ts"
        rows = batch.with_columns(event_ms(self.time_column).alias(ts)).with_row_index("__row")
        if self._state is not None and self._state.height:
            rows = rows.join(self._state, on=self.keys, how="left", nulls_equal=True)
            rows = rows.filter(
                pl.col("__first").is_null() | (pl.col(ts) >= pl.col("__first") + self.horizon_ms)
            ).drop("__first")
        kept: list[pl.DataFrame] = []
        # Within a batch the first row per key wins; rows beyond its horizon start anew.
        while rows.height:
            first = rows.group_by(self.keys, maintain_order=True).first()
            kept.append(first)
            rows = (
                rows.join(
                    first.select([*self.keys, pl.col(ts).alias("__first")]),
                    on=self.keys,
                    how="left",
                    nulls_equal=True,
                )
                .filter(pl.col(ts) >= pl.col("__first") + self.horizon_ms)
                .drop("__first")
            )
        if not kept:
            return batch.clear(), late
        out = pl.concat(kept).sort("__row")
        fresh = out.group_by(self.keys).agg(pl.col(ts).max().alias("__first"))
        if self._state is None:
            self._state = fresh
        else:
            self._state = (
                pl.concat([self._state, fresh]).group_by(self.keys).agg(pl.col("__first").max())
            )
        return out.drop(ts, "__row").select(batch.columns), late

    def advance(self, watermark: int) -> pl.DataFrame | None:
        if self._state is not None:
            keep = pl.col("__first") + self.horizon_ms >= watermark - self.lateness_ms
            self._state = self._state.filter(keep)
        return None


@dataclass
class Reduce(FrameState):
    """Running per-key aggregate without windows; emits the new value of every key a
    batch touched (an upsert stream keyed by ``keys``)."""

    stateful = True
    state_key = "partials"

    keys: list[str]
    aggs: list[Agg]
    _state: pl.DataFrame | None = field(default=None, init=False)

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        if batch.height == 0:
            return None, None
        partial = batch.group_by(self.keys).agg(partial_exprs(self.aggs))
        touched = partial.select(self.keys)
        if self._state is not None:
            partial = (
                pl.concat([self._state, partial], how="vertical_relaxed")
                .group_by(self.keys)
                .agg(merge_exprs(self.aggs))
            )
        self._state = partial
        changed = partial.join(touched, on=self.keys, how="semi", nulls_equal=True)
        return changed.select([*self.keys, *final_exprs(self.aggs)]), None
