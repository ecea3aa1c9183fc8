"""Encryption of a frame's columns: what the ``encrypt`` pipeline step, batch assets and
Python callers share. One :class:`ColumnRule` per column says its mode."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
from pydantic import Field, field_validator, model_validator

from dataflare_platform.crypto.columns import Binding, ColumnCipher
from dataflare_platform.crypto.keyring import check_key_name
from dataflare_platform.errors import InvalidInputError, NotFoundError
from dataflare_platform.models import StrictModel


def _name(value: str) -> str:
    if "\x00" in value:
        raise InvalidInputError("no NUL in a name")
    return value


class EncryptionSpec(StrictModel):
    """Which columns of a dataset are encrypted and how, validated at load:

    ``dataset`` binds every ciphertext (and names the key unless ``key`` names a tenant's);
    ``columns`` are encrypted with random nonces (AES-256-GCM) except those listed in
    ``deterministic`` (AES-SIV: equal values give equal ciphertexts, for joins and
    group-bys); ``domains`` names the join domain of a deterministic column shared with
    columns of other datasets (see ``crypto.joins``)."""

    dataset: str = Field(min_length=1)
    columns: list[str] = Field(min_length=1)
    deterministic: list[str] = Field(default_factory=list)
    domains: dict[str, str] = Field(default_factory=dict)
    key: str | None = None

    _names = field_validator("dataset")(_name)

    @field_validator("key")
    @classmethod
    def _key(cls, key: str | None) -> str | None:
        return None if key is None else check_key_name(key)

    @field_validator("columns")
    @classmethod
    def _unique(cls, columns: list[str]) -> list[str]:
        if len(set(columns)) != len(columns):
            raise ValueError("a column is listed twice")
        for column in columns:
            _name(column)
        return columns

    @model_validator(mode="after")
    def _subsets(self) -> EncryptionSpec:
        stray = [c for c in self.deterministic if c not in self.columns]
        if stray:
            raise ValueError(f"deterministic: {stray} not in columns")
        stray = [c for c in self.domains if c not in self.deterministic]
        if stray:
            raise ValueError(f"domains: {stray} are not deterministic columns")
        if self.key is None:
            try:
                check_key_name(self.dataset)
            except ValueError as err:
                raise ValueError(f"dataset names the key when no key is given: {err}") from None
        return self

    @property
    def key_name(self) -> str:
        return check_key_name(self.key or self.dataset)

    def binding(self, column: str) -> Binding:
        return Binding(self.dataset, column, self.key, self.domains.get(column))


def _need(frame: pl.DataFrame, columns: Sequence[str], dataset: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise NotFoundError(f"dataset {dataset!r}: no column(s) {missing} to encrypt")


def encrypt_frame(cipher: ColumnCipher, frame: pl.DataFrame, spec: EncryptionSpec) -> pl.DataFrame:
    """``frame`` with ``spec.columns`` replaced by their ciphertexts (Binary)."""
    _need(frame, spec.columns, spec.dataset)
    return frame.with_columns(
        pl.Series(
            column,
            cipher.encrypt(
                frame[column], spec.binding(column), deterministic=column in spec.deterministic
            ),
        )
        for column in spec.columns
    )


def decrypt_frame(cipher: ColumnCipher, frame: pl.DataFrame, spec: EncryptionSpec) -> pl.DataFrame:
    """The inverse, for trusted code paths (the policy-checked, audited path for people is
    ``compliance.decryption``)."""
    _need(frame, spec.columns, spec.dataset)
    return frame.with_columns(
        pl.Series(column, cipher.decrypt(frame[column], spec.binding(column)))
        for column in spec.columns
    )
