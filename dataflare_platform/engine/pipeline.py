"""The pipeline builder: a small, Polars-flavoured API over the operator graph.

    p = Pipeline("q5")
    (p.source(bids_source)
       .key_by("auction")
       .window(sliding("10s", "2s"))
       .agg(count("bids"), top=TopN("bids"))
       .sink(sink))

Every method returns a new ``Stream``; nothing runs until a ``Runner`` runs the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import polars as pl

from dataflare_platform.engine.aggregations import Agg
from dataflare_platform.engine.durations import bounded_ms, to_ms
from dataflare_platform.engine.operators import (
    BatchPlugin,
    Dedup,
    EnrichJoin,
    Filter,
    FlatMap,
    IncrementalJoin,
    IntervalJoinAggregate,
    KeyedTopN,
    MapBatches,
    Operator,
    PluginOperator,
    ProcessingTimeAggregate,
    ProcessingTumbling,
    Reduce,
    ReduceLast,
    Select,
    Session,
    SessionAggregate,
    SideTable,
    Sliding,
    Tumbling,
    Unique,
    WindowAggregate,
    WindowJoin,
    WindowTopRows,
    WithColumns,
)
from dataflare_platform.engine.operators.interval_tiers import Winner
from dataflare_platform.engine.operators.plugin_windows import (
    AggregatePlugin,
    WindowPluginAggregate,
)
from dataflare_platform.engine.operators.windows import TopN
from dataflare_platform.engine.sinks import Sink
from dataflare_platform.engine.sources import Source
from dataflare_platform.errors import InvalidInputError


def tumbling(size: int | str) -> Tumbling:
    return Tumbling(to_ms(size))


def sliding(size: int | str, slide: int | str) -> Sliding:
    return Sliding(to_ms(size), to_ms(slide))


def session(gap: int | str) -> Session:
    return Session(to_ms(gap))


def processing_tumbling(
    size: int | str, clock: Callable[[], int] | None = None
) -> ProcessingTumbling:
    """Tumbling windows over processing time (``clock``: epoch ms; the wall clock unless
    a test injects its own)."""
    if clock is None:
        return ProcessingTumbling(to_ms(size))
    return ProcessingTumbling(to_ms(size), clock)


@dataclass
class Node:
    id: str
    operator: Operator | None  # None for a source node
    parents: list[str]
    source: Source | None = None
    time_column: str = "date_time"


@dataclass
class Pipeline:
    name: str
    out_of_orderness_ms: int = 4_000
    idle_timeout_ms: int | None = None
    max_future_ms: int = 3_600_000
    nodes: dict[str, Node] = field(default_factory=dict)
    children: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    sink_node: str | None = None
    sink: Sink | None = None
    # Under which name the sink keeps this run's checkpoint (default: ``name``): a
    # partition-parallel worker checkpoints each partition under its own key.
    checkpoint_key: str | None = None

    def source(self, source: Source) -> Stream:
        node_id = f"source:{source.name}"
        if node_id in self.nodes:
            raise InvalidInputError(
                f"pipeline {self.name!r} already has a source named {source.name!r}"
            )
        self.nodes[node_id] = Node(node_id, None, [], source=source, time_column=source.time_column)
        self.children[node_id] = []
        return Stream(self, node_id)

    def add(self, operator: Operator, parents: list[str]) -> Stream:
        node_id = f"{len(self.nodes)}:{operator.name}"
        time_column = self.nodes[parents[0]].time_column
        operator.bind(time_column)
        self.nodes[node_id] = Node(
            node_id, operator, parents, time_column=operator.output_time_column()
        )
        self.children[node_id] = []
        for port, parent in enumerate(parents):
            self.children[parent].append((node_id, port))
        return Stream(self, node_id)

    def sources(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.source is not None]

    def partition_keys(self) -> set[str]:
        """``source/partition`` of every partition the opened sources read: the keys of
        checkpoint offsets and of a bounded run's ``until``."""
        return {f"{n.source.name}/{p}" for n in self.sources() for p in n.source.partitions()}

    def operators(self) -> list[Node]:
        """Operator nodes in topological order (insertion order already is one)."""
        return [n for n in self.nodes.values() if n.operator is not None]

    def validate(self) -> None:
        if self.sink is None or self.sink_node is None:
            raise InvalidInputError(f"pipeline {self.name!r} has no sink")
        if not self.sources():
            raise InvalidInputError(f"pipeline {self.name!r} has no source")


