"""A stateful step that fails at run time on one batch (issue 17): the whole source batch
is dead-lettered with the step and the reason, every operator's state and the watermark
go back to before the batch, and the run goes on. For each stateful operator kind, the
run over a stream with a poison batch in the middle gives the output and the state of
the run over the same stream without that batch; a redrive of the dead letters counts
each row once; a step failing every batch trips the circuit breaker.

The failure is raised by the real operator after it has updated its state (the worst
case: a half-applied batch), so the test sees whether the rollback undoes it. The
plugin case fails for real: a WASM aggregate traps in finalize after update."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl
import pyarrow as pa
import pytest

from dataflare_platform.engine import (
    CollectSink,
    Pipeline,
    Runner,
    RunnerConfig,
    Stream,
    TableSource,
    count,
    session,
    sliding,
    sum_,
    tumbling,
)
from dataflare_platform.engine.operators.base import Operator
from dataflare_platform.engine.runner import PipelineHaltedError
from dataflare_platform_tests.engine.helpers import T0

ROWS = 80
BATCH = 10
POISONED = range(30, 40)  # the 4th batch of 8


def rows(n: int = ROWS, poisoned=POISONED, jump_ms: int = 0, shift: int = 0) -> pa.Table:
    """key, value, bad (the poison flag), date_time every 100 ms; ``jump_ms`` moves the
    poisoned rows ahead in event time (a batch that would advance the watermark)."""
    ts = [T0 + 100 * i + (jump_ms if i in poisoned else 0) for i in range(n)]
    return pa.table(
        {
            "key": pa.array([(i + shift) % 4 for i in range(n)], pa.int64()),
            "value": pa.array([i for i in range(n)], pa.int64()),
            "bad": pa.array([i in poisoned for i in range(n)]),
            "date_time": pa.array(ts).cast(pa.timestamp("ms")),
        }
    )


def without_poison(table: pa.Table) -> pa.Table:
    return pa.Table.from_batches(
        pl.from_arrow(table).filter(~pl.col("bad")).to_arrow().to_batches(), table.schema
    )


def poison(op: Operator) -> None:
    """Make ``op`` fail on a batch holding a row flagged ``bad``, after its real
    ``process`` has changed its state (as a failure half-way through would)."""
    real = op.process

    def process(batch: pl.DataFrame, port: int = 0):
        out = real(batch, port)
        if "bad" in batch.columns and batch.get_column("bad").any():
            raise pl.exceptions.ComputeError("poisoned batch")
        return out

    op.process = process  # type: ignore[method-assign]


def _one(source: pa.Table, settings: dict) -> Stream:
    return Stream.source(TableSource.single("rows", source), "stateful", **settings)


def _two(source: pa.Table, settings: dict) -> tuple[Stream, Stream]:
    p = Pipeline("stateful", **settings)
    left = p.source(TableSource.single("rows", source))
    right = p.source(TableSource.single("other", rows(ROWS, poisoned=(), shift=1)))
    return left, right


AGGS = (sum_("value", "total"), count("n"))

# kind -> builds the pipeline's stream up to the stateful step under test
KINDS: dict[str, Callable[[pa.Table, dict], Stream]] = {
    "dedup": lambda t, s: _one(t, s).key_by("key").dedup(250),
    "reduce": lambda t, s: _one(t, s).key_by("key").reduce(*AGGS),
    "tumbling": lambda t, s: _one(t, s).key_by("key").window(tumbling(500)).agg(*AGGS),
    "tumbling_frames": lambda t, s: (
        _one(t, s)
        .with_columns(pl.format("k{}", "key").alias("key"))
        .key_by("key")
        .window(tumbling(500))
        .agg(*AGGS)
    ),
    "sliding": lambda t, s: _one(t, s).key_by("key").window(sliding(1000, 500)).agg(*AGGS),
    "session": lambda t, s: _one(t, s).key_by("key").window(session(450)).agg(*AGGS),
    "top_rows": lambda t, s: _one(t, s).key_by("key").window(tumbling(500)).top_rows("value"),
    "top_n": lambda t, s: _one(t, s).key_by("key").top_n("value", 3, rank_column="rank", ttl=400),
    "window_join": lambda t, s: (lambda a, b: a.window_join(b, tumbling(1000), "key", "key"))(
        *_two(t, s)
    ),
    "incremental_join": lambda t, s: (lambda a, b: a.join(b, "value", "value"))(*_two(t, s)),
    "interval_join": lambda t, s: (
        lambda a, b: a.with_columns(
            (pl.col("date_time") + pl.duration(milliseconds=300)).alias("expires")
        ).interval_join_agg(
            b, "value", "value", "expires", ["value", "key"], sum_("key", "total"), count("n")
        )
    )(*_two(t, s)),
}


def build(kind: str, table: pa.Table, sink: CollectSink, settings: dict | None = None):
    """The pipeline and its stateful step (poisoned)."""
    stream = KINDS[kind](table, settings or {})
    pipeline = stream.sink(sink)
    node = next(n for n in pipeline.operators() if n.operator.stateful)
    poison(node.operator)
    return pipeline, node.id


def run(kind: str, table: pa.Table, *, until: int | None = None, **settings):
    sink = CollectSink()
    pipeline, node = build(kind, table, sink, settings)
    config = RunnerConfig(batch_rows=BATCH, checkpoint_every=1)
    stop = None if until is None else {"rows/0": until}
    return Runner(pipeline, config).run(until=stop), sink, node


def canonical(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort(df.columns) if df.height else df


def states(result, node: str) -> dict[str, pl.DataFrame]:
    return {
        k: canonical(pl.from_arrow(v)) for k, v in result.checkpoint.states.get(node, {}).items()
    }


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_poison_batch_in_a_stateful_step_leaves_no_trace(kind):
    table = rows()
    result, sink, node = run(kind, table)
    _, clean_sink, _ = run(kind, without_poison(table))
    m = result.metrics
    assert result.finished
    assert m.dead_letters == len(POISONED) == m.dead_by_reason["step_failed"]
    dead = sink.side("dead_letter")
    assert dead.height == len(POISONED) and set(dead["operator"]) == {node}
    (reason,) = set(dead["reason"])
    assert reason.startswith(f"step {node}: ") and "ComputeError: poisoned batch" in reason
    assert "rolled back" in reason
    assert pl.from_arrow(table).height == m.events_in - (
        m.partition_in.get("other/0", 0)
    )  # every row of the poisoned stream was read
    assert canonical(sink.result()).equals(canonical(clean_sink.result()))
    assert m.operators[node].errors == 1
    # The state part-way (before the end of input fires every window) is the same too.
    partial, _, _ = run(kind, table, until=60)
    clean_partial, _, _ = run(kind, without_poison(table), until=50)
    got, want = states(partial, node), states(clean_partial, node)
    assert got.keys() == want.keys()
    assert all(got[k].equals(want[k]) for k in got), (got, want)
    assert (
        partial.checkpoint.watermark["max_seen"] == clean_partial.checkpoint.watermark["max_seen"]
    )


@pytest.mark.parametrize("kind", ["tumbling", "session", "dedup", "top_rows"])
def test_a_rolled_back_batch_does_not_move_the_watermark(kind):
    """The poisoned rows are 3 s ahead: kept, they would move the watermark and make
    the next batches' rows late. Rolled back, nothing after them is late."""
    table = rows(jump_ms=3_000)
    result, sink, _ = run(kind, table, out_of_orderness_ms=0)
    clean, clean_sink, _ = run(kind, without_poison(table), out_of_orderness_ms=0)
    assert result.metrics.late_events == clean.metrics.late_events == 0
    assert canonical(sink.result()).equals(canonical(clean_sink.result()))


