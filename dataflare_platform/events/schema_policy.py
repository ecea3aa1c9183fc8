"""What to do with records whose fields do not match the declared schema: a misspelled
column, a missing one, an extra one. Arrow's readers fill a missing nullable column with
nulls and drop an unknown one, so ``{"pirce": 3}`` would land as a row with a null
``price``: data lost without a trace. The policy makes that visible:

- ``dead_letter`` (default): a record (NDJSON) or every record of a file (CSV header,
  Parquet columns) with an unknown or a missing field becomes a dead letter naming the
  fields; counts stay ``in = out + dead``;
- ``refuse_file``: the whole file is refused (one dead letter for the file, recorded as
  failed), nothing of it is ingested;
- ``allow_extra``: unknown fields are ignored (a sender that adds columns); a missing
  field is still dead-lettered.

A field present with ``null`` is not missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Literal

import pyarrow as pa

SchemaPolicy = Literal["dead_letter", "refuse_file", "allow_extra"]
SCHEMA_POLICIES: tuple[str, ...] = ("dead_letter", "refuse_file", "allow_extra")
DEFAULT_SCHEMA_POLICY: SchemaPolicy = "dead_letter"


def mismatch(
    fields: Iterable[str], schema: pa.Schema, policy: str = DEFAULT_SCHEMA_POLICY
) -> str | None:
    """Why ``fields`` (a header, a record's keys) do not fit ``schema`` under
    ``policy``, or None if they do."""
    present = list(fields)
    names = set(schema.names)
    seen = set(present)
    unknown = [f for f in present if f not in names] if policy != "allow_extra" else []
    missing = [n for n in schema.names if n not in seen]
    problems = []
    if unknown:
        problems.append(f"unknown field(s) {unknown}")
    if missing:
        problems.append(f"missing field(s) {missing}")
    if not problems:
        return None
    return "; ".join(problems) + f" (schema {schema.names}, on_schema_mismatch: {policy})"


def split_records(
    payloads: Sequence[bytes],
    schema: pa.Schema,
    policy: str = DEFAULT_SCHEMA_POLICY,
    max_payload_bytes: int = 1 << 20,
) -> dict[int, str]:
    """JSON records (by position) whose top-level keys do not fit ``schema``, with the
    reason. Records that are not JSON objects, or larger than ``max_payload_bytes``, are
    left to the decoder (it dead-letters them with its own reason)."""
    bad: dict[int, str] = {}
    for i, payload in enumerate(payloads):
        if len(payload) > max_payload_bytes:
            continue
        try:
            record = json.loads(payload)
        except (ValueError, RecursionError):
            continue
        if not isinstance(record, dict):
            continue
        reason = mismatch(record.keys(), schema, policy)
        if reason is not None:
            bad[i] = reason
    return bad
