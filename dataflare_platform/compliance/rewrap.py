"""Rewrap of stored data: every ``pii_encrypted`` column of a governed dataset brought to
its key's newest version, and the measure the asset check uses (ciphertexts below the
minimum decryption version).

Only DuckDB tables are rewritten (one transaction per dataset: readers see the old or the
new table, never a mix); Parquet folders and topics are immutable by design here and are
reported as not rewrapped (their ciphertexts stay readable until the minimum version is
raised past them, which the check then reports). Work is done in batches so progress can
be reported; values never leave this process and are never logged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from dataflare_platform.compliance.datasets import DatasetRef, read_dataset
from dataflare_platform.compliance.pii import Classification, PiiPolicy
from dataflare_platform.connectors.duckdb.sink import connect_for_writing
from dataflare_platform.crypto.columns import Binding, ColumnCipher, key_versions
from dataflare_platform.errors import InvalidInputError
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
    """Re-encrypt the dataset's ``pii_encrypted`` columns to the newest key version and
    write the table back in one transaction."""
    if ref.duckdb is None:
        raise InvalidInputError(f"rewrap rewrites DuckDB tables only, not {ref.describe()}")
    columns = encrypted_columns(policy)
    frame = read_dataset(ref, home_root)
    assert policy.encryption is not None or not columns
    result = RewrapResult(dataset=policy.encryption.dataset if policy.encryption else "")
    result.rows = frame.height
    updated = {}
    for column in columns:
        binding = _binding(policy, column)
        parts, changed = [], 0
        values = frame[column].to_arrow()
        for start in range(0, max(frame.height, 1), batch_rows):
            chunk, n = cipher.rewrap(values.slice(start, batch_rows), binding)
            parts.append(chunk)
            changed += n
            if progress is not None:
                progress(column, min(start + batch_rows, frame.height), frame.height)
        merged = pa.concat_arrays(parts) if parts else pa.array([], pa.large_binary())
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
