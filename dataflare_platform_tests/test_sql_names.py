"""Names spliced into SQL: a hostile name stays one identifier in a real DuckDB."""

import duckdb
import pytest

from dataflare_platform.sql_names import quote_identifier


def test_a_hostile_name_is_one_identifier_and_runs_nothing():
    conn = duckdb.connect()
    conn.execute("CREATE TABLE victim AS SELECT 1 AS x")
    for hostile in ['t"; DROP TABLE victim; --', 'a""b', "Mixed Case", "naïve"]:
        conn.execute(f"CREATE TABLE {quote_identifier(hostile)} AS SELECT 2 AS y")
        names = {
            row[0] for row in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        }
        assert hostile in names
    assert conn.execute("SELECT count(*) FROM victim").fetchall() == [(1,)]


def test_doubles_embedded_quotes():
    assert quote_identifier("plain") == '"plain"'
    assert quote_identifier('a"b') == '"a""b"'


@pytest.mark.parametrize("bad", ["", "a\x00b"])
def test_refuses_unusable_names(bad):
    with pytest.raises(ValueError, match="not a usable SQL identifier"):
        quote_identifier(bad)
