"""Vectorised encryption of a column: every value an AEAD ciphertext with a header.

Ciphertext layout (one ``large_binary`` value per input value; nulls stay null)::

    format:u8  type:u8  key_version:u32 big-endian  |  mode-specific body
    format 0x01 randomized AES-256-GCM:  nonce (12 random bytes) || ciphertext || tag (16)
    format 0x02 deterministic AES-SIV:   synthetic IV (16) || ciphertext

``type`` is the value's original type (utf8, binary, int64, float64) so ``decrypt``
gives back the column that was encrypted. The associated data of every value is its
6-byte header plus a *binding*: the dataset and column (``dataset\\0column``), or for a
deterministic column shared by several columns a join domain (``domain\\0<name>``). A
ciphertext moved to another column, dataset, version or type therefore fails to
decrypt (``InvalidTag``), and so does any flipped bit.

Speed: there is no per-row Python bytecode on the hot path. Nonces for a whole batch come
from one ``os.urandom`` call, values and nonces become ``bytes`` objects through numpy
(``V<n>`` views) or Arrow, and ``map`` drives ``AESGCM.encrypt`` (C) over them; the
header and nonce prefixes are interleaved with the sealed values and joined once. The
remaining cost is one AEAD call per value (``cryptography`` has no batch API): measured
in ``dataflare bench crypto``.

Random nonces: 96 bits, so one data key version should encrypt fewer than 2**32 values
(NIST SP 800-38D); rotate a key before that (docs/security.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.exceptions import InvalidTag

from dataflare_platform.crypto.envelope import DataKey, Envelope
from dataflare_platform.crypto.keyring import KeyState
from dataflare_platform.engine import arrays
from dataflare_platform.errors import DataflareError, InvalidInputError, WrongTypeError

FORMAT_GCM = 0x01
FORMAT_SIV = 0x02
FORMATS = (FORMAT_GCM, FORMAT_SIV)
HEADER_BYTES = 6
NONCE_BYTES = 12
TAG_BYTES = 16

TYPE_UTF8 = 1
TYPE_BINARY = 2
TYPE_INT64 = 3
TYPE_FLOAT64 = 4
TYPES = (TYPE_UTF8, TYPE_BINARY, TYPE_INT64, TYPE_FLOAT64)
_FIXED = {TYPE_INT64: (np.int64, pa.int64()), TYPE_FLOAT64: (np.float64, pa.float64())}


class DecryptionError(DataflareError, ValueError):
    """A value does not decrypt: moved from another column or dataset, tampered, or not a
    ciphertext of this platform. Names the column, never a value."""


@dataclass(frozen=True)
class Binding:
    """What a ciphertext is bound to: key name, and dataset + column or a join domain."""

    dataset: str
    column: str
    key: str | None = None  # the keyring name; the dataset's when None (tenant keys differ)
    domain: str | None = None  # deterministic columns joined across columns/datasets

    def __post_init__(self) -> None:
        # NUL separates the parts of the associated data: one inside a name would let
        # ("a\0b", "c") and ("a", "b\0c") bind alike.
        check_binding_names(self.dataset, self.column)
        if self.domain is not None:
            check_binding_names(self.domain, self.column)

    @property
    def key_name(self) -> str:
        return self.key or self.dataset

    @property
    def context(self) -> bytes:
        if self.domain is not None:
            return f"domain\x00{self.domain}".encode()
        return f"column\x00{self.dataset}\x00{self.column}".encode()

    def aad(self, header: bytes) -> bytes:
        return header + b"\x00" + self.context


def header(fmt: int, value_type: int, version: int) -> bytes:
    return bytes((fmt, value_type)) + int(version).to_bytes(4, "big")


def _as_arrow(values: pa.Array | pa.ChunkedArray | pl.Series) -> pa.Array:
    if isinstance(values, pl.Series):
        values = values.to_arrow()
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values


def _value_type(arrow_type: pa.DataType) -> int:
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return TYPE_UTF8
    if pa.types.is_string_view(arrow_type):
        return TYPE_UTF8
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return TYPE_BINARY
    if pa.types.is_binary_view(arrow_type):
        return TYPE_BINARY
    if pa.types.is_int64(arrow_type):
        return TYPE_INT64
    if pa.types.is_float64(arrow_type):
        return TYPE_FLOAT64
    raise WrongTypeError(f"cannot encrypt a {arrow_type} column: strings, binary, int64 or float64")


def _plain_bytes(values: pa.Array, value_type: int) -> list[bytes]:
    """The non-null values as ``bytes`` objects (no Python loop)."""
    if value_type in _FIXED:
        dtype, _ = _FIXED[value_type]
        array = arrays.to_numpy(values).astype(dtype, copy=False)
        return np.ascontiguousarray(array).view(f"V{array.itemsize}").tolist()
    return values.cast(pa.large_binary()).to_pylist()


def _offsets(values: pa.Array) -> tuple[np.ndarray, pa.Buffer]:
    """Offsets (int64, ``len + 1``) and data buffer of a large_binary array."""
    _, offsets, data = values.buffers()
    off = np.frombuffer(offsets, dtype=np.int64)[values.offset : values.offset + len(values) + 1]
    return off, data


def _drop_prefix(off: np.ndarray, data: pa.Buffer, prefix: int) -> pa.Array:
    """Each value without its first ``prefix`` bytes, as a new large_binary array: one
    numpy gather (``pc.binary_slice`` fails on large_binary in pyarrow 26)."""
    lengths = np.diff(off) - prefix
    out_off = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out_off[1:])
    gather = np.repeat(off[:-1] + prefix - out_off[:-1], lengths) + np.arange(out_off[-1])
    body = np.frombuffer(data, dtype=np.uint8)[gather]
    buffers = [None, pa.py_buffer(out_off), pa.py_buffer(body)]
    return pa.Array.from_buffers(pa.large_binary(), len(lengths), buffers)


def _joined(columns: list[list[bytes]], lengths: np.ndarray) -> pa.Array:
    """Row ``i`` = ``columns[0][i] + columns[1][i] + ...`` as one large_binary array whose
    values have ``lengths``: the pieces are interleaved and joined once (one copy, no
    per-row ``bytes`` object), the offsets computed with numpy."""
    n, k = len(lengths), len(columns)
    parts: list[bytes | None] = [None] * (k * n)
    for i, column in enumerate(columns):
        parts[i::k] = column
    data = b"".join(parts)  # type: ignore[arg-type]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] != len(data):
        raise AssertionError("ciphertext lengths do not add up")  # a cryptography change
    return pa.Array.from_buffers(
        pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _plain_lengths(values: pa.Array, value_type: int) -> np.ndarray:
    """Byte length of every (non-null) value, from Arrow's offsets (no Python loop)."""
    if value_type in _FIXED:
        return np.full(len(values), 8, dtype=np.int64)
    off, _ = _offsets(values.cast(pa.large_binary()))
    return np.diff(off)


