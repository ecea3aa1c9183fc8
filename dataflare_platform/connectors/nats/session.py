"""A NATS connection for synchronous callers, and the low-level JetStream pieces the
connectors share.

nats-py is asyncio-only while the engine polls sources from a plain thread, so each
connector object owns a :class:`NatsSession`: a private event loop on a daemon thread,
with ``run`` handing coroutines to it and waiting. ``close`` drains the connection and
stops the thread, so nothing outlives the connector.

Pull requests and publish acks go through private inboxes (:class:`Puller`,
:class:`AckCollector`) rather than nats-py's ``fetch``/``publish_async``: those create
a future and parse JSON metadata per message, which caps them near 35k messages/s;
counting on an inbox subscription roughly triples that.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import threading
from collections import deque
from collections.abc import Coroutine
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api

from dataflare_platform.connectors.broker import BrokerError, BrokerUnavailableError
from dataflare_platform.connectors.nats.settings import NatsSettings
from dataflare_platform.secrets import redact, redact_url
from dataflare_platform.tls import TlsSettings, tls_failure

log = logging.getLogger(__name__)
T = TypeVar("T")

API_PREFIX = "$JS.API"
UNLIMITED = 0  # nats-py: no client-side limit on a subscription's pending messages/bytes


class NatsSession:
    """One NATS connection driven by a private event loop thread."""

    def __init__(self, settings: NatsSettings) -> None:
        self.settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"nats-{settings.stream}", daemon=True
        )
        self._thread.start()
        self._closed = False
        self._last_error: BaseException | None = None
        try:
            self.nc: Client = self.run(self._connect(), settings.connect_timeout_s + 5)
        except BaseException:
            self._stop_loop()
            raise
        self.js = self.nc.jetstream(timeout=settings.request_timeout_s)

    async def _connect(self) -> Client:
        s = self.settings
        tls_refused = asyncio.Event()

        async def on_error(err: BaseException) -> None:
            self._last_error = err
            log.debug("nats: %s", err)
            if s.uses_tls and tls_failure(err) is not None:
                tls_refused.set()

        password = s.password.read() if s.password is not None else None
        token = s.token.read() if s.token is not None else None
        options: dict[str, Any] = {}
        if s.uses_tls:
            tls = s.tls or TlsSettings()  # tls:// alone still verifies (system CAs)
            options["tls"] = tls.ssl_context()
            if tls.server_name:
                options["tls_hostname"] = tls.server_name
        connecting = asyncio.ensure_future(
            nats.connect(
                servers=[s.url],
                user=s.user,
                password=password,
                token=token,
                connect_timeout=s.connect_timeout_s,
                max_reconnect_attempts=s.reconnect_attempts,
                reconnect_time_wait=0.5,
                error_cb=on_error,
                **options,
            )
        )
        # A refused certificate does not get better on retry, and nats-py 2.x hangs in
        # its reconnect loop after a failed TLS handshake: stop at the first TLS error.
        refused = asyncio.ensure_future(tls_refused.wait())
        await asyncio.wait({connecting, refused}, return_when=asyncio.FIRST_COMPLETED)
        refused.cancel()
        if not connecting.done():
            connecting.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(connecting, 5)
            reason = tls_failure(self._last_error) if self._last_error else "TLS failed"
            raise BrokerUnavailableError(f"NATS at {_where(s.url)}: {reason}")
        try:
            nc = connecting.result()
        except (nats.errors.NoServersError, OSError, TimeoutError) as err:
            reason = tls_failure(err) or (
                tls_failure(self._last_error) if self._last_error is not None else None
            )
            if s.uses_tls and reason is not None:
                raise BrokerUnavailableError(f"NATS at {_where(s.url)}: {reason}") from None
            raise BrokerUnavailableError(
                f"NATS at {redact_url(s.url)} is not reachable"
                f" ({redact(str(err), password, token)}); is nats-server running"
                " with JetStream enabled (-js)?"
            ) from None
        except nats.errors.Error as err:  # refused login and other protocol errors
            raise BrokerError(
                f"NATS at {redact_url(s.url)} refused the connection"
                f" ({redact(str(err), password, token)})"
            ) from None
        # nats-py upgrades to TLS only when the server's INFO asks for it: a server (or
        # someone in between) that does not ask would get a plain connection.
        if s.uses_tls and not (getattr(nc, "_server_info", None) or {}).get("tls_required"):
            await nc.close()
            raise BrokerUnavailableError(
                f"NATS at {_where(s.url)}: the server did not offer TLS, which the tls://"
                " url requires; the connection was closed"
            )
        return nc

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the session's loop and wait for its result."""
        if self._closed:
            coro.close()
            raise BrokerError("the NATS session is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise BrokerError(f"NATS operation timed out after {timeout} s") from None

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.run(self._shutdown(), self.settings.request_timeout_s + 5)
        except BrokerError as err:
            log.debug("nats: close: %s", err)
        finally:
            self._closed = True
            self._stop_loop()

    async def _shutdown(self) -> None:
        if not self.nc.is_closed:
            await self.nc.close()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()


def _where(url: str) -> str:
    """``host:port`` of a NATS url, nothing of its credentials."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.hostname or ''}:{port or 4222}"


async def create_stream_if_missing(session: NatsSession) -> api.StreamInfo:
    """The settings' stream, created if missing; an existing stream is used as is."""
    s = session.settings
    try:
        return await session.js.stream_info(s.stream)
    except nats.js.errors.NotFoundError:
        pass
    config = api.StreamConfig(
        name=s.stream,
        subjects=s.stream_subjects,
        storage=api.StorageType.FILE if s.storage == "file" else api.StorageType.MEMORY,
        max_msgs=s.max_msgs if s.max_msgs is not None else -1,
        duplicate_window=s.duplicate_window_s,
    )
    try:
        return await session.js.add_stream(config)
    except nats.js.errors.BadRequestError as err:
        raise BrokerError(f"cannot create NATS stream {s.stream!r}: {err.description}") from None


def stream_seq(msg: Msg) -> int:
    """The stream sequence of a JetStream delivery, from its ack subject (v1 and v2)."""
    tokens = msg.reply.split(".")
    if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<dlv>.<sseq>.<dseq>.<ts>.<pending>
        return int(tokens[5])
    if len(tokens) >= 11:  # $JS.ACK.<domain>.<hash>.<stream>.<consumer>.<dlv>.<sseq>...
        return int(tokens[7])
    raise BrokerError(f"not a JetStream delivery: reply subject {msg.reply!r}")


class Puller:
    """Pull requests for one consumer, answered on a private inbox: messages land in a
    buffer in delivery order, and each request ends when its batch is full or the
    server says there is nothing more (status 404/408)."""

    def __init__(self, session: NatsSession, consumer: str) -> None:
        self._session = session
        self._nc = session.nc
        s = session.settings
        self._next = f"{API_PREFIX}.CONSUMER.MSG.NEXT.{s.stream}.{consumer}"
        self._inbox = self._nc.new_inbox()
        self._timeout = s.request_timeout_s
        self.buffer: deque[Msg] = deque()
        self._request = 0
        self._received = 0
        self._batch = 0
        self._status: tuple[str, str] | None = None
        self._done = asyncio.Event()
        self._sub: Any = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(
            f"{self._inbox}.*",
            cb=self._on_msg,
            pending_msgs_limit=UNLIMITED,
            pending_bytes_limit=UNLIMITED,
        )

    async def stop(self) -> None:
        if self._sub is not None and not self._nc.is_closed:
            await self._sub.unsubscribe()
        self._sub = None

    async def _on_msg(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status and not msg.data:
            # Statuses come on the request's reply subject; deliveries keep their own
            # subject, so they are counted against whichever request is current (one at
            # a time: a stray late one at worst ends a request early).
            if status != "100" and msg.subject.rsplit(".", 1)[-1] == str(self._request):
                self._status = (status, msg.headers.get("Description", ""))
                self._done.set()
            return
        self.buffer.append(msg)
        self._received += 1
        if self._received >= self._batch:
            self._done.set()

    async def pull(self, batch: int, wait_s: float = 0.0) -> list[Msg]:
        """Up to ``batch`` messages: what is available now, else whatever arrives within
        ``wait_s`` (the first message, then everything else available)."""
        if not self.buffer:
            await self._ask(batch)
            if not self.buffer and wait_s > 0:
                await self._ask(1, expires_s=wait_s)
                if self.buffer and batch > 1:
                    await self._ask(batch - 1)
        n = min(batch, len(self.buffer))
        return [self.buffer.popleft() for _ in range(n)]

    async def _ask(self, batch: int, expires_s: float | None = None) -> None:
        self._request += 1
        self._received, self._batch, self._status = 0, batch, None
        self._done.clear()
        body: dict[str, Any] = {"batch": batch}
        if expires_s is None:
            body["no_wait"] = True
        else:
            body["expires"] = int(expires_s * 1e9)
        reply = f"{self._inbox}.{self._request}"
        await self._nc.publish(self._next, json.dumps(body).encode(), reply=reply)
        try:
            await asyncio.wait_for(self._done.wait(), (expires_s or 0) + self._timeout)
        except TimeoutError:
            return  # anything still on its way lands in the buffer for the next pull
        if self._status is not None and self._status[0] not in ("404", "408", "409"):
            code, text = self._status
            raise BrokerError(f"NATS pull from {self._next!r} failed: {code} {text}")
        if self._status is not None and "Consumer Deleted" in self._status[1]:
            raise BrokerError(f"NATS consumer behind {self._next!r} was deleted")


class AckCollector:
    """Publishes with acks gathered on one inbox subscription: up to ``window`` publishes
    in flight, each reply matched to its message by a number in the reply subject
    (numbers keep growing across calls, so a late ack of an old call is ignored)."""

    def __init__(self, session: NatsSession) -> None:
        self._nc = session.nc
        self._window = session.settings.max_in_flight
        self._timeout = session.settings.request_timeout_s
        self._inbox = self._nc.new_inbox()
        self._prefix_len = len(self._inbox) + 1
        self._next = 0  # number of the next publish
        self._acks: dict[int, dict[str, Any] | None] = {}
        self._outstanding = 0
        self._room = asyncio.Event()
        self._all_done = asyncio.Event()
        self._sub: Any = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(
            f"{self._inbox}.*",
            cb=self._on_ack,
            pending_msgs_limit=UNLIMITED,
            pending_bytes_limit=UNLIMITED,
        )

    async def stop(self) -> None:
        if self._sub is not None and not self._nc.is_closed:
            await self._sub.unsubscribe()
        self._sub = None

    async def _on_ack(self, msg: Msg) -> None:
        number = int(msg.subject[self._prefix_len :])
        if self._acks.get(number, False) is not None:  # not ours now, or answered already
            return
        if not msg.data:  # a status, e.g. 503: no stream captures the subject
            status = msg.headers.get("Status", "") if msg.headers else ""
            reason = "no stream captures the subject" if status == "503" else f"status {status}"
            self._acks[number] = {"error": {"code": status, "description": reason}}
        elif b'"error"' in msg.data:
            self._acks[number] = json.loads(msg.data)
        else:
            self._acks[number] = {"ack": msg.data}  # parsed only if the caller asks
        self._outstanding -= 1
        if self._outstanding <= self._window // 2:
            self._room.set()
        if self._outstanding == 0:
            self._all_done.set()

    async def publish(
        self, subject: str, messages: list[tuple[bytes, dict[str, str] | None]]
    ) -> list[dict[str, Any] | None]:
        """Publish all, then wait for every ack. One reply per message: ``{"ack": raw}``,
        ``{"error": {...}}`` where the stream refused it, None where none came in time."""
        base = self._next
        self._next += len(messages)
        self._acks = dict.fromkeys(range(base, self._next))
        self._outstanding = 0
        self._all_done.clear()
        for i, (payload, headers) in enumerate(messages):
            if self._outstanding >= self._window:
                self._room.clear()
                if not await _wait(self._room, self._timeout):
                    break
            self._outstanding += 1
            self._all_done.clear()
            reply = f"{self._inbox}.{base + i}"
            await self._nc.publish(subject, payload, reply=reply, headers=headers)
        if self._outstanding > 0:
            await _wait(self._all_done, self._timeout)
        acks = [self._acks[n] for n in range(base, self._next)]
        self._acks = {}
        return acks


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    try:
        await asyncio.wait_for(event.wait(), timeout)
        return True
    except TimeoutError:
        return False
