"""The DuckDB sink opened through the registry, under the transactional-sink contract,
and its settings refused naming the field."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest

from dataflare_platform.connectors import duckdb as duckdb_connector
from dataflare_platform.connectors.duckdb.sink import DuckDBSink, connect_for_writing
from dataflare_platform.connectors.registry import SINKS
from dataflare_platform.connectors.settings import OpenContext
from dataflare_platform.engine.checkpoint import Checkpoint
from dataflare_platform.errors import ConfigError
from dataflare_platform.models import validated
from dataflare_platform_tests.connectors.contract import SinkCase, TransactionalSinkContract
from dataflare_platform_tests.processes import holding_duckdb_writer


class TestDuckDBSinkContract(TransactionalSinkContract):
    KIND = "duckdb"

    @pytest.fixture
    def sink_case(self, tmp_path) -> SinkCase:
        settings = duckdb_connector.DuckDBSinkSettings(path=tmp_path / "out.duckdb", table="out")

        def read() -> pl.DataFrame:
            with duckdb.connect(str(settings.path), read_only=True) as conn:
                return pl.from_arrow(conn.sql("SELECT * FROM out").to_arrow_table())

        return SinkCase(
            open=lambda: duckdb_connector.open_sink(settings, OpenContext("contract")),
            read=read,
            settings=settings.model_dump(),
        )


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"table": 'x"; DROP TABLE y; --'}, "table"),
        ({"table": "Upper"}, "table"),
        ({"table": "t", "upsert_keys": []}, "upsert_keys"),
        ({"table": "t", "tabel": "typo"}, "tabel"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(values, field):
    with pytest.raises(ConfigError) as err:
        validated(SINKS["duckdb"].settings, "duckdb sink", {"kind": "duckdb", **values})
    assert err.value.fields == [field]


def test_a_sink_without_a_path_needs_a_folder_to_put_its_file_in(tmp_path):
    settings = duckdb_connector.DuckDBSinkSettings(table="out")
    with pytest.raises(ConfigError) as err:
        duckdb_connector.open_sink(settings, OpenContext("p"))
    assert err.value.fields == ["sink.path"]
    sink = duckdb_connector.open_sink(settings, OpenContext("p", default_dir=tmp_path))
    assert sink.path == tmp_path / "p.duckdb"


def test_reading_a_file_this_process_writes_sees_what_was_committed(tmp_path):
    """A check evaluated inside a continuous run reads the file its sink holds open:
    DuckDB refuses a read-only second configuration in that process, ``reading`` shares
    the writer's instance instead (and stays read-only where nobody writes)."""
    path = tmp_path / "held.duckdb"
    writer = duckdb.connect(str(path))
    writer.execute("CREATE TABLE t AS SELECT 1 AS a")
    with pytest.raises(duckdb.ConnectionException, match="different configuration"):
        duckdb.connect(str(path), read_only=True)
    with duckdb_connector.reading(path) as conn:
        assert conn.execute("SELECT a FROM t").fetchall() == [(1,)]
    writer.close()
    with duckdb_connector.reading(path) as conn:
        assert conn.execute("SELECT a FROM t").fetchall() == [(1,)]
        with pytest.raises(duckdb.InvalidInputException, match="read-only"):
            conn.execute("INSERT INTO t VALUES (2)")


def test_opening_waits_for_a_reader_of_another_process_to_let_go(tmp_path):
    """A reader in another process (the lag sensor, ``dataflare dlq``) holds the file's
    lock for a moment; a run opening the sink then waits instead of failing."""
    path = tmp_path / "out.duckdb"
    first = DuckDBSink(path, "t")
    assert first.open("p") is None
    first.close()
    waits: list[int] = []
    with holding_duckdb_writer(path, read_only=True) as release:
        with pytest.raises(duckdb.IOException, match="lock"):
            connect_for_writing(path, wait_s=0)  # not waiting: the lock is really held

        def reader_lets_go() -> None:
            waits.append(1)
            release()

        conn = connect_for_writing(path, on_wait=reader_lets_go)
    conn.execute("CREATE TABLE written (a INTEGER)")  # a read-write connection
    conn.close()
    assert len(waits) == 1  # it waited once, then opened
    sink = DuckDBSink(path, "t")
    assert sink.open("p") is None
    sink.close()


def test_a_checkpoint_is_stored_byte_for_byte_and_replaced(tmp_path):
    """The checkpoint row is written from an Arrow table pointing at the blob (DuckDB's
    parameter binding copied a large BLOB several times): stored exactly, replaced by the
    next commit, one row per pipeline, and read back by the next open."""
    import numpy as np
    import pyarrow as pa

    path = tmp_path / "ck.duckdb"
    rng = np.random.default_rng(7)
    states = []
    for n in (1, 300_000):  # a few bytes, then a few MB of state
        table = pa.table({"k": rng.integers(0, 1 << 40, n), "v": rng.random(n)})
        states.append(Checkpoint(offsets={"bids/0": n}, states={"op": {"s": table}}))
    sink = DuckDBSink(path=path, table="out")
    assert sink.open("p") is None
    for checkpoint in states:
        sink.commit_batch(pl.DataFrame({"a": [1]}), None, checkpoint)
        with duckdb_connector.reading(path) as conn:
            rows = conn.execute(
                "SELECT pipeline, state FROM dataflare_checkpoints ORDER BY pipeline"
            ).fetchall()
        assert [(p, bytes(s)) for p, s in rows] == [("p", checkpoint.encode("zstd"))]
    sink.close()
    reopened = DuckDBSink(path=path, table="out").open("p")
    assert reopened.offsets == {"bids/0": 300_000}
    assert reopened.states["op"]["s"].equals(states[-1].states["op"]["s"])


def test_a_failed_commit_reports_duckdbs_own_error_without_the_value_and_keeps_the_last(
    tmp_path,
):
    """A statement failing inside the commit's transaction leaves DuckDB refusing all but
    ROLLBACK; the sink's clean-up must not replace the statement's error with that
    refusal ("Current transaction is aborted"), and the error, which goes to logs, names
    the column and type but not the row's value."""
    sink = DuckDBSink(tmp_path / "out.duckdb", "out")
    sink.open("p")
    try:
        sink.commit_batch(pl.DataFrame({"amount": [1, 2]}), None, Checkpoint(offsets={"s/0": 2}))
        # Twice the plain value (the failed one left nothing behind), then values with
        # quotes in them, which DuckDB quotes without escaping.
        for value in ["secret-4111", "secret-4111", "it's secret-4111", "x'); secret-4111 --"]:
            with pytest.raises(duckdb.ConversionException) as err:
                sink.commit_batch(
                    pl.DataFrame({"amount": [value]}),
                    pl.DataFrame(
                        {"kind": ["k"], "operator": ["o"], "reason": ["r"], "payload": ["p"]}
                    ),
                    Checkpoint(offsets={"s/0": 3}),
                )
            message = str(err.value)
            assert "INT64" in message and "amount" in message
            assert "secret-4111" not in message and "aborted" not in message
            assert err.value.__cause__ is None and err.value.__suppress_context__
        sink.commit_batch(pl.DataFrame({"amount": [5]}), None, Checkpoint(offsets={"s/0": 3}))
        assert sink.open("p").offsets == {"s/0": 3}
        rows = sink._conn.execute("SELECT amount FROM out ORDER BY amount").fetchall()
        side = sink._conn.execute("SELECT count(*) FROM out_side").fetchone()
        assert rows == [(1,), (2,), (5,)] and side == (0,)
    finally:
        sink.close()
