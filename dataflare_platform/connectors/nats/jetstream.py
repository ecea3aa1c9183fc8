"""NATS JetStream connectors: a producer, a consumer-group reader and an engine source.

Offsets (how the engine's dense row offsets map onto a stream):
- ``json`` streams (one record per message): a message's offset is its stream sequence
  minus one. Any publisher works (no headers needed). Sequences left empty by deleted or
  expired messages read as placeholder rows plus a dead letter (see ``offset_source``),
  so offset = sequence - 1 holds for the whole stream.
- ``arrow`` streams (one batch of rows per message): sequences count messages, not rows,
  so each message carries its placement in headers, ``Dataflare-Offset`` (its first
  row's offset) and ``Dataflare-Rows``. The producer assigns them under optimistic
  concurrency: the first message of a send expects the stream's last sequence
  (``Nats-Expected-Last-Sequence``) and each following one its predecessor's message id
  (``Nats-Expected-Last-Msg-Id``), so if another producer gets in between, the rest of
  the chain is refused and re-sent with fresh offsets: concurrent producers never
  overlap. A reader seeks an offset by binary search over sequences (direct gets), so a
  restart from any checkpoint costs O(log messages), and purging old messages does not
  shift the offsets of the rest. Limits: a message published without the headers (say,
  by another tool) has no offsets: it is dead-lettered, not read; and if the newest
  message is deleted before the next send, that send reuses its offsets.
"""

from __future__ import annotations

import contextlib
import json
import math
import uuid
from collections.abc import Sequence

import nats.js.errors
import pyarrow as pa
from nats.aio.msg import Msg
from nats.js import api

from dataflare_platform.connectors.broker import BrokerError, FetchResult, MessageCodec, arrow_rows
from dataflare_platform.connectors.nats.session import (
    AckCollector,
    NatsSession,
    Puller,
    create_stream_if_missing,
    stream_seq,
)
from dataflare_platform.connectors.nats.settings import NatsSettings
from dataflare_platform.connectors.offset_source import Cursor, Envelope, StreamSource
from dataflare_platform.observability.connectors import OFF, for_connector

OFFSET_HEADER = "Dataflare-Offset"
ROWS_HEADER = "Dataflare-Rows"
WRONG_LAST_MSG_ID = 10070
WRONG_LAST_SEQUENCE = 10071
MAX_PLACEMENT_RETRIES = 20
MAX_WALK_BACK = 10_000  # headerless or deleted messages searched past for the last offset


def _placement(headers: dict[str, str] | None) -> tuple[int, int] | None:
    """(first row offset, rows) from an arrow message's headers, if valid."""
    if not headers or OFFSET_HEADER not in headers:
        return None
    try:
        start, rows = int(headers[OFFSET_HEADER]), int(headers.get(ROWS_HEADER, "1"))
    except ValueError:
        return None
    return (start, rows) if start >= 0 and rows >= 1 else None


async def _last_placed(session: NatsSession) -> tuple[int, int, str | None]:
    """(stream's last sequence, offset after the newest placed message, its msg id)."""
    state = (await session.js.stream_info(session.settings.stream)).state
    seq = state.last_seq
    for _ in range(MAX_WALK_BACK):
        if seq < max(state.first_seq, 1):
            return state.last_seq, 0, None
        try:
            msg = await session.js.get_msg(session.settings.stream, seq)
        except nats.js.errors.NotFoundError:
            seq -= 1
            continue
        placed = _placement(msg.headers)
        if placed is not None:
            return state.last_seq, placed[0] + placed[1], (msg.headers or {}).get("Nats-Msg-Id")
        seq -= 1
    raise BrokerError(
        f"NATS stream {session.settings.stream!r}: no {OFFSET_HEADER} header in the last"
        f" {MAX_WALK_BACK} messages; is it an arrow stream written by DataFlare?"
    )


def ensure_stream(settings: NatsSettings) -> None:
    """Create the settings' stream (capturing ``settings.stream_subjects``) if missing;
    an existing stream is left as it is."""
    session = NatsSession(settings)
    try:
        session.run(create_stream_if_missing(session))
    finally:
        session.close()


