"""Whether a pipeline may run as N partition-parallel workers, and which partitions
each worker owns.

A worker owns whole source partitions and keeps the state of what it reads. That is
correct only when every record that one piece of state depends on reaches the same
worker: every stateful step must keep its state by a key that contains the column its
sources are hash-partitioned by (the topic's ``key:``), and the sources a join reads
together must be co-partitioned (the same number of partitions, each partitioned by the
column the join matches on, of the same type, so matching rows have the same partition
number). Anything
else (state over all keys, a window without ``key_by``, an aggregate plugin, a source
partitioned by another column or in turn) is refused for parallel runs with every reason
at once, naming the step and the columns; the pipeline still runs as one worker.

Known limit: the check follows column *names*; a step that rewrites the partition column
under the same name before a stateful step is not detected.

No Dagster here: the worker runs and ``dataflare scale`` build on this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dataflare_platform.engine.operators.incremental_join import IncrementalJoin
from dataflare_platform.engine.operators.joins import IntervalJoinAggregate, WindowJoin
from dataflare_platform.engine.operators.plugin import PluginOperator
from dataflare_platform.engine.operators.windows import WindowAggregate
from dataflare_platform.engine.pipeline import Node, Pipeline
from dataflare_platform.errors import InvalidInputError

__all__ = ["ParallelismError", "assign", "refusals", "require_parallel"]


class ParallelismError(InvalidInputError):
    """The pipeline cannot run as partition-parallel workers (the message says why)."""


@dataclass(frozen=True)
class _Port:
    """One input of a stateful step: the columns its state is keyed by on that input."""

    keys: tuple[str, ...]
    across: str = ""  # why the step's state spans every key, when it does


def _state_ports(node: Node) -> list[_Port] | None:
    """The key columns of each input of a stateful step; ``None``: stateless."""
    op = node.operator
    if op is None or not op.stateful:
        return None
    if isinstance(op, WindowJoin | IncrementalJoin):
        return [_Port(tuple(op.left_on)), _Port(tuple(op.right_on))]
    if isinstance(op, IntervalJoinAggregate):
        return [_Port((op.left_key,)), _Port((op.right_key,))]
    if isinstance(op, PluginOperator):
        manifest = getattr(op.plugin, "manifest", None)
        if getattr(manifest, "kind", None) != "aggregate":
            return None  # map and filter plugins keep no state between batches
        return [_Port((), "an aggregate plugin keeps one accumulator over every row")]
    if isinstance(op, WindowAggregate) and op.top is not None:
        return [_Port((), "it ranks the rows of all keys in each window (top)")]
    return [_Port(tuple(getattr(op, "keys", ()) or ()))]


def upstream_sources(pipeline: Pipeline, node_id: str) -> list[Node]:
    """The source nodes ``node_id`` reads from, directly or through other steps."""
    seen: set[str] = set()
    out: list[Node] = []
    stack = [node_id]
    while stack:
        current = pipeline.nodes[stack.pop()]
        if current.id in seen:
            continue
        seen.add(current.id)
        if current.source is not None:
            out.append(current)
        stack.extend(current.parents)
    return sorted(out, key=lambda n: n.id)


def _partition_key(node: Node) -> str | None:
    return getattr(node.source, "partition_key", None)


def _key_type(node: Node) -> object:
    key = _partition_key(node)
    schema = node.source.schema  # type: ignore[union-attr]
    return schema.field(key).type if key in schema.names else None


def refusals(pipeline: Pipeline) -> list[str]:
    """Every reason ``pipeline`` cannot run as partition-parallel workers ([] if it can)."""
    reasons: list[str] = []
    sources = pipeline.sources()
    counts = {n.source.name: len(n.source.partitions()) for n in sources}  # type: ignore[union-attr]
    if len(set(counts.values())) > 1:
        reasons.append(
            f"its sources have different partition counts {counts}: a worker owns the same "
            "partition numbers of every source, so they must be co-partitioned"
        )
    for node in pipeline.operators():
        ports = _state_ports(node)
        if ports is not None:
            reasons.extend(_step_refusals(pipeline, node, ports))
    return list(dict.fromkeys(reasons))


def _step_refusals(pipeline: Pipeline, node: Node, ports: list[_Port]) -> list[str]:
    step = node.id.split(":", 1)[1]
    reasons: list[str] = []
    inputs = [upstream_sources(pipeline, parent) for parent in node.parents]
    for port, sources in zip(ports, inputs, strict=False):
        for source in sources:
            name = source.source.name  # type: ignore[union-attr]
            key = _partition_key(source)
            if not port.keys:
                why = port.across or "it keeps one state over all rows (no key)"
                reasons.append(
                    f"step {step!r}: {why}; with several workers each would see a part of it"
                )
                break
            elif key is None:
                reasons.append(
                    f"source {name!r} is not partitioned by a column (a topic without "
                    f"'key:'), so step {step!r}'s keys {list(port.keys)} are spread over "
                    "every partition"
                )
            elif key not in port.keys:
                reasons.append(
                    f"step {step!r} keeps state by {list(port.keys)} but source {name!r} "
                    f"is partitioned by {key!r}: one key's rows would reach several workers"
                )
    if len(ports) == 2 and not reasons:
        # Each side is partitioned by one of its keys; matching rows share a partition
        # number only when those are matched with each other.
        pairs = set(zip(ports[0].keys, ports[1].keys, strict=False))
        left = [_partition_key(s) for s in inputs[0]]
        right = [_partition_key(s) for s in inputs[1]]
        if not all((lk, rk) in pairs for lk in left for rk in right):
            reasons.append(
                f"step {step!r} matches {list(ports[0].keys)} with {list(ports[1].keys)} "
                f"but its inputs are partitioned by {left} and {right}: matching rows must "
                "be partitioned by columns the join matches with each other"
            )
        types = {str(_key_type(s)) for s in [*inputs[0], *inputs[1]]}
        if not reasons and len(types) > 1:
            reasons.append(
                f"step {step!r} joins inputs partitioned by columns of different types "
                f"{sorted(types)}: equal values hash to different partitions"
            )
    return reasons


def require_parallel(pipeline: Pipeline, workers: int) -> None:
    """Refuse running ``pipeline`` as ``workers`` workers, with every reason at once."""
    if workers < 1:
        raise ParallelismError(f"pipeline {pipeline.name!r}: workers must be at least 1")
    partitions = min(len(n.source.partitions()) for n in pipeline.sources())  # type: ignore[union-attr]
    if workers > partitions:
        raise ParallelismError(
            f"pipeline {pipeline.name!r}: {workers} workers for {partitions} partition(s); "
            "a worker owns whole partitions, so at most one worker per partition"
        )
    if workers == 1:
        return
    reasons = refusals(pipeline)
    if reasons:
        raise ParallelismError(
            f"pipeline {pipeline.name!r} cannot run as {workers} parallel workers: "
            + "; ".join(reasons)
        )


def assign(partitions: Sequence[str], workers: int, index: int) -> list[str]:
    """The partitions worker ``index`` of ``workers`` owns: every ``workers``-th one in
    numeric order, so counts differ by at most one and each partition has one owner."""
    if not 0 <= index < workers:
        raise InvalidInputError(f"worker index {index} is outside 0..{workers - 1}")
    ordered = sorted(partitions, key=lambda p: (len(p), p))
    return ordered[index::workers]
