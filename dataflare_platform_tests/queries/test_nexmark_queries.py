"""Every Nexmark query on the engine equals its DuckDB ground truth over the same events,
for several batch sizes (down to one row per batch) and for disordered input."""

import polars as pl
import pytest

from dataflare_platform.engine import CollectSink, Runner, RunnerConfig, TableSource
from dataflare_platform.queries.nexmark import (
    BUILDERS,
    COLUMNS,
    QUERIES,
    SPECS,
    UPSERT_KEYS,
    NexmarkSources,
    ground_truth,
)
from dataflare_platform_tests.nexmark_data import shuffle_within, truth_connection

# Queries whose rows follow from the events alone (q12's depend on the processing-time
# clock: its own tests in test_nexmark_streams.py control it).
EVENT_TIME = [q for q in QUERIES if SPECS[q].event_time]


def run_query(query: str, tables, batch_rows: int, checkpoint_every: int = 7):
    sources = NexmarkSources(
        **{
            kind: TableSource.single(kind, tables[kind].select(columns))
            for kind, columns in COLUMNS[query].items()
        }
    )
    sink = CollectSink()
    config = RunnerConfig(batch_rows=batch_rows, checkpoint_every=checkpoint_every)
    result = Runner(BUILDERS[query](sources, sink), config).run()
    return sink, result


def final_rows(query: str, sink: CollectSink) -> pl.DataFrame:
    out = sink.result()
    keys = UPSERT_KEYS.get(query)
    if keys:  # an upsert stream: the last row per key is the table's content
        out = out.group_by(keys, maintain_order=True).last()
    return out


def assert_matches_truth(query: str, tables, sink: CollectSink) -> None:
    truth = pl.from_arrow(ground_truth(truth_connection(tables), query))
    got = final_rows(query, sink).select(truth.columns)
    assert got.height == truth.height > 0
    got = got.sort(got.columns)
    truth = truth.cast(got.schema).sort(truth.columns)
    approx = SPECS[query].approx
    if approx:  # averages and the like: compare with a float tolerance
        exact = [c for c in got.columns if c not in approx]
        assert got.select(exact).equals(truth.select(exact))
        for column in approx:
            assert got[column].to_numpy() == pytest.approx(truth[column].to_numpy())
    else:
        assert got.equals(truth)


@pytest.mark.parametrize("query", EVENT_TIME)
@pytest.mark.parametrize("batch_rows", [1, 37, 100_000])
def test_query_matches_duckdb_for_any_batch_size(small_nexmark, query, batch_rows):
    sink, result = run_query(query, small_nexmark, batch_rows)
    assert_matches_truth(query, small_nexmark, sink)
    assert result.finished
    assert result.metrics.late_events == 0 and result.metrics.dead_letters == 0
    assert result.metrics.state_rows() == 0 or SPECS[query].keeps_state


@pytest.mark.parametrize("query", EVENT_TIME)
def test_query_matches_duckdb_on_larger_disordered_input(medium_nexmark, query):
    # Shuffling within one second of each kind's events (500 events/s: 10 persons,
    # 30 auctions, 460 bids) plus the generator's 2 s jitter stays inside Nexmark's 4 s
    # watermark delay, so nothing may be late.
    per_second = {"persons": 10, "auctions": 30, "bids": 460}
    disordered = {k: shuffle_within(t, per_second[k], seed=11) for k, t in medium_nexmark.items()}
    sink, result = run_query(query, disordered, batch_rows=1_000)
    assert_matches_truth(query, disordered, sink)
    assert result.metrics.late_events == 0
    assert result.metrics.events_in == sum(disordered[k].num_rows for k in COLUMNS[query])


@pytest.mark.parametrize("query", EVENT_TIME)
@pytest.mark.parametrize("batch_rows", [37, 10_000])
def test_query_matches_duckdb_on_a_skewed_stream_it_was_not_tuned_on(
    skewed_nexmark, query, batch_rows
):
    # Zipf-hot keys (some bid on long after their auction closed), sparse 40-bit ids
    # (no dense key tables), mixed-case channels, urls without a channel id, a midnight
    # in the middle; 20 % of events up to 2 s late, inside the 4 s watermark delay.
    sink, result = run_query(query, skewed_nexmark, batch_rows)
    assert_matches_truth(query, skewed_nexmark, sink)
    assert result.metrics.late_events == 0 and result.metrics.dead_letters == 0
    assert result.metrics.events_in == sum(skewed_nexmark[k].num_rows for k in COLUMNS[query])
