"""The contracts every connector keeps, as test classes: a connector's test module
subclasses them and provides one fixture, and inherits every test.

- :class:`SourceContract` (fixture ``source_case`` -> :class:`SourceCase`): offsets are
  dense (every offset is exactly one row, reads from any offset of a fresh source give
  the rows stored there) and a run stopped at a checkpoint and resumed on a fresh source
  gives exactly the output of one uninterrupted run.
- :class:`DeadLetterContract` (the same fixture, with ``store_with_bad``): undecodable
  records never stop a run and are all accounted for: records in = rows out + dead.
- :class:`TransactionalSinkContract` (fixture ``sink_case`` -> :class:`SinkCase`):
  uncommitted writes vanish and ``open`` returns the last committed checkpoint; a run
  resumed after a stop equals one run; and a run SIGKILLed at random points and restarted
  leaves exactly the uninterrupted output (the sink opened through the connector
  registry in a subprocess, from its ``kind:`` settings).

Each subclass names the registry ``KIND`` it covers; ``test_contract_coverage`` fails
while a registered kind has none. Sources store Nexmark bids; what a source stores and
how it is opened is the fixture's business (through the registry, as a pipeline does).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from dataflare_platform.engine import (
    CollectSink,
    Pipeline,
    Runner,
    RunnerConfig,
    Sink,
    Source,
    TableSource,
)
from dataflare_platform.engine.checkpoint import Checkpoint
from dataflare_platform.queries.nexmark import BUILDERS, NexmarkSources
from dataflare_platform_tests.connectors.sink_helpers import (
    collect,
    run_q1,
    same_rows,
    sources,
    worker,
)
from dataflare_platform_tests.processes import kill_until_done

Opener = Callable[[], Source]


@dataclass
class SourceCase:
    """``store(table)``: put ``table``'s rows in a fresh place of the system, in order, and
    return a function opening a fresh bounded source over them (one partition).
    ``store_with_bad(table, bad)``: the same plus ``bad`` undecodable records among them
    (DeadLetterContract). ``held_dead(source)``: dead letters the source keeps itself
    instead of handing the runner a placeholder row for them (0 for broker sources)."""

    store: Callable[[pa.Table], Opener]
    store_with_bad: Callable[[pa.Table, int], Opener] | None = None
    held_dead: Callable[[Source], int] = field(default=lambda source: 0)


def _close(source: Source) -> None:
    close = getattr(source, "close", None)
    if close is not None:
        close()


def _only_partition(source: Source) -> str:
    (partition,) = source.partitions()
    return partition


def _as_source_rows(table: pa.Table, source: Source) -> pa.Table:
    return table.select(source.schema.names).cast(source.schema)


class SourceContract:
    KIND = ""  # the registry kind a subclass covers (test_contract_coverage checks them)
    ROWS = 1_000

    @pytest.fixture
    def stored(self, source_case: SourceCase, small_nexmark) -> tuple[pa.Table, Opener]:
        table = small_nexmark["bids"].slice(0, self.ROWS)
        return table, source_case.store(table)

    def test_offsets_are_dense_and_each_row_is_read_once(self, stored):
        table, open_source = stored
        source = open_source()
        try:
            partition = _only_partition(source)
            assert source.end_offset(partition) == table.num_rows
            parts, offset = [], 0
            while offset < table.num_rows:
                got = source.read(partition, offset, min(97, table.num_rows - offset))
                assert 0 < got.num_rows <= 97, f"no progress at offset {offset}"
                parts.append(got)
                offset += got.num_rows
            assert pa.concat_tables(parts).equals(_as_source_rows(table, source))
        finally:
            _close(source)
        # A fresh source seeks: the rows at an offset are the same in every run.
        again = open_source()
        try:
            got = again.read(_only_partition(again), 503, 50)
            assert got.num_rows > 0
            expected = _as_source_rows(table.slice(503, got.num_rows), again)
            assert got.equals(expected)
        finally:
            _close(again)

    def test_a_run_resumed_from_its_checkpoint_equals_one_run(self, stored):
        table, open_source = stored
        sink = CollectSink()
        first = open_source()
        try:
            key = f"{first.name}/{_only_partition(first)}"
            run_q1(first, sink, until={key: table.num_rows // 3})
        finally:
            _close(first)
        assert sink.checkpoint is not None
        second = open_source()  # a restart: new source object, same committed sink
        try:
            resumed = run_q1(second, sink)
        finally:
            _close(second)
        expected = run_q1(TableSource.single("bids", table))
        assert resumed.height == table.num_rows
        assert resumed.equals(expected.select(resumed.columns).cast(dict(resumed.schema)))


class DeadLetterContract(SourceContract):
    BAD = 7

    def test_records_in_equal_rows_out_plus_dead_letters(self, source_case, small_nexmark):
        assert source_case.store_with_bad is not None, "give store_with_bad in the case"
        table = small_nexmark["bids"].slice(0, self.ROWS)
        source = source_case.store_with_bad(table, self.BAD)()
        sink = CollectSink()
        try:
            pipeline = Pipeline("dead_letters")
            pipeline.source(source).sink(sink)
            result = Runner(pipeline, RunnerConfig(batch_rows=100, checkpoint_every=3)).run()
            held = source_case.held_dead(source)
        finally:
            _close(source)
        assert result.finished
        out = sink.result()
        dead = sink.side("dead_letter").height + held
        assert table.num_rows + self.BAD == out.height + dead
        assert dead == self.BAD
        assert same_rows(out, pl.from_arrow(table.select(out.columns)))


@dataclass
class SinkCase:
    """``open()``: a new sink object on the case's one target (a restarted process).
    ``read()``: the committed output. ``settings``: the sink's ``kind:`` settings as
    JSON-able values, for the crash worker; ``log``: the event log folder, for topic
    sinks. ``time_column``: the output column the target needs (partitions, event time)."""

    open: Callable[[], Sink]
    read: Callable[[], pl.DataFrame]
    settings: dict[str, Any]
    log: Path | None = None


def _frame(start: int, n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "auction": list(range(start, start + n)),
            "price": [i * 10 for i in range(start, start + n)],
            "date_time": [1_700_000_000_000 + i * 1000 for i in range(start, start + n)],
        },
        schema={"auction": pl.Int64, "price": pl.Int64, "date_time": pl.Datetime("ms")},
    )


CONFIG = RunnerConfig(batch_rows=100, checkpoint_every=3)


class TransactionalSinkContract:
    KIND = ""  # the registry kind a subclass covers (test_contract_coverage checks them)

    def test_uncommitted_writes_vanish_and_open_returns_the_last_checkpoint(self, sink_case):
        sink = sink_case.open()
        assert sink.transactional
        assert sink.open("contract") is None
        sink.write(_frame(0, 5), None)
        sink.commit(Checkpoint(offsets={"s/0": 5}))
        sink.write(_frame(5, 3), None)  # never committed: a crash comes first
        sink.close()
        again = sink_case.open()
        checkpoint = again.open("contract")
        again.close()
        assert checkpoint is not None and checkpoint.offsets == {"s/0": 5}
        assert same_rows(sink_case.read(), _frame(0, 5))

    def test_a_run_resumed_after_a_stop_equals_one_run(self, sink_case, small_nexmark):
        first = Runner(BUILDERS["q7"](sources("q7", small_nexmark), sink_case.open()), CONFIG)
        assert not first.run(until={"bids/0": 1_234}).finished
        second = Runner(BUILDERS["q7"](sources("q7", small_nexmark), sink_case.open()), CONFIG)
        assert second.run().finished
        expected = collect("q7", small_nexmark, CONFIG)
        got = sink_case.read()
        assert expected.height > 0
        assert same_rows(got, expected)

    @pytest.mark.e2e
    def test_sigkill_at_random_points_then_restart_gives_the_uninterrupted_output(
        self, sink_case, crash_input
    ):
        command = worker(
            "--query", "q7", "--input", str(crash_input), "--batch-rows", "500",
            # Paced to outlast two kill windows (1.5-3.5 s each) whatever the machine's
            # speed: at 40 000/s a fast restart finished before the second kill.
            "--checkpoint-every", "3", "--rate", "15000",
            "--sink", json.dumps(sink_case.settings, default=str),
            *(["--log", str(sink_case.log)] if sink_case.log else []),
        )  # fmt: skip
        summary, kills = kill_until_done(command)
        assert kills >= 2, "the run finished before it could be killed twice"
        assert summary["finished"]
        clean = CollectSink()
        src = NexmarkSources.from_paths("q7", bids=crash_input / "bids")
        Runner(BUILDERS["q7"](src, clean), RunnerConfig(batch_rows=500, checkpoint_every=3)).run()
        expected = clean.result()
        got = sink_case.read()
        assert expected.height > 1000
        assert same_rows(got, expected)
        assert got.unique().height == got.height  # no duplicates
