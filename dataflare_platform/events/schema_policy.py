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

Message streams (NATS, Redis Streams and ``ingest_payloads``) take the same
``on_schema_mismatch`` setting; a message is its own unit there, so only ``dead_letter``
and ``allow_extra`` apply (``refuse_file`` is refused at load: there is no file to refuse).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from dataflare_platform.events.codec import Decoded, JsonDecoder, dead_letters

SchemaPolicy = Literal["dead_letter", "refuse_file", "allow_extra"]
SCHEMA_POLICIES: tuple[str, ...] = ("dead_letter", "refuse_file", "allow_extra")
DEFAULT_SCHEMA_POLICY: SchemaPolicy = "dead_letter"
# What a message stream accepts: each message is dead-lettered on its own.
MessageSchemaPolicy = Literal["dead_letter", "allow_extra"]


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
    twice = sorted({f for f in present if present.count(f) > 1}) if len(seen) < len(present) else []
    problems = []
    if twice:  # a CSV header or Arrow columns naming one twice: which value wins?
        problems.append(f"duplicate field(s) {twice}")
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


def decode_json_records(
    decoder: JsonDecoder,
    payloads: Sequence[bytes],
    offsets: Sequence[int],
    source: str,
    partition: str,
    policy: str = DEFAULT_SCHEMA_POLICY,
) -> Decoded:
    """``decoder.decode`` with ``policy`` applied first: JSON records whose keys do not
    fit the decoder's schema become dead letters naming the fields (the decoder alone
    would turn a misspelled field into a null column). Every payload is still exactly one
    good row or one dead letter; dead letters come back in offset order (a stable sort)."""
    mismatched = split_records(payloads, decoder.schema, policy, decoder.max_payload_bytes)
    return decode_apart_from(decoder, payloads, offsets, source, partition, mismatched)


def decode_apart_from(
    decoder: JsonDecoder,
    payloads: Sequence[bytes],
    offsets: Sequence[int],
    source: str,
    partition: str,
    mismatched: dict[int, str],
) -> Decoded:
    """``decoder.decode`` of the payloads not in ``mismatched`` (index -> reason), which
    become dead letters with their reason; dead letters in offset order (a stable sort).
    Shared by the stream codecs and the landing zone's NDJSON files."""
    if not mismatched:
        return decoder.decode(payloads, offsets, source, partition)
    keep = [i for i in range(len(payloads)) if i not in mismatched]
    decoded = decoder.decode(
        [payloads[i] for i in keep], [offsets[i] for i in keep], source, partition
    )
    bad = sorted(mismatched)
    extra = dead_letters(
        source,
        partition,
        [offsets[i] for i in bad],
        [mismatched[i] for i in bad],
        [payloads[i] for i in bad],
    )
    dead = pa.concat_tables([decoded.dead, extra])
    return Decoded(
        decoded.table, dead.take(pc.sort_indices(dead.column("offset"))), decoded.offsets
    )


class PolicyJsonDecoder:
    """A ``JsonDecoder`` that applies ``policy`` first (see :func:`decode_json_records`):
    what ``ingest_payloads`` and re-drives use, so no way into a topic turns a
    misspelled field into a null column."""

    def __init__(self, decoder: JsonDecoder, policy: str = DEFAULT_SCHEMA_POLICY) -> None:
        self.decoder = decoder
        self.schema = decoder.schema
        self.policy = policy

    def decode(
        self, payloads: Sequence[bytes], offsets: Sequence[int], source: str, partition: str = "0"
    ) -> Decoded:
        return decode_json_records(self.decoder, payloads, offsets, source, partition, self.policy)