def _decode(dead: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    """The dead letters' rows as the source's rows again, fixed (``bad`` cleared)."""
    fields = {"key": pl.Int64, "value": pl.Int64, "bad": pl.Boolean, "date_time": pl.String}
    frame = dead.select(pl.col("payload").str.json_decode(pl.Struct(fields))).unnest("payload")
    frame = frame.with_columns(
        pl.lit(False).alias("bad"),
        pl.col("date_time").str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="ms"),
    )
    return frame.to_arrow().cast(schema)


def test_redriving_the_dead_letters_counts_each_row_once():
    """Reduce keeps running totals: after the poisoned batch is redriven (fixed) at the
    end of the stream, every key's total is the total over the whole input."""
    table = rows()
    sink = CollectSink()
    pipeline, _ = build("reduce", table, sink)
    config = RunnerConfig(batch_rows=BATCH, checkpoint_every=1)
    first = Runner(pipeline, config).run()
    assert first.metrics.dead_letters == len(POISONED)
    redriven = _decode(sink.side("dead_letter"), table.schema)
    longer = pa.concat_tables([table, redriven])
    pipeline, _ = build("reduce", longer, sink)  # resumes from the checkpoint at 80
    second = Runner(pipeline, config).run()
    assert second.metrics.events_in == ROWS + len(POISONED)
    assert second.metrics.dead_letters == len(POISONED)  # only the first time
    totals = sink.result().group_by("key").agg(pl.col("total").last(), pl.col("n").last())
    want = (
        pl.from_arrow(table)
        .group_by("key")
        .agg(pl.col("value").sum().alias("total"), pl.len().cast(pl.Int64).alias("n"))
    )
    assert canonical(totals).equals(canonical(want.select(totals.columns)))


