"""Redis Streams: a stream as a source (entry ids are the row offsets; see ``streams``),
plus producers and consumer groups for the CLI and the router.

    sources:
      bids:
        kind: redis
        url: redis://127.0.0.1:6379/0
        stream: bids
        schema: {auction: int64, price: int64, date_time: "timestamp[ms]"}
        # TLS: url rediss://..., plus optionally
        # tls: {ca_file: ..., cert_file: ..., key_file: ..., server_name: ...}
        # partitions: 4                     # streams bids-0 .. bids-3, one per partition
        # partitioned_by: auction           # producers: connectors.partitioned_streams

Offsets are dense (trimmed or deleted entries read as placeholder rows plus a dead
letter) and the end is one XINFO away, so Redis sources suit micro-batch ranges and
continuous runs.
"""

from __future__ import annotations

from typing import Literal

from dataflare_platform.connectors.partitioned_streams import PartitionedStreamOptions
from dataflare_platform.connectors.redis.streams import (
    RedisConsumer,
    RedisProducer,
    RedisSettings,
    RedisSource,
    delete_stream,
)
from dataflare_platform.connectors.settings import RowSchema

__all__ = [
    "RedisConsumer",
    "RedisProducer",
    "RedisSettings",
    "RedisSource",
    "RedisSourceSettings",
    "delete_stream",
    "end_offsets",
    "open_source",
]


class RedisSourceSettings(RedisSettings, RowSchema, PartitionedStreamOptions):
    """The stream's connection settings plus the rows' schema and event-time column."""

    kind: Literal["redis"] = "redis"


# A pipeline's ``sources:`` entry: open it, or read its end for offset-range runs.
open_source = RedisSource.open_source
end_offsets = RedisSource.end_offsets
