"""Every SQL identifier a config file can name (sink tables, schemas, upsert keys,
governance dataset tables, replay targets and time columns) is refused at validation when
it is not a plain identifier, naming the field; and a name that skipped validation (a
Python caller) still stays one quoted identifier in a real DuckDB and runs nothing."""

from __future__ import annotations

import textwrap

import duckdb
import polars as pl
import pydantic
import pytest
from typer.testing import CliRunner

from dataflare_platform.cli import app
from dataflare_platform.compliance.datasets import DatasetRef
from dataflare_platform.connectors.duckdb.sink import DuckDBSink
from dataflare_platform.connectors.postgres.sink import PostgresSinkSettings
from dataflare_platform.defs.replay.jobs import ReplayConfig
from dataflare_platform.engine.checkpoint import Checkpoint
from dataflare_platform.errors import ConfigError
from dataflare_platform.replay.run import DuckDBTarget, ParquetTarget
from dataflare_platform.streams.spec import PipelineSpec

# Quotes, semicolons, comments, whitespace, unicode lookalikes, dotted (schema / ATTACHed
# database) names, a leading digit, upper case, a NUL, a newline, empty.
HOSTILE_TABLES = [
    'out"; DROP TABLE victim; --',
    "out'; --",
    "out AS SELECT 1; COPY (SELECT 1) TO 'leak.csv'; --",
    "out; COPY dataflare_checkpoints TO 'leak.csv'",
    "out -- comment",
    "out/* c */",
    "out table",
    "оut",  # Cyrillic о
    "ｏｕｔ",  # fullwidth
    "main.out",
    "other_db.main.out",
    "1out",
    "Out",
    "out\x00",
    "out\n",
    "",
]
HOSTILE_COLUMNS = [c for c in HOSTILE_TABLES if c != "Out"] + ["naïve"]

PIPELINE = """
name: evil
sources:
  bids: {kind: topic, topic: nexmark.bids, columns: [auction, price]}
streams:
  s:
    from: bids
    steps:
      - select: [auction, price]
output: s
"""


def spec_with_sink(tmp_path, sink: dict) -> PipelineSpec:
    import yaml

    path = tmp_path / "evil.yaml"
    path.write_text(textwrap.dedent(PIPELINE) + yaml.safe_dump({"sink": sink}))
    return PipelineSpec.from_yaml(path)


@pytest.mark.parametrize("table", HOSTILE_TABLES)
def test_duckdb_sink_table_is_refused_naming_the_field(tmp_path, table):
    with pytest.raises(ConfigError) as err:
        spec_with_sink(tmp_path, {"kind": "duckdb", "table": table})
    assert err.value.fields == ["sink.duckdb.table"]


@pytest.mark.parametrize("key", HOSTILE_COLUMNS)
def test_duckdb_upsert_key_is_refused_naming_the_field(tmp_path, key):
    with pytest.raises(ConfigError) as err:
        spec_with_sink(tmp_path, {"kind": "duckdb", "table": "out", "upsert_keys": [key]})
    assert err.value.fields == ["sink.duckdb.upsert_keys.0"]


def test_pipeline_validate_refuses_the_copy_to_table_and_writes_nothing(tmp_path):
    """The reported attack: ``pipeline validate`` used to accept it."""
    leak = tmp_path / "leak.csv"
    table = f"out AS SELECT 1; COPY (SELECT 'key') TO '{leak}'; --"
    path = tmp_path / "evil.yaml"
    path.write_text(textwrap.dedent(PIPELINE) + f"sink: {{kind: duckdb, table: {table!r}}}\n")
    result = CliRunner().invoke(app, ["pipeline", "validate", str(path)])
    assert result.exit_code != 0
    assert "sink.duckdb.table" in result.output
    assert not leak.exists()


@pytest.mark.parametrize("table", HOSTILE_TABLES)
def test_postgres_sink_table_and_schema_are_refused(table):
    base = {"kind": "postgres", "dsn": "postgresql://127.0.0.1/x", "table": "out"}
    for field in ("table", "schema_name"):
        with pytest.raises(pydantic.ValidationError) as err:
            PostgresSinkSettings.model_validate({**base, field: table})
        assert [e["loc"] for e in err.value.errors()] == [(field,)]


@pytest.mark.parametrize("table", HOSTILE_TABLES)
def test_governance_dataset_table_is_refused_naming_the_field(table):
    with pytest.raises(ConfigError) as err:
        DatasetRef.validated({"duckdb": {"table": table}}, "dataset")
    assert err.value.fields == ["duckdb.table"]


@pytest.mark.parametrize("table", HOSTILE_TABLES)
def test_replay_targets_are_refused_naming_the_field(tmp_path, table):
    with pytest.raises(pydantic.ValidationError) as err:
        ReplayConfig(pipeline="hot_items", into_table=table)
    assert [e["loc"] for e in err.value.errors()] == [("into_table",)]
    with pytest.raises(pydantic.ValidationError) as err:
        DuckDBTarget(path=tmp_path / "x.duckdb", table=table)
    assert [e["loc"] for e in err.value.errors()] == [("table",)]


@pytest.mark.parametrize("column", HOSTILE_COLUMNS)
def test_replay_parquet_time_column_is_refused(tmp_path, column):
    with pytest.raises(pydantic.ValidationError) as err:
        ParquetTarget(root=tmp_path, time_column=column)
    assert [e["loc"] for e in err.value.errors()] == [("time_column",)]


def test_a_sink_built_from_python_with_a_hostile_name_runs_no_sql(tmp_path):
    """The second wall: validation skipped, the name is still one quoted identifier."""
    leak = tmp_path / "leak.csv"
    table = f"out AS SELECT 1; COPY (SELECT 'key') TO '{leak}'; --"
    path = tmp_path / "out.duckdb"
    sink = DuckDBSink(path, table, upsert_keys=['k"; DROP TABLE dataflare_checkpoints; --'])
    sink.open("evil")
    frame = pl.DataFrame({'k"; DROP TABLE dataflare_checkpoints; --': [1, 2], "v": [3, 4]})
    sink.commit_batch(frame, None, Checkpoint(offsets={}, watermark={"emitted": 0}))
    sink.close()
    assert not leak.exists()
    with duckdb.connect(str(path), read_only=True) as conn:
        names = {r[0] for r in conn.sql("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert {table, f"{table}_side", "dataflare_checkpoints"} <= names
