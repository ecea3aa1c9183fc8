"""Wire formats for events and the dead-letter rows that decoding produces.

Two formats travel over brokers and landing files:
- ``json``: one JSON object per record (interoperable; timestamps as ISO-8601 strings);
- ``arrow``: one Arrow IPC stream per message carrying a whole batch (fast: one message
  per thousands of events).

Decoding is vectorised: a whole batch of JSON payloads is parsed by Arrow's reader in
one call. Only when that fails is the batch bisected to find the bad records, so a clean
batch costs one parse and a batch with k bad records costs O(k log n) parses.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl
import pyarrow as pa
import pyarrow.json as pa_json

from dataflare_platform.engine import arrays
from dataflare_platform.times import now_ms

DEFAULT_MAX_PAYLOAD_BYTES = 1 << 20

# Injected as the first member of every object before a batch parse: it ties each parsed
# record to its payload (see ``JsonDecoder._parse``).
_ROW_FIELD = "__dataflare_row__"
_TAG = b'{"%s":' % _ROW_FIELD.encode()

DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),  # topic, stream or file
        pa.field("partition", pa.string(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),  # or sequence number / line
        pa.field("reason", pa.string(), nullable=False),
        pa.field("payload", pa.binary(), nullable=False),  # the raw bytes, untouched
        pa.field("received_at", pa.timestamp("ms"), nullable=False),
    ]
)
"""One row per record that could not be decoded: enough to find, read and re-drive it."""


@dataclass
class Decoded:
    table: pa.Table  # the good records, in ``schema``
    dead: pa.Table  # DEAD_LETTER_SCHEMA rows
    offsets: list[int]  # source offset of each good record, in order

    @property
    def rows_in(self) -> int:
        return self.table.num_rows + self.dead.num_rows


def dead_letters(
    source: str,
    partition: str,
    offsets: Sequence[int],
    reasons: Sequence[str],
    payloads: Sequence[bytes],
) -> pa.Table:
    now = now_ms()
    n = len(offsets)
    return pa.table(
        {
            "source": arrays.repeat(source, n, pa.string()),
            "partition": arrays.repeat(partition, n, pa.string()),
            "offset": arrays.from_pylist(list(offsets), pa.int64()),
            "reason": arrays.strings(list(reasons), pa.string()),
            "payload": arrays.strings([bytes(p) for p in payloads], pa.binary()),
            "received_at": arrays.repeat(now, n, pa.timestamp("ms")),
        },
        schema=DEAD_LETTER_SCHEMA,
    )


def encode_json(table: pa.Table | pl.DataFrame) -> list[bytes]:
    """One UTF-8 JSON object per row."""
    df = table if isinstance(table, pl.DataFrame) else pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    if df.height == 0:
        return []
    encoded = df.select(pl.struct(pl.all()).struct.json_encode()).to_series()
    return [s.encode() for s in encoded.to_list()]


def encode_arrow(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def decode_arrow(payload: bytes, schema: pa.Schema) -> pa.Table:
    """A batch message back into a table; raises ValueError naming what is wrong."""
    try:
        table = pa.ipc.open_stream(pa.py_buffer(payload)).read_all()
    except (pa.ArrowException, OSError) as err:  # ArrowNotImplementedError too
        raise ValueError(f"not an Arrow IPC stream: {err}") from err
    try:
        # The reader checks the framing, not the buffers: corrupt offsets or bytes pass
        # and crash (segfault) whatever reads the columns later. Payloads are untrusted.
        table.validate(full=True)
    except pa.ArrowException as err:
        raise ValueError(f"corrupt Arrow IPC stream: {err}") from err
    return conform(table, schema)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast ``table`` to ``schema``; raises ValueError naming the field."""
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise ValueError(f"missing required fields {missing}")
    columns = []
    for f in schema:
        column = table.column(f.name)
        if not f.nullable and column.null_count:
            raise ValueError(f"missing or null required field {f.name!r}")
        if not column.type.equals(f.type):
            try:
                column = column.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise ValueError(f"field {f.name!r}: {column.type} is not {f.type}") from err
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


