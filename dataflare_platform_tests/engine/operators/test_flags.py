"""Every operator declares what state it keeps (``stateful``) and whether that state
lives in aligned event-time windows (``windowed``); the base class refuses an operator
that snapshots state without saying so."""

from __future__ import annotations

import inspect

import pyarrow as pa
import pytest

from dataflare_platform.engine import operators
from dataflare_platform.engine.operators import Operator

# (stateful, windowed) per shipped operator: what replay and docs rely on.
EXPECTED = {
    "Filter": (False, False),
    "WithColumns": (False, False),
    "Select": (False, False),
    "MapBatches": (False, False),
    "FlatMap": (False, False),
    "Unique": (False, False),
    "EnrichJoin": (False, False),
    "Dedup": (True, False),
    "Reduce": (True, False),
    "ReduceLast": (True, False),
    "KeyedTopN": (True, False),
    "IncrementalJoin": (True, False),
    "IntervalJoinAggregate": (True, False),
    "SessionAggregate": (True, False),
    "ProcessingTimeAggregate": (True, False),  # processing time: no event-time window
    "PluginOperator": (True, False),
    "WindowAggregate": (True, True),
    "WindowTopRows": (True, True),
    "WindowJoin": (True, True),
}


def _shipped() -> dict[str, type[Operator]]:
    return {
        name: cls
        for name, cls in vars(operators).items()
        if inspect.isclass(cls) and issubclass(cls, Operator) and cls is not Operator
    }


def test_every_shipped_operator_declares_its_state():
    shipped = _shipped()
    assert set(shipped) == set(EXPECTED)  # a new operator is added to this table
    for name, cls in shipped.items():
        assert (cls.stateful, cls.windowed) == EXPECTED[name], name
        # stateful exactly when it checkpoints something (the flag is not decoration)
        assert cls.stateful == (cls.snapshot is not Operator.snapshot), name


def test_windowed_operators_expose_their_window_and_lateness():
    for name, cls in _shipped().items():
        if cls.windowed:
            fields = getattr(cls, "__dataclass_fields__", {})
            assert "window" in fields and "lateness_ms" in fields, name


def test_an_operator_that_snapshots_state_must_say_it_is_stateful():
    with pytest.raises(TypeError, match="declare stateful = True"):

        class Sneaky(Operator):
            def snapshot(self) -> dict[str, pa.Table]:
                return {}

    with pytest.raises(TypeError, match="windowed operator keeps window state"):

        class HalfWindowed(Operator):
            windowed = True
