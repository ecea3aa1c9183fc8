"""Generator settings, validated at load so a bad value is refused with its field name."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
)

from dataflare_platform.models import StrictModel, validated
from dataflare_platform.times import as_utc, epoch_ms
from dataflare_platform.yaml_files import load_yaml_mapping

# Nexmark's event mix: out of every 50 consecutive events, 1 person, 3 auctions, 46 bids.
PERSON_PROPORTION = 1
AUCTION_PROPORTION = 3
BID_PROPORTION = 46
PROPORTION_DENOMINATOR = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION


class NexmarkConfig(StrictModel):
    """Knobs of the Nexmark model; defaults follow the reference Nexmark generator."""

    events: PositiveInt = Field(1_000_000, description="Total events (persons+auctions+bids).")
    seed: NonNegativeInt = Field(42, description="Same seed and settings give the same data.")
    chunk_events: PositiveInt = Field(
        1_000_000, le=50_000_000, description="Events per generated chunk (one file per kind)."
    )
    first_event_time: datetime = Field(
        datetime(2026, 1, 1, tzinfo=UTC), description="Event time of event 0 (UTC)."
    )
    events_per_second: PositiveFloat = Field(
        10_000.0, description="Event-time rate: how densely events are spread over time."
    )
    max_out_of_order_ms: NonNegativeInt = Field(
        2_000, description="Each event's time is pulled back by up to this much (jitter)."
    )
    active_people: PositiveInt = Field(1_000, description="Recent persons that bid/sell.")
    in_flight_auctions: PositiveInt = Field(100, description="Recent auctions open for bids.")
    hot_auction_ratio: PositiveInt = Field(2, description="1 - 1/r of bids go to a hot auction.")
    hot_bidder_ratio: PositiveInt = Field(4, description="1 - 1/r of bids come from a hot bidder.")
    hot_seller_ratio: PositiveInt = Field(4, description="1 - 1/r of auctions by a hot seller.")
    num_categories: PositiveInt = Field(5, description="Auction categories (ids from 10).")
    mean_auction_duration_s: PositiveFloat = Field(600.0, description="Mean auction length.")
    late_fraction: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Share of events whose time is pulled back (by up to max_out_of_order_ms).",
    )
    shape: Literal["nexmark", "skewed"] = Field(
        "nexmark",
        description=(
            "nexmark: the reference generator's id and skew rules. skewed: a stream unlike"
            " it, for checking that nothing relies on them: Zipf-popular auctions, bidders,"
            " sellers and channels (some hot for the whole run, long after they closed),"
            " sparse non-sequential ids, heavy-tailed auction lengths, channel names in"
            " mixed case and urls of several shapes, some without a channel id."
        ),
    )
    zipf_exponent: float = Field(
        1.2, gt=1.0, le=4.0, description="Zipf exponent of the skewed shape's picks."
    )
    format: Literal["parquet", "ipc"] = Field("parquet", description="Output file format.")

    @field_validator("first_event_time")
    @classmethod
    def _as_utc(cls, value: datetime) -> datetime:
        return as_utc(value)

    @property
    def first_event_ms(self) -> int:
        return epoch_ms(self.first_event_time)

    @property
    def num_chunks(self) -> int:
        return -(-self.events // self.chunk_events)

    def chunk_range(self, index: int) -> tuple[int, int]:
        """Event numbers [start, stop) of chunk ``index``."""
        start = index * self.chunk_events
        return start, min(start + self.chunk_events, self.events)

    @classmethod
    def load(cls, data: dict[str, Any] | None = None, **overrides: Any) -> NexmarkConfig:
        """Validate a mapping (e.g. parsed YAML), raising ConfigError naming bad fields."""
        merged = {**(data or {}), **{k: v for k, v in overrides.items() if v is not None}}
        return validated(cls, "generator config", merged)

    @classmethod
    def from_yaml(cls, path: Path, **overrides: Any) -> NexmarkConfig:
        return cls.load(load_yaml_mapping(path, "generator config"), **overrides)
