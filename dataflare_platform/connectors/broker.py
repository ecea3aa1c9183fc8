"""What every message broker connector offers, so the rest of the platform (router, CLI
``produce``/``consume``, sensors) can treat NATS JetStream, Redis Streams and later Kafka
alike.

Two roles, both at-least-once:
- a :class:`BrokerProducer` turns a table into messages (``json``: one per record;
  ``arrow``: one Arrow IPC stream per batch of rows) and returns once the broker has
  acknowledged every one;
- a :class:`BrokerConsumer` belongs to a consumer group (NATS durable consumer, Redis
  consumer group, Kafka group): ``fetch`` hands out decoded rows plus dead letters, and
  nothing is settled until the caller runs the result's ``ack`` (NATS: ack each message;
  Redis: XACK; Kafka: commit the offsets). What is never acked is delivered again.

Undecodable messages never raise: they come back as ``DEAD_LETTER_SCHEMA`` rows with the
raw bytes, so the caller can route them to a dead-letter topic and then ack.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Self

import pyarrow as pa
from pydantic import Field, PositiveInt

from dataflare_platform.engine import arrays
from dataflare_platform.errors import DataflareError
from dataflare_platform.events.codec import (
    DEAD_LETTER_SCHEMA,
    Decoded,
    JsonDecoder,
    dead_letters,
    decode_arrow,
    encode_arrow,
    encode_json,
)
from dataflare_platform.events.schema_policy import (
    DEFAULT_SCHEMA_POLICY,
    MessageSchemaPolicy,
    decode_json_records,
    mismatch,
)
from dataflare_platform.models import StrictModel

Format = Literal["json", "arrow"]


class BrokerError(DataflareError):
    """The broker refused or failed an operation (the message says which and why)."""


class BrokerUnavailableError(BrokerError):
    """The broker could not be reached at all."""


class BrokerSettings(StrictModel):
    """Base of the connectors' settings: unknown fields are refused, values are checked
    at construction, and ``load`` reports every bad field by name."""

    @classmethod
    def load(cls, **values: Any) -> Self:
        return cls.validated(values, f"{cls.__name__} settings")


class StreamSettings(BrokerSettings):
    """What a stream broker's settings say the same way whatever the broker: the stream,
    how messages are encoded, how many rows an arrow message carries and how many
    messages one read asks for. A ``StreamSource`` reads these; each broker narrows
    ``stream`` to what its server accepts and adds its own connection fields."""

    stream: str
    format: Format = "json"
    batch_rows: PositiveInt = Field(4096, description="Rows per arrow message")
    fetch_messages: PositiveInt = Field(5000, description="Messages per read")
    on_schema_mismatch: MessageSchemaPolicy = Field(
        DEFAULT_SCHEMA_POLICY,
        description="A message with unknown or missing fields: dead_letter it (default),"
        " or allow_extra (ignore unknown fields; a missing one is still dead-lettered)",
    )


@dataclass
class FetchResult:
    """One fetch from a consumer group.

    ``ids`` lists every message handed out (broker ids: NATS stream sequence, Redis entry
    id, Kafka ``partition:offset``), decodable or not. Every message is either in
    ``table`` (its rows) or one row of ``dead``, so for json (one record per message)
    ``len(ids) == table.num_rows + dead.num_rows``, and in any format
    ``len(ids) == good_messages + dead.num_rows``.
    """

    table: pa.Table
    dead: pa.Table
    ids: list[str]
    ack: Callable[[], None] = field(repr=False)

    @property
    def messages(self) -> int:
        return len(self.ids)

    @property
    def good_messages(self) -> int:
        return len(self.ids) - self.dead.num_rows


class BrokerProducer(Protocol):
    def send(self, table: pa.Table) -> int:
        """Publish ``table``'s rows; return the number of rows sent once all are acked."""
        ...

    def send_raw(self, payloads: Sequence[bytes]) -> int:
        """Publish payloads as they are (re-driving dead letters, tests); return count."""
        ...

    def close(self) -> None: ...