def _binary(items: list[bytes]) -> pa.LargeBinaryArray:
    return arrays.strings(items, pa.large_binary())


def _scatter(valid: pa.Array, mask: np.ndarray | None) -> pa.Array:
    """``valid`` (values of the rows where ``mask`` is true) spread over ``len(mask)``
    rows with nulls elsewhere, without a Python loop."""
    if mask is None:
        return valid
    n = len(mask)
    if pa.types.is_large_binary(valid.type) or pa.types.is_large_string(valid.type):
        off, data = _offsets(valid)
        lengths = np.zeros(n, dtype=np.int64)
        lengths[mask] = np.diff(off)
        out_off = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=out_off[1:])
        out_off += off[0]
        buffers = [arrays.booleans(mask).buffers()[1], pa.py_buffer(out_off), data]
        return pa.Array.from_buffers(valid.type, n, buffers)
    present = arrays.to_numpy(valid)
    values = np.zeros(n, dtype=present.dtype)
    values[mask] = present
    return arrays.from_numpy(values, valid.type, valid=mask)


def _split(values: pa.Array) -> tuple[pa.Array, np.ndarray | None]:
    if values.null_count == 0:
        return values, None
    mask = arrays.to_numpy(values.is_valid())
    return values.filter(arrays.booleans(mask)), mask


