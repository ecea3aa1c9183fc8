"""Event-time windows aggregated by a WASM aggregate plugin: one plugin state per pane and
key (a HyperLogLog sketch per day, say), merged with the plugin's own merge when a window
fires. This is what makes an approximate aggregate a windowed one: a running plugin
(``Stream.plugin``) keeps one state for everything it has seen.

The plugin's states are held here, not in the plugin (``AggregatePlugin``): the plugin
folds a group's rows into the state it is handed and hands a new one back, so one loaded
module serves every (pane, key). One plugin call per (pane, key) a batch touches: meant
for few groups per batch (a day, a channel), not for a key per auction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import polars as pl
import pyarrow as pa

from dataflare_platform.engine import arrays
from dataflare_platform.engine.checkpoint import state_table
from dataflare_platform.engine.operators.base import WM_COL, Emit, Operator
from dataflare_platform.engine.operators.pane_stores import WINDOW_END, WINDOW_START
from dataflare_platform.engine.operators.physical import physical_numpy
from dataflare_platform.engine.operators.windows import Sliding, Tumbling
from dataflare_platform.errors import InvalidInputError

_PANE = "__pane"


class AggregatePlugin(Protocol):
    """An aggregate plugin whose states the caller holds (``plugins.runtime.Plugin``):
    ``fold`` a group's rows into a raw state (None: the empty aggregate), ``combine``
    states (the plugin's merge), ``finish`` one state into its answer (a one-row frame),
    ``seal``/``unseal`` a state into/out of the plugin's checkpoint envelope (which names
    the plugin, version and module, so a restore refuses another plugin's state)."""

    name: str

    def fold(self, state: bytes | None, table: pl.DataFrame) -> bytes: ...

    def combine(self, states: list[bytes]) -> bytes: ...

    def finish(self, state: bytes) -> pl.DataFrame: ...

    def seal(self, state: bytes) -> bytes: ...

    def unseal(self, blob: bytes) -> bytes: ...


@dataclass
class WindowPluginAggregate(Operator):
    """Tumbling or sliding windows per key, aggregated by ``plugin``. A row behind its
    watermark minus ``lateness_ms`` is late (dead-lettered, as for ``WindowAggregate``);
    a window fires once, when the watermark passes its end plus the lateness, with one
    row per key: ``window_start``, ``window_end``, the keys, the plugin's output columns.
    Panes no unfired window needs are dropped at once."""

    uses_watermark = True
    stateful = True
    windowed = True

    plugin: AggregatePlugin
    window: Tumbling | Sliding = field(default_factory=lambda: Tumbling(1000))
    keys: list[str] = field(default_factory=list)
    lateness_ms: int = 0
    # (pane start, *key values) -> raw plugin state. Replaced, never changed in place,
    # per batch: a savepoint is a reference.
    _panes: dict[tuple, bytes] = field(default_factory=dict, init=False)
    _fired_until: int | None = field(default=None, init=False)
    _key_types: dict[str, pl.DataType] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.window.size_ms % self.window.slide_ms:
            raise InvalidInputError(
                f"window: size {self.window.size_ms} ms must be a multiple of the slide"
                f" {self.window.slide_ms} ms"
            )

    @property
    def name(self) -> str:
        return f"window_plugin:{self.plugin.name}"

    def output_time_column(self) -> str:
        return WINDOW_END

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        batch, late = self.split_late(batch, self.lateness_ms)
        if batch.height == 0:
            return None, late
        ts = physical_numpy(batch.get_column(self.time_column))
        slide = self.window.slide_ms
        panes = pl.Series(_PANE, ts // slide * slide)
        rows = batch.drop(WM_COL, strict=False).with_columns(panes)
        self._key_types = {k: batch.schema[k] for k in self.keys}
        updated = dict(self._panes)
        groups = rows.partition_by([_PANE, *self.keys], as_dict=True, maintain_order=True)
        for group, part in groups.items():
            key = tuple(group)
            updated[key] = self.plugin.fold(self._panes.get(key), part.drop(_PANE))
        self._panes = updated
        return None, late

    def advance(self, watermark: int) -> pl.DataFrame | None:
        if not self._panes:
            return None
        size, slide = self.window.size_ms, self.window.slide_ms
        starts = np.fromiter((k[0] for k in self._panes), np.int64, len(self._panes))
        last_start = watermark - self.lateness_ms - size
        last_start = min(last_start - last_start % slide, int(starts.max()))
        first_start = int(starts.min()) - size + slide
        if self._fired_until is not None:
            first_start = max(first_start, self._fired_until)
        if last_start < first_start:
            return None
        # The windows that hold a pane: each pane is in size / slide of them.
        candidates = arrays.unique_sorted(starts[:, None] - np.arange(size // slide) * slide)
        due = candidates[(candidates >= first_start) & (candidates <= last_start)]
        out = [self._fire(int(start), size, slide) for start in due]
        self._fired_until = last_start + slide
        self._panes = {k: v for k, v in self._panes.items() if k[0] >= self._fired_until}
        frames = [f for f in out if f.height]
        return pl.concat(frames, how="vertical") if frames else None

    def _fire(self, start: int, size: int, slide: int) -> pl.DataFrame:
        """Window ``[start, start + size)``: per key, its panes' states combined and
        finished, in key order of first appearance."""
        by_key: dict[tuple, list[bytes]] = {}
        for (pane, *key), state in self._panes.items():
            if start <= pane < start + size:
                by_key.setdefault(tuple(key), []).append(state)
        rows = []
        for key, states in by_key.items():
            state = states[0] if len(states) == 1 else self.plugin.combine(states)
            answer = self.plugin.finish(state)
            head = {WINDOW_START: [start], WINDOW_END: [start + size]}
            head |= {k: [v] for k, v in zip(self.keys, key, strict=True)}
            rows.append(pl.concat([pl.DataFrame(head), answer.head(1)], how="horizontal"))
        frame = pl.concat(rows, how="vertical_relaxed")
        return frame.with_columns(
            pl.col(WINDOW_START).cast(pl.Datetime("ms")),
            pl.col(WINDOW_END).cast(pl.Datetime("ms")),
            *(pl.col(k).cast(t) for k, t in self._key_types.items()),
        )

    def savepoint(self) -> object:
        return self._panes, self._fired_until

    def rollback(self, saved: object) -> None:
        self._panes, self._fired_until = saved  # type: ignore[misc]

    def snapshot(self) -> dict[str, pa.Table]:
        meta = pa.table({"fired_until": arrays.from_pylist([self._fired_until], pa.int64())})
        state = {"meta": meta}
        if self._panes:
            keys = list(self._panes)
            # Built through Polars: ``pa.array`` of Python values consults pandas.
            columns = {"pane": pl.Series([k[0] for k in keys], dtype=pl.Int64)}
            for i, name in enumerate(self.keys, start=1):
                dtype = self._key_types.get(name)
                columns[f"key_{name}"] = pl.Series([k[i] for k in keys], dtype=dtype)
            sealed = [self.plugin.seal(self._panes[k]) for k in keys]
            columns["state"] = pl.Series(sealed, dtype=pl.Binary)
            state["panes"] = state_table(pl.DataFrame(columns))
        return state

    def restore(self, state: dict[str, pa.Table]) -> None:
        if "meta" in state:
            self._fired_until = state["meta"].column("fired_until")[0].as_py()
        self._panes = {}
        if "panes" in state:
            table = state["panes"]
            panes = table.column("pane").to_pylist()
            keys = [table.column(f"key_{name}").to_pylist() for name in self.keys]
            blobs = table.column("state").to_pylist()
            for i, blob in enumerate(blobs):
                key = (panes[i], *(column[i] for column in keys))
                self._panes[key] = self.plugin.unseal(blob)

    def state_rows(self) -> int:
        return len(self._panes)
