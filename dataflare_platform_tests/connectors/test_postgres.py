"""PostgreSQL sink against a real server: types survive binary COPY, engine runs equal a
CollectSink run and the DuckDB ground truth, upserts keep each key's newest row, and a
run SIGKILLed at random points and restarted leaves exactly the uninterrupted table.

The server is ``DATAFLARE_TEST_POSTGRES_DSN`` or postgresql://postgres@127.0.0.1:5432/test;
if it is unreachable the tests fail (they do not skip): start it, or point the variable
at one. Each test works in its own schema, dropped afterwards.
"""

from __future__ import annotations

import datetime as dt
import math
import threading

import duckdb
import polars as pl
import psycopg
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataflare_platform.connectors import postgres as postgres_connector
from dataflare_platform.connectors.duckdb import DuckDBSink
from dataflare_platform.connectors.postgres.pgcopy import iter_binary, pg_type
from dataflare_platform.connectors.postgres.sink import PostgresSink, PostgresUnavailableError
from dataflare_platform.connectors.settings import OpenContext
from dataflare_platform.engine import Runner, RunnerConfig
from dataflare_platform.engine.checkpoint import Checkpoint
from dataflare_platform.errors import ConfigError
from dataflare_platform.queries.nexmark import (
    BUILDERS,
    UPSERT_KEYS,
    ground_truth,
)
from dataflare_platform.sql_names import quote_identifier
from dataflare_platform_tests.conftest import DEFAULT_POSTGRES_DSN
from dataflare_platform_tests.connectors.contract import SinkCase, TransactionalSinkContract
from dataflare_platform_tests.connectors.sink_helpers import (
    collect,
    same_rows,
    sources,
)
from dataflare_platform_tests.nexmark_data import truth_connection

CONFIG = RunnerConfig(batch_rows=100, checkpoint_every=3)


@pytest.fixture
def schema(pg_schema):
    return pg_schema


def qualified(schema: str, table: str) -> str:
    """``schema.table`` with both names quoted, for the statements the tests write."""
    return f"{quote_identifier(schema)}.{quote_identifier(table)}"


def fetch(dsn: str, query: str) -> pl.DataFrame:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(query)
        names = [d.name for d in cur.description]
        rows = cur.fetchall()
    return pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None)