def delete_stream(settings: NatsSettings) -> bool:
    """Delete the settings' stream with its messages and consumers; False if missing."""
    session = NatsSession(settings)
    try:
        return session.run(_delete(session))
    finally:
        session.close()


async def _delete(session: NatsSession) -> bool:
    try:
        return await session.js.delete_stream(session.settings.stream)
    except nats.js.errors.NotFoundError:
        return False


class NatsProducer:
    """Publishes tables to ``settings.publish_subject``, creating the stream if missing.
    Many publishes are in flight at once and ``send`` returns when all are acked."""

    def __init__(self, settings: NatsSettings) -> None:
        self.settings = settings
        self._session = NatsSession(settings)
        self._token = uuid.uuid4().hex[:12]  # makes this producer's message ids unique
        self._chain: tuple[int, int, str | None] | None = None  # arrow: see _publish_placed
        self.messages = 0
        self._metrics = for_connector("nats", settings.stream)
        try:
            self._acks = AckCollector(self._session)
            self._session.run(self._start())
        except BaseException:
            self._session.close()
            raise

    async def _start(self) -> None:
        await create_stream_if_missing(self._session)
        await self._acks.start()

    def send(self, table: pa.Table) -> int:
        codec = MessageCodec(
            self.settings.format,
            table.schema,
            self.settings.batch_rows,
            max_message_bytes=self._session.nc.max_payload - 1024,  # room for headers
        )
        self._publish(codec.encode(table))
        return table.num_rows

    def send_raw(self, payloads: Sequence[bytes]) -> int:
        """Payloads as they are; in arrow streams each claims as many offsets as it
        holds rows (one if it is not an Arrow stream)."""
        if self.settings.format == "json":
            self._publish([(bytes(p), 1) for p in payloads])
        else:
            self._publish([(bytes(p), arrow_rows(p) or 1) for p in payloads])
        return len(payloads)

    def _publish(self, messages: list[tuple[bytes, int]]) -> None:
        if not messages:
            return
        timeout = self.settings.request_timeout_s * (2 + len(messages) / 1000)
        with self._metrics.request("publish"):
            if self.settings.format == "json":
                acks = self._session.run(
                    self._acks.publish(
                        self.settings.publish_subject, [(p, None) for p, _ in messages]
                    ),
                    timeout,
                )
                _raise_failed(acks, self.settings.publish_subject)
            else:
                self._session.run(self._publish_placed(messages), timeout * MAX_PLACEMENT_RETRIES)
        self.messages += len(messages)

    async def _publish_placed(self, messages: list[tuple[bytes, int]]) -> None:
        """Arrow messages with offset headers, chained so that no other producer's
        message can land between two of ours unnoticed (see the module docstring)."""
        remaining = messages
        for _ in range(MAX_PLACEMENT_RETRIES):
            if self._chain is None:
                self._chain = await _last_placed(self._session)
            last_seq, offset, _ = self._chain
            batch: list[tuple[bytes, dict[str, str] | None]] = []
            previous = ""
            for i, (payload, rows) in enumerate(remaining):
                msg_id = f"{self._token}-{offset}"
                headers = {
                    OFFSET_HEADER: str(offset),
                    ROWS_HEADER: str(rows),
                    "Nats-Msg-Id": msg_id,
                }
                if i == 0:
                    headers["Nats-Expected-Last-Sequence"] = str(last_seq)
                else:
                    headers["Nats-Expected-Last-Msg-Id"] = previous
                batch.append((payload, headers))
                previous, offset = msg_id, offset + rows
            acks = await self._acks.publish(self.settings.publish_subject, batch)
            done = 0
            while done < len(acks) and acks[done] is not None and "error" not in acks[done]:
                done += 1
            if done == len(acks):
                seq = json.loads(acks[-1]["ack"])["seq"]
                self._chain = (seq, offset, previous)
                return
            failed = acks[done]
            code = None if failed is None else failed["error"].get("err_code")
            if code not in (WRONG_LAST_MSG_ID, WRONG_LAST_SEQUENCE):
                self._chain = None
                _raise_failed(acks[done:], self.settings.publish_subject)
            # Another producer got in: what followed was refused too. Re-place the rest.
            remaining = remaining[done:]
            self._chain = None
        raise BrokerError(
            f"NATS stream {self.settings.stream!r}: gave up placing arrow messages after"
            f" {MAX_PLACEMENT_RETRIES} conflicts with concurrent producers"
        )

    def close(self) -> None:
        with contextlib.suppress(BrokerError):
            self._session.run(self._acks.stop(), self.settings.request_timeout_s)
        self._session.close()


