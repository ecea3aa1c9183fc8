"""Nexmark q15–q19 beyond the generic tests: the YAML form of each equals the builder, the keyed
top-N's TTL (exact when no key is revived after it, and how it differs when one is), and
the exact ``count_distinct`` window aggregate on several windows and keys."""

import textwrap

import duckdb
import polars as pl
import pyarrow as pa
import pytest

from dataflare_platform.datagen import NexmarkConfig, write_nexmark
from dataflare_platform.engine import CollectSink, Runner, RunnerConfig, Stream, TableSource
from dataflare_platform.engine.aggregations import count_distinct
from dataflare_platform.engine.operators import KeyedTopN
from dataflare_platform.engine.pipeline import sliding
from dataflare_platform.errors import ConfigError, InvalidInputError
from dataflare_platform.queries.nexmark import BUILDERS, UPSERT_KEYS, NexmarkSources
from dataflare_platform.queries.nexmark.keyed import q18, q19
from dataflare_platform.streams.spec import PipelineSpec
from dataflare_platform_tests.queries.test_nexmark_queries import (
    assert_matches_truth,
    final_rows,
)

BIDS = "[auction, bidder, price, channel, url, date_time, extra]"


def _ranked_columns(distinct: bool) -> str:
    ranks = {
        "rank1": "price < 10000",
        "rank2": "price >= 10000 AND price < 1000000",
        "rank3": "price >= 1000000",
    }
    lines = []
    for rank, cond in ranks.items():
        lines.append(f"{rank}_bid: CASE WHEN {cond} THEN 1 END")
        if distinct:
            lines += [f"{rank}_{c}: CASE WHEN {cond} THEN {c} END" for c in ("bidder", "auction")]
    return "\n".join(" " * 12 + line for line in lines)


def _counts(distinct: bool) -> str:
    lines = ["total_bids: count"] + [f"rank{i}_bids: {{count: rank{i}_bid}}" for i in (1, 2, 3)]
    if distinct:
        for column, name in (("bidder", "bidders"), ("auction", "auctions")):
            lines.append(f"total_{name}: {{count_distinct: {column}}}")
            lines += [f"rank{i}_{name}: {{count_distinct: rank{i}_{column}}}" for i in (1, 2, 3)]
    return "\n".join(" " * 14 + line for line in lines)


def _names(distinct: bool) -> str:
    names = ["total_bids", "rank1_bids", "rank2_bids", "rank3_bids"]
    if distinct:
        for name in ("bidders", "auctions"):
            names += [f"total_{name}"] + [f"rank{i}_{name}" for i in (1, 2, 3)]
    return ", ".join(names)


def _bids_yaml(name: str, columns: str, steps: str) -> str:
    """A pipeline reading the bids file (``columns``) into one stream ``out`` made of
    ``steps`` (YAML list items, indented as a stream's steps)."""
    return f"""
name: {name}
watermark: {{out_of_orderness: 4s}}
sources:
  bids: {{path: data/bids, columns: {columns}}}
streams:
  out:
    from: bids
    steps:
{steps.strip(chr(10))}
output: out
sink: {{discard: {{}}}}
"""


def _daily_steps(
    distinct: bool,
    key: str | None = None,
    aggs: str = "",
    day: str = "day: CAST(window_start AS DATE)",
    select: str = "day, {counts}",
) -> str:
    """q15–q17's steps: rank indicator columns, per-day counts of them (per ``key``, with
    ``aggs``), the columns of ``day`` and the output columns ``select`` (``{counts}``
    stands for the counts' names)."""
    key_by = f"      - key_by: [{key}]" if key else ""
    return f"""
      - with_columns:
{_ranked_columns(distinct)}
{key_by}
      - window:
          tumbling: 1d
          agg:
{_counts(distinct)}
{textwrap.indent(textwrap.dedent(aggs).strip(), " " * 14)}
      - with_columns:
{textwrap.indent(textwrap.dedent(day).strip(), " " * 10)}
      - select: [{select.format(counts=_names(distinct))}]
"""


Q15_YAML = _bids_yaml(
    "daily-bids", "[auction, bidder, price, date_time]", _daily_steps(distinct=True)
)