class JsonDecoder:
    """Decodes batches of JSON payloads into ``schema``, dead-lettering what it cannot.

    A record is bad when it is not one JSON object, a field has the wrong type, a
    string is not valid UTF-8, a non-nullable field is missing or null, or the payload
    exceeds ``max_payload_bytes``. Fields not in the schema are ignored.

    The payloads of a batch are parsed as one newline-delimited document, so each line
    is first tagged with its position: otherwise an unterminated object could swallow the
    next line while another payload holds two objects, and the record count would still
    match with every record attributed to the wrong payload.
    """

    def __init__(self, schema: pa.Schema, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES):
        self.schema = schema
        self.max_payload_bytes = max_payload_bytes
        # Parsed as all-nullable, so that a missing required field is found by
        # ``conform``, which names it (Arrow's reader does not).
        parse_schema = pa.schema(
            [pa.field(_ROW_FIELD, pa.int64()), *(_parse_field(f) for f in schema)]
        )
        self._strings = [
            f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
        ]
        self._options = pa_json.ParseOptions(
            explicit_schema=parse_schema, unexpected_field_behavior="ignore"
        )

    def decode(
        self,
        payloads: Sequence[bytes],
        offsets: Sequence[int],
        source: str,
        partition: str = "0",
    ) -> Decoded:
        if len(payloads) != len(offsets):
            raise ValueError("one offset per payload")
        good_idx: list[int] = []
        bad: dict[int, str] = {}
        lines: list[bytes] = []
        limit = self.max_payload_bytes
        for i, payload in enumerate(payloads):
            if (
                payload[:2] == b'{"'
                and len(payload) <= limit
                and b"\n" not in payload
                and b"\r" not in payload
            ):
                # The common case (a compact object), tagged with one copy.
                good_idx.append(i)
                lines.append(b"%b%d,%b" % (_TAG, i, payload[1:]))
                continue
            reason = self._precheck(payload)
            if reason is not None:
                bad[i] = reason
                continue
            if b"\n" in payload or b"\r" in payload:
                # Pretty-printed JSON: one line per record is what the reader needs.
                try:
                    payload = json.dumps(json.loads(payload), separators=(",", ":")).encode()
                except (ValueError, UnicodeDecodeError) as err:
                    bad[i] = f"malformed JSON: {err}"
                    continue
            good_idx.append(i)
            lines.append(_tag(payload, i))
        tables: list[pa.Table] = []
        self._parse(lines, good_idx, tables, bad)
        table = (
            pa.concat_tables(tables).combine_chunks() if tables else arrays.empty_table(self.schema)
        )
        kept = sorted(set(good_idx) - set(bad))
        dead_idx = sorted(bad)
        dead = dead_letters(
            source,
            partition,
            [offsets[i] for i in dead_idx],
            [bad[i] for i in dead_idx],
            [payloads[i] for i in dead_idx],
        )
        return Decoded(table, dead, [offsets[i] for i in kept])

    def _precheck(self, payload: bytes) -> str | None:
        if len(payload) > self.max_payload_bytes:
            return f"payload of {len(payload)} bytes exceeds the {self.max_payload_bytes} limit"
        if not payload.strip():
            return "empty payload"
        if payload.lstrip()[:1] != b"{":
            return "malformed JSON: expected one JSON object"
        return None

    def _parse(
        self,
        lines: list[bytes],
        index: list[int],
        out: list[pa.Table],
        bad: dict[int, str],
    ) -> None:
        """Parse ``lines`` in one call; on failure bisect to isolate the bad records.
        Tables are appended to ``out`` in input order."""
        if not lines:
            return
        # Blocks of ~1 MiB are parsed in parallel; a block must hold the longest line.
        block_size = max(1 << 20, 2 * max(map(len, lines)))
        try:
            table = pa_json.read_json(
                io.BytesIO(b"\n".join(lines)),
                read_options=pa_json.ReadOptions(block_size=block_size),
                parse_options=self._options,
            )
            if table.num_rows != len(lines):
                raise ValueError(f"{table.num_rows} records in {len(lines)} payloads")
            rows = table.column(_ROW_FIELD).combine_chunks()
            if not rows.equals(arrays.from_pylist(list(index), pa.int64())):
                raise ValueError("records do not line up with payloads")
            for name in self._strings:  # Arrow's reader does not check the encoding
                try:
                    table.column(name).validate(full=True)
                except pa.ArrowInvalid:
                    raise ValueError(f"field {name!r} is not valid UTF-8") from None
            table = conform(table, self.schema)
        except (pa.ArrowInvalid, ValueError) as err:
            if len(lines) == 1:
                bad[index[0]] = _reason(err)
                return
            mid = len(lines) // 2
            self._parse(lines[:mid], index[:mid], out, bad)
            self._parse(lines[mid:], index[mid:], out, bad)
            return
        out.append(table)


def _parse_field(f: pa.Field) -> pa.Field:
    """Timestamps are parsed at microsecond precision and cast exactly afterwards: Arrow's
    reader refuses ``…00.001000`` for a millisecond column (only three digits), and the
    cast still refuses a value that would lose precision."""
    if pa.types.is_timestamp(f.type) and f.type.unit in ("s", "ms"):
        return pa.field(f.name, pa.timestamp("us", tz=f.type.tz), nullable=True)
    return f.with_nullable(True)


def _tag(payload: bytes, position: int) -> bytes:
    """``{...`` becomes ``{"__dataflare_row__":position,...`` (the payload starts with
    ``{`` after whitespace: see ``_precheck``)."""
    body = payload[1:] if payload[:1] == b"{" else payload.lstrip()[1:]
    first = body[:1]
    if first.isspace():
        first = body.lstrip()[:1]
    sep = b"" if first == b"}" else b","
    return b"%b%d%b%b" % (_TAG, position, sep, body)


def _reason(err: Exception) -> str:
    text = str(err).strip()
    if "records in 1 payloads" in text:
        return "malformed JSON: expected exactly one JSON object"
    if text.startswith("JSON parse error: "):
        text = text.removeprefix("JSON parse error: ")
        return f"malformed or mistyped JSON: {text}"
    return text
