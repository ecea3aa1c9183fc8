"""A Parquet copy of generated Nexmark events, for benchmarking Parquet input apart from
Arrow IPC (issue 21 §4): users' data mostly arrives as Parquet, typically one file with
large row groups, so the copy is one snappy file with 1 M-row row groups.

    python -m dataflare_platform.bench.parquet_input OUT/bids OUT/parquet/bids.parquet
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dataflare_platform.connectors.files import nexmark_files
from dataflare_platform.errors import user_file

ROW_GROUP_ROWS = 1_000_000


def write_parquet_copy(source: Path, target: Path, row_group_rows: int = ROW_GROUP_ROWS) -> int:
    """Every row of the Parquet/Arrow files of ``source`` (a file or a directory, in name
    order) into one Parquet file at ``target``, streamed a row group at a time; the
    rows written. Written to a temporary name first, so an interrupted copy is never
    taken for a finished one."""
    files = nexmark_files(source) if source.is_dir() else [source]
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    writer: pq.ParquetWriter | None = None
    pending: list[pa.RecordBatch] = []
    buffered = rows = 0
    try:
        for path in files:
            for batch in _batches(path):
                if writer is None:
                    writer = pq.ParquetWriter(partial, batch.schema, compression="snappy")
                pending.append(batch)
                buffered += batch.num_rows
                while buffered >= row_group_rows:
                    table = pa.Table.from_batches(pending)
                    writer.write_table(table.slice(0, row_group_rows), row_group_rows)
                    rest = table.slice(row_group_rows)
                    pending, buffered = rest.to_batches(), rest.num_rows
                    rows += row_group_rows
        if writer is not None and buffered:
            writer.write_table(pa.Table.from_batches(pending), row_group_rows)
            rows += buffered
    finally:
        if writer is not None:
            writer.close()
    partial.replace(target)
    return rows


def _batches(path: Path) -> Iterator[pa.RecordBatch]:
    """The file's rows, a batch at a time (IPC: memory-mapped, zero-copy)."""
    with user_file(path, "Nexmark input"):
        if path.suffix == ".parquet":
            yield from pq.ParquetFile(path).iter_batches(batch_size=65_536)
            return
        reader = pa.ipc.open_file(pa.memory_map(str(path)))
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)


def main(argv: list[str]) -> None:
    source, target = (Path(a) for a in argv)
    rows = write_parquet_copy(source, target)
    print(f"wrote {rows:,} rows to {target} ({ROW_GROUP_ROWS:,}-row row groups, snappy)")


if __name__ == "__main__":
    main(sys.argv[1:])
