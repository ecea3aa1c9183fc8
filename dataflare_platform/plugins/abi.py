"""ABI v1 layout shared by host and plugins (see docs/plugin-abi.md and
``sdk/dataflare_plugin.h``): column descriptors, type codes, status codes."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from dataflare_platform.engine import arrays

ABI_VERSION = 1
DESC_BYTES = 32  # eight little-endian u32 per column
DESC_FIELDS = 8
(F_TYPE, F_FLAGS, F_VALIDITY, F_VALUES, F_VALUES_LEN, F_DATA, F_DATA_LEN, F_DATA_CAP) = range(8)

STATUS_OK = 0
STATUS_NEED_MORE = 1

TYPE_CODES = {"int64": 1, "float64": 2, "int32": 3, "float32": 4, "utf8": 5}
ARROW_TYPES = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "int32": pa.int32(),
    "float32": pa.float32(),
    "utf8": pa.string(),
}
POLARS_TYPES = {
    "int64": pl.Int64,
    "float64": pl.Float64,
    "int32": pl.Int32,
    "float32": pl.Float32,
    "utf8": pl.String,
}
WIDTHS = {"int64": 8, "float64": 8, "int32": 4, "float32": 4}
UTF8 = TYPE_CODES["utf8"]
CODE_WIDTHS = {TYPE_CODES[t]: w for t, w in WIDTHS.items()}

EXPORT_VERSION = "dataflare_abi_version"
EXPORT_ALLOC = "dataflare_alloc"
EXPORT_INIT = "dataflare_init"
EXPORT_MAP = "dataflare_map"
EXPORT_FILTER = "dataflare_filter"
EXPORT_AGG_INIT = "dataflare_agg_init"  # (state, state_len) -> status
EXPORT_AGG_UPDATE = "dataflare_agg_update"  # (state, in_desc, n_rows) -> status
EXPORT_AGG_MERGE = "dataflare_agg_merge"  # (state, other_state) -> status
EXPORT_AGG_FINALIZE = "dataflare_agg_finalize"  # (state, out_desc, max_rows) -> rows
ENTRY_POINTS = {"map": EXPORT_MAP, "filter": EXPORT_FILTER}

CAPABILITY_IMPORTS: dict[str, set[tuple[str, str]]] = {
    "log": {("dataflare", "log")},
}
"""Host functions a capability unlocks; a module importing anything else is refused."""


def align(n: int, to: int = 16) -> int:
    return (n + to - 1) & ~(to - 1)


def bitmap_bytes(n: int) -> int:
    return (n + 7) // 8


def validity_bytes(arr: pa.Array) -> np.ndarray | None:
    """The Arrow validity bitmap of ``arr`` starting at bit 0, or None if it has no nulls."""
    if arr.null_count == 0:
        return None
    n = len(arr)
    buf = arr.buffers()[0]
    if arr.offset % 8 == 0 and buf is not None:
        start = arr.offset // 8
        return np.frombuffer(buf, np.uint8)[start : start + bitmap_bytes(n)]
    valid = arrays.to_numpy(arr.is_valid())
    return np.packbits(valid, bitorder="little")
