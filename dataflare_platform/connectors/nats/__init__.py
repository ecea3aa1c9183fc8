"""NATS JetStream: a stream as a source (dense row offsets over stream sequences; see
``jetstream`` for how), plus producers and consumer groups for the CLI and the router.

    sources:
      bids:
        kind: nats
        url: nats://127.0.0.1:4222
        stream: bids
        format: json                        # or arrow (one batch of rows per message)
        schema: {auction: int64, price: int64, date_time: "timestamp[ms]"}
        # TLS: url tls://..., plus optionally
        # tls: {ca_file: ..., cert_file: ..., key_file: ..., server_name: ...}
        # partitions: 4                     # streams bids-0 .. bids-3, one per partition
        # partitioned_by: auction           # producers: connectors.partitioned_streams

Offsets are dense (gaps read as placeholder rows plus a dead letter) and the stream's
end is cheap to read, so NATS sources suit micro-batch ranges and continuous runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from dataflare_platform.connectors.nats.settings import NatsSettings
from dataflare_platform.connectors.partitioned_streams import PartitionedStreamOptions
from dataflare_platform.connectors.settings import OpenContext, RowSchema

if TYPE_CHECKING:
    from dataflare_platform.connectors.nats.jetstream import (
        NatsConsumer,
        NatsProducer,
        NatsSource,
        delete_stream,
        ensure_stream,
    )

# The client-backed names load nats-py (and aiohttp, ~0.15 s) on first use (PEP 562), so
# that a pipeline whose sources are not NATS never imports it.
_CLIENT_NAMES = frozenset(
    {"NatsConsumer", "NatsProducer", "NatsSource", "delete_stream", "ensure_stream"}
)


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from dataflare_platform.connectors.nats import jetstream

        return getattr(jetstream, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "NatsConsumer",
    "NatsProducer",
    "NatsSettings",
    "NatsSource",
    "NatsSourceSettings",
    "delete_stream",
    "end_offsets",
    "ensure_stream",
    "open_source",
]


class NatsSourceSettings(NatsSettings, RowSchema, PartitionedStreamOptions):
    """The stream's connection settings plus the rows' schema and event-time column."""

    kind: Literal["nats"] = "nats"


# A pipeline's ``sources:`` entry: open it, or read its end for offset-range runs.
def open_source(settings: NatsSourceSettings, context: OpenContext) -> NatsSource:
    from dataflare_platform.connectors.nats.jetstream import NatsSource

    return NatsSource.open_source(settings, context)


def end_offsets(settings: NatsSourceSettings, context: OpenContext) -> dict[str, int]:
    from dataflare_platform.connectors.nats.jetstream import NatsSource

    return NatsSource.end_offsets(settings, context)
