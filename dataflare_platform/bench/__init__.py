"""Benchmarks: each prints one JSON object, measured against a baseline in the same process."""
