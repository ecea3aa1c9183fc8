"""Redis Streams connectors: a producer, a consumer-group reader and an engine source.

Offsets: entry ids *are* the offsets. The producer appends with explicit ids
``0-<end>``, where ``end`` is one past the entry's last row offset (json: one row per
entry, so entry ``0-n`` is offset n-1; arrow: an entry of r rows ending at e covers
offsets [e-r, e), its ``rows`` field saying r). A Lua script assigns them atomically
from the stream's ``last-generated-id``, so concurrent producers never collide, and a
reader seeks any offset with one ``XRANGE key 0-<offset+1> + COUNT n``: a restart from a
checkpoint needs nothing but the checkpoint. Deleted or trimmed (MAXLEN) entries leave
offsets no entry covers; they read as placeholder rows plus a dead letter (see
``offset_source``), so later offsets never shift.

Limits: an entry added with an ordinary ``XADD key *`` (a millisecond id) has no place
in this scheme: the producer then refuses to append and the source refuses to read past
it, both saying so. Consumer groups (``RedisConsumer``) work with any ids. Entry ids
lose their usual insertion time; nothing here needs it (idle times for recovery are
kept by the group's pending-entries list).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from urllib.parse import urlsplit

import pyarrow as pa
import redis

from dataflare_platform.connectors.broker import (
    BrokerError,
    BrokerUnavailableError,
    FetchResult,
    MessageCodec,
    arrow_rows,
    concat_dead,
)
from dataflare_platform.connectors.offset_source import Cursor, Envelope, StreamSource
from dataflare_platform.connectors.redis.settings import RedisSettings
from dataflare_platform.errors import DataflareError
from dataflare_platform.events.codec import dead_letters
from dataflare_platform.observability.connectors import for_connector
from dataflare_platform.secrets import (
    redact,
    redact_url,
)
from dataflare_platform.tls import TlsSettings, tls_failure

# KEYS[1]: the stream. ARGV[1]: MAXLEN (0: none), then payload, rows pairs.
# Returns the offset after the last row appended.
APPEND_SCRIPT = """
local info = redis.pcall('XINFO', 'STREAM', KEYS[1])
local after = 0
if type(info) == 'table' and info['err'] == nil then
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      local ms, seq = string.match(info[i + 1], '^(%d+)%-(%d+)$')
      if ms ~= '0' then
        return redis.error_reply('DATAFLARE stream ' .. KEYS[1] .. ' has entry id ' ..
          info[i + 1] .. ' not written by the DataFlare producer (ids 0-<offset>)')
      end
      after = tonumber(seq)
    end
  end
end
local maxlen = tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  local rows = tonumber(ARGV[i + 1])
  after = after + rows
  local id = '0-' .. string.format('%d', after)
  if maxlen > 0 then
    if rows == 1 then
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, id, 'data', ARGV[i])
    else
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, id, 'data', ARGV[i], 'rows', rows)
    end
  elseif rows == 1 then
    redis.call('XADD', KEYS[1], id, 'data', ARGV[i])
  else
    redis.call('XADD', KEYS[1], id, 'data', ARGV[i], 'rows', rows)
  end
end
return after
"""

# Reads return four strings (ids, payload lengths, row counts, payloads concatenated)
# instead of nested entries: redis-py parses each reply element in Python, and this
# makes a 5000-entry read 4 elements instead of ~30000, doubling the entries read per
# second. KEYS[1]: the stream. ARGV: 'group', group, consumer, count, id (XREADGROUP,
# never blocking) or 'range', start, count (XRANGE). Rows are '0' for an entry deleted
# while pending (XREADGROUP returns it without fields).
READ_SCRIPT = """
local entries
if ARGV[1] == 'group' then
  local reply = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', ARGV[4],
    'STREAMS', KEYS[1], ARGV[5])
  if not reply then return {'', '', '', ''} end
  entries = reply[1][2]
else
  entries = redis.call('XRANGE', KEYS[1], ARGV[2], '+', 'COUNT', ARGV[3])
end
local ids, lens, rows, data = {}, {}, {}, {}
for i, e in ipairs(entries) do
  local payload, n = '', '1'
  if e[2] then
    for j = 1, #e[2], 2 do
      if e[2][j] == 'data' then payload = e[2][j + 1]
      elseif e[2][j] == 'rows' then n = e[2][j + 1] end
    end
  else
    n = '0'
  end
  ids[i], lens[i], rows[i], data[i] = e[1], #payload, n, payload