@dataclass(frozen=True)
class Stream:
    pipeline: Pipeline
    node: str
    keys: tuple[str, ...] = ()

    @staticmethod
    def source(source: Source, name: str | None = None, **settings) -> Stream:
        """Start a one-source pipeline (``Pipeline(...).source`` for several sources)."""
        return Pipeline(name or source.name, **settings).source(source)

    def _then(self, operator: Operator, keys: Sequence[str] | None = None) -> Stream:
        stream = self.pipeline.add(operator, [self.node])
        return Stream(self.pipeline, stream.node, tuple(keys if keys is not None else self.keys))

    # -- stateless ---------------------------------------------------------------------
    def filter(self, predicate: pl.Expr) -> Stream:
        return self._then(Filter(predicate))

    def with_columns(self, *exprs: pl.Expr) -> Stream:
        return self._then(WithColumns(exprs))

    def select(self, *exprs: pl.Expr | str) -> Stream:
        return self._then(Select(exprs))

    def map_batches(
        self, fn: Callable[[pl.DataFrame], pl.DataFrame], name: str | None = None
    ) -> Stream:
        return self._then(MapBatches(fn, name))

    def flat_map(self, column: str) -> Stream:
        return self._then(FlatMap(column))

    def unique(self, subset: list[str] | None = None) -> Stream:
        return self._then(Unique(subset))

    def plugin(self, plugin: BatchPlugin) -> Stream:
        return self._then(PluginOperator(plugin))

    def enrich(
        self,
        table: pl.DataFrame | SideTable,
        left_on: str | list[str],
        right_on: str | list[str] | None = None,
        how: str = "left",
    ) -> Stream:
        left = _as_list(left_on)
        return self._then(EnrichJoin(table, left, _as_list(right_on) if right_on else left, how))

    # -- keyed / stateful --------------------------------------------------------------
    def key_by(self, *keys: str) -> Stream:
        return Stream(self.pipeline, self.node, tuple(keys))

    def dedup(self, horizon: int | str, lateness: int | str = 0) -> Stream:
        self._need_keys("dedup")
        return self._then(
            Dedup(
                list(self.keys),
                bounded_ms(horizon, positive=True),
                bounded_ms(lateness, positive=False),
            )
        )

    def reduce(self, *aggs: Agg) -> Stream:
        self._need_keys("reduce")
        return self._then(Reduce(list(self.keys), list(aggs)))

    def reduce_last(self, n: int, *aggs: Agg, order_by: Sequence[str] = ()) -> Stream:
        """Per key, ``aggs`` over the key's last ``n`` rows, emitted for each input row
        (an upsert stream keyed by the keys); a batch's rows count in ``order_by``
        order."""
        self._need_keys("reduce_last")
        if n < 1:
            raise InvalidInputError(f"reduce_last needs n >= 1, got {n}")
        return self._then(ReduceLast(list(self.keys), n, list(aggs), list(order_by)))

    def top_n(
        self,
        by: str | list[str],
        n: int = 1,
        descending: bool | list[bool] = True,
        rank_column: str | None = None,
        ttl: int | str | None = None,
    ) -> Stream:
        """The top ``n`` rows per key by ``by`` as an upsert stream (``KeyedTopN``):
        keyed by the keys for n = 1, else by the keys and ``rank_column``. ``ttl`` (event
        time) forgets a key idle that long past the watermark: bounded state, exact only
        while no key is revived after its TTL."""
        self._need_keys("top_n")
        order = _as_list(by)
        flags = [descending] * len(order) if isinstance(descending, bool) else list(descending)
        if not order or len(flags) != len(order):
            raise InvalidInputError("top_n: give one descending flag per 'by' column")
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 100_000:
            raise InvalidInputError(f"top_n: n must be an integer from 1 to 100000, not {n!r}")
        if n > 1 and rank_column is None:
            raise InvalidInputError("top_n: n > 1 needs a rank_column (the upsert key)")
        ttl_ms = None if ttl is None else bounded_ms(ttl, positive=True)
        return self._then(KeyedTopN(list(self.keys), order, flags, n, rank_column, ttl_ms), keys=[])

    def window(
        self,
        window: Tumbling | Sliding | Session | ProcessingTumbling,
        lateness: int | str = 0,
    ) -> WindowedStream:
        return WindowedStream(self, window, bounded_ms(lateness, positive=False))

    # -- joins -------------------------------------------------------------------------
    def window_join(
        self,
        other: Stream,
        window: Tumbling,
        left_on: str | list[str],
        right_on: str | list[str],
        lateness: int | str = 0,
    ) -> Stream:
        op = WindowJoin(window, _as_list(left_on), _as_list(right_on), to_ms(lateness))
        return self._join(other, op)

    def join(
        self,
        other: Stream,
        left_on: str | list[str],
        right_on: str | list[str],
        right_unique: bool = False,
        right_filter: pl.Expr | None = None,
    ) -> Stream:
        """Unwindowed inner join: every pair of a left and a right row with equal keys,
        emitted once, whichever arrives first. ``right_unique``: the right key is a
        primary key (at most one right row per key), so a matched left row leaves state.
        ``right_filter``: keep only right rows for which it holds, the same result as a
        ``filter`` on the right's columns after the join, but rejected right rows are
        not held; with ``right_unique`` their keys are (key columns only), so left rows
        of those keys are dropped at once instead of waiting for a match."""
        op = IncrementalJoin(
            _as_list(left_on), _as_list(right_on), right_unique, right_filter=right_filter
        )
        return self._join(other, op)

    def interval_join_agg(
        self,
        other: Stream,
        left_key: str,
        right_key: str,
        end_column: str,
        left_columns: list[str],
        *aggs: Agg,
        lateness: int | str = 0,
    ) -> Stream:
        op = IntervalJoinAggregate(
            left_key, right_key, end_column, left_columns, list(aggs), to_ms(lateness)
        )
        return self._join(other, op)

    def interval_join_winner(
        self,
        other: Stream,
        left_key: str,
        right_key: str,
        end_column: str,
        left_columns: list[str],
        order_by: Sequence[tuple[str, bool]],
        columns: Mapping[str, str] | Sequence[str],
        *aggs: Agg,
        lateness: int | str = 0,
    ) -> Stream:
        """Like :meth:`interval_join_agg`, each closed left row with the ``columns`` of
        the one right row inside its interval that ranks first by ``order_by``
        ((column, descending) pairs, lexicographic): an argmax row, e.g. the winning bid
        of an auction (Nexmark q9). ``columns`` maps right columns to output names (a
        list keeps the names). Left rows no right row matched are not emitted."""
        if not order_by:
            raise InvalidInputError("interval_join_winner needs at least one order_by column")
        named = dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}
        winner = Winner(tuple((str(c), bool(d)) for c, d in order_by), tuple(named.items()))
        op = IntervalJoinAggregate(
            left_key,
            right_key,
            end_column,
            left_columns,
            list(aggs),
            to_ms(lateness),
            winner=winner,
        )
        return self._join(other, op)

    def _join(self, other: Stream, op: Operator) -> Stream:
        if other.pipeline is not self.pipeline:
            raise InvalidInputError("both streams of a join must come from the same Pipeline")
        return self.pipeline.add(op, [self.node, other.node])

    # -- end ---------------------------------------------------------------------------
    def sink(self, sink: Sink) -> Pipeline:
        if self.pipeline.sink is not None:
            raise InvalidInputError(f"pipeline {self.pipeline.name!r} already has a sink")
        self.pipeline.sink = sink
        self.pipeline.sink_node = self.node
        return self.pipeline

    def _need_keys(self, what: str) -> None:
        if not self.keys:
            raise InvalidInputError(f"{what} needs a keyed stream: call .key_by(...) first")