def test_a_stateful_step_failing_every_batch_trips_the_breaker():
    table = rows(poisoned=range(20, ROWS))  # 2 good batches, then only poisoned ones
    sink = CollectSink()
    pipeline, node = build("reduce", table, sink)
    for _ in range(2):  # a restart meets the same streak and stops the same way
        pipeline, node = build("reduce", table, sink)
        config = RunnerConfig(batch_rows=BATCH, checkpoint_every=1, max_failed_batches=3)
        with pytest.raises(PipelineHaltedError) as err:
            Runner(pipeline, config).run()
        assert f"step {node} rejected 3 batches in a row" in str(err.value)
        assert "poisoned batch" in str(err.value)
        # Never inside the streak: after the last good batch, or after the first one when
        # the second's checkpoint fell due while the first still committed (one checkpoint
        # in flight: it waits, and the streak withholds it).
        assert sink.checkpoint.offsets["rows/0"] in (10, 20)
        assert sink.side("dead_letter").height == 0


def test_a_wasm_aggregate_trap_rolls_back_the_steps_before_it_too(tmp_path):
    """dedup -> aggregate plugin: the plugin traps in finalize (a real WASM trap) on
    the batch holding POISON; the dedup's state must not keep that batch's keys, or a
    redrive of the batch would be deduplicated away."""
    from dataflare_platform.plugins import Limits, Plugin
    from dataflare_platform.plugins.manifest import Manifest
    from dataflare_platform_tests.plugins.hostile import AGG_MANIFEST, POISON, aggregate_module

    def plugin(**params) -> Plugin:
        limits = Limits(deadline_ms=500, memory_bytes=8 * 1024 * 1024, max_failures=100)
        manifest = Manifest.model_validate(AGG_MANIFEST)
        return Plugin(manifest, aggregate_module(), params, limits, cache_dir=tmp_path)

    xs = list(range(100, 130))
    xs[15] = POISON  # batch 2 of 3 (rows 10..19)
    # Batch 3 repeats batch 2's values (POISON aside): kept by dedup only if the
    # rolled-back batch left no keys in its state.
    xs[20:30] = [99 if x == POISON else x for x in xs[10:20]]
    table = pa.table(
        {"x": pa.array(xs, pa.int64()), "date_time": pa.array([T0 + i for i in range(30)])}
    )
    sink = CollectSink()
    pipeline = (
        Stream.source(TableSource.single("v", table)).key_by("x").dedup("1h").plugin(plugin())
    ).sink(sink)
    result = Runner(pipeline, RunnerConfig(batch_rows=10, checkpoint_every=1)).run()
    assert result.metrics.dead_letters == 10
    dead = sink.side("dead_letter")
    assert dead["reason"][0].startswith("step ") and "trap" in dead["reason"][0]
    assert sorted(dead["payload"].str.json_decode().struct.field("x")) == sorted(xs[10:20])
    assert sink.result()["total"].to_list()[-1] == sum(xs[:10]) + sum(xs[20:])