class BrokerConsumer(Protocol):
    def fetch(self, max_records: int, timeout_s: float) -> FetchResult:
        """Up to ``max_records`` records (arrow: whole messages, so rounded up to a
        message), waiting at most ``timeout_s`` for the first; empty on timeout."""
        ...

    def close(self) -> None:
        """Leave; whatever was fetched and not acked is redelivered later."""
        ...


def arrow_rows(payload: bytes) -> int | None:
    """Rows in an Arrow IPC stream payload, or None if it is not one."""
    try:
        return pa.ipc.open_stream(pa.py_buffer(payload)).read_all().num_rows
    except (pa.ArrowException, OSError):
        return None


@dataclass
class MessageCodec:
    """Tables to message payloads and back, for one format and schema."""

    format: Format
    schema: pa.Schema
    batch_rows: int = 4096  # rows per arrow message
    max_message_bytes: int = 1 << 20  # arrow batches larger than this are split
    # Unknown or missing fields (see ``events.schema_policy``): never silent nulls.
    on_schema_mismatch: str = DEFAULT_SCHEMA_POLICY

    def __post_init__(self) -> None:
        self._json = JsonDecoder(self.schema)

    def encode(self, table: pa.Table) -> list[tuple[bytes, int]]:
        """``(payload, rows)`` per message, in row order."""
        if table.num_rows == 0:
            return []
        if self.format == "json":
            return [(p, 1) for p in encode_json(table)]
        out: list[tuple[bytes, int]] = []
        for start in range(0, table.num_rows, self.batch_rows):
            self._encode_arrow(table.slice(start, self.batch_rows), out)
        return out

    def _encode_arrow(self, table: pa.Table, out: list[tuple[bytes, int]]) -> None:
        payload = encode_arrow(table)
        if len(payload) > self.max_message_bytes and table.num_rows > 1:
            half = table.num_rows // 2  # too big for the broker: halve until it fits
            self._encode_arrow(table.slice(0, half), out)
            self._encode_arrow(table.slice(half), out)
            return
        out.append((payload, table.num_rows))

    def decode(
        self, payloads: Sequence[bytes], offsets: Sequence[int], source: str, partition: str
    ) -> Decoded:
        """Good rows and dead letters; ``Decoded.offsets`` gives each good row its
        message's offset (arrow: every row of a message shares it)."""
        if self.format == "json":
            return decode_json_records(
                self._json, payloads, offsets, source, partition, self.on_schema_mismatch
            )
        tables: list[pa.Table] = []
        good_offsets: list[int] = []
        bad: list[tuple[int, str, bytes]] = []
        for payload, offset in zip(payloads, offsets, strict=True):
            problem = self._arrow_mismatch(payload)
            if problem is not None:
                bad.append((offset, problem, payload))
                continue
            try:
                table = decode_arrow(payload, self.schema)
            except ValueError as err:
                bad.append((offset, str(err), payload))
                continue
            tables.append(table)
            good_offsets.extend([offset] * table.num_rows)
        table = pa.concat_tables(tables) if tables else arrays.empty_table(self.schema)
        dead = dead_letters(
            source,
            partition,
            [b[0] for b in bad],
            [b[1] for b in bad],
            [b[2] for b in bad],
        )
        return Decoded(table, dead, good_offsets)

    def _arrow_mismatch(self, payload: bytes) -> str | None:
        columns = _stream_columns(payload)
        if columns is None:
            return None
        return mismatch(columns, self.schema, self.on_schema_mismatch)


def _stream_columns(payload: bytes) -> list[str] | None:
    """The column names an Arrow IPC stream declares, or None if it is not one (the
    decoder then says why)."""
    try:
        return pa.ipc.open_stream(pa.py_buffer(payload)).schema.names
    except (pa.ArrowException, OSError, ValueError):  # ValueError: names not UTF-8
        return None


def concat_dead(tables: Sequence[pa.Table]) -> pa.Table:
    tables = [t for t in tables if t.num_rows]
    return pa.concat_tables(tables) if tables else arrays.empty_table(DEAD_LETTER_SCHEMA)
