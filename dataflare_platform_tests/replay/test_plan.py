"""Replay judges a pipeline by its operators' ``windowed`` / ``stateful`` flags, not by
knowing the operator classes: a new operator is planned right by what it declares."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa
import pytest

from dataflare_platform.engine import CollectSink, Stream, TableSource
from dataflare_platform.engine.operators import Emit, Operator, Sliding, Tumbling
from dataflare_platform.engine.operators.windows import WINDOW_START
from dataflare_platform.replay.plan import ReplayError, detect_ownership


class Passthrough(Operator):
    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        return batch, None


@dataclass
class CustomWindowed(Operator):
    """Not one of the shipped window classes: replay only sees its flags."""

    stateful = True
    windowed = True

    window: Tumbling | Sliding = field(default_factory=lambda: Sliding(6_000, 2_000))
    lateness_ms: int = 500

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        return batch, None

    def snapshot(self) -> dict[str, pa.Table]:
        return {}


class CustomStateful(Operator):
    stateful = True

    def process(self, batch: pl.DataFrame, port: int = 0) -> Emit:
        return batch, None

    def snapshot(self) -> dict[str, pa.Table]:
        return {}


def _pipeline(*ops: Operator):
    table = pa.table({"a": [1], "date_time": pa.array([0], pa.timestamp("ms"))})
    stream = Stream.source(TableSource.single("src", table))
    for op in ops:
        stream = stream._then(op)
    return stream.sink(CollectSink())


def test_a_windowed_operator_owns_aligned_windows_of_its_shape():
    ownership = detect_ownership(_pipeline(Passthrough(), CustomWindowed()))
    assert (ownership.size_ms, ownership.slide_ms) == (6_000, 2_000)
    assert ownership.column == WINDOW_START and ownership.lateness_ms == 500


def test_a_stateful_operator_is_refused_naming_it():
    with pytest.raises(ReplayError, match="CustomStateful keeps state across windows"):
        detect_ownership(_pipeline(Passthrough(), CustomStateful()))


def test_stateless_operators_own_rows_by_event_time():
    ownership = detect_ownership(_pipeline(Passthrough(), Passthrough()))
    assert ownership.stateless and ownership.column == "date_time"


def test_a_window_over_a_window_is_refused():
    with pytest.raises(ReplayError, match="windows the output of another window"):
        detect_ownership(_pipeline(CustomWindowed(), CustomWindowed()))
