"""A live Nexmark producer: persons, auctions and bids appended to the ``nexmark.*``
topics as they "happen", stamped with the wall clock, at a paced rate, until stopped.

Why its own module: ``produce_tables`` replays a finite, pre-timed data set as fast as
allowed. A streaming pipeline fed that way sees event times far from now (late, or all in
one window); a live demo needs events whose time *is* now, so windows close every few
seconds and a pipeline's output appears while one watches.

Content comes from the vectorised ``NexmarkGenerator`` chunk by chunk (same seed, same
events: ids, prices, names), one chunk per append; only the event times are replaced by
the wall clock of the append, spread linearly over the time since the previous one and
pulled back by the generator's bounded out-of-order jitter (``max_out_of_order_ms``), so
pipelines with a watermark bound at least that large see no late events. Pacing is a
token bucket holding at most one batch: tokens accrue at ``rate`` events/s and a batch is
generated and appended when the bucket holds one, so the long-run rate is ``rate``
however long generating and appending take (as long as they keep up).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataflare_platform.datagen import SCHEMAS, NexmarkConfig, NexmarkGenerator
from dataflare_platform.datagen.config import PROPORTION_DENOMINATOR
from dataflare_platform.engine import arrays
from dataflare_platform.errors import InvalidInputError
from dataflare_platform.events.log import EventLog, Topic

# The topics the shipped pipelines read, each laid out as the demo makes it: two
# partitions keyed so both carry events (a pipeline's watermark is their minimum).
NEXMARK_TOPICS: dict[str, tuple[str, str]] = {
    "persons": ("nexmark.persons", "id"),
    "auctions": ("nexmark.auctions", "id"),
    "bids": ("nexmark.bids", "auction"),
}
NEXMARK_PARTITIONS = 2
UNBOUNDED_EVENTS = 10**15
"""``events`` of the generator config when no bound is given: ids stay far from overflow."""
RATE_WINDOW_S = 5.0


def ensure_nexmark_topics(log: EventLog, partitions: int = NEXMARK_PARTITIONS) -> dict[str, Topic]:
    """The ``nexmark.*`` topics by kind, created (keyed, ``partitions`` each) if missing."""
    return {
        kind: log.create_topic(name, SCHEMAS[kind], partitions=partitions, key=key, exist_ok=True)
        for kind, (name, key) in NEXMARK_TOPICS.items()
    }


def batch_events_for(rate: float, interval_s: float) -> int:
    """Events per append: ``rate`` × ``interval_s`` rounded to whole epochs of 50 (so each
    batch holds the exact 1:3:46 person/auction/bid mix), at least one epoch."""
    epochs = max(1, round(rate * interval_s / PROPORTION_DENOMINATOR))
    return epochs * PROPORTION_DENOMINATOR


@dataclass
class LiveProgress:
    """What the producer has done so far (a snapshot, safe to read from another thread)."""

    events: int = 0
    seconds: float = 0.0
    rate: float = 0.0
    """Events/s over the last few seconds (the current rate, not a lifetime average)."""
    end_offsets: dict[str, dict[int, int]] = field(default_factory=dict)

    def line(self) -> str:
        """One human line: events, current rate and each topic's end offsets."""
        offsets = "  ".join(
            f"{name}={sum(ends.values()):,}" for name, ends in sorted(self.end_offsets.items())
        )
        return f"{self.events:,} events  {self.rate:,.0f} events/s  {offsets}"

    def summary(self) -> dict[str, object]:
        return {
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.events / self.seconds, 1) if self.seconds > 0 else 0.0,
            "end_offsets": {
                name: {str(p): end for p, end in ends.items()}
                for name, ends in self.end_offsets.items()
            },
        }


