"""Nexmark-style event generator: deterministic, vectorised, chunked."""

from dataflare_platform.datagen.config import NexmarkConfig
from dataflare_platform.datagen.nexmark import NexmarkChunk, NexmarkGenerator
from dataflare_platform.datagen.schemas import AUCTION_SCHEMA, BID_SCHEMA, PERSON_SCHEMA, SCHEMAS
from dataflare_platform.datagen.writer import GenerationSummary, write_nexmark

__all__ = [
    "AUCTION_SCHEMA",
    "BID_SCHEMA",
    "PERSON_SCHEMA",
    "SCHEMAS",
    "GenerationSummary",
    "NexmarkChunk",
    "NexmarkConfig",
    "NexmarkGenerator",
    "write_nexmark",
]