end
return {table.concat(ids, ','), table.concat(lens, ','), table.concat(rows, ','),
  table.concat(data)}
"""

# KEYS[1]: the stream. ARGV[1]: the group, ARGV[2]: entry ids joined by commas.
ACK_SCRIPT = """
local ids, acked = {}, 0
for id in string.gmatch(ARGV[2], '[^,]+') do
  ids[#ids + 1] = id
  if #ids == 1000 then
    acked = acked + redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
    ids = {}
  end
end
if #ids > 0 then acked = acked + redis.call('XACK', KEYS[1], ARGV[1], unpack(ids)) end
return acked
"""

# An entry as read: id, payload, rows (0: deleted while pending).
Entry = tuple[str, bytes, int]


def _unpack(reply: list[bytes]) -> list[Entry]:
    ids, lengths, rows, data = reply
    if not ids:
        return []
    view, position, out = memoryview(data), 0, []
    for entry_id, length, n in zip(
        ids.decode().split(","), lengths.split(b","), rows.split(b","), strict=True
    ):
        end = position + int(length)
        try:
            count = int(n)
        except ValueError:
            count = 1
        out.append((entry_id, bytes(view[position:end]), count))
        position = end
    return out


class _TlsConnection(redis.SSLConnection):
    """redis-py's TLS connection with the context built from ``TlsSettings`` (one
    verification rule for every connector) and the name checked being ``server_name``
    when set, not the host the url dials."""

    def __init__(self, *, dataflare_tls: TlsSettings, **kwargs) -> None:
        self._tls = dataflare_tls
        super().__init__(**kwargs)

    def _wrap_socket_with_ssl(self, sock):  # redis-py 8: the one place it wraps
        name = self._tls.server_name or self.host
        return self._tls.ssl_context().wrap_socket(sock, server_hostname=name)


@contextmanager
def _errors(settings: RedisSettings) -> Iterator[None]:
    """Redis client errors as broker errors that say which server and stream."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as err:
        if settings.uses_tls and (reason := tls_failure(err)) is not None:
            raise BrokerUnavailableError(f"Redis at {_where(settings)}: {reason}") from None
        raise BrokerUnavailableError(
            f"Redis at {redact_url(settings.url)} is not reachable ({_said(err, settings)});"
            " is redis-server running?"
        ) from None
    except redis.ResponseError as err:
        raise BrokerError(f"Redis stream {settings.stream!r}: {_said(err, settings)}") from None


def _said(err: BaseException, settings: RedisSettings) -> str:
    """The client's message with the URL's and the reference's secrets redacted."""
    text = redact(str(err), urlsplit(settings.url).password)
    if settings.password is not None:
        with suppress(DataflareError):  # an unreadable secret cannot be in the message
            text = redact(text, settings.password.read())
    return text


def _where(settings: RedisSettings) -> str:
    """``host:port`` of the url, nothing of its credentials."""
    from urllib.parse import urlsplit

    parts = urlsplit(settings.url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.hostname or ''}:{port or 6379}"


def connect(settings: RedisSettings) -> redis.Redis:
    options: dict = {
        "socket_connect_timeout": settings.connect_timeout_s,
        "socket_timeout": settings.socket_timeout_s,
        "username": settings.username,
        "password": settings.password.read() if settings.password is not None else None,
    }
    if settings.uses_tls:
        # rediss:// without a tls block still verifies (chain and name, system CAs).
        options["connection_class"] = _TlsConnection
        options["dataflare_tls"] = settings.tls or TlsSettings()
    client = redis.Redis(connection_pool=redis.ConnectionPool.from_url(settings.url, **options))
    with _errors(settings):
        client.ping()
    return client


def delete_stream(settings: RedisSettings) -> bool:
    """Delete the stream with its groups; False if it did not exist."""
    client = connect(settings)
    try:
        with _errors(settings):
            return bool(client.delete(settings.stream))
    finally:
        client.close()