class LiveNexmarkProducer:
    """Appends generated Nexmark events to the ``nexmark.*`` topics at ``rate`` events/s
    with event time = now, until ``stop()``, ``max_events`` or ``max_seconds``."""

    def __init__(
        self,
        log: EventLog,
        rate: float,
        seed: int,
        max_events: int | None = None,
        max_seconds: float | None = None,
        interval_s: float = 0.5,
        max_out_of_order_ms: int = 2_000,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        if rate <= 0:
            raise InvalidInputError(f"rate must be > 0 events/s, got {rate}")
        self.log = log
        self.rate = float(rate)
        self.seed = seed
        self.max_events = max_events
        self.max_seconds = max_seconds
        self.batch_events = batch_events_for(rate, interval_s)
        self.max_out_of_order_ms = max_out_of_order_ms
        self._clock = clock
        self._stop = threading.Event()
        # The pacing clock and the wait for a batch's tokens (True: asked to stop); both
        # injectable so tests check the token bucket by counts, not by elapsed time.
        self._monotonic = monotonic
        self._wait = wait or self._stop.wait
        self._lock = threading.Lock()
        self._progress = LiveProgress()
        self.config = NexmarkConfig(
            events=max_events or UNBOUNDED_EVENTS,
            seed=seed,
            chunk_events=self.batch_events,
            events_per_second=rate,
            max_out_of_order_ms=max_out_of_order_ms,
        )

    def stop(self) -> None:
        """Ask ``run`` to finish after the batch in flight (thread- and signal-safe)."""
        self._stop.set()

    @property
    def progress(self) -> LiveProgress:
        with self._lock:
            p = self._progress
            return LiveProgress(p.events, p.seconds, p.rate, dict(p.end_offsets))

    def run(self, on_batch: Callable[[LiveProgress], None] | None = None) -> LiveProgress:
        """Produce until stopped or a bound is reached; return the final progress."""
        topics = ensure_nexmark_topics(self.log)
        generator = NexmarkGenerator(self.config)
        started = self._monotonic()
        previous_ms = int(self._clock() * 1000)
        recent: deque[tuple[float, int]] = deque([(started, 0)])
        produced = 0
        for index in range(self.config.num_chunks):
            start, stop = self.config.chunk_range(index)
            due = started + (produced + (stop - start)) / self.rate
            if self.max_seconds is not None and due - started > self.max_seconds + 1e-9:
                break
            # Token bucket of one batch: wait until the batch's tokens have accrued.
            if self._wait(max(0.0, due - self._monotonic())):
                break
            now_ms = int(self._clock() * 1000)
            tables = self._timed(generator, index, previous_ms, now_ms)
            for kind, table in tables.items():
                topics[kind].append(table)
            previous_ms = now_ms
            produced += stop - start
            now = self._monotonic()
            recent.append((now, produced))
            while len(recent) > 2 and now - recent[1][0] >= RATE_WINDOW_S:
                recent.popleft()
            first_t, first_n = recent[0]
            with self._lock:
                self._progress = LiveProgress(
                    events=produced,
                    seconds=now - started,
                    rate=(produced - first_n) / (now - first_t) if now > first_t else 0.0,
                    end_offsets={t.name: t.end_offsets() for t in topics.values()},
                )
            if on_batch is not None:
                on_batch(self.progress)
        with self._lock:
            self._progress.seconds = self._monotonic() - started
            self._progress.end_offsets = {t.name: t.end_offsets() for t in topics.values()}
        return self.progress

    def _timed(
        self, generator: NexmarkGenerator, index: int, previous_ms: int, now_ms: int
    ) -> dict[str, pa.Table]:
        """Chunk ``index`` with event times spread over (previous_ms, now_ms] and pulled
        back by up to ``max_out_of_order_ms`` (deterministic per seed and chunk)."""
        rng = np.random.default_rng([self.seed, index, 1])
        tables = generator.chunk(index).tables(decode=True)
        out = {}
        for kind, table in tables.items():
            count = table.num_rows
            if count == 0:
                out[kind] = table
                continue
            span = max(0, now_ms - previous_ms)
            ideal = previous_ms + ((np.arange(1, count + 1) * span) // count)
            jitter = rng.integers(0, self.max_out_of_order_ms + 1, size=count)
            times = arrays.from_numpy(ideal - jitter, pa.timestamp("ms"))
            old = table.column("date_time")
            table = table.set_column(table.schema.get_field_index("date_time"), "date_time", times)
            if kind == "auctions":
                # Keep each auction's duration: its expiry moves with its event time.
                duration = pc.subtract(table.column("expires"), old)
                expires = pc.add(times, duration)
                table = table.set_column(
                    table.schema.get_field_index("expires"), "expires", expires
                )
            out[kind] = table.cast(SCHEMAS[kind])
        return out
