"""A Kafka topic as an exactly-once sink: output, side rows and the engine's checkpoint
commit in one Kafka transaction.

Each engine checkpoint is one transaction of a transactional producer: the output
messages, the side rows (late rows and dead letters, JSON, to ``side_topic``) and one
record in the compacted ``checkpoint_topic`` (key: the pipeline's checkpoint key, value:
the checkpoint, which holds the input offsets; a checkpoint over ``PART_BYTES`` goes as
parts followed by that record naming them). ``read_committed`` readers see all of it
or none of it. The input offsets therefore commit with the output in one Kafka
transaction whatever the source is; for Kafka sources the consumer group's offsets are
then updated for Kafka's lag tooling (``KafkaSource.on_commit``).

The transactional id is fixed per checkpoint key (``<prefix><key>``), so a restarted
writer, or a partition-parallel worker taking a partition over, fences the one before
it: ``init_transactions`` aborts whatever that writer left open, and a zombie still
running gets ``ProducerFenced`` on its next commit instead of writing twice. ``open``
then reads the key's last committed checkpoint (``read_committed``) and the engine
resumes from it.

Operations: create ``checkpoint_topic`` with ``cleanup.policy=compact`` (one record per
key survives; reading a checkpoint then costs one small partition), give the output
topic enough partitions for the readers, and keep ``transaction_timeout_s`` under the
broker's ``transaction.max.timeout.ms``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import uuid
import zlib
from typing import Any

import polars as pl
import pyarrow as pa
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from dataflare_platform.connectors.broker import BrokerError
from dataflare_platform.connectors.kafka.settings import KafkaSinkSettings
from dataflare_platform.connectors.kafka.source import partition_count
from dataflare_platform.engine.checkpoint import STORED_COMPRESSION, Checkpoint
from dataflare_platform.engine.io import TransactionalSink
from dataflare_platform.errors import ConflictError, InvalidInputError
from dataflare_platform.events.codec import encode_arrow, encode_json
from dataflare_platform.observability.connectors import for_connector

log = logging.getLogger(__name__)

ROWS_HEADER = "rows"  # rows in an arrow message (sizes reads; the payload decides)
# "<writer>:<checkpoint number>" on every record of a transaction: which writer (one per
# open) wrote it for which checkpoint. Lineage for operators; and what a test reader
# needs where a cluster does not hide aborted records (librdkafka's mock does not).
TXN_HEADER = "dataflare-txn"
# A checkpoint blob larger than this is written as parts (``_produce_checkpoint``), under
# the 1 MB that brokers and producers accept by default (``message.max.bytes``). A 3 MB
# blob as one record was refused ("Broker: Message size too large").
PART_BYTES = 900_000
PART_HEADER = "dataflare-checkpoint-part"  # the id of the checkpoint a part belongs to
_PARTS_MAGIC = b"DFPARTS1"  # a head record's value starts so (a blob starts "DFCK")


class KafkaSink(TransactionalSink):
    """Engine sink writing to Kafka exactly once (see the module docstring)."""

    def __init__(self, settings: KafkaSinkSettings) -> None:
        self.settings = settings
        self.side_topic = settings.side_topic or f"{settings.topic}.side"
        self._producer: Any = None
        self._key = ""
        self._writer = ""
        self._headers: list[tuple[str, bytes]] = []
        self._checkpoint_number: int | None = None
        self._metrics = for_connector("kafka", settings.topic)

    # -- Sink ----------------------------------------------------------------------------
    def open(self, pipeline: str) -> Checkpoint | None:
        self.discard_pending()
        self._key = pipeline
        self._writer = uuid.uuid4().hex[:16]
        self._checkpoint_number = None
        s = self.settings
        self._producer = Producer(
            s.properties(
                "sink",
                **{
                    "transactional.id": f"{s.transactional_id_prefix}{pipeline}",
                    "enable.idempotence": True,
                    "acks": "all",
                    # Java's default: a key lands in the same partition whoever writes it.
                    "partitioner": "murmur2_random",
                    "transaction.timeout.ms": s.transaction_timeout_s * 1000,
                },
            )
        )
        with self._metrics.request("init_transactions"):
            try:
                # Fences an earlier writer with this id and aborts what it left open.
                self._producer.init_transactions(s.timeout_s)
            except KafkaException as err:
                raise BrokerError(
                    f"Kafka: cannot start transactions for {pipeline!r}: {err}"
                ) from None
        return self._last_checkpoint()

    def commit_batch(
        self, output: pl.DataFrame | None, side: pl.DataFrame | None, checkpoint: Checkpoint
    ) -> None:
        producer = self._producer
        if producer is None:
            raise InvalidInputError("KafkaSink.commit before open")
        s = self.settings
        number = checkpoint.counters.get("checkpoints", 0)
        self._headers = [(TXN_HEADER, f"{self._writer}:{number}".encode())]
        with self._metrics.request("commit"):
            try:
                producer.begin_transaction()
                if output is not None and output.height:
                    self._send_output(output)
                if side is not None and side.height:
                    for payload in encode_json(side):
                        self._produce(self.side_topic, payload)
                # The checkpoint record goes last, once the rest is on the brokers.
                producer.flush(s.timeout_s)
                self._produce_checkpoint(checkpoint.encode(STORED_COMPRESSION))
                self._commit(producer)
            except KafkaException as err:
                self._fail(producer, err)

    def close(self) -> None:
        # An open transaction is aborted by the next writer's init_transactions, or by
        # the broker after transaction_timeout_s: nothing uncommitted is ever read.
        self._producer = None

    # -- internals -----------------------------------------------------------------------
    def _send_output(self, output: pl.DataFrame) -> None:
        s = self.settings
        keys: list[bytes | None]
        if s.key is not None and s.key not in output.columns:
            raise InvalidInputError(f"sink.key: {s.key!r} is not an output column {output.columns}")
        if s.format == "json":
            payloads = encode_json(output)
            keys = (
                [None] * len(payloads)
                if s.key is None
                else [_key_bytes(v) for v in output.get_column(s.key).to_list()]
            )
            for payload, key in zip(payloads, keys, strict=True):
                self._produce(s.topic, payload, key=key)
            return
        table = output.to_arrow()
        if s.key is None:
            for start in range(0, table.num_rows, s.batch_rows):
                self._send_arrow(table.slice(start, s.batch_rows), None)
            return
        # One message per key group, so the key still decides the partition.
        for group in output.partition_by(s.key, maintain_order=True):
            key = _key_bytes(group.get_column(s.key)[0])
            part = group.to_arrow()
            for start in range(0, part.num_rows, s.batch_rows):
                self._send_arrow(part.slice(start, s.batch_rows), key)

    def _send_arrow(self, table: pa.Table, key: bytes | None) -> None:
        headers = [(ROWS_HEADER, str(table.num_rows).encode())]
        self._produce(self.settings.topic, encode_arrow(table), key=key, headers=headers)

    def _produce(self, topic: str, value: bytes, **kwargs: Any) -> None:
        kwargs["headers"] = [*kwargs.get("headers", []), *self._headers]
        while True:
            try:
                self._producer.produce(topic, value, **kwargs)
                return
            except BufferError:
                self._producer.poll(0.1)  # the local queue is full: let it drain

    def _produce_checkpoint(self, blob: bytes) -> None:
        """The checkpoint record(s), in the open transaction. A blob over ``PART_BYTES``
        (Kafka refuses messages over ``message.max.bytes``, 1 MB by default) goes as parts
        under keys of their own (``<key>\0part<i>``: compaction keeps each part's newest
        record) followed by a head record under the key naming them (``_PARTS_MAGIC``,
        then JSON: an id the parts carry in ``PART_HEADER``, their count, the blob's
        length and SHA-256); the same transaction commits all of it."""
        partition = self._checkpoint_partition()
        topic, key = self.settings.checkpoint_topic, self._key.encode()
        if len(blob) <= PART_BYTES:
            self._produce(topic, blob, key=key, partition=partition)
            return
        ident = uuid.uuid4().hex
        count = -(-len(blob) // PART_BYTES)
        view = memoryview(blob)
        for i in range(count):
            self._produce(
                topic,
                bytes(view[i * PART_BYTES : (i + 1) * PART_BYTES]),
                key=_part_key(key, i),
                partition=partition,
                headers=[(PART_HEADER, ident.encode())],
            )
        head = {
            "id": ident,
            "parts": count,
            "bytes": len(blob),
            "sha256": hashlib.sha256(blob).hexdigest(),
        }
        self._produce(topic, _PARTS_MAGIC + json.dumps(head).encode(), key=key, partition=partition)

    def _commit(self, producer: Any) -> None:
        deadline = time.monotonic() + self.settings.timeout_s
        while True:
            try:
                producer.commit_transaction(self.settings.timeout_s)
                return
            except KafkaException as err:
                error = err.args[0]
                if error.retriable() and time.monotonic() < deadline:
                    continue  # the outcome is not known yet: asking again is safe
                raise

    def _fail(self, producer: Any, err: KafkaException) -> None:
        error = err.args[0]
        if error.code() == KafkaError._FENCED or error.fatal():
            self._producer = None
            raise ConflictError(
                f"Kafka: the writer of {self._key!r} was fenced by a newer one (another run"
                f" took over this checkpoint key): {error.str()}"
            ) from None
        if error.txn_requires_abort():
            with contextlib.suppress(KafkaException):  # else the next writer aborts it
                producer.abort_transaction(self.settings.timeout_s)
        raise BrokerError(f"Kafka: commit of {self._key!r} failed: {error.str()}") from None

    def _checkpoint_partition(self) -> int:
        """The checkpoint topic's partition for this key (its count read once per open)."""
        if self._checkpoint_number is not None:
            return self._checkpoint_number
        count = partition_count(
            self._producer,
            self.settings.checkpoint_topic,
            self.settings.timeout_s,
            "sink.checkpoint_topic",
        )
        self._checkpoint_number = zlib.crc32(self._key.encode()) % count
        return self._checkpoint_number

    def _last_checkpoint(self) -> Checkpoint | None:
        """The key's newest committed checkpoint: its partition of the checkpoint topic
        read to the end, ``read_committed`` (compaction keeps that short)."""
        s = self.settings
        consumer = Consumer(
            s.properties(
                "sink",
                **{
                    "group.id": f"{s.transactional_id_prefix}checkpoint-reader",
                    "isolation.level": "read_committed",
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    "auto.offset.reset": "earliest",
                },
            )
        )
        try:
            number = self._checkpoint_partition()
            tp = TopicPartition(s.checkpoint_topic, number)
            _, end = consumer.get_watermark_offsets(tp, timeout=s.timeout_s, cached=False)
            if end <= 0:
                return None
            consumer.assign([TopicPartition(s.checkpoint_topic, number, 0)])
            key = self._key.encode()
            newest: bytes | None = None
            head: dict | None = None  # the newest's, when it names parts
            # Parts by the id they carry, of checkpoints whose head is not read yet (at
            # most the newest and whatever an unfinished transaction left).
            parts: dict[str, dict[int, bytes]] = {}
            newest_parts: dict[int, bytes] = {}
            deadline = time.monotonic() + s.timeout_s
            while time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF and message.offset() >= end:
                        break
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise BrokerError(f"Kafka: reading checkpoints: {error.str()}")
                    continue
                got = message.key()
                if got == key:
                    newest = message.value()
                    head = None
                    if newest.startswith(_PARTS_MAGIC):
                        head = json.loads(newest[len(_PARTS_MAGIC) :])
                        newest_parts = parts.pop(head["id"], {})
                        parts = {}
                elif got is not None and got.startswith(key + b"\0part"):
                    ident = dict(message.headers() or []).get(PART_HEADER, b"").decode()
                    index = int(got[len(key) + 5 :])
                    parts.setdefault(ident, {})[index] = message.value()
            else:
                raise BrokerError(
                    f"Kafka: checkpoint topic {s.checkpoint_topic!r} not read to its end"
                    f" within {s.timeout_s:g} s"
                )
        finally:
            consumer.close()
        if newest is None:
            return None
        return Checkpoint.decode(newest if head is None else self._joined(head, newest_parts))

    def _joined(self, head: dict, parts: dict[int, bytes]) -> bytes:
        """The blob of a checkpoint stored as parts, checked against its head."""
        missing = [i for i in range(head["parts"]) if i not in parts]
        blob = b"".join(parts[i] for i in range(head["parts"]) if i in parts)
        if (
            missing
            or len(blob) != head["bytes"]
            or hashlib.sha256(blob).hexdigest() != head["sha256"]
        ):
            raise BrokerError(
                f"Kafka: the checkpoint of {self._key!r} in {self.settings.checkpoint_topic!r}"
                f" is incomplete (parts missing: {missing[:5]}; {len(blob)} of"
                f" {head['bytes']} bytes, or its checksum differs)"
            )
        return blob


def _part_key(key: bytes, index: int) -> bytes:
    return key + b"\0part" + str(index).encode()


def _key_bytes(value: object) -> bytes | None:
    return None if value is None else str(value).encode()
