"""Vectorised Nexmark generator.

Events are numbered globally; number ``n`` is a person when ``n % 50 == 0``, an auction
when ``n % 50`` is 1..3 and a bid otherwise, so the 1:3:46 mix holds exactly in every
window of 50 events and ids can be derived from ``n`` without any shared state. Each
chunk draws from its own random stream (seeded by ``(seed, chunk index)``), so chunks are
independent and the output is a pure function of the config.

Id and skew rules follow the reference Nexmark generator (Beam/Flink): hot auctions,
bidders and sellers are the most recent id rounded down to a multiple of 100, cold
ones are drawn from the recent active window with a small lead into the future.

The ``skewed`` shape keeps the event mix and the schemas but breaks those rules, so a
test or a benchmark on it shows what the engine does with a stream it has never seen:
picks are Zipf-distributed by rank (half over the recent window, newest first; half
over every id so far, where a few early auctions and people stay hot for the whole run,
long after their auctions closed), ids are scattered over 40 bits by a bijection of the
sequence number (sparse, never sequential), auction lengths are heavy-tailed (Lomax),
the well-known channels come in mixed case and the other urls in several shapes, some
without a channel id or with fewer directories.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from dataflare_platform.datagen.config import (
    AUCTION_PROPORTION,
    PERSON_PROPORTION,
    PROPORTION_DENOMINATOR,
    NexmarkConfig,
)
from dataflare_platform.datagen.schemas import (
    AUCTION_CHUNK_SCHEMA,
    BID_CHUNK_SCHEMA,
    PERSON_CHUNK_SCHEMA,
    SCHEMAS,
)

FIRST_PERSON_ID = 1000
FIRST_AUCTION_ID = 1000
FIRST_CATEGORY_ID = 10
HOT_AUCTION_STRIDE = 100
HOT_PERSON_STRIDE = 100
PERSON_ID_LEAD = 10
AUCTION_ID_LEAD = 10
NUM_CHANNELS = 10_000
HOT_CHANNELS = ("Google", "Facebook", "Baidu", "Apple")
FIRST_NAMES = (
    "Peter",
    "Paul",
    "Luke",
    "John",
    "Saul",
    "Vicky",
    "Kate",
    "Julie",
    "Sarah",
    "Deiter",
    "Walter",
)
LAST_NAMES = (
    "Shultz",
    "Abrams",
    "Spencer",
    "White",
    "Bartels",
    "Walton",
    "Smith",
    "Jones",
    "Noris",
)
US_STATES = ("AZ", "CA", "ID", "OR", "WA", "WY")
US_CITIES = (
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
)
EXTRA_POOL_SIZE = 4096
# Mean length of the ``extra`` padding, sized so records average Nexmark's byte sizes
# (person ≈ 200 B, auction ≈ 500 B, bid ≈ 100 B).
EXTRA_MEAN_LEN = {"persons": 100, "auctions": 330, "bids": 16}
_POOL_STREAM = 2**32 - 1
# The skewed shape: ids are ``first + (seq * SPARSE_MULTIPLIER) mod 2**SPARSE_BITS`` (an
# odd multiplier is a bijection modulo a power of two, so ids stay unique); the
# all-time-hot ids are the multiples of ``GLOBAL_HOT_STRIDE`` in sequence numbers.
SPARSE_MULTIPLIER = 0x9E3779B1
SPARSE_BITS = 40
GLOBAL_HOT_STRIDE = 37
HOT_CHANNEL_SPELLINGS = (
    "Google",
    "google",
    "GOOGLE",
    "Facebook",
    "facebook",
    "Baidu",
    "BAIDU",
    "Apple",
    "apple",
)
AUCTION_LENGTH_TAIL = 1.5  # Lomax shape: mean finite, some auctions open for hours


@dataclass(frozen=True)
class NexmarkChunk:
    """One chunk of generated events, one Arrow table per kind, in event-number order."""

    index: int
    persons: pa.Table
    auctions: pa.Table
    bids: pa.Table

    @property
    def events(self) -> int:
        return self.persons.num_rows + self.auctions.num_rows + self.bids.num_rows

    def tables(self, decode: bool = False) -> dict[str, pa.Table]:
        """The three tables; ``decode`` turns pooled (dictionary) columns into plain
        strings, giving exactly the file schemas in ``SCHEMAS``."""
        tables = {"persons": self.persons, "auctions": self.auctions, "bids": self.bids}
        if decode:
            return {kind: t.cast(SCHEMAS[kind]) for kind, t in tables.items()}
        return tables


_LETTER_OF_BYTE = (np.arange(256, dtype=np.uint8) % 26 + ord("a")).astype(np.uint8)
_DIGIT_OF_BYTE = (np.arange(256, dtype=np.uint8) % 10 + ord("0")).astype(np.uint8)


def _letters(
    rng: np.random.Generator, size: int, table: np.ndarray = _LETTER_OF_BYTE
) -> np.ndarray:
    """Random lowercase ASCII bytes: ``rng.bytes`` through a 256-entry lookup table is
    ~10x faster than ``integers(dtype=uint8)``; its slight bias is fine for filler text."""
    return table[np.frombuffer(rng.bytes(size), dtype=np.uint8)]


def _random_strings(rng: np.random.Generator, count: int, width: int) -> pa.StringArray:
    """``count`` lowercase ASCII strings of fixed ``width``, built straight from bytes."""
    data = _letters(rng, count * width)
    offsets = np.arange(0, (count + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(data))


def _template_strings(rng: np.random.Generator, count: int, template: str) -> pa.StringArray:
    """Strings shaped like ``template``: 'a' → random letter, '9' → digit, else literal."""
    width = len(template)
    tpl = np.frombuffer(template.encode(), dtype=np.uint8)
    letters = _letters(rng, count * width).reshape(count, width)
    digits = _letters(rng, count * width, _DIGIT_OF_BYTE).reshape(count, width)
    out = np.where(tpl == ord("a"), letters, np.where(tpl == ord("9"), digits, tpl))
    offsets = np.arange(0, (count + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(out.tobytes()))


def _numbers(start: int, stop: int, lo: int, hi: int) -> np.ndarray:
    """Event numbers in [start, stop) whose position within their epoch of 50 is in
    [lo, hi): built from an epoch × offset grid, cheaper than a modulo and a mask."""
    epochs = np.arange(
        start // PROPORTION_DENOMINATOR, -(-stop // PROPORTION_DENOMINATOR), dtype=np.int64
    )
    grid = (epochs[:, None] * PROPORTION_DENOMINATOR + np.arange(lo, hi)[None, :]).ravel()
    first = np.searchsorted(grid, start)
    last = np.searchsorted(grid, stop)
    return grid[first:last]


def _timestamps(ms: np.ndarray) -> pa.TimestampArray:
    """Epoch milliseconds as ``timestamp[ms]`` without copying the buffer."""
    ms = np.ascontiguousarray(ms, dtype=np.int64)
    return pa.Array.from_buffers(pa.timestamp("ms"), ms.size, [None, pa.py_buffer(ms)])


def _recent(rng: np.random.Generator, last: np.ndarray, window: int, lead: int) -> np.ndarray:
    """Uniform ids in [max(last - window, 0), last + lead], Nexmark's "recent" pick.

    Past the first ``window`` ids the range has a fixed width, so one scalar-bounded
    draw serves (``integers`` with array bounds is several times slower); only the
    few head rows, where the range is cut at 0, are redrawn with their own bounds.
    """
    picked = last - window + rng.integers(0, window + 1 + lead, size=last.size)
    head = np.flatnonzero(last < window)
    if head.size:
        picked[head] = rng.integers(0, last[head] + 1 + lead)
    return picked


def _chance(rng: np.random.Generator, ratio: int, count: int) -> np.ndarray:
    """Nexmark's ``random.nextInt(ratio) > 0``: true with probability 1 - 1/ratio."""
    return rng.random(count, dtype=np.float32) < (ratio - 1) / ratio