# -- settings ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"table": "Robert'); DROP TABLE x;--"}, "table"),
        ({"table": "x" * 60}, "table"),  # no room left for "<table>_side"
        ({"schema_name": "has space"}, "schema_name"),
        ({"dsn": "host=localhost port"}, "dsn"),
        ({"dsn": ""}, "dsn"),
        ({"upsert_keys": []}, "upsert_keys"),
        ({"upsert_keys": ["a", "a"]}, "upsert_keys"),
        ({"lock_timeout_s": -1}, "lock_timeout_s"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(kwargs, field):
    values = {"dsn": DEFAULT_POSTGRES_DSN, "table": "out", **kwargs}
    with pytest.raises(ConfigError) as err:
        PostgresSink(**values)
    assert err.value.fields == [field] or err.value.fields[0].startswith(field)


def test_a_password_in_a_bad_dsn_is_not_echoed():
    with pytest.raises(ConfigError) as err:
        PostgresSink("user=u password=s3cret host", "out")
    assert "s3cret" not in str(err.value)


def test_an_unreachable_server_fails_with_where_and_why():
    sink = PostgresSink("postgresql://postgres@127.0.0.1:1/test", "out", connect_timeout_s=2)
    with pytest.raises(PostgresUnavailableError, match=r"127\.0\.0\.1:1/test is not reachable"):
        sink.open("p")


# -- types ------------------------------------------------------------------------------
def _round_trip(dsn: str, schema: str, table: pa.Table) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        quoted = quote_identifier(schema)
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
        columns = ", ".join(f"{quote_identifier(f.name)} {pg_type(f)}" for f in table.schema)
        conn.execute(f"CREATE TABLE {quoted}.t (k serial, {columns})")
        names = ", ".join(quote_identifier(n) for n in table.column_names)
        with conn.cursor().copy(f"COPY {quoted}.t ({names}) FROM STDIN (FORMAT BINARY)") as cp:
            for piece in iter_binary(table, chunk_rows=3):
                cp.write(piece)
        return conn.execute(f"SELECT {names} FROM {quoted}.t ORDER BY k").fetchall()


def test_binary_copy_keeps_every_type_and_null(dsn, schema):
    table = pa.table(
        {
            "i": pa.array([1, None, -(2**63), 2**63 - 1], pa.int64()),
            "i32": pa.array([1, -(2**31), None, 7], pa.int32()),
            "f": pa.array([0.1 + 0.2, float("inf"), None, -0.0]),
            "s": pa.array(['héllo, "wörld"\n\tx', "", None, "\\N"]),
            "b": pa.array([True, None, False, True]),
            "d": pa.array([dt.date(2026, 1, 2), dt.date(1, 1, 1), None, dt.date(9999, 12, 31)]),
            "ts": pa.array(
                [
                    dt.datetime(2026, 1, 1, 0, 0, 0, 123000),
                    dt.datetime(1969, 12, 31, 23, 59, 59, 999000),
                    None,
                    dt.datetime(2000, 1, 1),
                ],
                pa.timestamp("ms"),
            ),
            "tz": pa.array([0, None, 1_700_000_000_000_000, -1], pa.timestamp("us", tz="UTC")),
            "raw": pa.array([b"\x00\xff", b"", None, b"x"], pa.binary()),
        }
    )
    rows = _round_trip(dsn, schema, table)
    expected = [tuple(r.values()) for r in table.to_pylist()]
    assert rows == expected
    assert math.isinf(rows[1][2])


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.none() | st.integers(-(2**63), 2**63 - 1),
            st.none() | st.floats(allow_nan=False),
            st.none() | st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00")),
            st.none() | st.datetimes(dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31)),
        ),
        max_size=20,
    )
)
def test_binary_copy_round_trips_any_values(dsn, schema, rows):
    table = pa.table(
        {
            "i": pa.array([r[0] for r in rows], pa.int64()),
            "f": pa.array([r[1] for r in rows], pa.float64()),
            "s": pa.array([r[2] for r in rows], pa.large_string()),
            "t": pa.array([r[3] for r in rows], pa.timestamp("us")),
        }
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {quote_identifier(schema)} CASCADE")
    assert _round_trip(dsn, schema, table) == rows


# -- engine runs ------------------------------------------------------------------------
@pytest.mark.parametrize("query", ["q1", "q5", "q7", "q8"])
def test_engine_run_into_postgres_equals_collect_sink_and_ground_truth(
    dsn, schema, small_nexmark, query
):
    sink = PostgresSink(dsn, f"nexmark_{query}", schema_name=schema)
    result = Runner(BUILDERS[query](sources(query, small_nexmark), sink), CONFIG).run()
    assert result.finished and result.metrics.checkpoints > 1
    got = fetch(dsn, f"SELECT * FROM {qualified(schema, f'nexmark_{query}')}")
    expected = collect(query, small_nexmark, CONFIG)
    assert expected.height > 0
    assert same_rows(got, expected)
    truth = pl.from_arrow(ground_truth(truth_connection(small_nexmark), query))
    assert same_rows(got, truth.select(expected.columns).cast(dict(expected.schema)))
    state = fetch(dsn, f"SELECT pipeline, target FROM {qualified(schema, 'dataflare_checkpoints')}")
    assert state.rows() == [(f"nexmark-{query}", f"nexmark_{query}")]


def test_upsert_keeps_each_keys_newest_row_like_duckdb(dsn, schema, small_nexmark, tmp_path):
    keys = UPSERT_KEYS["q4"]
    sink = PostgresSink(dsn, "q4", schema_name=schema, upsert_keys=keys)
    Runner(BUILDERS["q4"](sources("q4", small_nexmark), sink), CONFIG).run()
    duck = DuckDBSink(tmp_path / "q4.duckdb", "q4", upsert_keys=keys)
    Runner(BUILDERS["q4"](sources("q4", small_nexmark), duck), CONFIG).run()
    with duckdb.connect(str(tmp_path / "q4.duckdb")) as conn:
        expected = pl.from_arrow(conn.sql("SELECT * FROM q4").to_arrow_table())
    got = fetch(dsn, f"SELECT * FROM {qualified(schema, 'q4')}")
    assert got.height == got.select(keys).unique().height == expected.height > 1
    assert same_rows(got, expected)
    # A table made by the sink has the key as its primary key.
    pk = fetch(
        dsn,
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
        f" AND a.attnum = ANY(i.indkey) WHERE i.indrelid = '{qualified(schema, 'q4')}'::regclass"
        " AND i.indisprimary",
    )
    assert pk.to_series().to_list() == keys


def test_stop_and_resume_equals_one_run(dsn, schema, small_nexmark):
    whole = collect("q5", small_nexmark, CONFIG)
    sink = PostgresSink(dsn, "q5", schema_name=schema)
    first = Runner(BUILDERS["q5"](sources("q5", small_nexmark), sink), CONFIG).run(
        until={"bids/0": 1_234}
    )
    assert not first.finished
    assert sink.open("nexmark-q5").offsets == {"bids/0": 1_234}
    sink.close()
    second = Runner(BUILDERS["q5"](sources("q5", small_nexmark), sink), CONFIG).run()
    assert second.finished
    assert same_rows(fetch(dsn, f"SELECT * FROM {qualified(schema, 'q5')}"), whole)


def test_a_failed_commit_leaves_nothing_and_the_last_checkpoint(dsn, schema, monkeypatch):
    sink = PostgresSink(dsn, "out", schema_name=schema)
    assert sink.open("p") is None
    sink.write(pl.DataFrame({"a": [1, 2]}), None)
    sink.commit(Checkpoint(offsets={"s/0": 2}))
    sink.write(
        pl.DataFrame({"a": [3]}),
        pl.DataFrame({"kind": ["late"], "operator": ["o"], "reason": ["r"], "payload": ["{}"]}),
    )

    def broken(*args, **kwargs):
        raise RuntimeError("disk full, say")

    with monkeypatch.context() as m:
        m.setattr(Checkpoint, "encode", broken)  # fails after both COPYs, before COMMIT
        with pytest.raises(RuntimeError, match="disk full"):
            sink.commit(Checkpoint(offsets={"s/0": 3}))
    sink.close()
    assert fetch(dsn, f"SELECT a FROM {qualified(schema, 'out')}").to_series().to_list() == [1, 2]
    assert fetch(dsn, f"SELECT count(*) AS n FROM {qualified(schema, 'out_side')}").item() == 0
    again = PostgresSink(dsn, "out", schema_name=schema)
    assert again.open("p").offsets == {"s/0": 2}
    again.close()


def test_side_rows_are_committed_with_the_output(dsn, schema):
    sink = PostgresSink(dsn, "out", schema_name=schema)
    sink.open("p")
    side = pl.DataFrame(
        {
            "kind": ["late", "dead_letter"],
            "operator": ["w", "bids/0@3"],
            "reason": ["r", "x"],
            "payload": ['{"a":1}', ""],
        }
    )
    sink.write(None, side)
    sink.commit(Checkpoint())
    sink.close()
    assert same_rows(fetch(dsn, f"SELECT * FROM {qualified(schema, 'out_side')}"), side)


def test_a_second_writer_of_the_same_table_is_refused(dsn, schema):
    first = PostgresSink(dsn, "out", schema_name=schema)
    first.open("p")
    try:
        second = PostgresSink(dsn, "out", schema_name=schema, lock_timeout_s=0.3)
        with pytest.raises(RuntimeError, match="another writer"):
            second.open("p")
        released = threading.Timer(0.5, first.close)
        released.start()
        waiting = PostgresSink(dsn, "out", schema_name=schema, lock_timeout_s=10)
        assert waiting.open("p") is None  # got the table once the first writer closed
        waiting.close()
    finally:
        first.close()


def test_nanoseconds_are_cut_to_postgres_microseconds(dsn, schema):
    sink = PostgresSink(dsn, "out", schema_name=schema)
    sink.open("p")
    t = dt.datetime(2026, 1, 1, 0, 0, 0, 123456)
    ns = pl.DataFrame({"t": [t]}).select(
        pl.col("t").cast(pl.Datetime("ns")) + pl.duration(nanoseconds=789)
    )
    sink.write(ns, None)
    sink.commit(Checkpoint())
    sink.close()
    assert fetch(dsn, f"SELECT t FROM {qualified(schema, 'out')}").item() == t


def test_output_that_does_not_fit_the_existing_table_is_refused(dsn, schema):
    sink = PostgresSink(dsn, "out", schema_name=schema)
    sink.open("p")
    sink.write(pl.DataFrame({"a": [1]}), None)
    sink.commit(Checkpoint())
    sink.write(pl.DataFrame({"a": [2], "b": ["new"]}), None)
    with pytest.raises(ValueError, match=r"output columns \['b'\] are not in"):
        sink.commit(Checkpoint())
    sink.close()


# -- the connector contract -------------------------------------------------------------
class TestPostgresSinkContract(TransactionalSinkContract):
    """Opened through the registry (``kind: postgres``), in a schema of its own."""

    KIND = "postgres"

    @pytest.fixture
    def sink_case(self, dsn, schema) -> SinkCase:
        settings = postgres_connector.PostgresSinkSettings(dsn=dsn, table="out", schema_name=schema)
        return SinkCase(
            open=lambda: postgres_connector.open_sink(settings, OpenContext("contract")),
            read=lambda: fetch(dsn, f"SELECT * FROM {qualified(schema, 'out')}"),
            settings=settings.model_dump(),
        )


def test_the_checkpoint_is_stored_compressed_and_read_back(dsn, schema):
    """A database stores a large bytea slowly per byte and caps it at 1 GB: the blob goes
    in with its buffers compressed (``STORED_COMPRESSION``) and reads back whole."""
    state = pl.DataFrame(
        {"key": list(range(20_000)), "url": ["https://www.nexmark.com/item.htm?q=1"] * 20_000}
    )
    checkpoint = Checkpoint(offsets={"s/0": 7}, states={"op": {"store": state.to_arrow()}})
    sink = PostgresSink(dsn, "out", schema_name=schema)
    assert sink.open("p") is None
    sink.write(pl.DataFrame({"a": [1]}), None)
    sink.commit(checkpoint)
    sink.close()
    stored = fetch(dsn, f"SELECT state FROM {qualified(schema, 'dataflare_checkpoints')}")
    blob = stored["state"][0]
    assert blob == checkpoint.encode("zstd") and len(blob) < len(checkpoint.encode()) / 10
    again = PostgresSink(dsn, "out", schema_name=schema)
    restored = again.open("p")
    again.close()
    assert restored.offsets == {"s/0": 7}
    assert restored.states["op"]["store"].equals(state.to_arrow())