class ColumnCipher:
    """Encrypts and decrypts whole columns with the data keys of ``envelope``."""

    def __init__(self, envelope: Envelope) -> None:
        self.envelope = envelope

    # -- encryption ------------------------------------------------------------------------
    def encrypt(
        self,
        values: pa.Array | pa.ChunkedArray | pl.Series,
        binding: Binding,
        deterministic: bool = False,
        version: int | None = None,
    ) -> pa.LargeBinaryArray:
        """Every value encrypted under the newest version of the binding's key (or
        ``version``); nulls stay null. ``deterministic``: equal values give equal
        ciphertexts (AES-SIV), for join and group-by columns."""
        values = _as_arrow(values)
        value_type = _value_type(values.type)
        state = self.envelope.ensure(binding.key_name)
        key = self.envelope.key(binding.key_name, version or state.latest)
        valid, mask = _split(values)
        plain = _plain_bytes(valid, value_type)
        lengths = _plain_lengths(valid, value_type)
        if deterministic:
            out = self._siv(key, binding, value_type, plain, lengths)
        else:
            out = self._gcm(key, binding, value_type, plain, lengths)
        return _scatter(out, mask)

    @staticmethod
    def _gcm(
        key: DataKey, binding: Binding, value_type: int, plain: list[bytes], lengths: np.ndarray
    ) -> pa.Array:
        head = header(FORMAT_GCM, value_type, key.version)
        n = len(plain)
        nonces = np.frombuffer(os.urandom(NONCE_BYTES * n), dtype=np.uint8).reshape(n, NONCE_BYTES)
        nonce_list = nonces.view(f"V{NONCE_BYTES}").ravel().tolist()
        sealed = list(map(key.gcm.encrypt, nonce_list, plain, repeat(binding.aad(head))))
        body = HEADER_BYTES + NONCE_BYTES + TAG_BYTES
        return _joined([[head] * n, nonce_list, sealed], lengths + body)

    @staticmethod
    def _siv(
        key: DataKey, binding: Binding, value_type: int, plain: list[bytes], lengths: np.ndarray
    ) -> pa.Array:
        head = header(FORMAT_SIV, value_type, key.version)
        sealed = list(map(key.siv.encrypt, plain, repeat([binding.aad(head)])))
        return _joined([[head] * len(plain), sealed], lengths + HEADER_BYTES + TAG_BYTES)

    # -- decryption ------------------------------------------------------------------------
    def decrypt(self, values: pa.Array | pa.ChunkedArray | pl.Series, binding: Binding) -> pa.Array:
        """The original column back (its type from the headers); any value that does not
        decrypt fails the whole column with a ``DecryptionError`` naming the column."""
        values = _as_arrow(values)
        if not (pa.types.is_large_binary(values.type) or pa.types.is_binary(values.type)):
            raise WrongTypeError(f"column {binding.column!r} holds {values.type}, not ciphertext")
        values = values.cast(pa.large_binary())
        valid, mask = _split(values)
        headers = parse_headers(valid, binding.column)
        types = np.unique(headers["type"])
        if len(types) > 1:
            raise DecryptionError(f"column {binding.column!r} mixes value types {types.tolist()}")
        value_type = int(types[0]) if len(types) else TYPE_BINARY
        state = self.envelope.state(binding.key_name)
        plain: list[bytes | None] = [None] * len(valid)
        groups = headers["format"].astype(np.int64) << 32 | headers["version"].astype(np.int64)
        unique_groups = np.unique(groups)
        if len(unique_groups) == 1:
            plain = self._decrypt_group(valid, int(unique_groups[0]), value_type, binding, state)
        else:
            for group in unique_groups.tolist():
                rows = np.flatnonzero(groups == group)
                part = self._decrypt_group(
                    valid.take(arrays.from_numpy(rows, pa.int64())),
                    group,
                    value_type,
                    binding,
                    state,
                )
                for row, item in zip(rows.tolist(), part, strict=True):
                    plain[row] = item
        return _scatter(_from_plain(plain, value_type), mask)

    def _decrypt_group(
        self, valid: pa.Array, group: int, value_type: int, binding: Binding, state: KeyState
    ) -> list[bytes]:
        """Decrypt rows sharing one format and key version (``group`` = format << 32 |
        version): one key, one associated data, nonces and bodies gathered by numpy."""
        fmt, version = group >> 32, group & 0xFFFFFFFF
        key = self.envelope.key(binding.key_name, version, state)
        aad = binding.aad(header(fmt, value_type, version))
        off, data = _offsets(valid)
        body = HEADER_BYTES + (NONCE_BYTES if fmt == FORMAT_GCM else 0)
        sealed = _drop_prefix(off, data, body).to_pylist()
        try:
            if fmt == FORMAT_GCM:
                raw = np.frombuffer(data, dtype=np.uint8)
                index = off[:-1, None] + HEADER_BYTES + np.arange(NONCE_BYTES)
                nonces = np.ascontiguousarray(raw[index]).view(f"V{NONCE_BYTES}").ravel()
                return list(map(key.gcm.decrypt, nonces.tolist(), sealed, repeat(aad)))
            return list(map(key.siv.decrypt, sealed, repeat([aad])))
        except InvalidTag:
            raise DecryptionError(
                f"column {binding.column!r} of {binding.dataset!r}: a value does not decrypt "
                "(moved from another column or dataset, or tampered)"
            ) from None

    # -- rotation --------------------------------------------------------------------------
    def rewrap(
        self, values: pa.Array | pa.ChunkedArray | pl.Series, binding: Binding
    ) -> tuple[pa.Array, int]:
        """Values below the key's newest version re-encrypted to it (same mode, values
        already current untouched); returns the column and how many values changed."""
        values = _as_arrow(values).cast(pa.large_binary())
        state = self.envelope.state(binding.key_name)
        versions = key_versions(values)
        stale = (versions >= 0) & (versions < state.latest)
        count = int(stale.sum())
        if count == 0:
            return values, 0
        old = values.take(arrays.from_numpy(np.flatnonzero(stale), pa.int64()))
        fmt = parse_headers(old, binding.column)["format"]
        plain = self.decrypt(old, binding)
        parts, order = [], []
        for mode in (FORMAT_GCM, FORMAT_SIV):
            picked = np.flatnonzero(fmt == mode)
            if len(picked):
                subset = plain.take(arrays.from_numpy(picked, pa.int64()))
                parts.append(self.encrypt(subset, binding, deterministic=mode == FORMAT_SIV))
                order.append(picked)
        # The fresh values in the stale rows' order, then put in place without a loop.
        positions = arrays.from_numpy(np.argsort(np.concatenate(order)), pa.int64())
        fresh = pa.concat_arrays(parts).take(positions)
        return pc.replace_with_mask(values, arrays.booleans(stale), fresh), count


