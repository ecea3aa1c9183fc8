"""SQL identifiers spliced into statements, validated and quoted in one place.

Values always travel as parameters; table and column names cannot, so every name that
reaches a statement goes through ``quote_identifier``. Names from users are validated
earlier, at load, against ``SQL_IDENTIFIER`` / ``SQL_COLUMN`` below (the connector
settings, the governance dataset references and the replay models use them); quoting
here is the second wall, so that a name that skipped validation (a Python caller, a
future setting) can still never end the quoted name and append SQL.
"""

from dataflare_platform.errors import InvalidInputError

# Lower-case SQL identifiers: the same with or without quotes, so the table a user queries
# by hand (unquoted, folded to lower case) is the table the sink writes. ASCII only (no
# lookalike letters), no dot (a dotted name would reach another schema or an ATTACHed
# database), no quote, semicolon, comment or space. Tables and schemas from config.
SQL_IDENTIFIER = r"^[a-z_][a-z0-9_]*$"

# Column names from config (upsert keys, time columns): pipelines keep their data's own
# spelling, so upper case is allowed; still ASCII letters, digits and ``_`` only.
SQL_COLUMN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


def quote_identifier(name: str) -> str:
    """``name`` as one double-quoted SQL identifier (DuckDB and PostgreSQL rules: an
    embedded ``"`` is doubled). An empty name or one holding a NUL byte is refused."""
    if not name or "\x00" in name:
        raise InvalidInputError(f"not a usable SQL identifier: {name!r}")
    return '"' + name.replace('"', '""') + '"'
