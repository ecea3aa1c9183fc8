"""An expression that fails at run time (issue 17): a cast of a value that does not
convert, a column a batch lacks. The batch is dead-lettered with the reason and the run
goes on (in = out + dead), a restart resumes past it, and a step failing every batch
trips the circuit breaker with a clear reason instead of dead-lettering everything."""

from __future__ import annotations

import pyarrow as pa
import pytest

from dataflare_platform.engine import CollectSink, Runner, RunnerConfig, TableSource
from dataflare_platform.engine.runner import PipelineHaltedError, polars_reason
from dataflare_platform.streams.spec import PipelineSpec
from dataflare_platform_tests.engine.helpers import T0

SPEC = {
    "name": "casts",
    "catalog": {"micro_batch": False},
    "sources": {"rows": {"path": "unused", "columns": ["id", "amount", "date_time"]}},
    "streams": {"out": {"from": "rows", "steps": []}},
    "output": "out",
    "sink": {"discard": {}},
}


def _spec(*steps) -> PipelineSpec:
    data = {**SPEC, "streams": {"out": {"from": "rows", "steps": list(steps)}}}
    return PipelineSpec.load(data)


def _rows(amounts: list[str], start: int = 0) -> pa.Table:
    n = len(amounts)
    return pa.table(
        {
            "id": pa.array(range(start, start + n), pa.int64()),
            "amount": pa.array(amounts, pa.string()),
            "date_time": pa.array([T0 + 10 * i for i in range(start, start + n)]).cast(
                pa.timestamp("ms")
            ),
        }
    )


CAST = {"with_columns": {"cents": "CAST(amount AS INT) * 100"}}


def _run(spec, table, sink, **config):
    source = TableSource.single("rows", table)
    pipeline = spec.build(sink=sink, sources={"rows": source})
    return Runner(pipeline, RunnerConfig(batch_rows=10, checkpoint_every=1, **config)).run()


def test_a_batch_whose_cast_fails_is_dead_lettered_and_the_run_goes_on():
    amounts = [str(i) for i in range(50)]
    amounts[23] = "twelve"  # batch 3 of 5 (rows 20..29)
    sink = CollectSink()
    result = _run(_spec(CAST), _rows(amounts), sink)
    m = result.metrics
    assert result.finished
    assert (m.events_in, m.events_out, m.dead_letters) == (50, 40, 10)
    dead = sink.side("dead_letter")
    assert dead.height == 10 and set(dead["reason"]) == {
        "WithColumns failed: InvalidOperationError: conversion from `str` to `i32` failed"
        " in column 'amount' for 1 out of 10 values"
    }
    assert "twelve" not in dead["reason"][0]  # the values stay in the rows, not the reason
    assert sink.result()["cents"].to_list() == [i * 100 for i in range(50) if not 20 <= i < 30]


def test_a_column_missing_at_run_time_dead_letters_the_batch():
    """A source that declares no columns (validation cannot check the names) lacks the
    column a filter reads: its batches are dead-lettered naming the column."""
    data = {
        **SPEC,
        "sources": {"rows": {"path": "unused"}},
        "streams": {"out": {"from": "rows", "steps": [{"filter": "coupon > 0"}]}},
    }
    sink = CollectSink()
    result = _run(PipelineSpec.load(data), _rows(["1"] * 5), sink)
    assert (result.metrics.events_in, result.metrics.dead_letters) == (5, 5)
    reason = sink.side("dead_letter")["reason"][0]
    assert "ColumnNotFoundError" in reason and "coupon" in reason


def test_a_restart_resumes_past_the_poison_batch():
    amounts = [str(i) for i in range(40)]
    amounts[5] = "NaN?"
    sink = CollectSink()
    first = _run(_spec(CAST), _rows(amounts[:20]), sink)
    assert first.metrics.dead_letters == 10
    assert sink.checkpoint.offsets == {"rows/0": 20}  # committed past the poison batch
    # The restart reads the same source, now longer: it starts after the committed offset.
    second = _run(_spec(CAST), _rows(amounts), sink)
    m = second.metrics
    assert second.finished and m.events_in == 40 and m.dead_letters == 10
    assert m.events_in == m.events_out + m.dead_letters
    assert sink.result().height == 30


def test_a_step_failing_every_batch_trips_the_circuit_breaker():
    amounts = [str(i) for i in range(20)] + ["x"] * 180  # 2 good batches, then only bad
    sink = CollectSink()
    for _ in range(2):  # a restart meets the same streak and stops the same way
        with pytest.raises(PipelineHaltedError) as err:
            _run(_spec(CAST), _rows(amounts), sink, max_failed_batches=5)
        message = str(err.value)
        assert "rejected 5 batches in a row" in message and "InvalidOperationError" in message
        assert "\n" not in message and "'x'" not in message
        # Committed: the good batches; the streak was not (nothing dead-lettered for good).
        # The last checkpoint is never inside the streak: after the second good batch, or
        # after the first when the second's checkpoint fell due while the first still
        # committed (one checkpoint in flight: it waits, and the streak withholds it).
        assert sink.checkpoint.offsets["rows/0"] in (10, 20)
        committed = sink.checkpoint.offsets["rows/0"]
        assert sink.side("dead_letter").height == 0 and sink.result().height == committed


def test_good_batches_reset_the_breaker():
    amounts = [str(i) for i in range(100)]
    for bad in range(0, 100, 20):  # every other batch fails
        amounts[bad] = "?"
    sink = CollectSink()
    result = _run(_spec(CAST), _rows(amounts), sink, max_failed_batches=2)
    assert result.finished and result.metrics.dead_letters == 50


def test_polars_reason_is_one_line_without_values():
    import polars as pl

    with pytest.raises(pl.exceptions.PolarsError) as err:
        pl.DataFrame({"a": ["secret-value"]}).select(pl.col("a").cast(pl.Int32))
    reason = polars_reason(err.value)
    assert "secret-value" not in reason and "\n" not in reason
    assert reason.startswith("InvalidOperationError: conversion from")
