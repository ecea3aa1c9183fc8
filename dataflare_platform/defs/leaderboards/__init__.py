"""Leaderboards domain: hourly batch statistics computed from the event store."""
