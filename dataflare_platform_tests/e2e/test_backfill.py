"""A backfill of the daily statistics over a week of data, through the real daemon.

The warehouse tables are loaded first. The web server accepts the backfill;
``dagster-daemon`` (its backfill daemon and run queue) submits one run per day and marks
the backfill complete only after every run has finished. The test then checks each day's
materialization against counts computed independently, with Polars, from the landed
files.
"""

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from dataflare_platform.cli import app as dataflare_app
from dataflare_platform.client import (
    BackfillNotFoundError,
    BackfillTimeoutError,
    DataflareClient,
    DataflareClientError,
    UnknownAssetError,
)
from dataflare_platform.datagen import SCHEMAS, NexmarkConfig, write_nexmark
from dataflare_platform.home import ProjectHome
from dataflare_platform.sql_names import quote_identifier
from dataflare_platform.warehouse.connection import connect
from dataflare_platform.warehouse.loader import load_table

pytestmark = pytest.mark.e2e

BACKFILL_TIMEOUT_S = 1200

# 20k events at 0.04 events/s of event time: ~5.8 days from 2026-01-01, six UTC day
# partitions with ~3.4k events each, so every run stays small.
MULTI_DAY_CONFIG = NexmarkConfig(events=20_000, chunk_events=10_000, events_per_second=0.04)
DAILY_TABLES = ("daily_seller_stats", "daily_category_stats", "daily_person_activity")


@pytest.fixture
def landed_home(home: ProjectHome) -> ProjectHome:
    """Overrides the shared fixture (the web server and daemon fixtures use it too): a
    home with MULTI_DAY_CONFIG's files landed, not yet loaded."""
    write_nexmark(MULTI_DAY_CONFIG, home.nexmark_dir)
    return home


def _expected_rows_per_day(home: ProjectHome) -> dict[str, dict[str, int]]:
    """Rows each daily table must have per day, from the landed files with Polars.

    Seller stats: sellers who opened an auction or whose auctions got bids that day.
    Category stats: categories with an auction opened, closed with a bid inside its
    [opening, expiry] window, or bid on that day. Person activity: persons who
    registered, bid or opened an auction that day.
    """

    def landed(kind: str) -> pl.DataFrame:
        return pl.read_parquet(home.nexmark_dir / kind / "*.parquet")

    persons, auctions, bids = landed("persons"), landed("auctions"), landed("bids")
    day = pl.col("date_time").dt.date().alias("day")
    bids_with_auction = bids.join(
        auctions.select("id", "seller", "category", opened="date_time", expires="expires"),
        left_on="auction",
        right_on="id",
    )
    sellers = pl.concat(
        [
            auctions.select(day, key="seller"),
            bids_with_auction.select(day, key="seller"),
        ]
    )
    closed = (
        bids_with_auction.filter(pl.col("date_time").is_between("opened", "expires"))
        .select(day=pl.col("expires").dt.date(), key="category")
        .unique()
    )
    categories = pl.concat(
        [
            auctions.select(day, key="category"),
            closed,
            bids_with_auction.select(day, key="category"),
        ]
    )
    people = pl.concat(
        [
            persons.select(day, key="id"),
            bids.select(day, key="bidder"),
            auctions.select(day, key="seller"),
        ]
    )
    expected: dict[str, dict[str, int]] = {}
    for table, frame in zip(DAILY_TABLES, (sellers, categories, people), strict=True):
        counts = frame.unique().group_by("day").agg(rows=pl.len())
        for row in counts.iter_rows(named=True):
            expected.setdefault(row["day"].isoformat(), {})[table] = row["rows"]
    return expected


def _event_days(home: ProjectHome) -> list[str]:
    """Every UTC day with any event, oldest first (what the backfill must cover)."""
    frames = [
        pl.read_parquet(home.nexmark_dir / kind / "*.parquet", columns=["date_time"])
        for kind in ("persons", "auctions", "bids")
    ]
    days = pl.concat(frames).select(pl.col("date_time").dt.date().unique().sort())
    return [d.isoformat() for d in days.to_series().to_list()]


def test_backfill_of_the_daily_stats_job_over_every_day(webserver, daemon, landed_home):
    client = DataflareClient(port=webserver, timeout_s=120)
    days = _event_days(landed_home)
    assert len(days) >= 5 and days[0] == "2026-01-01"

    # The tables are loaded with the data-plane loader the table assets call: the ingest
    # job's own run (and its governance checks) is test_client's subject, not this one's.
    with connect(landed_home.warehouse_path) as conn:
        for kind in ("persons", "auctions", "bids"):
            assert load_table(conn, kind, landed_home.nexmark_dir / kind, SCHEMAS[kind]).rows

    backfill_id = client.backfill(
        "nexmark_daily_stats_job",
        partition_range=(days[0], days[-1]),
        tags={"launched_by": "test_backfill"},
        title="daily stats backfill",
    )
    status = client.wait_backfill(backfill_id, timeout_s=BACKFILL_TIMEOUT_S)
    assert status.status == "COMPLETED_SUCCESS", status
    assert status.partitions == days
    assert set(status.runs) == set(days)  # one run per day ...
    assert {run_status for _, run_status in status.runs.values()} == {"SUCCESS"}  # ... all green
    assert len({run_id for run_id, _ in status.runs.values()}) == len(days)

    expected = _expected_rows_per_day(landed_home)
    assert set(expected) == set(days)
    for day in days:
        for table in DAILY_TABLES:
            metadata = client.asset_metadata(["nexmark", table], partition=day)
            assert metadata, f"no materialization of nexmark/{table} for {day}"
            assert metadata["dagster/row_count"] == expected[day].get(table, 0), (table, day)
    with connect(landed_home.warehouse_path) as conn:
        for table in DAILY_TABLES:
            stored = dict(
                conn.execute(
                    "SELECT CAST(day AS VARCHAR), count(*)"
                    f" FROM {quote_identifier(table)} GROUP BY ALL"
                ).fetchall()
            )
            assert stored == {day: expected[day][table] for day in days if table in expected[day]}

    # The asset flavour: two named days of one asset, through partitionNames, launched
    # and waited for by `dataflare backfill`.
    result = CliRunner().invoke(
        dataflare_app,
        [
            *("backfill", "launch", "--asset", "nexmark/daily_category_stats"),
            *("--partition", days[1], "--partition", days[2], "--wait"),
            *("--timeout", str(BACKFILL_TIMEOUT_S), "--port", str(webserver)),
        ],
    )
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout)
    assert done["status"] == "COMPLETED_SUCCESS" and done["done"] is True
    assert sorted(done["runs"]) == days[1:3]
    assert {run["status"] for run in done["runs"].values()} == {"SUCCESS"}
    status = client.backfill_status(done["backfill_id"])
    assert {p: run_id for p, (run_id, _) in status.runs.items()} == {
        p: run["run_id"] for p, run in done["runs"].items()
    }


