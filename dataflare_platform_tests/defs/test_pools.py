"""Which file tag a step reading a governed dataset carries (one step per DuckDB file
at a time inside a run): the same value as the pool of the assets that write it."""

import pytest

from dataflare_platform.compliance.datasets import DatasetRef
from dataflare_platform.defs.pools import DUCKDB_FILE_TAG, WAREHOUSE_POOL, dataset_tags

# Parquet folders and topics: readers share them with writers, no tag.
CASES = [
    ({"duckdb": {"table": "bids"}}, {DUCKDB_FILE_TAG: WAREHOUSE_POOL}),
    (
        {"duckdb": {"path": "streams/masked_persons.duckdb", "table": "t"}},
        {DUCKDB_FILE_TAG: "dataflare_stream_masked_persons"},
    ),
    (
        {"duckdb": {"path": "crm/contacts.duckdb", "table": "t"}},
        {DUCKDB_FILE_TAG: "dataflare_duckdb:crm/contacts.duckdb"},
    ),
    ({"parquet": "lake/visits"}, {}),
    ({"topic": "nexmark.bids"}, {}),
]


@pytest.mark.parametrize(("ref", "tags"), CASES)
def test_dataset_tags_name_the_file_s_pool(ref, tags):
    assert dataset_tags(DatasetRef.model_validate(ref)) == tags