def _zipf_ranks(rng: np.random.Generator, exponent: float, count: int, ranks: int) -> np.ndarray:
    """Zipf-distributed 0-based ranks below ``ranks`` (the tail beyond folded back in)."""
    return (rng.zipf(exponent, size=count) - 1) % ranks


def _skewed_urls(paths: list[str]) -> list[str]:
    """Urls of several shapes for the skewed stream's other channels: the channel id
    after other parameters, first (after ``?``, which Flink q21's pattern does not take),
    missing, or with fewer directories than q22 splits."""
    shapes = (
        "https://www.nexmark.com/{p}/item.htm?query=1&channel_id={i}",
        "https://m.nexmark.com/{p}/x/item.htm?ref=mail&channel_id={i}&lang=de",
        "https://shop.example.org/item.htm?channel_id={i}",
        "https://www.nexmark.com/{p}/item.htm?query={i}",
        "http://nexmark.com/item?channel_id=&id={i}",
    )
    return [shapes[i % len(shapes)].format(p=p, i=i) for i, p in enumerate(paths)]


def _pooled(pool: pa.StringArray, indices: np.ndarray) -> pa.DictionaryArray:
    """Draw from a pool of strings without copying them: a dictionary-encoded column.

    Copying the bytes (``take``) costs more than the rest of a bid put together; Parquet
    stores these columns dictionary-encoded anyway, and writers decode where needed.
    """
    return pa.DictionaryArray.from_arrays(pa.array(indices.astype(np.int32, copy=False)), pool)


