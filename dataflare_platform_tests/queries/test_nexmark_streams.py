"""The Nexmark queries that need more than events: q14's user function as a WASM plugin
built from C, q13's side input refreshed from its file mid-run, and q12's
processing-time windows under a clock the test controls."""

from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from dataflare_platform.connectors.files import FileSideTable, nexmark_files, write_side_table
from dataflare_platform.datagen import NexmarkConfig, write_nexmark
from dataflare_platform.engine import CollectSink, Runner, RunnerConfig, TableSource
from dataflare_platform.plugins.build import SAMPLES_DIR, build_plugin
from dataflare_platform.plugins.manifest import parse_manifest
from dataflare_platform.plugins.runtime import Plugin
from dataflare_platform.queries.nexmark import COLUMNS, NexmarkSources
from dataflare_platform.queries.nexmark.streams import (
    SIDE_SCHEMA,
    q10,
    q10_dataset,
    q12,
    q13,
    q14,
    q14_with_plugin,
    side_table,
)
from dataflare_platform_tests.nexmark_data import nexmark_tables, truth_connection
from dataflare_platform_tests.processes import nexmark_run, survives_sigkills
from dataflare_platform_tests.queries.test_nexmark_queries import assert_matches_truth


def _sources(query: str, tables) -> NexmarkSources:
    return NexmarkSources(
        **{k: TableSource.single(k, tables[k].select(c)) for k, c in COLUMNS[query].items()}
    )


@pytest.fixture(scope="module")
def count_char(tmp_path_factory: pytest.TempPathFactory) -> Plugin:
    built = tmp_path_factory.mktemp("built")
    wasm = build_plugin(SAMPLES_DIR / "count_char", built)
    sidecar = wasm.with_suffix(".json")
    manifest = parse_manifest(sidecar.read_bytes(), sidecar)
    return Plugin(
        manifest,
        wasm.read_bytes(),
        columns={"text": "extra", "count": "c_counts"},
        cache_dir=tmp_path_factory.mktemp("module-cache"),
    )


@pytest.mark.parametrize("batch_rows", [37, 100_000])
def test_q14_user_function_as_wasm_plugin_equals_duckdb_and_the_expression(
    small_nexmark, count_char, batch_rows
):
    config = RunnerConfig(batch_rows=batch_rows)
    rows_before = count_char.stats["rows"]
    with_plugin, with_expr = CollectSink(), CollectSink()
    Runner(q14_with_plugin(_sources("q14", small_nexmark), with_plugin, count_char), config).run()
    Runner(q14(_sources("q14", small_nexmark), with_expr), config).run()
    assert_matches_truth("q14", small_nexmark, with_plugin)
    got, expected = with_plugin.result(), with_expr.result()
    assert got.equals(expected)
    assert got["c_counts"].sum() > 0  # the data has c's to count
    assert count_char.stats["rows"] - rows_before == got.height


