"""DuckDB warehouse: loading landed event files and computing batch statistics."""
