"""Nexmark domain: landed event files → DuckDB tables → daily statistics, with checks."""

from dataflare_platform.defs.nexmark.definitions import defs

__all__ = ["defs"]
