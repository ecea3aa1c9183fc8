"""Operators over micro-batches, one module per kind:

- ``base``: the contract (``Operator``, the ``stateful`` / ``windowed`` flags, ``__wm``);
- ``stateless``: filter, projection, computed columns, explode, per-batch distinct;
- ``keyed``: state per key that outlives windows (dedup, running reduce, top-N per key);
- ``windows``: tumbling, sliding and session windows (``pane_stores`` holds their panes);
- ``joins``: window, incremental and interval joins (``interval_tiers``), table lookups;
- ``plugin``: the slot a WASM plugin fills; ``plugin_windows``: windows an aggregate
  plugin computes (one plugin state per pane and key).

The names below are the package's public face; modules import the kind they need.
"""

from dataflare_platform.engine.operators.base import WM_COL, Emit, Operator
from dataflare_platform.engine.operators.incremental_join import IncrementalJoin
from dataflare_platform.engine.operators.joins import (
    EnrichJoin,
    IntervalJoinAggregate,
    SideTable,
    WindowJoin,
)
from dataflare_platform.engine.operators.keyed import Dedup, KeyedTopN, Reduce, ReduceLast
from dataflare_platform.engine.operators.plugin import BatchPlugin, PluginOperator
from dataflare_platform.engine.operators.stateless import (
    Filter,
    FlatMap,
    MapBatches,
    Select,
    Unique,
    WithColumns,
)
from dataflare_platform.engine.operators.windows import (
    ProcessingTimeAggregate,
    ProcessingTumbling,
    Session,
    SessionAggregate,
    Sliding,
    Tumbling,
    WindowAggregate,
    WindowTopRows,
)

__all__ = [
    "WM_COL",
    "BatchPlugin",
    "Dedup",
    "Emit",
    "EnrichJoin",
    "Filter",
    "FlatMap",
    "IncrementalJoin",
    "IntervalJoinAggregate",
    "KeyedTopN",
    "MapBatches",
    "Operator",
    "PluginOperator",
    "ProcessingTimeAggregate",
    "ProcessingTumbling",
    "Reduce",
    "ReduceLast",
    "Select",
    "Session",
    "SessionAggregate",
    "SideTable",
    "Sliding",
    "Tumbling",
    "Unique",
    "WindowAggregate",
    "WindowJoin",
    "WindowTopRows",
    "WithColumns",
]
