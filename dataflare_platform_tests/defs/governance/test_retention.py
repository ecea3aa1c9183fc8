"""The retention asset handles each dataset on its own: while another process holds a
DuckDB store's write lock (as a continuous stream run does), the run still cleans the
other datasets and reports the locked one by name in its metadata and its check; once
the lock is gone, the next run cleans it too."""

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataflare_platform.compliance.spec import GovernedDataset
from dataflare_platform.defs.governance.audit import RETENTION_ACTIONS
from dataflare_platform.defs.governance.retention import RETENTION_KEY, retention_definitions
from dataflare_platform.sql_names import quote_identifier

NOW = datetime(2026, 6, 1, tzinfo=UTC)
AGES_DAYS = (1, 2, 40, 50)  # two rows inside 30 days, two past it
LOCK_CONFIG = {"lock_attempts": 3, "lock_backoff_s": 0.1}

SPECS = [
    GovernedDataset.model_validate(spec)
    for spec in (
        {
            "asset": "crm/contacts",
            "data": {"duckdb": {"path": "crm.duckdb", "table": "contacts"}},
            "retention": {"keep": "30d", "time_column": "updated"},
        },
        {
            "asset": "streams/clicks",
            "data": {"duckdb": {"path": "streams/clicks.duckdb", "table": "clicks"}},
            "retention": {"keep": "30d", "time_column": "updated"},
        },
        {
            "asset": "lake/visits",
            "data": {"parquet": "lake/visits"},
            "retention": {"keep": "30d"},
        },
    )
]


def write_table(path: Path, table: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(path)) as conn:
        quoted = quote_identifier(table)
        conn.execute(f"CREATE TABLE {quoted} (id INTEGER, updated TIMESTAMPTZ)")
        for i, age in enumerate(AGES_DAYS):
            conn.execute(f"INSERT INTO {quoted} VALUES (?, ?)", [i, NOW - timedelta(days=age)])


def count_rows(path: Path, table: str) -> int:
    with duckdb.connect(str(path), read_only=True) as conn:
        return conn.execute(f"SELECT count(*) FROM {quote_identifier(table)}").fetchall()[0][0]


@pytest.fixture
def stores(home) -> Path:
    root = home.root
    write_table(root / "crm.duckdb", "contacts")
    write_table(root / "streams" / "clicks.duckdb", "clicks")
    for age in AGES_DAYS:
        day = (NOW - timedelta(days=age)).strftime("%Y-%m-%d")
        folder = root / "lake" / "visits" / f"day={day}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"id": [age]}), folder / "part-0.parquet")
    return root


HOLDER = """
import sys, duckdb
conn = duckdb.connect(sys.argv[1])  # read-write: DuckDB's exclusive file lock
conn.execute("SELECT count(*) FROM clicks").fetchall()
print("locked", flush=True)
sys.stdin.readline()  # hold the lock until the test closes our stdin
conn.close()
"""


@pytest.fixture
def held_lock(stores) -> Iterator[Path]:
    """A second process holding streams/clicks.duckdb open for writing, as a continuous
    stream run does; released when the test ends (or earlier through ``release``)."""
    path = stores / "streams" / "clicks.duckdb"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "locked"  # waits for the holder, no sleep
        yield proc
    finally:
        if proc.poll() is None:
            proc.stdin.close()
            proc.wait(timeout=60)


def run_retention(instance, resources) -> dg.ExecuteInProcessResult:
    defs = dg.Definitions.merge(retention_definitions(SPECS), dg.Definitions(resources=resources))
    return dg.materialize(
        [defs.resolve_assets_def(RETENTION_KEY)],
        instance=instance,
        run_config={
            "ops": {"governance__retention": {"config": {"as_of": NOW.isoformat(), **LOCK_CONFIG}}}
        },
        raise_on_error=False,
    )


def test_a_locked_store_is_reported_and_the_others_are_cleaned(
    stores, held_lock, instance, resources
):
    result = run_retention(instance, resources)

    assert result.success  # one locked store does not fail the whole step
    (mat,) = result.get_asset_materialization_events()
    meta = mat.materialization.metadata
    assert set(meta["locked"].value) == {"streams/clicks"}
    assert "locked by another process" in meta["locked"].value["streams/clicks"]
    assert meta["datasets"].value == 2 and meta["datasets_locked"].value == 1
    assert meta["rows_deleted"].value == 4  # two contacts rows and two visits partitions
    assert {a["dataset"] for a in meta[RETENTION_ACTIONS].value} == {
        "crm/contacts",
        "lake/visits",
    }
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "retention_applied"
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert "streams/clicks" in check.description
    assert check.metadata["locked"].value.keys() == {"streams/clicks"}

    assert count_rows(stores / "crm.duckdb", "contacts") == 2
    assert sorted(p.name for p in (stores / "lake" / "visits").iterdir()) == [
        f"day={(NOW - timedelta(days=age)).strftime('%Y-%m-%d')}" for age in (2, 1)
    ]

    held_lock.stdin.close()  # the writer finishes; the next run catches up
    assert held_lock.wait(timeout=60) == 0
    assert count_rows(stores / "streams" / "clicks.duckdb", "clicks") == len(AGES_DAYS)
    result = run_retention(instance, resources)
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.passed
    assert count_rows(stores / "streams" / "clicks.duckdb", "clicks") == 2
