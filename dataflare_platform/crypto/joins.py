"""Joins and group-bys on deterministic ciphertext across a key rotation.

Deterministic ciphertexts (AES-SIV) are equal for equal values *under the same key
version and binding*. Two columns to be joined share a join domain (``Binding.domain``),
which binds the ciphertext to the domain instead of the column. After ``rotate``, newly
written values carry the new version while stored ones keep the old until ``rewrap``
reaches them: a join on raw ciphertexts would then silently miss. The rule is therefore:
join on ciphertexts of one version. ``align_to_latest`` gives that (it is the rewrap of
one column, applied to a frame before a join); once the rewrap asset has run and the
check "no ciphertext below the minimum version" passes with the minimum raised to the
latest, stored data needs no alignment.
"""

from __future__ import annotations

import polars as pl

from dataflare_platform.crypto.columns import Binding, ColumnCipher


def align_to_latest(
    cipher: ColumnCipher, frame: pl.DataFrame, column: str, binding: Binding
) -> pl.DataFrame:
    """``frame`` with ``column``'s ciphertexts re-encrypted to the key's newest version
    (values already there are untouched, so equal values stay equal)."""
    rewrapped, _ = cipher.rewrap(frame[column], binding)
    return frame.with_columns(pl.Series(column, rewrapped))
