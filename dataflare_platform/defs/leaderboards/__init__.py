"""Leaderboards domain: hourly batch statistics computed from the event store."""

from dataflare_platform.defs.leaderboards.definitions import defs

__all__ = ["defs"]