@dataclass(frozen=True)
class WindowedStream:
    stream: Stream
    window: Tumbling | Sliding | Session | ProcessingTumbling
    lateness_ms: int

    def agg(self, *aggs: Agg, top: TopN | None = None) -> Stream:
        keys = list(self.stream.keys)
        if isinstance(self.window, ProcessingTumbling):
            if top is not None:
                raise InvalidInputError("top is not supported on processing-time windows")
            window = self.window
            return self.stream._then(
                ProcessingTimeAggregate(window.size_ms, keys, list(aggs), window.clock), keys=[]
            )
        if isinstance(self.window, Session):
            if top is not None:
                raise InvalidInputError("top is not supported on session windows")
            op: Operator = SessionAggregate(self.window.gap_ms, keys, list(aggs), self.lateness_ms)
        else:
            op = WindowAggregate(self.window, keys, list(aggs), self.lateness_ms, top)
        return self.stream._then(op, keys=[])

    def plugin_agg(self, plugin: AggregatePlugin) -> Stream:
        """Each window per key aggregated by an aggregate WASM plugin (e.g.
        ``hll_distinct``: an approximate distinct count per day in constant space), one
        plugin state per pane and key merged by the plugin when the window fires; the
        output has the window bounds, the keys and the plugin's output columns."""
        if not isinstance(self.window, Tumbling | Sliding):
            raise InvalidInputError("plugin_agg needs a tumbling or sliding window")
        op = WindowPluginAggregate(plugin, self.window, list(self.stream.keys), self.lateness_ms)
        return self.stream._then(op, keys=[])

    def top_rows(self, by: str, n: int = 1, descending: bool = True) -> Stream:
        if not isinstance(self.window, Tumbling):
            raise InvalidInputError("top_rows needs a tumbling window")
        op = WindowTopRows(
            self.window, TopN(by, n, descending), list(self.stream.keys), self.lateness_ms
        )
        return self.stream._then(op, keys=[])


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)
