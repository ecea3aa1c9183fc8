"""Checkpoints: a run stopped anywhere and resumed produces exactly one uninterrupted run's
output — in process for every stateful query, and with real SIGKILLs into DuckDB."""

import polars as pl
import pytest

from dataflare_platform.datagen import NexmarkConfig, write_nexmark
from dataflare_platform.engine import CollectSink, Runner, RunnerConfig, TableSource
from dataflare_platform.queries.nexmark import BUILDERS, COLUMNS, UPSERT_KEYS, NexmarkSources
from dataflare_platform_tests.processes import duckdb_run_survives_sigkills, nexmark_run

STATEFUL = [
    "q3",
    "q4",
    "q5",
    "q6",
    "q7",
    "q8",
    "q9",
    "q11",
    "q15",
    "q16",
    "q17",
    "q18",
    "q19",
    "q20",
]


def _sources(query, tables):
    return NexmarkSources(
        **{k: TableSource.single(k, tables[k].select(c)) for k, c in COLUMNS[query].items()}
    )


# Upsert streams emit a key's new value once per batch that changes it (q4/q6 when an
# auction closes, q18/q19 per bid): where the resumed run cuts its batches differently
# (at ``until``), the updates in between differ, but the table they upsert into is the
# same (the guarantee an upsert sink gives). The skewed stream showed it for q4.
PER_BATCH_UPSERTS = set(UPSERT_KEYS)


def _sorted(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort(df.columns)


def _content(query: str, out: pl.DataFrame) -> pl.DataFrame:
    if query in PER_BATCH_UPSERTS:
        out = out.group_by(UPSERT_KEYS[query], maintain_order=True).last()
    return _sorted(out)


@pytest.mark.parametrize("query", STATEFUL)
@pytest.mark.parametrize("stop_fraction", [0.13, 0.5, 0.87])
def test_stop_and_resume_equals_one_run(small_nexmark, query, stop_fraction):
    config = RunnerConfig(batch_rows=50, checkpoint_every=3)
    whole = CollectSink()
    Runner(BUILDERS[query](_sources(query, small_nexmark), whole), config).run()

    sink = CollectSink()
    until = {f"{k}/0": int(small_nexmark[k].num_rows * stop_fraction) for k in COLUMNS[query]}
    first = Runner(BUILDERS[query](_sources(query, small_nexmark), sink), config).run(until=until)
    assert not first.finished
    assert sink.checkpoint.offsets == until
    # A fresh pipeline (empty operators) restores state and offsets from the sink.
    second = Runner(BUILDERS[query](_sources(query, small_nexmark), sink), config).run()
    assert second.finished
    assert _content(query, sink.result()).equals(_content(query, whole.result()))
    assert second.metrics.events_in == sum(small_nexmark[k].num_rows for k in COLUMNS[query])


@pytest.mark.parametrize("query", STATEFUL)
def test_stop_and_resume_on_a_skewed_stream_equals_one_run(skewed_nexmark, query):
    """The same on the skewed shape (sparse ids: the key tables fall back to sorted maps,
    checkpointed and restored as such; Zipf-hot keys; late events)."""
    config = RunnerConfig(batch_rows=300, checkpoint_every=4)
    whole = CollectSink()
    Runner(BUILDERS[query](_sources(query, skewed_nexmark), whole), config).run()
    sink = CollectSink()
    until = {f"{k}/0": int(skewed_nexmark[k].num_rows * 0.6) for k in COLUMNS[query]}
    Runner(BUILDERS[query](_sources(query, skewed_nexmark), sink), config).run(until=until)
    assert sink.checkpoint.offsets == until
    second = Runner(BUILDERS[query](_sources(query, skewed_nexmark), sink), config).run()
    assert second.finished
    assert _content(query, sink.result()).equals(_content(query, whole.result()))


def test_uncommitted_output_is_discarded_on_restore(small_nexmark):
    """Output written after the last checkpoint is not kept: the restored run redoes it."""
    config = RunnerConfig(batch_rows=50, checkpoint_every=1_000_000)
    sink = CollectSink()
    until = {"bids/0": 1_500}
    Runner(BUILDERS["q7"](_sources("q7", small_nexmark), sink), config).run(until=until)
    committed = len(sink.outputs)
    sink.open("nexmark-q7")  # as after a crash: pending output dropped
    assert len(sink.outputs) == committed


@pytest.mark.e2e
@pytest.mark.parametrize("query", ["q5", "q19"])  # window panes; keyed top-N (an upsert table)
def test_sigkill_at_random_points_then_restart_gives_the_uninterrupted_table(tmp_path, query):
    data = tmp_path / "nexmark"
    write_nexmark(NexmarkConfig(events=120_000, events_per_second=1000.0, format="ipc"), data)
    args = [
        "--query",
        query,
        "--input",
        str(data / "bids"),
        "--batch-rows",
        "500",
        "--checkpoint-every",
        "3",
        # Paced so that the run lasts 8 s of data: killed within 3.5 s of each start, the
        # first run cannot finish, and the restart still has at least 4.5 s left, so it
        # is killed too (two kills whatever the machine's speed; at 40 000/s a fast start
        # finished before the second kill).
        "--rate",
        "15000",
    ]

    def command(db):
        return nexmark_run("--duckdb", str(db), *args)

    expected, got = duckdb_run_survives_sigkills(command, tmp_path, f"nexmark_{query}")
    assert _sorted(got).equals(_sorted(expected))
