"""Rewrap of stored data: every ``pii_encrypted`` column of a governed dataset brought to
its key's newest version, and the measure the asset check uses (ciphertexts below the
minimum decryption version).

- **DuckDB tables**: rewritten in one transaction per dataset (readers see the old or the
  new table, never a mix).
- **Parquet folders** (e.g. a ``parquet_dataset`` sink's output of an ``encrypt`` step):
  file by file, each file that holds a value below the newest version is rewritten to a
  hidden temporary file beside it, fsynced and renamed over the original (readers see
  the old or the new file, never a torn one); files already current are not touched, so
  a rewrap interrupted half-way is finished by running it again. A ``parquet_dataset``
  sink's writer lock (``_dataflare/lock``) is held meanwhile, so no commit of the sink
  runs between the read and the rename; its manifest names files, which keep their names.
- **Event-log topics** are not rewritten, like a transit-encryption service that never
  rewrites an append-only log in place: a segment is immutable and checksummed, and
  consumers hold offsets into it. Their ciphertexts are brought below the minimum
  version's reach by *retention*: raise the minimum decryption version only once
  retention has deleted the segments written before the rotation (the check reports how
  many values of each topic are still below). See docs/encryption.md.

Work is done in batches so progress can be reported; values never leave this process
and are never logged.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from dataflare_platform.compliance.datasets import DatasetRef, read_dataset
from dataflare_platform.compliance.pii import Classification, PiiPolicy
from dataflare_platform.connectors.duckdb.sink import connect_for_writing
from dataflare_platform.crypto.columns import Binding, ColumnCipher, key_versions
from dataflare_platform.durable import WriterLock, fsync_dir
from dataflare_platform.errors import InvalidInputError, MissingPathError
from dataflare_platform.sql_names import quote_identifier

Progress = Callable[[str, int, int], None]  # column, rows done, rows total


@dataclass
class RewrapResult:
    dataset: str
    rows: int = 0
    rewrapped: dict[str, int] = field(default_factory=dict)
    versions_after: dict[str, list[int]] = field(default_factory=dict)
    latest: int = 0
    min_decryption_version: int = 0
    files_rewritten: int = 0  # Parquet: files replaced (the others were already current)
    files: int = 0
    # Why stored values were left as they are (a topic: aged out by retention instead).
    not_rewrapped: str | None = None


def encrypted_columns(policy: PiiPolicy | None) -> list[str]:
    if policy is None:
        return []
    return [c for c, k in policy.columns.items() if k is Classification.ENCRYPTED]


def _binding(policy: PiiPolicy, column: str) -> Binding:
    if policy.encryption is None:
        raise InvalidInputError("pii.encryption: no binding declared for pii_encrypted columns")
    enc = policy.encryption
    return Binding(enc.dataset, column, enc.key, enc.domains.get(column))


def rewrap_dataset(
    ref: DatasetRef,
    home_root: Path,
    policy: PiiPolicy,
    cipher: ColumnCipher,
    batch_rows: int = 65_536,
    progress: Progress | None = None,
) -> RewrapResult:
    """Re-encrypt the dataset's ``pii_encrypted`` columns to the newest key version: a
    DuckDB table in one transaction, a Parquet folder file by file (module docstring);
    a topic is reported as left to retention."""
    if ref.parquet is not None:
        return rewrap_parquet(ref, home_root, policy, cipher, batch_rows, progress)
    if ref.duckdb is None:
        result = RewrapResult(dataset=policy.encryption.dataset if policy.encryption else "")
        result.not_rewrapped = (
            f"{ref.describe()}: event-log segments are immutable; values below the newest "
            "version age out with retention (raise the minimum version after it)"
        )
        return result
    columns = encrypted_columns(policy)
    frame = read_dataset(ref, home_root)
    assert policy.encryption is not None or not columns
    result = RewrapResult(dataset=policy.encryption.dataset if policy.encryption else "")
    result.rows = frame.height
    updated = {}
    for column in columns:
        binding = _binding(policy, column)

        def report(rows: int, column: str = column) -> None:
            if progress is not None:
                progress(column, rows, frame.height)

        values = frame[column].to_arrow()
        merged, changed = _rewrap_column(values, binding, cipher, batch_rows, report)
        updated[column] = pl.Series(column, merged)
        result.rewrapped[column] = changed
        found = key_versions(merged)
        result.versions_after[column] = sorted(int(v) for v in np.unique(found) if v >= 0)
        state = cipher.envelope.state(binding.key_name)
        result.latest, result.min_decryption_version = (
            state.latest,
            state.min_decryption_version,
        )
    if any(result.rewrapped.values()):
        _replace_table(home_root, ref, frame.with_columns(*updated.values()))
    return result


def _rewrap_column(
    values: pa.Array | pa.ChunkedArray,
    binding: Binding,
    cipher: ColumnCipher,
    batch_rows: int,
    report: Callable[[int], None] | None = None,
) -> tuple[pa.Array, int]:
    """``values`` with every value below the newest version re-encrypted, in batches."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    parts, changed = [], 0
    for start in range(0, max(len(values), 1), batch_rows):
        chunk, n = cipher.rewrap(values.slice(start, batch_rows), binding)
        parts.append(chunk)
        changed += n
        if report is not None:
            report(min(start + batch_rows, len(values)))
    return (pa.concat_arrays(parts) if parts else pa.array([], pa.large_binary())), changed