def _end_of(entry_id: bytes | str, stream: str) -> int:
    """The offset an entry id ``0-<end>`` ends at; refuses other ids."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    if ms != "0" or not seq.isdigit():
        raise BrokerError(
            f"Redis stream {stream!r} has entry id {text} not written by the DataFlare"
            " producer (ids 0-<offset>): it cannot be read by offset"
        )
    return int(seq)


def _envelope(entry: Entry, stream: str, strict: bool) -> Envelope:
    """An entry placed by its id; with ``strict`` False a foreign id is left unplaced
    (consumer groups read any stream) instead of refused."""
    entry_id, payload, rows = entry
    rows = max(rows, 1)
    try:
        end = _end_of(entry_id, stream)
    except BrokerError:
        if strict:
            raise
        return Envelope(None, rows, payload, entry_id, "entry id is not a DataFlare offset")
    return Envelope(end - rows, rows, payload, entry_id)


def _parsed(entries: list) -> list[Entry]:
    """Entries as redis-py returns them (blocking reads, XAUTOCLAIM) into ``Entry``."""
    out = []
    for entry_id, fields in entries:
        if fields is None:
            out.append((entry_id.decode(), b"", 0))
            continue
        try:
            rows = int(fields.get(b"rows", 1))
        except ValueError:
            rows = 1
        out.append((entry_id.decode(), fields.get(b"data", b""), rows))
    return out


class RedisProducer:
    """Appends tables as entries (field ``data``, plus ``rows`` for multi-row arrow
    entries) in batched, atomic script calls; optionally capped with MAXLEN ~."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self._client = connect(settings)
        self._append = self._client.register_script(APPEND_SCRIPT)
        self.messages = 0
        self._metrics = for_connector("redis", settings.stream)
        self.end_offset = 0  # after the last row this producer appended

    def send(self, table: pa.Table) -> int:
        codec = MessageCodec(self.settings.format, table.schema, self.settings.batch_rows, 64 << 20)
        self._send(codec.encode(table))
        return table.num_rows

    def send_raw(self, payloads: Sequence[bytes]) -> int:
        """Payloads as they are; in arrow streams each claims as many offsets as it
        holds rows (one if it is not an Arrow stream)."""
        if self.settings.format == "json":
            self._send([(bytes(p), 1) for p in payloads])
        else:
            self._send([(bytes(p), arrow_rows(p) or 1) for p in payloads])
        return len(payloads)

    def _send(self, messages: list[tuple[bytes, int]]) -> None:
        s = self.settings
        args: list[bytes | int] = [s.maxlen or 0]
        size = 0
        for payload, rows in messages:
            args += [payload, rows]
            size += len(payload)
            if len(args) // 2 >= s.append_messages or size >= s.append_bytes:
                self._call(args)
                args, size = [s.maxlen or 0], 0
        if len(args) > 1:
            self._call(args)
        self.messages += len(messages)

    def _call(self, args: list[bytes | int]) -> None:
        with self._metrics.request("append"), _errors(self.settings):
            self.end_offset = int(self._append(keys=[self.settings.stream], args=args))

    def close(self) -> None:
        self._client.close()


class _RedisCursor:
    def __init__(self, source: RedisSource, offset: int) -> None:
        self._source = source
        self._from = f"0-{offset + 1}"  # the first entry ending after ``offset``

    def next(self, max_messages: int) -> list[Envelope]:
        s = self._source.settings
        with _errors(s):
            reply = self._source.read_script(
                keys=[s.stream], args=["range", self._from, max_messages]
            )
        entries = _unpack(reply)
        if not entries:
            return []
        self._from = "(" + entries[-1][0]
        return [_envelope(e, s.stream, strict=True) for e in entries]

    def close(self) -> None:
        return None


class RedisSource(StreamSource):
    """Engine source over one stream (one partition, named after the stream's key)."""

    settings: RedisSettings

    def _connect(self) -> None:
        # A missing key reads as an empty stream (Redis makes it on the first XADD).
        self._client = connect(self.settings)
        self.read_script = self._client.register_script(READ_SCRIPT)

    def _seek(self, partition: str, offset: int) -> Cursor:
        return _RedisCursor(self, offset)

    def _end(self, partition: str) -> int:
        with _errors(self.settings):
            if not self._client.exists(self.settings.stream):
                return 0
            info = self._client.xinfo_stream(self.settings.stream)
        return _end_of(info["last-generated-id"], self.settings.stream)

    def _close(self) -> None:
        self._client.close()


