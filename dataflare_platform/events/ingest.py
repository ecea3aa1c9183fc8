"""Ingest raw payloads into a topic: what decodes is appended, the rest goes to the topic's
dead-letter topic with its reason and untouched bytes. ``dataflare produce`` and the
broker bridges call this, so every way into the log accounts for every record:

    accepted + dead_lettered == payloads given.

The good rows are appended before the dead letters: a crash in between leaves the dead
letters of that batch unwritten, and a producer that retries the batch (at-least-once)
writes the good rows again. Exactly-once ingestion is the bridge's business (it commits
its broker offsets only after this returns).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from dataflare_platform.errors import InvalidInputError
from dataflare_platform.events.codec import DEFAULT_MAX_PAYLOAD_BYTES, JsonDecoder
from dataflare_platform.events.deadletter import DeadLetters, Decoder, decode_for_topic
from dataflare_platform.events.log import EventLog, Topic
from dataflare_platform.events.schema_policy import (
    DEFAULT_SCHEMA_POLICY,
    MessageSchemaPolicy,
    PolicyJsonDecoder,
)


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    dead_lettered: int
    appended: dict[int, tuple[int, int]] = field(default_factory=dict)  # partition -> range
    dead_offsets: range = range(0)  # where the dead letters went in the DLQ topic

    @property
    def produced(self) -> int:
        return self.accepted + self.dead_lettered

    def as_dict(self) -> dict[str, int]:
        return {"accepted": self.accepted, "dead_lettered": self.dead_lettered}


def ingest_payloads(
    log: EventLog,
    topic: str | Topic,
    payloads: Sequence[bytes],
    source: str | None = None,
    partition: str = "0",
    offsets: Sequence[int] | None = None,
    *,
    decoder: Decoder | None = None,
    to_partition: int | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    on_schema_mismatch: MessageSchemaPolicy = DEFAULT_SCHEMA_POLICY,
) -> IngestResult:
    """Decode JSON ``payloads`` into ``topic`` (which must exist: its schema is the
    contract) and dead-letter the rest into ``<topic>.dlq``.

    ``source``, ``partition`` and ``offsets`` say where the payloads came from (a broker
    topic and partition and its offsets, a file and its line numbers); they are kept
    on each dead letter so that it can be traced. ``offsets`` defaults to positions in
    ``payloads``; ``source`` to the topic's name. Rows go to ``to_partition`` of the
    topic, else by its key or in turn. ``decoder`` replaces the JSON decoder (an Arrow
    one, a JSON decoder with other limits). The default JSON decoder follows
    ``on_schema_mismatch`` (``events.schema_policy``): a record with an unknown or a
    missing field is dead-lettered naming the fields (``allow_extra``: unknown ones are
    ignored), never appended with a silently null column.
    """
    target = topic if isinstance(topic, Topic) else log.topic(topic)
    if target.config.transactional:
        raise InvalidInputError(
            f"topic {target.name!r} is transactional (a pipeline's output): it is written"
            " only by its pipeline"
        )
    if offsets is None:
        offsets = range(len(payloads))
    elif len(offsets) != len(payloads):
        raise ValueError(f"{len(offsets)} offsets for {len(payloads)} payloads")
    if decoder is None:
        if on_schema_mismatch not in ("dead_letter", "allow_extra"):
            raise InvalidInputError(
                f"on_schema_mismatch: {on_schema_mismatch!r} is not dead_letter or allow_extra"
            )
        decoder = PolicyJsonDecoder(
            JsonDecoder(target.schema, max_payload_bytes=max_payload_bytes), on_schema_mismatch
        )
    decoded = decode_for_topic(
        target, decoder, payloads, offsets, source or target.name, str(partition)
    )
    appended = target.append(decoded.table, partition=to_partition)
    dead = DeadLetters(log, target).write(decoded.dead)
    return IngestResult(decoded.table.num_rows, decoded.dead.num_rows, appended, dead)
