"""One broker source over N streams, one per partition: how NATS JetStream and Redis
Streams sources run as partition-parallel workers.

A NATS stream or a Redis stream is one ordered sequence, so it is one partition. A
source declared with ``partitions: N`` reads the N streams ``<stream>-0`` ..
``<stream>-<N-1>`` as partitions ``"0"`` .. ``"N-1"``, each with its own offsets in the
checkpoint, and ``partitioned_by: <column>`` says the producers put each row in the
stream of :func:`partition_of` its value: the embedded log's partitioner (a topic's
``key:``), so a pipeline is partitioned the same way whatever it reads, and keyed or
windowed steps over that column can be split across workers (``streams.parallel``).
:func:`send_partitioned` is that producer side for any ``BrokerProducer``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import BaseModel, Field, PositiveInt, model_validator

from dataflare_platform.engine import arrays
from dataflare_platform.errors import InvalidInputError

MAX_PARTITIONS = 1024


class PartitionedStreamOptions(BaseModel):
    """Mixed into the ``kind: nats`` / ``kind: redis`` source settings."""

    partitions: PositiveInt = Field(
        1,
        le=MAX_PARTITIONS,
        description="Read N streams <stream>-0 .. <stream>-(N-1), one per partition",
    )
    partitioned_by: str | None = Field(
        None, description="Column whose partition_of value picks each row's stream"
    )

    @model_validator(mode="after")
    def _partitioning(self) -> Self:
        schema = getattr(self, "table_schema", None)
        if self.partitioned_by is not None:
            if schema is not None and self.partitioned_by not in schema:
                raise ValueError(
                    f"partitioned_by {self.partitioned_by!r} is not a column of the schema"
                )
            if self.partitions < 2:
                raise ValueError("partitioned_by needs partitions of 2 or more")
        return self


def partition_stream(stream: str, partition: int) -> str:
    return f"{stream}-{partition}"


def partition_of(values: pa.Array | pa.ChunkedArray | pl.Series, partitions: int) -> np.ndarray:
    """The partition of each value: the embedded log's keyed-topic partitioner."""
    series = values if isinstance(values, pl.Series) else pl.Series(values)
    return (series.hash(seed=0) % partitions).to_numpy()


def send_partitioned(
    producer: Callable[[Any], Any], settings: Any, table: pa.Table, column: str, partitions: int
) -> int:
    """Send ``table``'s rows to the streams of their ``column`` value's partition, with
    ``producer(settings_of_that_stream)`` (a ``BrokerProducer`` factory). Returns rows sent."""
    ids = partition_of(table.column(column), partitions)
    sent = 0
    for p in range(partitions):
        mask = ids == p
        if not mask.any():
            continue
        one = producer(settings.model_copy(update={"stream": partition_stream(settings.stream, p)}))
        try:
            sent += one.send(table.filter(arrays.booleans(mask)))
        finally:
            one.close()
    return sent


class PartitionedStreams:
    """Engine source over ``partitions`` streams (see the module docstring); ``only``
    restricts it to some partitions (a partition-parallel worker's share)."""

    def __init__(
        self,
        open_one: Callable[[Any, str], Any],
        settings: Any,
        name: str,
        only: tuple[int, ...] | None = None,
        partition_key: str | None = None,
    ) -> None:
        count = settings.partitions
        numbers = list(range(count)) if only is None else sorted(set(only))
        missing = [p for p in numbers if not 0 <= p < count]
        if missing:
            raise InvalidInputError(
                f"source {name!r} has {count} partitions: no partition(s) {missing}"
            )
        self.name = name
        self.time_column = settings.time_column
        self.partition_key = partition_key
        self._count = count
        self._subs: dict[str, Any] = {}
        try:
            for p in numbers:
                one = settings.model_copy(
                    update={"stream": partition_stream(settings.stream, p), "partitions": 1}
                )
                self._subs[str(p)] = open_one(one, name)
        except BaseException:
            self.close()
            raise

    @property
    def schema(self) -> pa.Schema:
        return next(iter(self._subs.values())).schema

    @property
    def dead_letters(self) -> list[pa.Table]:
        return [t for sub in self._subs.values() for t in sub.dead_letters]

    def partitions(self) -> list[str]:
        return list(self._subs)

    def key_partitions(self, values: pl.Series) -> np.ndarray:
        """The stream each value of ``partitioned_by`` goes to (:func:`partition_of` over
        all the source's streams): how a split checkpoint attributes keyed state."""
        return partition_of(values, self._count)

    def read(self, partition: str, offset: int, max_rows: int) -> pa.Table:
        sub = self._subs[partition]
        return sub.read(sub.partitions()[0], offset, max_rows)

    def end_offset(self, partition: str) -> int | None:
        sub = self._subs[partition]
        return sub.end_offset(sub.partitions()[0])

    def close(self) -> None:
        for sub in self._subs.values():
            sub.close()