Q16_YAML = _bids_yaml(
    "daily-channels",
    "[auction, bidder, price, channel, date_time]",
    _daily_steps(
        distinct=True,
        key="channel",
        aggs="last_bid: {max: date_time}",
        day="""
            day: CAST(window_start AS DATE)
            minute: STRFTIME(last_bid, '%H:%M')""",
        select="day, channel, minute, {counts}",
    ),
)

Q17_YAML = _bids_yaml(
    "daily-auctions",
    "[auction, price, date_time]",
    _daily_steps(
        distinct=False,
        key="auction",
        aggs="""
            min_price: {min: price}
            max_price: {max: price}
            avg_price: {mean: price}
            sum_price: {sum: price}""",
        select="day, auction, {counts}, min_price, max_price, avg_price, sum_price",
    ),
)

Q18_YAML = _bids_yaml(
    "latest-bids",
    BIDS,
    """
      - key_by: [bidder, auction]
      - top_n: {by: date_time, n: 1, descending: true}""",
)

Q19_YAML = _bids_yaml(
    "top-bids",
    BIDS,
    """
      - key_by: [auction]
      - top_n: {by: price, n: 10, rank_column: rank_number}""",
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("keyed-spec")
    write_nexmark(NexmarkConfig(events=20_000, events_per_second=400.0), root / "data")
    return root


@pytest.mark.parametrize(
    ("query", "text"),
    [
        ("q15", Q15_YAML),
        ("q16", Q16_YAML),
        ("q17", Q17_YAML),
        ("q18", Q18_YAML),
        ("q19", Q19_YAML),
    ],
)
def test_yaml_pipeline_gives_the_builder_pipelines_output(data_dir, query, text):
    path = data_dir / "pipeline.yaml"
    path.write_text(textwrap.dedent(text))
    spec = PipelineSpec.from_yaml(path)
    config = RunnerConfig(batch_rows=3_000)  # the same cuts: upsert streams' updates match
    got_sink = CollectSink()
    assert Runner(spec.build(sink=got_sink), config).run().finished
    data = data_dir / "data"
    sources = NexmarkSources.from_paths(query, data / "bids", data / "persons", data / "auctions")
    want_sink = CollectSink()
    Runner(BUILDERS[query](sources, want_sink), config).run()
    got, want = got_sink.result(), want_sink.result()
    assert got.height == want.height > 0
    assert got.columns == want.columns
    assert got.sort(got.columns).equals(want.sort(want.columns))


def test_interval_join_agg_refuses_count_distinct_in_yaml_and_builder():
    import yaml

    data = yaml.safe_load(
        """
        name: x
        sources:
          a: {path: a, columns: [id, expires, date_time]}
          b: {path: b, columns: [auction, bidder, date_time]}
        streams:
          s:
            from: a
            steps:
              - interval_join_agg:
                  with: b
                  left_key: id
                  right_key: auction
                  end_column: expires
                  left_columns: [id]
                  agg: {bidders: {count_distinct: bidder}}
        output: s
        sink: {discard: {}}
        """
    )
    with pytest.raises(ConfigError, match="count_distinct"):
        PipelineSpec.load(data)
    table = pa.table({"id": [1], "date_time": [0]})
    p = Stream.source(TableSource.single("a", table))
    other = p.pipeline.source(TableSource.single("b", table))
    with pytest.raises(InvalidInputError, match="distinct"):
        p.interval_join_agg(other, "id", "id", "date_time", ["id"], count_distinct("id"))
    with pytest.raises(InvalidInputError, match="distinct"):  # the winner variant too
        p.interval_join_winner(
            other, "id", "id", "date_time", ["id"], [("id", True)], ["id"], count_distinct("id")
        )


# -- TTL -------------------------------------------------------------------------------------
def _largest_gap_ms(bids: pa.Table, keys: list[str]) -> int:
    """The largest step, in arrival order, from a key's newest event time so far to its
    next event: a TTL at least this long never finds a key idle (the watermark at a row
    is at most the row's time)."""
    df = pl.from_arrow(bids).with_row_index("__i").with_columns(t=pl.col("date_time").cast(int))
    prev = pl.col("t").cum_max().shift(1).over(keys)
    return int(df.sort("__i").select((pl.col("t") - prev).max()).item())


def _run_with_ttl(build, tables, ttl, batch_rows: int, until: int | None = None):
    sources = NexmarkSources(bids=TableSource.single("bids", tables["bids"]))
    sink = CollectSink()
    pipeline = build(sources, sink, ttl=ttl)
    limit = None if until is None else {"bids/0": until}
    result = Runner(pipeline, RunnerConfig(batch_rows=batch_rows)).run(until=limit)
    (top,) = [n.operator for n in pipeline.operators() if isinstance(n.operator, KeyedTopN)]
    return sink, result, top


@pytest.mark.parametrize(("query", "keys"), [("q18", ["bidder", "auction"]), ("q19", ["auction"])])
@pytest.mark.parametrize("batch_rows", [1_000, 100_000])
def test_ttl_without_revived_keys_equals_the_truth_with_less_state(
    medium_nexmark, query, keys, batch_rows
):
    build = {"q18": q18, "q19": q19}[query]
    ttl = _largest_gap_ms(medium_nexmark["bids"], keys)
    assert ttl < 10_000  # the data spans 120 s: a TTL this short forgets most keys
    sink, result, _ = _run_with_ttl(build, medium_nexmark, ttl, batch_rows)
    assert result.finished
    assert_matches_truth(query, medium_nexmark, sink)
    assert result.metrics.state_rows() == 0  # the end of input is past every key's TTL

    # Half way through, the TTL holds only recently active keys; without it, all so far.
    half = medium_nexmark["bids"].num_rows // 2
    _, _, bounded = _run_with_ttl(build, medium_nexmark, ttl, 1_000, until=half)
    _, _, unbounded = _run_with_ttl(build, medium_nexmark, None, 1_000, until=half)
    assert 0 < bounded.state_rows() < unbounded.state_rows() / 3


def test_ttl_with_revived_keys_differs_from_the_truth_only_on_those_keys(small_nexmark):
    """q19 with a TTL shorter than some auctions' pauses: an auction bid on again after
    the watermark passed its TTL ranks its new bids afresh, so its upserted ranks are no
    longer the truth; every other auction's are."""
    ttl = 1_000
    bids = pl.from_arrow(small_nexmark["bids"]).with_row_index("__i")
    prev = pl.col("date_time").cast(int).cum_max().shift(1).over("auction")
    gaps = bids.sort("__i").with_columns(gap=pl.col("date_time").cast(int) - prev)
    may_revive = set(gaps.filter(pl.col("gap") > ttl)["auction"].to_list())
    assert may_revive

    sink, result, _ = _run_with_ttl(q19, small_nexmark, ttl, 37)
    assert result.finished
    from dataflare_platform.queries.nexmark import ground_truth
    from dataflare_platform_tests.nexmark_data import truth_connection

    truth = pl.from_arrow(ground_truth(truth_connection(small_nexmark), "q19"))
    got = final_rows("q19", sink).select(truth.columns)
    truth = truth.cast(got.schema)
    differing = (
        pl.concat(
            [
                got.join(truth, on=got.columns, how="anti"),
                truth.join(got, on=got.columns, how="anti"),
            ]
        )["auction"]
        .unique()
        .to_list()
    )
    assert differing, "no auction was revived: the TTL did not forget any"
    assert set(differing) <= may_revive
    keys = UPSERT_KEYS["q19"]
    kept = got.filter(~pl.col("auction").is_in(differing)).sort(keys)
    assert kept.equals(truth.filter(~pl.col("auction").is_in(differing)).sort(keys))


def test_q18_with_revived_keys_stays_exact(small_nexmark):
    """A revived (bidder, auction) pair's new bid is newer than the forgotten one (the
    watermark passed the old one, and the new one is not late), so q18's latest bid is
    exact under any TTL: what the TTL loses, the query never needs again."""
    sink, result, _ = _run_with_ttl(q18, small_nexmark, 1_000, 37)
    assert result.finished and result.metrics.late_events == 0
    assert_matches_truth("q18", small_nexmark, sink)


def test_top_n_is_refused_without_keys_or_a_rank_column_for_n_over_one():
    stream = Stream.source(TableSource.single("b", pa.table({"k": [1], "date_time": [0]})))
    with pytest.raises(InvalidInputError, match="key_by"):
        stream.top_n("date_time")
    with pytest.raises(InvalidInputError, match="rank_column"):
        stream.key_by("k").top_n("date_time", n=3)
    with pytest.raises(InvalidInputError, match="descending"):
        stream.key_by("k").top_n(["date_time", "k"], descending=[True])


# -- count_distinct --------------------------------------------------------------------------
@pytest.mark.parametrize("batch_rows", [1, 97, 10_000])
def test_count_distinct_in_sliding_windows_equals_duckdb(batch_rows):
    """Several keys (strings, with a null key), values with nulls, events in many
    overlapping windows; checkpoints every 3 batches carry the value lists."""
    import numpy as np

    rng = np.random.default_rng(7)
    n = 2_000
    values = rng.integers(0, 50, n).astype(float)
    values[rng.random(n) < 0.1] = np.nan
    keys = rng.choice(["a", "b", "c", None], n)
    table = pa.table(
        {
            "k": pa.array(keys.tolist(), pa.string()),
            "v": pa.array([None if np.isnan(x) else int(x) for x in values], pa.int64()),
            "date_time": pa.array(np.sort(rng.integers(0, 60_000, n)), pa.int64()),
        }
    )
    sink = CollectSink()
    pipeline = (
        Stream.source(TableSource.single("t", table))
        .key_by("k")
        .window(sliding("10s", "5s"))
        .agg(count_distinct("v", "distinct_v"))
        .sink(sink)
    )
    Runner(pipeline, RunnerConfig(batch_rows=batch_rows, checkpoint_every=3)).run()
    got = sink.result().select(
        pl.col("window_start").cast(pl.Int64), "k", pl.col("distinct_v").cast(pl.Int64)
    )
    conn = duckdb.connect()
    conn.register("t", table)
    truth = pl.from_arrow(
        conn.sql(
            """
            WITH w AS (SELECT k, v, (date_time - date_time % 5000) - s * 5000 AS ws
                       FROM t, range(2) r(s))
            SELECT ws AS window_start, k, count(DISTINCT v) AS distinct_v
            FROM w GROUP BY ws, k"""
        ).to_arrow_table()
    ).cast(got.schema)
    assert got.height == truth.height > 0
    assert got.sort(got.columns).equals(truth.sort(truth.columns))


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"by": "price", "n": 10}, "rank_column"),
        ({"by": ["price", "date_time"], "descending": [True]}, "descending flag"),
        ({"by": "price", "ttl": "0s"}, "ttl"),
    ],
)
def test_bad_top_n_steps_are_refused_at_load_naming_the_field(step, message):
    import yaml

    data = yaml.safe_load(Q19_YAML)
    data["streams"]["out"]["steps"][1] = {"top_n": step}
    with pytest.raises(ConfigError, match=message):
        PipelineSpec.load(data)


# -- keyed state merged on the merge thread ---------------------------------------------------
@pytest.mark.parametrize("query", ["q18", "q19"])
def test_merges_on_the_merge_thread_leave_the_output_exact(medium_nexmark, monkeypatch, query):
    """With every merge of more than 64 rows on the real merge thread (installed whenever
    it is done, between batches), q18 and q19 still end as DuckDB's answer."""
    from dataflare_platform.engine.operators import keyed_store
    from dataflare_platform_tests.queries.test_nexmark_queries import (
        assert_matches_truth,
        run_query,
    )

    monkeypatch.setattr(keyed_store, "BACKGROUND_ROWS", 64)
    monkeypatch.setattr(keyed_store, "QUIET_BACKGROUND_ROWS", 64)
    sink, result = run_query(query, medium_nexmark, 500)
    assert_matches_truth(query, medium_nexmark, sink)
    assert result.metrics.state_rows() > 0
