"""Replay domain: re-process a range of a pipeline's topics as a Dagster job."""

from dataflare_platform.defs.replay.definitions import defs

__all__ = ["defs"]
