"""The engine ``Source`` over a broker stream: dense row offsets on top of messages.

The engine addresses a partition by row offset and advances by exactly the number of
rows ``read`` returned, so a checkpoint is one integer per partition. A broker stream is
a sequence of messages, each of which is placed in that row-offset space by its
connector (see ``nats.jetstream`` and ``redis.streams`` for how) as an
:class:`Envelope`: the offset of its first row and how many offsets it occupies.

Whatever the stream holds, every offset yields exactly one row:
- a decodable message yields its rows (``rows`` must match what it holds);
- an undecodable message (or one whose row count is not what it claimed) yields
  ``rows`` placeholder rows, all null, and one dead letter carrying its raw bytes;
- offsets no message covers (deleted, trimmed or expired messages) yield placeholder
  rows and one dead letter per gap (empty payload, reason naming the range).

Placeholders have a null event time, so the runner rejects them as dead letters too and
never mixes them into results, while offsets stay dense and a restart from any checkpoint
is exact. Messages that cannot be placed at all (``start is None``) occupy no offsets and
are dead-lettered when the reader passes them.

Accounting, checkable after a run (``stats``): every message read is either good or
dead (``messages == good_messages + dead_messages``) and every row returned is either a
decoded row or a placeholder (``rows == good_rows + placeholder_rows``). A message is
counted, and if bad dead-lettered, by the read that consumes its last offset; after a
restart the same message may be dead-lettered again (at-least-once, like the rows).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

import numpy as np
import pyarrow as pa

from dataflare_platform.connectors.broker import Format, MessageCodec, StreamSettings
from dataflare_platform.connectors.settings import OpenContext, snapshot_ends
from dataflare_platform.engine import arrays
from dataflare_platform.errors import InvalidInputError
from dataflare_platform.events.codec import dead_letters


@dataclass(frozen=True)
class Envelope:
    """One broker message placed in its partition's row offsets."""

    start: int | None  # offset of its first row; None: cannot be placed (occupies none)
    rows: int  # offsets it occupies
    payload: bytes
    id: str  # the broker's id for it (sequence, entry id), for reasons and debugging
    unplaced_reason: str = ""  # why ``start`` is None


class Cursor(Protocol):
    """Reads a stream forward from where ``seek`` put it (connector-specific)."""

    def next(self, max_messages: int) -> list[Envelope]:
        """The following envelopes in stream order; empty if there are none (yet)."""
        ...

    def close(self) -> None: ...


@dataclass
class SourceStats:
    messages: int = 0
    good_messages: int = 0
    dead_messages: int = 0  # undecodable messages, including unplaceable ones
    gaps: int = 0  # runs of offsets no message covers
    rows: int = 0  # rows returned: good_rows + placeholder_rows
    good_rows: int = 0
    placeholder_rows: int = 0


@dataclass
class _Partition:
    cursor: Cursor
    position: int  # the next offset read() will return
    pending: deque[Envelope] = field(default_factory=deque)
    # The last arrow message decoded: (id, rows or None if bad, reason).
    decoded: tuple[str, pa.Table | None, str] | None = None


@dataclass
class _Segment:
    envelope: Envelope | None  # None: a gap
    skip: int  # rows of the envelope before this segment
    take: int
    start: int  # offset of the segment's first row


