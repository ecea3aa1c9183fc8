"""SQL identifiers spliced into statements, quoted in one place.

Values always travel as parameters; table and column names cannot, so every name that
reaches a statement goes through ``quote_identifier``. Names from users are validated
earlier, at load (``connectors.settings.SQL_IDENTIFIER``, the governance and replay
models); quoting here is the second wall, so that a name that skipped validation (a
Python caller, a future setting) can still never end the quoted name and append SQL.
"""

from dataflare_platform.errors import InvalidInputError


def quote_identifier(name: str) -> str:
    """``name`` as one double-quoted SQL identifier (DuckDB and PostgreSQL rules: an
    embedded ``"`` is doubled). An empty name or one holding a NUL byte is refused."""
    if not name or "\x00" in name:
        raise InvalidInputError(f"not a usable SQL identifier: {name!r}")
    return '"' + name.replace('"', '""') + '"'
