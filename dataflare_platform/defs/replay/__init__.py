"""Replay domain: re-process a range of a pipeline's topics as a Dagster job."""
