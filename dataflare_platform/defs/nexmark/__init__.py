"""Nexmark domain: landed event files → DuckDB tables → daily statistics, with checks."""