def parquet_files(folder: Path) -> list[Path]:
    """The data files of a Parquet folder: ``*.parquet`` below it, not the sink's own
    state (``_dataflare/``) nor hidden temporaries."""
    return sorted(
        p
        for p in folder.rglob("*.parquet")
        if "_dataflare" not in p.relative_to(folder).parts and not p.name.startswith(".")
    )


def rewrap_parquet(
    ref: DatasetRef,
    home_root: Path,
    policy: PiiPolicy,
    cipher: ColumnCipher,
    batch_rows: int = 65_536,
    progress: Progress | None = None,
    lock_timeout_s: float = 60.0,
) -> RewrapResult:
    """Rewrap a Parquet folder file by file, each file replaced atomically (module
    docstring). ``progress`` is told ``(column, rows done, rows total)`` over the folder."""
    assert ref.parquet is not None
    folder = ref.parquet if ref.parquet.is_absolute() else home_root / ref.parquet
    files = parquet_files(folder) if folder.is_dir() else []
    if not files:
        raise MissingPathError(f"no Parquet files under {folder}")
    columns = encrypted_columns(policy)
    result = RewrapResult(dataset=policy.encryption.dataset if policy.encryption else "")
    result.files = len(files)
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    guard = None
    if (folder / "_dataflare").is_dir():  # a parquet_dataset sink's folder: its writer lock
        guard = WriterLock(folder / "_dataflare" / "lock")
        guard.acquire(timeout_s=lock_timeout_s)
    try:
        done: dict[str, int] = dict.fromkeys(columns, 0)
        versions: dict[str, set[int]] = {c: set() for c in columns}
        for path in files:
            table = pq.read_table(path)
            result.rows += table.num_rows
            changed_here = 0
            for column in columns:
                if column not in table.column_names:
                    continue
                binding = _binding(policy, column)
                base = done[column]

                def report(rows: int, column: str = column, base: int = base) -> None:
                    if progress is not None:
                        progress(column, base + rows, total)

                index = table.column_names.index(column)
                fresh, n = _rewrap_column(table[column], binding, cipher, batch_rows, report)
                done[column] += table.num_rows
                result.rewrapped[column] = result.rewrapped.get(column, 0) + n
                versions[column] |= {int(v) for v in np.unique(key_versions(fresh)) if v >= 0}
                if n:
                    field = table.schema.field(index)
                    table = table.set_column(index, field, fresh.cast(field.type))
                    changed_here += n
            if changed_here:
                _replace_file(path, table)
                result.files_rewritten += 1
    finally:
        if guard is not None:
            guard.release()
    for column in columns:
        result.versions_after[column] = sorted(versions[column])
        state = cipher.envelope.state(_binding(policy, column).key_name)
        result.latest, result.min_decryption_version = state.latest, state.min_decryption_version
    return result


def _replace_file(path: Path, table: pa.Table) -> None:
    """Write ``table`` beside ``path`` under a hidden name no ``*.parquet`` glob matches,
    fsync, rename over ``path`` and fsync the folder: the old file or the new, never a
    torn one. The original's compression and mode are kept."""
    meta = pq.ParquetFile(path).metadata
    codec = meta.row_group(0).column(0).compression.lower() if meta.num_row_groups else "zstd"
    tmp = path.with_name(f".{path.name}.rewrap.tmp")
    try:
        pq.write_table(table, tmp, compression=None if codec == "uncompressed" else codec)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.chmod(path.stat().st_mode & 0o777)
        tmp.replace(path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _replace_table(home_root: Path, ref: DatasetRef, frame: pl.DataFrame) -> None:
    assert ref.duckdb is not None
    path = ref.duckdb.path if ref.duckdb.path.is_absolute() else home_root / ref.duckdb.path
    table = quote_identifier(ref.duckdb.table)
    conn = connect_for_writing(path)
    try:
        conn.register("dataflare_rewrapped", frame.to_arrow())
        conn.execute("BEGIN TRANSACTION")
        conn.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM dataflare_rewrapped")
        conn.execute("COMMIT")
    finally:
        conn.close()


def below_minimum(
    ref: DatasetRef, home_root: Path, policy: PiiPolicy, cipher: ColumnCipher
) -> dict[str, int]:
    """Per ``pii_encrypted`` column: how many values are below the key's minimum
    decryption version (what no longer decrypts, or will not once it is raised)."""
    frame = read_dataset(ref, home_root)
    out = {}
    for column in encrypted_columns(policy):
        binding = _binding(policy, column)
        state = cipher.envelope.state(binding.key_name)
        versions = key_versions(frame[column])
        out[column] = int(((versions >= 0) & (versions < state.min_decryption_version)).sum())
    return out
