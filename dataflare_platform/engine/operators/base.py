"""The operator contract: what every operator over micro-batches (Polars DataFrames)
implements, and the flags that say what kind of state it keeps. Never a Python loop per
record.

Every batch carries a hidden ``__wm`` column: the watermark in force just before each
row arrived, computed row by row at the source. Time-aware operators judge lateness
with it, which makes their output independent of how the input was cut into batches.
"""

from __future__ import annotations

from typing import ClassVar

import polars as pl
import pyarrow as pa

from dataflare_platform.engine.checkpoint import state_table
from dataflare_platform.engine.operators.physical import physical_numpy

WM_COL = "__wm"

Emit = tuple[pl.DataFrame | None, pl.DataFrame | None]
"""(output rows, late rows) of one call."""


def concat_rows(held: pl.DataFrame | None, rows: pl.DataFrame) -> pl.DataFrame:
    """``rows`` after the ``held`` rows (none: ``rows`` as they are), dtypes widened where
    the two differ (an Int32 batch after Int64 state), as the joins' held sides need."""
    return rows if held is None else pl.concat([held, rows], how="vertical_relaxed")


def event_ms(time_column: str) -> pl.Expr:
    return pl.col(time_column).cast(pl.Int64)


class Operator:
    """Base class: stateless pass-through defaults; stateful operators override.

    Two flags say what an operator's output depends on, for whoever must reason about
    it without knowing every operator (an event-time replay decides with them whether an
    interval can be rebuilt, ``replay.plan``):

    - ``stateful``: it keeps state from batch to batch (and checkpoints it with
      ``snapshot``), so its output depends on earlier events. Declaring ``snapshot``
      without it is refused when the class is made: state must not go unannounced.
    - ``windowed``: all that state lives in aligned event-time windows (tumbling or
      sliding: ``window`` has ``size_ms`` and ``slide_ms``, ``lateness_ms`` the allowed
      lateness), so the events of a window's span rebuild its output exactly. Sessions
      are not aligned, hence stateful but not windowed.
    """

    inputs: int = 1
    time_column: str = "date_time"
    uses_watermark: ClassVar[bool] = False  # reads the per-row ``__wm`` column (lateness)
    stateful: ClassVar[bool] = False
    windowed: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.windowed and not cls.stateful:
            raise TypeError(f"{cls.__name__}: a windowed operator keeps window state (stateful)")
        if cls.snapshot is not Operator.snapshot and not cls.stateful:
            raise TypeError(f"{cls.__name__} snapshots state: declare stateful = True")

    @property
    def name(self) -> str:
        return type(self).__name__

    def bind(self, time_column: str) -> None:
        """Called once when the pipeline is built, with the input stream's time column."""
        self.time_column = time_column

    def output_time_column(self) -> str:
        return self.time_column

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        raise NotImplementedError

    def advance(self, watermark: int) -> pl.DataFrame | None:
        """The watermark moved: emit what it completes, evict what it makes useless."""
        return None

    def snapshot(self) -> dict[str, pa.Table]:
        return {}

    def restore(self, state: dict[str, pa.Table]) -> None:
        return None

    def savepoint(self) -> object:
        """The state as it is now, for ``rollback`` if the batch about to be processed
        fails at run time (the runner then dead-letters the batch and the state must not
        count any of it). The default goes through ``snapshot``/``restore`` (always
        right, costs a copy); operators whose state is made of immutable frames return
        references instead."""
        return self.snapshot() if self.stateful else None

    def rollback(self, saved: object) -> None:
        """Back to the state ``savepoint`` returned (nothing after it counted)."""
        if self.stateful:
            self.restore(saved)  # type: ignore[arg-type]

    def state_rows(self) -> int:
        return 0

    def stats(self) -> dict[str, float]:
        """Counters the operator keeps itself, cumulative (the runner reports each run's
        increase in ``OperatorMetrics.own``); keys are prefixed by the operator's kind."""
        return {}

    def split_late(
        self, batch: pl.DataFrame, lateness_ms: int
    ) -> tuple[pl.DataFrame, pl.DataFrame | None]:
        """Rows whose time is behind (row watermark - allowed lateness) are late.

        Decided in numpy on the physical columns: the common case (nothing late) then
        costs microseconds instead of a Polars query.
        """
        if WM_COL not in batch.columns or batch.height == 0:
            return batch, None
        ts = physical_numpy(batch.get_column(self.time_column))
        wm = batch.get_column(WM_COL).to_numpy()
        mask = ts < wm - lateness_ms
        if not mask.any():
            return batch, None
        late = pl.Series(mask)
        return batch.filter(~late), batch.filter(late)


class FrameState(Operator):
    """A stateful operator whose whole state is one DataFrame (``_state``, a dataclass
    field of the subclass), checkpointed under ``state_key``. The key is part of the
    checkpoint format: a subclass keeps the one its checkpoints were written with."""

    stateful = True
    state_key: ClassVar[str]
    _state: pl.DataFrame | None

    def snapshot(self) -> dict[str, pa.Table]:
        return {} if self._state is None else {self.state_key: state_table(self._state)}

    def restore(self, state: dict[str, pa.Table]) -> None:
        if self.state_key in state:
            self._state = pl.from_arrow(state[self.state_key])

    def savepoint(self) -> object:
        # Polars frames are never changed in place here (each batch makes a new one):
        # holding the reference keeps the state as it was.
        return self._state

    def rollback(self, saved: object) -> None:
        self._state = saved  # type: ignore[assignment]

    def state_rows(self) -> int:
        return 0 if self._state is None else self._state.height
