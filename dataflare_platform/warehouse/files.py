"""Finding and vetting landed event files before any engine reads them.

A corrupt or foreign file should fail with its name and what is wrong with it, not with
an error from deep inside DuckDB halfway through a load.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from dataflare_platform.errors import CorruptInputError, MissingPathError

if TYPE_CHECKING:
    # Imported where used: pyarrow.dataset imports pandas (about 1 s at every
    # code-location load, i.e. every Dagster run, otherwise).
    import pyarrow.dataset as ds

FORMATS = {".parquet": "parquet", ".arrow": "ipc"}


def list_event_files(directory: Path) -> list[Path]:
    """Event files of one kind, in name order; hidden/temporary files are skipped."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix in FORMATS
    )


def read_schema(path: Path) -> pa.Schema:
    """The Arrow schema of one file, raising CorruptInputError if it cannot be read."""
    try:
        if FORMATS[path.suffix] == "parquet":
            pq.ParquetFile(path).metadata  # noqa: B018 - reads and checks the footer
            return pq.read_schema(path)
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_file(source).schema
    except (pa.ArrowException, OSError) as err:
        raise CorruptInputError(
            path, f"not a readable {FORMATS[path.suffix]} file ({err})"
        ) from None


def check_schema(path: Path, actual: pa.Schema, expected: pa.Schema) -> None:
    missing = [f.name for f in expected if f.name not in actual.names]
    if missing:
        raise CorruptInputError(path, f"missing columns {missing}")
    wrong = [
        f"{f.name}: {actual.field(f.name).type} (expected {f.type})"
        for f in expected
        if not actual.field(f.name).type.equals(f.type)
    ]
    if wrong:
        raise CorruptInputError(path, "wrong column types " + "; ".join(wrong))


def open_event_dataset(directory: Path, schema: pa.Schema) -> tuple[ds.Dataset, list[Path]]:
    """Vet every file of a kind and return them as one Arrow dataset in ``schema``.

    Every file's footer and schema is checked up front, so a bad file is named before a
    single row is loaded; row-level damage found while scanning is reported by the
    loader with the file list.
    """
    files = list_event_files(directory)
    if not files:
        raise MissingPathError(f"no event files (*.parquet, *.arrow) in {directory}")
    formats = {FORMATS[p.suffix] for p in files}
    if len(formats) > 1:
        raise CorruptInputError(Path(directory), f"mixed file formats {sorted(formats)}")
    for path in files:
        check_schema(path, read_schema(path), schema)
    fmt = "parquet" if formats == {"parquet"} else "arrow"
    import pyarrow.dataset as ds

    dataset = ds.dataset([str(p) for p in files], format=fmt, schema=schema)
    return dataset, files