def _raise_failed(acks: list, subject: str) -> None:
    failed = [a for a in acks if a is None or "error" in a]
    if not failed:
        return
    first = failed[0]
    reason = "no ack in time" if first is None else first["error"].get("description", first)
    raise BrokerError(
        f"NATS: {len(failed)} of {len(acks)} publishes to {subject!r} failed (first: {reason});"
        " the ones before may have been stored: sending again is at-least-once"
    )


def _delivered(msg: Msg) -> int:
    """How many times JetStream has delivered ``msg`` (from its ack subject, without
    nats-py's full metadata parse): ``$JS.ACK.<stream>.<consumer>.<delivered>...`` or,
    with a domain and account hash,
    ``$JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>...``."""
    tokens = (msg.reply or "").split(".")
    index = 4 if len(tokens) == 9 else 6 if len(tokens) >= 11 else None
    if index is None or not tokens[index].isdigit():
        return 1
    return int(tokens[index])


def _envelope(msg: Msg, placed: bool) -> Envelope:
    seq = stream_seq(msg)
    if not placed:
        return Envelope(seq - 1, 1, msg.data, str(seq))
    placement = _placement(msg.headers)
    if placement is None:
        return Envelope(None, 0, msg.data, str(seq), f"no valid {OFFSET_HEADER} header")
    return Envelope(placement[0], placement[1], msg.data, str(seq))


class _NatsCursor:
    """Reads forward from ``start_seq`` through an ephemeral, unacknowledged pull
    consumer (removed on close, or by the server once idle)."""

    def __init__(self, session: NatsSession, start_seq: int, placed: bool) -> None:
        self._session = session
        self._placed = placed
        self._consumer, self._puller = session.run(self._open(start_seq))

    async def _open(self, start_seq: int) -> tuple[str, Puller]:
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=max(start_seq, 1),
            ack_policy=api.AckPolicy.NONE,
            inactive_threshold=60.0,
            mem_storage=True,
        )
        info = await self._session.js.add_consumer(self._session.settings.stream, config)
        puller = Puller(self._session, info.name)
        await puller.start()
        return info.name, puller

    def next(self, max_messages: int) -> list[Envelope]:
        msgs = self._session.run(self._puller.pull(max_messages))
        return [_envelope(m, self._placed) for m in msgs]

    def close(self) -> None:
        # If this fails the server still drops the idle ephemeral consumer by itself.
        with contextlib.suppress(BrokerError):
            self._session.run(self._close(), self._session.settings.request_timeout_s)

    async def _close(self) -> None:
        await self._puller.stop()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self._session.js.delete_consumer(self._session.settings.stream, self._consumer)


class NatsSource(StreamSource):
    """Engine source over one stream (one partition, named after the stream)."""

    settings: NatsSettings

    def _connect(self) -> None:
        self._session = NatsSession(self.settings)
        try:
            self._session.run(self._session.js.stream_info(self.settings.stream))
        except nats.js.errors.NotFoundError:
            self._session.close()
            raise BrokerError(f"NATS stream {self.settings.stream!r} does not exist") from None

    def _seek(self, partition: str, offset: int) -> Cursor:
        placed = self.settings.format == "arrow"
        start = self._session.run(self._find(offset)) if placed else offset + 1
        return _NatsCursor(self._session, start, placed)

    def _end(self, partition: str) -> int:
        if self.settings.format == "json":
            info = self._session.run(self._session.js.stream_info(self.settings.stream))
            return info.state.last_seq
        return self._session.run(_last_placed(self._session))[1]

    async def _find(self, offset: int) -> int:
        """The sequence of the last placed message starting at or before ``offset`` (the
        stream's first if none): binary search, as starts grow with sequences."""
        js, stream = self._session.js, self.settings.stream
        state = (await js.stream_info(stream)).state
        lo, hi, answer = max(state.first_seq, 1), state.last_seq, max(state.first_seq, 1)

        async def placed_from(seq: int) -> tuple[int, int] | None:
            while seq <= state.last_seq:
                try:
                    msg = await js.get_msg(stream, seq, subject=">", next=True)
                except nats.js.errors.NotFoundError:
                    return None
                placement = _placement(msg.headers)
                if placement is not None:
                    return msg.seq, placement[0]
                seq = msg.seq + 1
            return None

        while lo <= hi:
            mid = (lo + hi) // 2
            found = await placed_from(mid)
            if found is None or found[1] > offset:
                hi = mid - 1
            else:
                answer, lo = found[0], found[0] + 1
        return answer

    def _close(self) -> None:
        self._session.close()