class SwitchingSource(TableSource):
    """A bids source that rewrites the side file (new values) when it first reads past
    ``switch_at``: the change lands mid-run, while batches are flowing."""

    def __init__(self, table, side_path: Path, switch_at: int) -> None:
        super().__init__("bids", {"0": table})
        self.side_path, self.switch_at, self.switched = side_path, switch_at, False

    def read(self, partition: str, offset: int, max_rows: int):
        if offset >= self.switch_at and not self.switched:
            write_side_table(side_table("new"), self.side_path)
            self.switched = True
        return super().read(partition, offset, max_rows)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_q13_side_table_refreshes_when_its_file_changes_mid_run(small_nexmark, tmp_path, suffix):
    path = write_side_table(side_table("old"), tmp_path / f"side{suffix}")
    side = FileSideTable(path, schema=SIDE_SCHEMA)
    bids = small_nexmark["bids"].select(COLUMNS["q13"]["bids"])
    source = SwitchingSource(bids, path, switch_at=bids.num_rows // 2)
    sink = CollectSink()
    result = Runner(q13(NexmarkSources(bids=source), sink, side), RunnerConfig(batch_rows=50)).run()
    assert result.finished and source.switched
    out = sink.result()
    assert out.height == bids.num_rows  # every auction % 10000 has a side row
    assert (out["value"] == "old-" + (out["auction"] % 10_000).cast(pl.String)).sum() + (
        out["value"] == "new-" + (out["auction"] % 10_000).cast(pl.String)
    ).sum() == out.height
    # In arrival order: old values, then (from the first batch after the change) new ones.
    is_new = out["value"].str.starts_with("new-")
    first_new = int(is_new.arg_true()[0])
    assert 0 < first_new < out.height
    assert is_new[first_new:].all() and not is_new[:first_new].any()
    assert side.loads == 2  # read once at the start, once after the change, never per batch


def test_q13_default_side_table_matches_duckdb(small_nexmark):
    sink = CollectSink()
    Runner(q13(_sources("q13", small_nexmark), sink), RunnerConfig(batch_rows=37)).run()
    assert_matches_truth("q13", small_nexmark, sink)


class ManualClock:
    """Processing time the test sets (epoch ms)."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


T0 = 1_700_000_000_000  # a multiple of 10 s
SEGMENT_ROWS = 600
SEGMENT_MS = 5_000  # two segments per 10 s window

Q12_TRUTH = f"""
    WITH b AS (SELECT bidder, rn // {SEGMENT_ROWS} AS seg FROM bids),
    p AS (SELECT bidder, {T0} + seg * {SEGMENT_MS} AS pt FROM b)
    SELECT epoch_ms(pt - pt % 10000) AS window_start,
           epoch_ms(pt - pt % 10000 + 10000) AS window_end, bidder, count(*) AS bid_count
    FROM p GROUP BY ALL"""


def test_q12_counts_per_processing_time_window_of_the_injected_clock(small_nexmark):
    """The input is cut into segments of 600 bids; each is run (restoring the last one's
    checkpoint) with the clock 5 s further on. A window's rows appear once the clock has
    passed its end, and together the runs give one row per (window, bidder)."""
    bids = small_nexmark["bids"].select(COLUMNS["q12"]["bids"])
    clock, sink = ManualClock(T0), CollectSink()
    config = RunnerConfig(batch_rows=100, checkpoint_every=2)
    emitted_windows = []
    ends = [*range(SEGMENT_ROWS, bids.num_rows, SEGMENT_ROWS), bids.num_rows]
    for segment, end in enumerate(ends):
        clock.now = T0 + segment * SEGMENT_MS
        source = TableSource.single("bids", bids)
        pipeline = q12(NexmarkSources(bids=source), sink, clock)
        until = None if end == bids.num_rows else {"bids/0": end}
        result = Runner(pipeline, config).run(until=until)
        assert result.finished == (until is None)
        out = sink.result()
        emitted_windows.append(sorted(set(out["window_start"].to_list())) if out.height else [])
    # Window [T0, T0+10s) closes when the clock reaches T0+10s (segment 2), the next
    # at T0+20s (segment 4); the last, still open, is emitted when the input ends.
    assert [len(w) for w in emitted_windows] == [0, 0, 1, 1, 3]
    numbered = bids.append_column("rn", pa.array(range(bids.num_rows), pa.int64()))
    conn = truth_connection({"bids": numbered})
    truth = pl.from_arrow(conn.sql(Q12_TRUTH).to_arrow_table())
    got = sink.result().select(truth.columns)
    assert got.height == truth.height > 0
    truth = truth.cast(got.schema)
    assert got.sort(got.columns).equals(truth.sort(truth.columns))


def _dataset_rows(root: Path) -> pl.DataFrame:
    return pl.read_parquet(root / "**/*.parquet", hive_partitioning=True)


def _assert_dataset_is_q10(root: Path, bids: pa.Table) -> None:
    """Each bid exactly once, in the folder of its UTC date and hour."""
    got = _dataset_rows(root)
    expected = pl.from_arrow(bids)
    assert got.height == expected.height > 0
    rows = got.select(expected.columns)
    assert rows.sort(rows.columns).equals(expected.sort(expected.columns))
    when = got["date_time"]
    assert (got["dt"].cast(pl.String) == when.dt.strftime("%Y-%m-%d")).all()
    assert (got["hh"].cast(pl.Int64) == when.dt.hour().cast(pl.Int64)).all()


def test_q10_writes_bids_once_into_date_and_hour_partitions(tmp_path):
    # 0.5 events/s: 3000 events span 100 minutes, so two hours (and their folders).
    tables = nexmark_tables(NexmarkConfig(events=3_000, events_per_second=0.5, seed=3))
    bids = tables["bids"].select(COLUMNS["q10"]["bids"])
    sink = q10_dataset(tmp_path / "q10")
    try:
        Runner(
            q10(NexmarkSources(bids=TableSource.single("bids", bids)), sink),
            RunnerConfig(batch_rows=97, checkpoint_every=3),
        ).run()
    finally:
        sink.close()
    assert sorted(p.name for p in (tmp_path / "q10").glob("dt=*/hh=*")) == ["hh=00", "hh=01"]
    _assert_dataset_is_q10(tmp_path / "q10", bids)


@pytest.mark.e2e
def test_q10_sigkill_at_random_points_then_restart_writes_each_bid_exactly_once(tmp_path):
    data = tmp_path / "nexmark"
    # 20 events/s: 120 000 events span 100 minutes of event time (two hour folders).
    write_nexmark(NexmarkConfig(events=120_000, events_per_second=20.0, format="ipc"), data)
    root = tmp_path / "q10"
    command = nexmark_run(
        "--query", "q10", "--dataset", str(root), "--input", str(data / "bids"),
        "--batch-rows", "500", "--checkpoint-every", "3",
        # Paced to last about 7 s: killed within 3.5 s of each start, it is killed at
        # least twice whatever the machine's speed (as the q5 crash test).
        "--rate", "15000",
    )  # fmt: skip
    survives_sigkills(command)
    bids = pa.concat_tables(
        pa.ipc.open_file(pa.OSFile(str(p))).read_all() for p in nexmark_files(data / "bids")
    ).select(COLUMNS["q10"]["bids"])
    _assert_dataset_is_q10(root, bids)


def test_q21_channel_id_is_flinks_case_row_by_row():
    """The known channels in any case, then the url's first ``channel_id`` parameter
    (also for a null channel); an empty parameter is an empty id, none is null."""
    from dataflare_platform.queries.nexmark.streams import HOT_CHANNEL_IDS, channel_id

    rows = [
        ("Apple", "https://x/item?channel_id=9"),
        ("GOOGLE", None),
        ("baidu", "https://x/item"),
        (None, "https://x/item?query=1&channel_id=77&channel_id=78"),
        (None, None),
        ("channel-3", "https://x/item?query=1&channel_id="),
        ("channel-4", "channel_id=5&query=1"),
        ("channel-5", "https://x/item?xchannel_id=6"),
        ("Facebook ", "https://x/item?query=1&channel_id=8"),
    ]

    def case(channel: str | None, url: str | None) -> str | None:
        if channel is not None and channel.lower() in HOT_CHANNEL_IDS:
            return HOT_CHANNEL_IDS[channel.lower()]
        if url is None:
            return None
        for piece in url.split("&"):  # a parameter starts the url or follows an '&'
            if piece.startswith("channel_id="):
                return piece[len("channel_id=") :]
        return None

    frame = pl.DataFrame(rows, schema={"channel": pl.String, "url": pl.String}, orient="row")
    got = frame.select(channel_id()).to_series().to_list()
    assert got == [case(c, u) for c, u in rows]
    assert got == ["0", "1", "3", "77", None, "", "5", None, "8"]
