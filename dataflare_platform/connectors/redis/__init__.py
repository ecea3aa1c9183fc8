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

from typing import TYPE_CHECKING, Any, Literal

from dataflare_platform.connectors.partitioned_streams import PartitionedStreamOptions
from dataflare_platform.connectors.redis.settings import RedisSettings
from dataflare_platform.connectors.settings import OpenContext, RowSchema

if TYPE_CHECKING:
    from dataflare_platform.connectors.redis.streams import (
        RedisConsumer,
        RedisProducer,
        RedisSource,
        delete_stream,
    )

# The client-backed names load the redis client on first use (PEP 562), so that a
# pipeline whose sources are not Redis never imports it.
_CLIENT_NAMES = frozenset({"RedisConsumer", "RedisProducer", "RedisSource", "delete_stream"})


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from dataflare_platform.connectors.redis import streams

        return getattr(streams, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
def open_source(settings: RedisSourceSettings, context: OpenContext) -> RedisSource:
    from dataflare_platform.connectors.redis.streams import RedisSource

    return RedisSource.open_source(settings, context)


def end_offsets(settings: RedisSourceSettings, context: OpenContext) -> dict[str, int]:
    from dataflare_platform.connectors.redis.streams import RedisSource

    return RedisSource.end_offsets(settings, context)