class NatsConsumer:
    """A member of the consumer group ``settings.durable`` (a durable pull consumer
    with explicit acks, created if missing): at-least-once delivery, with anything not
    acked within ``ack_wait_s`` delivered again, to this member or another. Members
    sharing a durable share the work; an existing durable keeps the configuration it was
    created with (``ack_wait_s`` etc. apply only when this call creates it)."""

    def __init__(self, settings: NatsSettings, schema: pa.Schema) -> None:
        self.settings = settings
        self.codec = MessageCodec(
            settings.format,
            schema,
            settings.batch_rows,
            on_schema_mismatch=settings.on_schema_mismatch,
        )
        self._metrics = for_connector("nats", settings.stream)
        self._session = NatsSession(settings)
        try:
            self._puller = self._session.run(self._open())
        except BaseException:
            self._session.close()
            raise

    async def _open(self) -> Puller:
        s, js = self.settings, self._session.js
        try:
            await js.consumer_info(s.stream, s.durable)
        except nats.js.errors.NotFoundError:
            config = api.ConsumerConfig(
                durable_name=s.durable,
                deliver_policy=api.DeliverPolicy.ALL,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=s.ack_wait_s,
                max_ack_pending=s.max_ack_pending,
                max_deliver=s.max_deliver,
            )
            try:
                await js.add_consumer(s.stream, config)
            except nats.js.errors.NotFoundError:
                raise BrokerError(f"NATS stream {s.stream!r} does not exist") from None
        puller = Puller(self._session, s.durable)
        await puller.start()
        return puller

    def fetch(self, max_records: int, timeout_s: float) -> FetchResult:
        batch = max_records
        if self.settings.format == "arrow":
            batch = math.ceil(max_records / self.settings.batch_rows)
        batch = max(1, min(batch, self.settings.fetch_messages))
        with self._metrics.request("fetch"):
            msgs = self._session.run(self._puller.pull(batch, timeout_s), timeout_s + 30)
        if self._metrics is not OFF:
            self._metrics.redelivered(sum(1 for m in msgs if _delivered(m) > 1))
        envelopes = [_envelope(m, self.settings.format == "arrow") for m in msgs]
        stream = self.settings.stream
        decoded = self.codec.decode(
            [e.payload for e in envelopes],
            [-1 if e.start is None else e.start for e in envelopes],
            stream,
            stream,
        )
        acked = False

        def ack() -> None:
            nonlocal acked
            if not acked and msgs:
                with self._metrics.request("ack"):
                    self._session.run(self._ack(msgs), self.settings.request_timeout_s + 30)
                self._metrics.acked(len(msgs))
            acked = True

        return FetchResult(decoded.table, decoded.dead, [e.id for e in envelopes], ack)

    async def _ack(self, msgs: list[Msg]) -> None:
        nc = self._session.nc
        for msg in msgs[:-1]:
            await nc.publish(msg.reply, b"+ACK")
        # The last one waits for the server's confirmation, which comes after it has
        # processed every earlier ack from this connection.
        try:
            await nc.request(msgs[-1].reply, b"+ACK", timeout=self.settings.request_timeout_s)
        except TimeoutError:
            raise BrokerError("NATS did not confirm the acks in time") from None

    def close(self) -> None:
        with contextlib.suppress(BrokerError):
            self._session.run(self._puller.stop(), self.settings.request_timeout_s)
        self._session.close()