class OffsetSource:
    """Engine ``Source`` over broker partitions; subclasses supply partitions, cursors and
    end offsets. Dead letters go to ``on_dead_letter`` when given, else are kept in
    ``dead_letters`` (one table per read that found any)."""

    def __init__(
        self,
        name: str,
        schema: pa.Schema,
        format: Format,
        time_column: str = "date_time",
        on_dead_letter: Callable[[pa.Table], None] | None = None,
        fetch_messages: int = 5000,
        bounded: bool = False,
    ) -> None:
        if time_column not in schema.names:
            raise InvalidInputError(f"time column {time_column!r} is not in the schema")
        self.name = name
        self.time_column = time_column
        self._schema = schema
        self.codec = MessageCodec(format, schema)
        self.on_dead_letter = on_dead_letter
        self.fetch_messages = fetch_messages
        self.bounded = bounded
        self.dead_letters: list[pa.Table] = []
        self.stats = SourceStats()
        self._partitions: dict[str, _Partition] = {}
        self._ends: dict[str, int] = {}  # snapshot end offsets of bounded partitions

    # -- what subclasses provide ---------------------------------------------------------
    def partitions(self) -> list[str]:
        raise NotImplementedError

    def _seek(self, partition: str, offset: int) -> Cursor:
        """A cursor whose first envelope covers ``offset`` or is the first after it."""
        raise NotImplementedError

    def _end(self, partition: str) -> int:
        """One past the last offset the partition's messages cover now."""
        raise NotImplementedError

    def _close(self) -> None:
        return None

    # -- the Source protocol -------------------------------------------------------------
    @property
    def schema(self) -> pa.Schema:
        return self._schema

    def end_offset(self, partition: str) -> int | None:
        """None (the stream grows) unless the source was made ``bounded``: then the end
        as of the first call, so a bounded run reads a fixed snapshot."""
        if not self.bounded:
            return None
        if partition not in self._ends:
            self._ends[partition] = self._end(partition)
        return self._ends[partition]

    def read(self, partition: str, offset: int, max_rows: int) -> pa.Table:
        state = self._partitions.get(partition)
        if state is None or state.position != offset:
            if state is not None:
                state.cursor.close()
            state = _Partition(self._seek(partition, offset), offset)
            self._partitions[partition] = state
        segments, finished = self._plan(state, partition, max_rows)
        table, dead = self._assemble(state, partition, segments, finished)
        state.position = offset + table.num_rows
        self.stats.rows += table.num_rows
        if dead.num_rows:
            if self.on_dead_letter is not None:
                self.on_dead_letter(dead)
            else:
                self.dead_letters.append(dead)
        return table

    def close(self) -> None:
        for state in self._partitions.values():
            state.cursor.close()
        self._partitions.clear()
        self._close()

    # -- internals -----------------------------------------------------------------------
    def _plan(
        self, state: _Partition, partition: str, max_rows: int
    ) -> tuple[list[_Segment], list[Envelope]]:
        """Which envelopes (or gaps) make up the next ``max_rows`` rows; also the
        envelopes this read finishes (to be counted) in order."""
        segments: list[_Segment] = []
        finished: list[Envelope] = []
        position, want = state.position, max_rows
        while want > 0:
            if not state.pending:
                more = state.cursor.next(self._messages_for(want))
                if not more:
                    end = self._ends.get(partition)
                    if end is not None and position < end:
                        # Bounded, and the last messages are gone: the tail is a gap.
                        take = min(want, end - position)
                        segments.append(_Segment(None, 0, take, position))
                        position += take
                        want -= take
                    break
                state.pending.extend(more)
            env = state.pending[0]
            if env.start is None:
                state.pending.popleft()
                finished.append(env)
                continue
            if env.start + env.rows <= position:  # wholly before: a seek landed early
                state.pending.popleft()
                continue
            if env.start > position:  # nothing covers [position, env.start)
                take = min(want, env.start - position)
                segments.append(_Segment(None, 0, take, position))
            else:
                skip = position - env.start
                take = min(env.rows - skip, want)
                segments.append(_Segment(env, skip, take, position))
                if skip + take == env.rows:
                    state.pending.popleft()
                    finished.append(env)
            position += take
            want -= take
        return segments, finished

    def _messages_for(self, rows: int) -> int:
        """Messages to fetch for ``rows`` rows (arrow: estimated from the batch size)."""
        if not self._rowwise:
            rows = -(-rows // self.codec.batch_rows)
        return max(1, min(rows, self.fetch_messages))

    @property
    def _rowwise(self) -> bool:
        return self.codec.format == "json"

    def _assemble(
        self,
        state: _Partition,
        partition: str,
        segments: list[_Segment],
        finished: list[Envelope],
    ) -> tuple[pa.Table, pa.Table]:
        placed = list({s.envelope.id: s.envelope for s in segments if s.envelope}.values())
        good, where, reasons = self._decode(state, partition, placed)
        # Each segment as a range of ``good`` rows, or None for placeholder rows.
        ranges: list[tuple[int | None, int]] = []
        for seg in segments:
            env = seg.envelope
            first = None if env is None else where.get(env.id)
            if first is None:
                self.stats.placeholder_rows += seg.take
                ranges.append((None, seg.take))
            else:
                self.stats.good_rows += seg.take
                ranges.append((first + seg.skip, seg.take))
        table = _gather(good, ranges, self._schema)
        return table, self._dead(partition, segments, finished, reasons)

    def _decode(
        self, state: _Partition, partition: str, envelopes: list[Envelope]
    ) -> tuple[pa.Table, dict[str, int], dict[str, str]]:
        """Decode ``envelopes`` (json: in one vectorised call) into one table of good
        rows; return it, each good envelope's first row in it, and each bad one's reason.
        The last arrow message is kept decoded: the next read usually continues in it."""
        parts: list[pa.Table] = []
        where: dict[str, int] = {}
        reasons: dict[str, str] = {}
        rows = 0
        todo = []
        for env in envelopes:
            if state.decoded is not None and state.decoded[0] == env.id:
                cached = state.decoded[1]
                if cached is None:
                    reasons[env.id] = state.decoded[2]
                else:
                    where[env.id] = rows
                    parts.append(cached)
                    rows += cached.num_rows
            else:
                todo.append(env)
        if todo:
            result = self.codec.decode(
                [e.payload for e in todo], list(range(len(todo))), self.name, partition
            )
            bad = dict(
                zip(
                    result.dead.column("offset").to_pylist(),
                    result.dead.column("reason").to_pylist(),
                    strict=True,
                )
            )
            counts = Counter(result.offsets)  # good rows per message, in message order
            row = 0
            for i, env in enumerate(todo):
                if i in bad:
                    reasons[env.id] = bad[i]
                    continue
                n = counts.get(i, 0)
                if n != env.rows:
                    reasons[env.id] = f"message claims {env.rows} rows but holds {n}"
                else:
                    where[env.id] = rows + row
                row += n
            parts.append(result.table)
            rows += result.table.num_rows
            if not self._rowwise:
                last = todo[-1]
                if last.id in where:
                    first = where[last.id] - (rows - result.table.num_rows)
                    state.decoded = (last.id, result.table.slice(first, last.rows), "")
                else:
                    state.decoded = (last.id, None, reasons[last.id])
        good = pa.concat_tables(parts) if len(parts) > 1 else (parts[0] if parts else None)
        return good if good is not None else arrays.empty_table(self._schema), where, reasons

    def _dead(
        self,
        partition: str,
        segments: list[_Segment],
        finished: list[Envelope],
        reasons: dict[str, str],
    ) -> pa.Table:
        offsets: list[int] = []
        why: list[str] = []
        payloads: list[bytes] = []
        for seg in segments:
            if seg.envelope is None:
                self.stats.gaps += 1
                offsets.append(seg.start)
                why.append(
                    f"offsets {seg.start}..{seg.start + seg.take - 1} hold no message"
                    " (deleted, trimmed or expired)"
                )
                payloads.append(b"")
        for env in finished:
            self.stats.messages += 1
            reason = env.unplaced_reason if env.start is None else reasons.get(env.id)
            if reason is None:
                self.stats.good_messages += 1
                continue
            self.stats.dead_messages += 1
            offsets.append(-1 if env.start is None else env.start)
            why.append(f"{reason} [message {env.id}]")
            payloads.append(env.payload)
        return dead_letters(self.name, partition, offsets, why, payloads)


def _gather(good: pa.Table, ranges: list[tuple[int | None, int]], schema: pa.Schema) -> pa.Table:
    """The rows ``ranges`` name, with all-null rows for ``None``: a zero-copy slice when
    they are one contiguous run of good rows (the usual case), else one ``take``."""
    if not ranges:
        return arrays.empty_table(schema)
    starts = [r[0] for r in ranges]
    if all(s is not None for s in starts):
        contiguous = all(
            ranges[i + 1][0] == ranges[i][0] + ranges[i][1] for i in range(len(ranges) - 1)
        )
        if contiguous:
            return good.slice(ranges[0][0], sum(r[1] for r in ranges))
    pieces = [
        np.full(n, -1, dtype=np.int64) if s is None else np.arange(s, s + n, dtype=np.int64)
        for s, n in ranges
    ]
    indices = np.concatenate(pieces)
    return good.take(arrays.from_numpy(indices, pa.int64(), valid=indices >= 0))


class StreamSource(OffsetSource):
    """An ``OffsetSource`` over one broker stream: one partition named after the stream,
    format, arrow batch size and fetch size from the settings. A broker's source
    subclasses it and says how to connect (``_connect``), seek and find the end.

    The pipeline-facing constructors are classmethods, so a connector package exposes
    ``open_source = NatsSource.open_source`` instead of writing the same two functions.
    """

    settings: StreamSettings

    def __init__(
        self,
        settings: StreamSettings,
        schema: pa.Schema,
        name: str | None = None,
        time_column: str = "date_time",
        bounded: bool = False,
        on_dead_letter: Callable[[pa.Table], None] | None = None,
    ) -> None:
        super().__init__(
            name or settings.stream,
            schema,
            settings.format,
            time_column=time_column,
            on_dead_letter=on_dead_letter,
            fetch_messages=settings.fetch_messages,
            bounded=bounded,
        )
        self.codec.batch_rows = settings.batch_rows
        self.codec.on_schema_mismatch = settings.on_schema_mismatch
        self.settings = settings
        self._connect()

    def _connect(self) -> None:
        """Open the client; refuse a stream that does not exist if the broker can say so."""
        raise NotImplementedError

    def partitions(self) -> list[str]:
        return [self.settings.stream]

    @classmethod
    def open_source(cls, settings: Any, context: OpenContext) -> Any:
        """The source a pipeline's ``sources:`` entry describes (settings with a schema):
        one stream, or with ``partitions: N`` the N streams of a partitioned source."""
        if getattr(settings, "partitions", 1) > 1:
            from dataflare_platform.connectors.partitioned_streams import PartitionedStreams

            def open_one(one: Any, name: str) -> Self:
                return cls(
                    one,
                    one.arrow_schema,
                    name=name,
                    time_column=one.time_column,
                    bounded=context.bounded,
                )

            return PartitionedStreams(
                open_one,
                settings,
                context.name or settings.stream,
                context.partitions,
                settings.partitioned_by,
            )
        return cls(
            settings,
            settings.arrow_schema,
            name=context.name or None,
            time_column=settings.time_column,
            bounded=context.bounded,
        )

    @classmethod
    def end_offsets(cls, settings: Any, context: OpenContext) -> dict[str, int]:
        """The stream's end now (a bounded snapshot), for offset-range runs."""
        bounded = OpenContext(context.pipeline, context.name, True)
        return snapshot_ends(cls.open_source(settings, bounded))
