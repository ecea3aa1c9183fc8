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

from typing import Literal

from dataflare_platform.connectors.nats.jetstream import (
    NatsConsumer,
    NatsProducer,
    NatsSource,
    delete_stream,
    ensure_stream,
)
from dataflare_platform.connectors.nats.settings import NatsSettings
from dataflare_platform.connectors.partitioned_streams import PartitionedStreamOptions
from dataflare_platform.connectors.settings import RowSchema

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
open_source = NatsSource.open_source
end_offsets = NatsSource.end_offsets
