"""Files as a source (Parquet and Arrow IPC parts of a folder) opened through the
registry, under the source contract."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataflare_platform.connectors.files import FileSourceSettings, open_source
from dataflare_platform.connectors.settings import OpenContext
from dataflare_platform_tests.connectors.contract import SourceCase, SourceContract


class TestFileSourceContract(SourceContract):
    KIND = "file"

    @pytest.fixture
    def source_case(self, tmp_path) -> SourceCase:
        def store(table: pa.Table):
            folder = tmp_path / "bids"
            folder.mkdir()
            # Three parts of both formats, several row groups each: offsets run across.
            third = table.num_rows // 3
            pq.write_table(table.slice(0, third), folder / "00.parquet", row_group_size=100)
            out = pa.OSFile(str(folder / "01.arrow"), "wb")
            with out, pa.ipc.new_file(out, table.schema) as writer:
                writer.write_table(table.slice(third, third), max_chunksize=70)
            pq.write_table(table.slice(2 * third), folder / "02.parquet", row_group_size=150)
            settings = FileSourceSettings(path=folder)
            return lambda: open_source(settings, OpenContext("contract", "bids"))

        return SourceCase(store)