def _from_plain(plain: list[bytes], value_type: int) -> pa.Array:
    if value_type in _FIXED:
        dtype, arrow_type = _FIXED[value_type]
        return arrays.from_numpy(np.frombuffer(b"".join(plain), dtype=dtype), arrow_type)
    out = _binary(plain)
    return out.cast(pa.large_string()) if value_type == TYPE_UTF8 else out


_HEADER_DTYPE = np.dtype([("format", "u1"), ("type", "u1"), ("version", ">u4")])


def parse_headers(values: pa.Array, column: str = "?") -> np.ndarray:
    """The 6-byte header of every (non-null) value as a structured numpy array; a value
    too short or of an unknown format or type is a ``DecryptionError``."""
    values = values.cast(pa.large_binary())
    if values.null_count:
        values = values.drop_null()
    off, data = _offsets(values)
    lengths = np.diff(off)
    if len(values) == 0:
        return np.zeros(0, dtype=_HEADER_DTYPE)
    if (lengths < HEADER_BYTES + TAG_BYTES).any():
        raise DecryptionError(f"column {column!r}: a value is too short to be a ciphertext")
    raw = np.frombuffer(data, dtype=np.uint8)
    heads = raw[off[:-1, None] + np.arange(HEADER_BYTES)]
    parsed = np.ascontiguousarray(heads).view(_HEADER_DTYPE).ravel()
    if not np.isin(parsed["format"], FORMATS).all() or not np.isin(parsed["type"], TYPES).all():
        raise DecryptionError(f"column {column!r}: a value has no ciphertext header")
    return parsed


def key_versions(values: pa.Array | pa.ChunkedArray | pl.Series) -> np.ndarray:
    """The key version of every value (-1 for nulls), vectorised; what the rewrap check
    compares with the minimum version."""
    values = _as_arrow(values).cast(pa.large_binary())
    out = np.full(len(values), -1, dtype=np.int64)
    mask = arrays.to_numpy(values.is_valid())
    out[mask] = parse_headers(values)["version"]
    return out


def check_binding_names(dataset: str, column: str) -> None:
    """Dataset and column names of a binding: non-empty, no NUL (the separator)."""
    for field, value in (("dataset", dataset), ("column", column)):
        if not value or "\x00" in value:
            raise InvalidInputError(f"{field} {value!r}: a non-empty name without NUL")


__all__ = ["Binding", "ColumnCipher", "DecryptionError", "key_versions", "parse_headers"]
