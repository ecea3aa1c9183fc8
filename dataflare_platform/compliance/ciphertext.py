"""The ``pii_encrypted`` promise checked for real: every value of such a column is a
ciphertext of this platform (version header), none is below the key's minimum decryption
version, and a sample decrypts with the deployment's keyring under the declared binding.

Before this, the check only looked for the absence of raw patterns, which any base64 blob
or a column of dashes passes. Values read here are never reported, only counts and the
key versions found.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from dataflare_platform.compliance.pii import Classification, PiiPolicy
from dataflare_platform.crypto.columns import (
    Binding,
    ColumnCipher,
    DecryptionError,
    key_versions,
)
from dataflare_platform.crypto.keyring import KeyringError

DEFAULT_SAMPLE = 32


@dataclass
class CiphertextReport:
    """Per ``pii_encrypted`` column: rows, versions found, sample size; and the problems."""

    columns: dict[str, dict[str, object]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _sample(values: pl.Series, size: int) -> pl.Series:
    present = values.drop_nulls()
    if present.len() <= size:
        return present
    step = present.len() // size
    return present.gather_every(step).head(size)


def verify_encrypted_columns(
    frame: pl.DataFrame,
    policy: PiiPolicy,
    cipher: ColumnCipher | None,
    sample: int = DEFAULT_SAMPLE,
) -> CiphertextReport:
    """Check every column ``policy`` declares ``pii_encrypted`` in ``frame``. Without a
    cipher (no keyring configured) or without ``policy.encryption``, sample decryption
    is impossible: that is a problem (fail closed), headers are still checked."""
    report = CiphertextReport()
    encrypted = [c for c, k in policy.columns.items() if k is Classification.ENCRYPTED]
    binding = policy.encryption
    for column in encrypted:
        if column not in frame.columns:
            report.problems.append(f"column {column!r} is declared pii_encrypted but absent")
            continue
        values = frame[column]
        if values.dtype != pl.Binary:
            report.problems.append(
                f"column {column!r} is declared pii_encrypted but holds {values.dtype}, "
                "not ciphertext"
            )
            continue
        try:
            versions = key_versions(values)
        except DecryptionError as err:
            report.problems.append(f"{err} (declared pii_encrypted)")
            continue
        found = sorted({int(v) for v in np.unique(versions) if v >= 0})
        info: dict[str, object] = {
            "rows": int((versions >= 0).sum()),
            "key_versions": found,
            "sample_decrypted": 0,
        }
        report.columns[column] = info
        if binding is None or cipher is None:
            report.problems.append(
                f"column {column!r}: cannot decrypt a sample ("
                + ("no pii.encryption binding declared" if binding is None else "no keyring")
                + ")"
            )
            continue
        bound = Binding(binding.dataset, column, binding.key, binding.domains.get(column))
        try:
            state = cipher.envelope.state(bound.key_name)
            stale = [v for v in found if v < state.min_decryption_version]
            if stale:
                report.problems.append(
                    f"column {column!r} holds key versions {stale} below the minimum "
                    f"decryption version {state.min_decryption_version} (rewrap it)"
                )
            picked = _sample(values, sample)
            cipher.decrypt(picked, bound)
            info["sample_decrypted"] = picked.len()
        except (DecryptionError, KeyringError) as err:
            report.problems.append(f"column {column!r}: sample does not decrypt: {err}")
    return report