def test_bad_backfills_fail_with_readable_errors(webserver):
    """No daemon here: a valid backfill is accepted but never leaves REQUESTED."""
    client = DataflareClient(port=webserver, timeout_s=120)
    with pytest.raises(DataflareClientError, match=r"unknown partition.*2099-01-01"):
        client.backfill("nexmark_daily_stats_job", partition_range=("2026-01-01", "2099-01-01"))
    with pytest.raises(DataflareClientError, match="not partitioned"):
        client.backfill("nexmark_ingest_job", partitions=["2026-01-01"])
    with pytest.raises(DataflareClientError, match="a job or an asset selection"):
        client.backfill(partitions=["2026-01-01"])
    with pytest.raises(BackfillNotFoundError):
        client.backfill_status("nosuchbackfill")

    backfill_id = client.backfill("nexmark_daily_stats_job", partitions=["2026-01-02"])
    pending = client.backfill_status(backfill_id)
    assert pending.status == "REQUESTED" and pending.partitions == ["2026-01-02"]
    assert pending.runs == {}
    with pytest.raises(TimeoutError) as timeout:
        client.wait_backfill(backfill_id, timeout_s=1)
    assert isinstance(timeout.value, BackfillTimeoutError)
    assert backfill_id in str(timeout.value) and "dagster-daemon" in str(timeout.value)

    # An asset backfill over a range (partitionsByAssets) targets every day in it.
    with pytest.raises(UnknownAssetError, match="nexmark/nope"):
        client.backfill(asset_selection=["nexmark/nope"], partitions=["2026-01-02"])
    ranged = client.backfill(
        asset_selection=["nexmark/daily_category_stats"],
        partition_range=("2026-01-02", "2026-01-04"),
    )
    assert client.backfill_status(ranged).partitions == ["2026-01-02", "2026-01-03", "2026-01-04"]


def test_backfill_commands_launch_follow_and_refuse(webserver):
    """`dataflare backfill` without a daemon: launched and shown as REQUESTED; waiting
    times out naming the daemon; bad requests exit 2 with the client's message."""

    def cli(*args: str):
        return CliRunner().invoke(dataflare_app, [*args, "--port", str(webserver)])

    launched = cli(
        "backfill",
        "launch",
        "nexmark_daily_stats_job",
        "--from",
        "2026-01-02",
        "--to",
        "2026-01-03",
        "--tag",
        "via=cli",
        "--title",
        "two days",
    )
    assert launched.exit_code == 0, launched.output
    backfill_id = json.loads(launched.stdout)["backfill_id"]
    shown = cli("backfill", "status", backfill_id)
    assert shown.exit_code == 0, shown.output
    status = json.loads(shown.stdout)
    assert (status["backfill_id"], status["status"], status["done"]) == (
        backfill_id,
        "REQUESTED",
        False,
    )
    assert status["partitions"] == ["2026-01-02", "2026-01-03"] and status["runs"] == {}
    waited = cli("backfill", "wait", backfill_id, "--timeout", "1")
    assert waited.exit_code == 2
    assert waited.stderr.startswith(f"error: backfill {backfill_id} still REQUESTED")
    assert "dagster-daemon" in waited.stderr

    refusals = {
        ("backfill", "status", "nosuchbackfill"): "no backfill with id 'nosuchbackfill'",
        (
            "backfill",
            "launch",
            "nexmark_daily_stats_job",
            "--from",
            "2026-01-01",
            "--to",
            "2099-01-01",
        ): "unknown partition(s) 2099-01-01",
        (
            "backfill",
            "launch",
            "nexmark_ingest_job",
            "--partition",
            "2026-01-01",
        ): "not partitioned",
        ("backfill", "launch", "--partition", "2026-01-01"): "give a JOB or --asset keys",
        ("backfill", "launch", "nexmark_daily_stats_job"): "give --partition keys or a range",
        (
            "backfill",
            "launch",
            "nexmark_daily_stats_job",
            "--from",
            "2026-01-01",
        ): "needs both --from and --to",
        (
            "backfill",
            "launch",
            "--asset",
            "nexmark/nope",
            "--partition",
            "2026-01-02",
        ): "nexmark/nope",
    }
    for args, message in refusals.items():
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("error: ") and message in " ".join(result.stderr.split())