def _variable_pool(rng: np.random.Generator, size: int, mean_len: int) -> pa.StringArray:
    lengths = rng.integers(0, 2 * mean_len + 1, size=size)
    return pa.array(
        ["".join(map(chr, rng.integers(ord("a"), ord("z") + 1, size=n))) for n in lengths],
        pa.string(),
    )


class NexmarkGenerator:
    """Generates Nexmark chunks for one config; cheap to create, pools are built once."""

    def __init__(self, config: NexmarkConfig) -> None:
        self.config = config
        self._skewed = config.shape == "skewed"
        pool_rng = np.random.default_rng([config.seed, _POOL_STREAM])
        hot_channels = HOT_CHANNEL_SPELLINGS if self._skewed else HOT_CHANNELS
        self._hot_channels = len(hot_channels)
        cold_channels = [f"channel-{i}" for i in range(NUM_CHANNELS)]
        self._channels = pa.array([*hot_channels, *cold_channels], pa.string())
        paths = _template_strings(pool_rng, NUM_CHANNELS, "aaaaa/aaaaa/aaaaa").to_pylist()
        hot_urls = [f"https://www.nexmark.com/{c.lower()}/item.htm?query=1" for c in hot_channels]
        if self._skewed:
            cold_urls = _skewed_urls(paths)
        else:
            cold_urls = [
                f"https://www.nexmark.com/{p}/item.htm?query=1&channel_id={i}"
                for i, p in enumerate(paths)
            ]
        self._urls = pa.array([*hot_urls, *cold_urls], pa.string())
        self._extra_pools = {
            kind: _variable_pool(pool_rng, EXTRA_POOL_SIZE, mean)
            for kind, mean in EXTRA_MEAN_LEN.items()
        }
        self._first_names = pa.array(FIRST_NAMES, pa.string())
        self._last_names = pa.array(LAST_NAMES, pa.string())
        self._states = pa.array(US_STATES, pa.string())
        self._cities = pa.array(US_CITIES, pa.string())

    def chunks(self) -> list[int]:
        return list(range(self.config.num_chunks))

    def chunk(self, index: int) -> NexmarkChunk:
        cfg = self.config
        if not 0 <= index < cfg.num_chunks:
            raise IndexError(f"chunk {index} outside 0..{cfg.num_chunks - 1}")
        start, stop = cfg.chunk_range(index)
        rng = np.random.default_rng([cfg.seed, index])
        first_auction = PERSON_PROPORTION
        first_bid = PERSON_PROPORTION + AUCTION_PROPORTION
        person_n = _numbers(start, stop, 0, first_auction)
        auction_n = _numbers(start, stop, first_auction, first_bid)
        bid_n = _numbers(start, stop, first_bid, PROPORTION_DENOMINATOR)
        return NexmarkChunk(
            index=index,
            persons=self._persons(rng, person_n),
            auctions=self._auctions(rng, auction_n),
            bids=self._bids(rng, bid_n),
        )

    # -- shared pieces -------------------------------------------------------------

    def _event_time_ms(self, rng: np.random.Generator, n: np.ndarray) -> np.ndarray:
        cfg = self.config
        ideal = cfg.first_event_ms + (n * (1000.0 / cfg.events_per_second)).astype(np.int64)
        if cfg.max_out_of_order_ms == 0:
            return ideal
        jitter = rng.integers(0, cfg.max_out_of_order_ms + 1, size=n.size)
        if cfg.late_fraction < 1.0:
            jitter[rng.random(n.size) >= cfg.late_fraction] = 0
        # Jitter never reaches before the first event time, so data starts where asked.
        return ideal - np.minimum(jitter, ideal - cfg.first_event_ms)

    def _extra(self, rng: np.random.Generator, kind: str, count: int) -> pa.Array:
        return _pooled(self._extra_pools[kind], rng.integers(0, EXTRA_POOL_SIZE, size=count))

    def _id(self, first: int, seq: np.ndarray) -> np.ndarray:
        """The id of the ``seq``-th person or auction (0-based)."""
        if self._skewed:
            return first + ((seq * SPARSE_MULTIPLIER) & ((1 << SPARSE_BITS) - 1))
        return first + seq

    def _zipf_pick(self, rng: np.random.Generator, last: np.ndarray, window: int) -> np.ndarray:
        """The skewed shape's pick among sequence numbers ``0..last``: half by Zipf rank
        over the last ``window`` (newest hottest), half by Zipf rank over the all-time
        hot ones (every ``GLOBAL_HOT_STRIDE``-th, the earliest hottest)."""
        count = last.size
        rank = _zipf_ranks(rng, self.config.zipf_exponent, count, window + 1)
        recent = np.maximum(last - rank, 0)
        all_time = np.minimum(rank * GLOBAL_HOT_STRIDE, last)
        return np.where(rng.random(count, dtype=np.float32) < 0.5, recent, all_time)

    def _pick_person_base0(
        self, rng: np.random.Generator, epoch: np.ndarray, ratio: int, hot_offset: int
    ) -> np.ndarray:
        # Every auction and bid comes after its epoch's person: the latest person is epoch.
        last = epoch
        if self._skewed:
            return self._zipf_pick(rng, last, self.config.active_people - 1)
        hot = (last // HOT_PERSON_STRIDE) * HOT_PERSON_STRIDE + hot_offset
        cold = _recent(rng, last, self.config.active_people - 1, PERSON_ID_LEAD)
        return np.where(_chance(rng, ratio, epoch.size), hot, cold)

    @staticmethod
    def _price(rng: np.random.Generator, count: int) -> np.ndarray:
        return np.rint(np.power(10.0, rng.random(count) * 6.0) * 100.0).astype(np.int64)

    # -- event kinds ---------------------------------------------------------------

    def _bids(self, rng: np.random.Generator, n: np.ndarray) -> pa.Table:
        cfg = self.config
        count = n.size
        epoch = n // PROPORTION_DENOMINATOR
        # Every bid comes after its epoch's auctions, so the latest auction is the third.
        last = epoch * AUCTION_PROPORTION + (AUCTION_PROPORTION - 1)
        if self._skewed:
            auction = self._zipf_pick(rng, last, cfg.in_flight_auctions)
        else:
            hot_auction = (last // HOT_AUCTION_STRIDE) * HOT_AUCTION_STRIDE
            cold_auction = _recent(rng, last, cfg.in_flight_auctions, AUCTION_ID_LEAD)
            is_hot = _chance(rng, cfg.hot_auction_ratio, count)
            auction = np.where(is_hot, hot_auction, cold_auction)
        auction = self._id(FIRST_AUCTION_ID, auction)
        bidder = self._id(
            FIRST_PERSON_ID, self._pick_person_base0(rng, epoch, cfg.hot_bidder_ratio, 1)
        )
        hot_channel = _chance(rng, 2, count)
        if self._skewed:
            cold = _zipf_ranks(rng, cfg.zipf_exponent, count, NUM_CHANNELS)
        else:
            cold = rng.integers(0, NUM_CHANNELS, size=count, dtype=np.int32)
        channel_idx = np.where(
            hot_channel,
            rng.integers(0, self._hot_channels, size=count, dtype=np.int32),
            self._hot_channels + cold.astype(np.int32),
        )
        return pa.Table.from_arrays(
            [
                pa.array(auction),
                pa.array(bidder),
                pa.array(self._price(rng, count)),
                _pooled(self._channels, channel_idx),
                _pooled(self._urls, channel_idx),
                _timestamps(self._event_time_ms(rng, n)),
                self._extra(rng, "bids", count),
            ],
            schema=BID_CHUNK_SCHEMA,
        )

    def _auctions(self, rng: np.random.Generator, n: np.ndarray) -> pa.Table:
        cfg = self.config
        count = n.size
        epoch, offset = np.divmod(n, PROPORTION_DENOMINATOR)
        ids = self._id(FIRST_AUCTION_ID, epoch * AUCTION_PROPORTION + (offset - PERSON_PROPORTION))
        seller = self._id(
            FIRST_PERSON_ID, self._pick_person_base0(rng, epoch, cfg.hot_seller_ratio, 0)
        )
        initial_bid = self._price(rng, count)
        reserve = initial_bid + self._price(rng, count)
        date_time = self._event_time_ms(rng, n)
        mean_ms = int(cfg.mean_auction_duration_s * 1000)
        if self._skewed:  # Lomax with this shape has mean 1 / (shape - 1)
            scale = mean_ms * (AUCTION_LENGTH_TAIL - 1)
            length = 1 + (rng.pareto(AUCTION_LENGTH_TAIL, size=count) * scale).astype(np.int64)
        else:
            length = rng.integers(1, 2 * mean_ms + 1, size=count)
        expires = date_time + length
        category = FIRST_CATEGORY_ID + rng.integers(0, cfg.num_categories, size=count)
        return pa.Table.from_arrays(
            [
                pa.array(ids),
                _random_strings(rng, count, 20),
                _random_strings(rng, count, 100),
                pa.array(initial_bid),
                pa.array(reserve),
                _timestamps(date_time),
                _timestamps(expires),
                pa.array(seller),
                pa.array(category),
                self._extra(rng, "auctions", count),
            ],
            schema=AUCTION_CHUNK_SCHEMA,
        )

    def _persons(self, rng: np.random.Generator, n: np.ndarray) -> pa.Table:
        import pyarrow.compute as pc

        count = n.size
        ids = self._id(FIRST_PERSON_ID, n // PROPORTION_DENOMINATOR)
        name = pc.binary_join_element_wise(
            self._first_names.take(rng.integers(0, len(FIRST_NAMES), size=count)),
            self._last_names.take(rng.integers(0, len(LAST_NAMES), size=count)),
            " ",
        )
        email = _template_strings(rng, count, "aaaaaaa@aaaaa.com")
        credit_card = _template_strings(rng, count, "9999 9999 9999 9999")
        city = self._cities.take(rng.integers(0, len(US_CITIES), size=count))
        state = self._states.take(rng.integers(0, len(US_STATES), size=count))
        return pa.Table.from_arrays(
            [
                pa.array(ids),
                name,
                email,
                credit_card,
                city,
                state,
                _timestamps(self._event_time_ms(rng, n)),
                self._extra(rng, "persons", count),
            ],
            schema=PERSON_CHUNK_SCHEMA,
        )
