import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataflare_platform.datagen import SCHEMAS
from dataflare_platform.errors import CorruptInputError
from dataflare_platform.warehouse.connection import connect, scalar
from dataflare_platform.warehouse.loader import load_table
from dataflare_platform_tests.conftest import SMALL_CONFIG


def test_load_replaces_table_with_every_landed_file(landed_home):
    with connect(landed_home.warehouse_path) as conn:
        for _ in range(2):  # a second load replaces, never appends
            result = load_table(conn, "bids", landed_home.nexmark_dir / "bids", SCHEMAS["bids"])
        assert result.rows == scalar(conn, "SELECT count(*) FROM bids")
    expected_bids = sum(1 for n in range(SMALL_CONFIG.events) if n % 50 >= 4)
    assert result.rows == expected_bids
    assert len(result.files) == SMALL_CONFIG.num_chunks


def test_garbage_file_is_named_in_the_error(landed_home):
    bad = landed_home.nexmark_dir / "bids" / "part-99999.parquet"
    bad.write_bytes(b"PAR1 this is not parquet at all")
    with connect(landed_home.warehouse_path) as conn, pytest.raises(CorruptInputError) as err:
        load_table(conn, "bids", bad.parent, SCHEMAS["bids"])
    assert err.value.path == bad
    assert "not a readable parquet file" in str(err.value)


def test_truncated_file_is_named_in_the_error(landed_home):
    victim = sorted((landed_home.nexmark_dir / "bids").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:-100])
    with connect(landed_home.warehouse_path) as conn, pytest.raises(CorruptInputError) as err:
        load_table(conn, "bids", victim.parent, SCHEMAS["bids"])
    assert err.value.path == victim


def test_file_with_the_wrong_schema_is_refused(landed_home):
    bad = landed_home.nexmark_dir / "bids" / "part-99999.parquet"
    pq.write_table(pa.table({"auction": ["not-an-int"], "bidder": [1]}), bad)
    with connect(landed_home.warehouse_path) as conn, pytest.raises(CorruptInputError) as err:
        load_table(conn, "bids", bad.parent, SCHEMAS["bids"])
    assert "missing columns" in str(err.value) and "price" in str(err.value)
    bad.unlink()
    wrong_type = SCHEMAS["bids"].set(2, pa.field("price", pa.string()))
    table = pa.table({f.name: pa.array([None], f.type) for f in wrong_type}, schema=wrong_type)
    pq.write_table(table, bad)
    with connect(landed_home.warehouse_path) as conn, pytest.raises(CorruptInputError) as err:
        load_table(conn, "bids", bad.parent, SCHEMAS["bids"])
    assert "price: string (expected int64)" in str(err.value)


def test_failed_load_keeps_the_previous_table(landed_home):
    with connect(landed_home.warehouse_path) as conn:
        before = load_table(conn, "bids", landed_home.nexmark_dir / "bids", SCHEMAS["bids"]).rows
        (landed_home.nexmark_dir / "bids" / "part-99999.parquet").write_bytes(b"junk")
        with pytest.raises(CorruptInputError):
            load_table(conn, "bids", landed_home.nexmark_dir / "bids", SCHEMAS["bids"])
        assert scalar(conn, "SELECT count(*) FROM bids") == before


def test_empty_landing_directory_is_an_error(home):
    with connect(home.warehouse_path) as conn, pytest.raises(FileNotFoundError, match="no event"):
        load_table(conn, "bids", home.nexmark_dir / "bids", SCHEMAS["bids"])