class RedisConsumer:
    """A member (``settings.consumer``) of the consumer group ``settings.group``,
    created with the stream if missing. At-least-once: entries stay in the group's
    pending list until acked. On start a member first re-reads its own pending entries
    (left by an earlier run under the same name); entries of a member that died are
    adopted with :meth:`claim` (XAUTOCLAIM), or by ``fetch`` when ``claim_idle_s`` is set.
    """

    def __init__(self, settings: RedisSettings, schema: pa.Schema) -> None:
        self.settings = settings
        self.codec = MessageCodec(
            settings.format,
            schema,
            settings.batch_rows,
            on_schema_mismatch=settings.on_schema_mismatch,
        )
        self._client = connect(settings)
        self._read = self._client.register_script(READ_SCRIPT)
        self._ack = self._client.register_script(ACK_SCRIPT)
        self._metrics = for_connector("redis", settings.stream)
        self._backlog: str | None = "0"  # own pending entries after this id, then None
        self._claimed_at = 0.0
        with _errors(settings):
            try:
                self._client.xgroup_create(
                    settings.stream, settings.group, id=settings.group_start, mkstream=True
                )
            except redis.ResponseError as err:
                if "BUSYGROUP" not in str(err):
                    raise

    def _count(self, max_records: int) -> int:
        count = max_records
        if self.settings.format == "arrow":
            count = -(-max_records // self.settings.batch_rows)
        return max(1, min(count, self.settings.fetch_messages))

    def fetch(self, max_records: int, timeout_s: float) -> FetchResult:
        s = self.settings
        count = self._count(max_records)
        if s.claim_idle_s is not None and time.monotonic() - self._claimed_at >= s.claim_idle_s:
            claimed = self.claim(s.claim_idle_s, max_records)
            if claimed.messages:
                return claimed
        entries: list[Entry] = []
        with self._metrics.request("fetch"), _errors(s):
            if self._backlog is not None:
                entries = self._group_read(count, self._backlog)
                self._backlog = entries[-1][0] if entries else None
                # Own pending entries from an earlier run: delivered before, not acked.
                self._metrics.redelivered(len(entries))
            if not entries:
                entries = self._group_read(count, ">")
            block = int(min(timeout_s, s.socket_timeout_s / 2) * 1000)
            if not entries and block > 0:
                # Nothing now: wait in a plain blocking read (scripts cannot block).
                reply = self._client.xreadgroup(
                    s.group, s.consumer, {s.stream: ">"}, count=count, block=block
                )
                entries = _parsed(reply[0][1]) if reply else []
        return self._result(entries)

    def _group_read(self, count: int, after: str) -> list[Entry]:
        s = self.settings
        args = ["group", s.group, s.consumer, count, after]
        return _unpack(self._read(keys=[s.stream], args=args))

    def claim(self, min_idle_s: float, max_records: int) -> FetchResult:
        """Adopt up to ``max_records`` entries that other members fetched and have not
        acked for ``min_idle_s`` (e.g. a member that crashed), scanning the whole
        pending list; they are then this member's to process and ack."""
        s = self.settings
        count = self._count(max_records)
        entries: list[Entry] = []
        start = "0-0"
        with self._metrics.request("claim"), _errors(s):
            while len(entries) < count:
                reply = self._client.xautoclaim(
                    s.stream,
                    s.group,
                    s.consumer,
                    int(min_idle_s * 1000),
                    start_id=start,
                    count=count - len(entries),
                )
                start, found = reply[0], reply[1]
                entries += _parsed([e for e in found if e is not None])
                if start in (b"0-0", "0-0"):
                    break
        self._claimed_at = time.monotonic()
        self._metrics.redelivered(len(entries))  # another member's, never acked
        return self._result(entries)

    def _result(self, entries: list[Entry]) -> FetchResult:
        s = self.settings
        live = [_envelope(e, s.stream, strict=False) for e in entries if e[2] > 0]
        offsets = [-1 if e.start is None else e.start for e in live]
        decoded = self.codec.decode([e.payload for e in live], offsets, s.stream, s.stream)
        dead = decoded.dead
        gone = [e[0] for e in entries if e[2] == 0]
        if gone:  # deleted while pending: nothing to decode, but still to settle
            reasons = [f"entry {i} was deleted before it was acked" for i in gone]
            dead = concat_dead(
                [
                    dead,
                    dead_letters(s.stream, s.stream, [-1] * len(gone), reasons, [b""] * len(gone)),
                ]
            )
        ids = [e[0] for e in entries]
        acked = False

        def ack() -> None:
            nonlocal acked
            if not acked and ids:
                with self._metrics.request("ack"), _errors(s):
                    self._ack(keys=[s.stream], args=[s.group, ",".join(ids)])
                self._metrics.acked(len(ids))
            acked = True

        return FetchResult(decoded.table, dead, ids, ack)

    def pending(self) -> int:
        """Entries of the group fetched and not yet acked (all members)."""
        with _errors(self.settings):
            return int(self._client.xpending(self.settings.stream, self.settings.group)["pending"])

    def close(self) -> None:
        """Drop the connection; unacked entries stay pending for a later claim."""
        self._client.close()
