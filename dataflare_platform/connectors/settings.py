"""Identifier rules shared by the connectors' settings (validation itself is
``dataflare_platform.models.validated``: a bad value is refused at construction with a
``ConfigError`` naming the field, before anything is opened or written)."""

from __future__ import annotations

# Lower-case SQL identifiers: the same with or without quotes, so the table a user queries
# by hand (unquoted, folded to lower case) is the table the sink writes.
SQL_IDENTIFIER = r"^[a-z_][a-z0-9_]*$"
PG_MAX_IDENTIFIER = 63  # NAMEDATALEN - 1: PostgreSQL silently truncates longer names
