"""The slot a WASM plugin fills in a pipeline. The engine does not load plugins: the
plugins layer (above the engine and the streams) hands them in ready."""

from __future__ import annotations

from typing import Protocol

import polars as pl
import pyarrow as pa

from dataflare_platform.engine import arrays
from dataflare_platform.engine.operators.base import WM_COL, Emit, Operator


class BatchPlugin(Protocol):
    """The slot a WASM plugin fills: one call per batch, state the engine checkpoints."""

    name: str

    def __call__(self, batch: pl.DataFrame) -> pl.DataFrame: ...

    def snapshot(self) -> bytes: ...

    def restore(self, state: bytes) -> None: ...


class PluginOperator(Operator):
    """Calls the plugin once per batch; the plugin's own state (an aggregate's
    accumulator) is checkpointed with the engine's."""

    stateful = True

    def __init__(self, plugin: BatchPlugin) -> None:
        self.plugin = plugin

    @property
    def name(self) -> str:
        return f"plugin:{self.plugin.name}"

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        out = self.plugin(batch.drop(WM_COL, strict=False))
        if out.height == batch.height and WM_COL in batch.columns:
            out = out.with_columns(batch.get_column(WM_COL))
        return out, None

    def stats(self) -> dict[str, float]:
        """The plugin's own counters if it keeps them (``Plugin.stats``: calls, rows,
        seconds in the plugin, errors), as ``plugin_<name>``."""
        own = getattr(self.plugin, "stats", None)
        if not isinstance(own, dict):
            return {}
        return {f"plugin_{k}": v for k, v in own.items() if isinstance(v, int | float)}

    def savepoint(self) -> object:
        # A plugin that can hand back its raw state cheaply (``Plugin.savepoint``) does;
        # any other goes through its checkpoint snapshot.
        own = getattr(self.plugin, "savepoint", None)
        return ("raw", own()) if callable(own) else ("snapshot", self.plugin.snapshot())

    def rollback(self, saved: object) -> None:
        how, state = saved  # type: ignore[misc]
        if how == "raw":
            self.plugin.rollback(state)  # type: ignore[attr-defined]
        else:
            self.plugin.restore(state)

    def snapshot(self) -> dict[str, pa.Table]:
        return {
            "plugin": pa.table({"state": arrays.strings([self.plugin.snapshot()], pa.binary())})
        }

    def restore(self, state: dict[str, pa.Table]) -> None:
        if "plugin" in state:
            self.plugin.restore(state["plugin"].column("state")[0].as_py())
