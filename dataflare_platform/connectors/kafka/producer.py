"""Tables to Kafka messages, at least once: the ``BrokerProducer`` of the broker
connectors (``connectors.broker``), for the CLI, the router and tests.

``json``: one message per row; ``arrow``: one Arrow IPC stream per ``batch_rows`` rows
with a ``rows`` header. With ``key`` the column's value is the message key (Java's
murmur2 partitioner, so the partition of a key is the one any Kafka client picks), else
``partition`` pins every message to one partition, else the client spreads them.
Idempotent (``enable.idempotence``): retries never duplicate a message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl
import pyarrow as pa
from confluent_kafka import KafkaException, Producer

from dataflare_platform.connectors.broker import BrokerError, MessageCodec
from dataflare_platform.connectors.kafka.settings import KafkaSettings
from dataflare_platform.connectors.kafka.sink import ROWS_HEADER
from dataflare_platform.observability.connectors import for_connector


class KafkaProducer:
    def __init__(
        self,
        settings: KafkaSettings,
        schema: pa.Schema | None = None,
        *,
        key: str | None = None,
        partition: int | None = None,
    ) -> None:
        self.settings = settings
        self.key = key
        self.partition = partition
        self._schema = schema
        self._errors: list[str] = []
        self._metrics = for_connector("kafka", settings.topic)
        self._producer = Producer(
            settings.properties(
                "producer",
                **{"enable.idempotence": True, "acks": "all", "partitioner": "murmur2_random"},
            )
        )

    def send(self, table: pa.Table | pl.DataFrame) -> int:
        """Publish the rows; return how many once the cluster has acknowledged all."""
        if isinstance(table, pl.DataFrame):
            table = table.to_arrow()
        codec = MessageCodec(self.settings.format, self._schema or table.schema)
        codec.batch_rows = self.settings.batch_rows
        keys = (
            None
            if self.key is None
            else [str(v).encode() for v in table.column(self.key).to_pylist()]
        )
        row = 0
        for payload, rows in codec.encode(table):
            key = None if keys is None else keys[row]
            headers = (
                None if self.settings.format == "json" else [(ROWS_HEADER, str(rows).encode())]
            )
            self._produce(payload, key, headers)
            row += rows
        self._flush()
        return table.num_rows

    def send_raw(self, payloads: Sequence[bytes]) -> int:
        for payload in payloads:
            self._produce(payload, None, None)
        self._flush()
        return len(payloads)

    def close(self) -> None:
        self._flush()

    def _produce(self, payload: bytes, key: bytes | None, headers: Any) -> None:
        kwargs: dict[str, Any] = {"on_delivery": self._delivered}
        if key is not None:
            kwargs["key"] = key
        if headers is not None:
            kwargs["headers"] = headers
        if self.partition is not None:
            kwargs["partition"] = self.partition
        while True:
            try:
                self._producer.produce(self.settings.topic, payload, **kwargs)
                return
            except BufferError:
                self._producer.poll(0.1)
            except KafkaException as err:
                raise BrokerError(f"Kafka: producing to {self.settings.topic!r}: {err}") from None

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self._errors.append(error.str())

    def _flush(self) -> None:
        with self._metrics.request("flush"):
            left = self._producer.flush(self.settings.timeout_s)
        if left or self._errors:
            first = self._errors[0] if self._errors else f"{left} not acknowledged in time"
            count = len(self._errors) + left
            self._errors.clear()
            raise BrokerError(
                f"Kafka: {count} message(s) to {self.settings.topic!r} failed (first: {first});"
                " sending again is at-least-once"
            )
