"""PostgreSQL sink: exactly-once output through one transaction per checkpoint.

Like ``DuckDBSink``, everything the runner hands over between two checkpoints (output,
late rows, dead letters) is written together with the checkpoint in one transaction:

    BEGIN
      [CREATE TABLE <table> ...]                      -- first output only, from Arrow
      COPY <table> FROM STDIN (FORMAT BINARY)         -- or COPY into a staging table and
                                                      -- INSERT ... ON CONFLICT (upsert)
      COPY <table>_side FROM STDIN (FORMAT BINARY)    -- late rows and dead letters
      INSERT INTO dataflare_checkpoints ... ON CONFLICT DO UPDATE
    COMMIT

A crash anywhere before COMMIT leaves none of it; ``open()`` returns the checkpoint of
the last COMMIT, and the runner replays from its offsets. Output in PostgreSQL is
therefore exactly the output of one uninterrupted run.

One writer per table and checkpoint: ``open()`` takes a session advisory lock on
``schema.table`` and the pipeline's checkpoint key, so a second process of the same
pipeline (say, a restarted run while the first is still alive) waits for it and then fails
instead of interleaving commits. The lock dies with the session, so a killed writer never
holds it for long. Partition-parallel workers (``streams.workers``) checkpoint each
partition under its own key, so they append to one table side by side, each exactly once.

Checkpoints are keyed by pipeline *and* table: several sinks may share one database and
one ``dataflare_checkpoints`` table per schema.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import re
import socket
import time
from typing import Annotated, Any, Literal

import polars as pl
import psycopg
import pyarrow as pa
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import (
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    field_validator,
    model_validator,
)

from dataflare_platform.connectors.postgres.pgcopy import iter_binary, pg_type
from dataflare_platform.connectors.settings import (
    PG_MAX_IDENTIFIER,
    SQL_COLUMN,
    SQL_IDENTIFIER,
    ConnectorSettings,
)
from dataflare_platform.engine.checkpoint import STORED_COMPRESSION, Checkpoint
from dataflare_platform.engine.io import TransactionalSink, newest_per_key
from dataflare_platform.errors import ConflictError, DataflareError, InvalidInputError
from dataflare_platform.models import validated
from dataflare_platform.observability.connectors import for_connector
from dataflare_platform.secrets import HINT as SECRET_HINT
from dataflare_platform.secrets import PlatformSecretRef, redact, url_credential_problem
from dataflare_platform.tls import TlsSettings

# libpq's own TLS parameters: with a ``tls`` block they come from it alone.
LIBPQ_TLS_PARAMS = frozenset(
    {"sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "sslcrldir", "sslsni", "hostaddr"}
)
CHECKPOINT_TABLE = "dataflare_checkpoints"
SIDE_SUFFIX = "_side"
_DDL_LOCK = 0x0DF_C0DE  # serialises CREATE ... IF NOT EXISTS across concurrent sinks

# What binary COPY sends for each PostgreSQL type of an existing table: the wire format
# must match the column type exactly, so output is cast to these first.
_ARROW_FOR_PG = {
    "bool": pa.bool_(),
    "int2": pa.int16(),
    "int4": pa.int32(),
    "int8": pa.int64(),
    "float4": pa.float32(),
    "float8": pa.float64(),
    "text": pa.large_string(),
    "varchar": pa.large_string(),
    "bytea": pa.large_binary(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "time": pa.time64("us"),
}


class PostgresUnavailableError(DataflareError, ConnectionError):
    """The server could not be reached or refused the connection (message says where)."""


class PostgresSinkSettings(ConnectorSettings):
    """Where and how the sink writes; refused at construction naming the bad field."""

    model_config = ConfigDict(hide_input_in_errors=True)

    kind: Literal["postgres"] = "postgres"
    dsn: str = Field(min_length=1, description="libpq URL or key=value connection string.")
    table: str = Field(
        pattern=SQL_IDENTIFIER,
        max_length=PG_MAX_IDENTIFIER - len(SIDE_SUFFIX),  # room for the side table's name
        description="Output table (created from the output's Arrow schema if missing).",
    )
    schema_name: str = Field("public", pattern=SQL_IDENTIFIER, max_length=PG_MAX_IDENTIFIER)
    upsert_keys: list[Annotated[str, Field(pattern=SQL_COLUMN)]] | None = Field(
        None, min_length=1, description="Key columns: the table keeps each key's newest row."
    )
    connect_timeout_s: PositiveFloat = 10.0
    lock_timeout_s: NonNegativeFloat = Field(
        30.0, description="How long open() waits for another writer of the table to finish."
    )
    tls: TlsSettings | None = Field(
        None, description="TLS (sslmode verify-full by default, CA, client certificate)"
    )

    @model_validator(mode="after")
    def _tls_in_one_place(self) -> PostgresSinkSettings:
        if self.tls is not None:
            tls_conflicts(self.dsn)
        return self

    # The password never sits in ``dsn`` (refused at load): a reference read at connect.
    password: PlatformSecretRef | None = Field(None, description="{env: ...} or {file: ...}")

    @field_validator("dsn")
    @classmethod
    def _parses(cls, value: str) -> str:
        if "://" in value and (problem := url_credential_problem(value)) is not None:
            raise ValueError(problem)  # also a raw '/', '?' or '#' ending the host part early
        try:
            conninfo_to_dict(value)
        except psycopg.ProgrammingError as err:
            # libpq quotes the offending part of the string, which may be a password: its
            # message without the quoted parts.
            said = re.sub(r'"[^"]*"', '"..."', str(err).strip())
            raise ValueError(f"not a PostgreSQL connection string ({said})") from None
        if conninfo_to_dict(value).get("password") is not None:
            raise ValueError(f"the connection string carries a password; {SECRET_HINT}")
        return value

    @field_validator("upsert_keys")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("upsert keys must be distinct")
        return value


def describe_dsn(dsn: str) -> str:
    """``user@host:port/dbname`` without the password, for error messages."""
    d = conninfo_to_dict(dsn)
    host = d.get("host") or d.get("hostaddr") or "localhost"
    return f"{d.get('user', '')}@{host}:{d.get('port') or 5432}/{d.get('dbname', '')}"


def tls_conflicts(dsn: str) -> None:
    """Refuse a dsn that sets libpq TLS parameters next to a ``tls`` block: two places
    saying how a connection is verified would let the weaker one win unnoticed."""
    try:
        given = set(conninfo_to_dict(dsn)) & LIBPQ_TLS_PARAMS
    except psycopg.ProgrammingError:
        return  # the dsn's own check says what is wrong with it
    if given:
        raise InvalidInputError(
            f"tls is set: remove {sorted(given)} from the dsn (the tls block says how the"
            " connection is protected)"
        )


def tls_conninfo(dsn: str, tls: TlsSettings) -> str:
    """``dsn`` with the libpq parameters of ``tls``. A ``server_name`` becomes libpq's
    ``host`` (the name verify-full checks) while ``hostaddr`` keeps dialling the dsn's
    host, resolved here when it is a name."""
    params: dict[str, Any] = dict(tls.libpq_params())
    if tls.server_name:
        host = conninfo_to_dict(dsn).get("host") or "localhost"
        if "," in host or host.startswith("/"):
            raise InvalidInputError(
                "tls.server_name needs a dsn with one TCP host (not a list or a socket)"
            )
        try:
            address = str(ipaddress.ip_address(host))
        except ValueError:
            try:
                address = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0]
            except OSError as err:
                raise PostgresUnavailableError(
                    f"PostgreSQL host {host!r} does not resolve ({err.strerror})"
                ) from None
        params["host"] = tls.server_name
        params["hostaddr"] = address
    return make_conninfo(dsn, **params)


def connect(
    dsn: str,
    connect_timeout_s: float = 10.0,
    tls: TlsSettings | None = None,
    **kwargs: Any,
) -> psycopg.Connection:
    """A connection with UTF-8 text (what binary COPY's text cells are), protected as
    ``tls`` says (the dsn as it is when None), or an error that says which server could
    not be reached and why."""
    conninfo = tls_conninfo(dsn, tls) if tls is not None else dsn
    try:
        return psycopg.connect(
            conninfo,
            connect_timeout=max(1, round(connect_timeout_s)),
            client_encoding="UTF8",
            application_name="dataflare",
            **kwargs,
        )
    except psycopg.OperationalError as err:
        said = redact(str(err).strip(), kwargs.get("password"))
        raise PostgresUnavailableError(
            f"PostgreSQL at {describe_dsn(dsn)} is not reachable: {said}"
        ) from None


class PostgresSink(TransactionalSink):
    """Output, side rows and checkpoint in PostgreSQL, one transaction per commit.

    ``upsert_keys`` makes the table keyed: each commit inserts or replaces the newest row
    per key (``INSERT ... ON CONFLICT DO UPDATE`` from a staging table), for updating
    results such as q4's average price per category. A table the sink creates gets the
    keys as its primary key (so they must not be null); an existing table needs a
    unique index on exactly those columns.

    Output is cast to the types of an existing table (safely: an overflow fails the
    commit), and a table created here maps Arrow types as ``pgcopy.pg_type`` says.
    """

    def __init__(
        self,
        dsn: str,
        table: str,
        schema_name: str = "public",
        upsert_keys: list[str] | None = None,
        *,
        connect_timeout_s: float = 10.0,
        lock_timeout_s: float = 30.0,
        tls: TlsSettings | None = None,
        password: PlatformSecretRef | None = None,
    ) -> None:
        self.settings = validated(
            PostgresSinkSettings,
            "PostgreSQL sink settings",
            {
                "dsn": dsn,
                "table": table,
                "schema_name": schema_name,
                "upsert_keys": upsert_keys,
                "connect_timeout_s": connect_timeout_s,
                "lock_timeout_s": lock_timeout_s,
                "tls": tls,
                "password": password,
            },
        )
        s = self.settings
        self.target = sql.Identifier(s.schema_name, s.table)
        self.side_target = sql.Identifier(s.schema_name, s.table + SIDE_SUFFIX)
        self._checkpoints = sql.Identifier(s.schema_name, CHECKPOINT_TABLE)
        self._conn: psycopg.Connection | None = None
        self._columns: dict[str, pa.DataType] | None = None  # target table, once it exists
        self._pipeline = ""
        self._metrics = for_connector("postgres", f"{s.schema_name}.{s.table}")

    # -- Sink ----------------------------------------------------------------------------
    def open(self, pipeline: str) -> Checkpoint | None:
        s = self.settings
        self.close()
        self.discard_pending()
        self._pipeline = pipeline
        login = {"password": s.password.read()} if s.password is not None else {}
        conn = connect(s.dsn, s.connect_timeout_s, s.tls, **login)
        try:
            self._lock(conn, pipeline)
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", [_DDL_LOCK])
                cur.execute(
                    "SELECT 1 FROM pg_namespace WHERE nspname = %s", [s.schema_name]
                )  # CREATE SCHEMA IF NOT EXISTS needs the privilege even when it exists
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(s.schema_name)))
                cur.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} (pipeline text NOT NULL,"
                        " target text NOT NULL, state bytea NOT NULL,"
                        " committed_at timestamptz NOT NULL DEFAULT now(),"
                        " PRIMARY KEY (pipeline, target))"
                    ).format(self._checkpoints)
                )
                cur.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} (kind text, operator text,"
                        " reason text, payload text)"
                    ).format(self.side_target)
                )
                self._columns = self._existing_columns(cur)
                cur.execute(
                    sql.SQL("SELECT state FROM {} WHERE pipeline = %s AND target = %s").format(
                        self._checkpoints
                    ),
                    [pipeline, s.table],
                )
                row = cur.fetchone()
            conn.commit()
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return Checkpoint.decode(bytes(row[0])) if row else None

    def commit_batch(
        self, output: pl.DataFrame | None, side: pl.DataFrame | None, checkpoint: Checkpoint
    ) -> None:
        conn = self._conn
        assert conn is not None, "open() first"
        columns_before = self._columns
        try:
            with self._metrics.request("commit"), conn.cursor() as cur:
                if output is not None:
                    out = newest_per_key(output, self.settings.upsert_keys)
                    self._write_output(cur, out.to_arrow())
                if side is not None:
                    rows = side.to_arrow()
                    self._copy(cur, self.side_target, rows.cast(_text_schema(rows.schema)))
                self._upsert_checkpoint(cur, checkpoint)
                conn.commit()
        except BaseException:
            self._columns = columns_before  # a table created in the rolled-back transaction
            with contextlib.suppress(psycopg.Error):  # is gone; the connection may be too
                conn.rollback()
            raise

    def _upsert_checkpoint(self, cur: psycopg.Cursor, checkpoint: Checkpoint) -> None:
        """This sink's checkpoint row (the key ``open()`` was given), inserted or replaced
        in the caller's transaction."""
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (pipeline, target, state) VALUES (%s, %s, %b)"
                " ON CONFLICT (pipeline, target) DO UPDATE"
                " SET state = EXCLUDED.state, committed_at = now()"
            ).format(self._checkpoints),
            [self._pipeline, self.settings.table, checkpoint.encode(STORED_COMPRESSION)],
        )

    def split_checkpoint(self, retired: Checkpoint, units: dict[str, Checkpoint]) -> None:
        """Write ``retired`` under the key ``open()`` was given (replacing its checkpoint,
        if any) and add ``units`` (new keys), in one transaction: a crash leaves either
        layout, never a mix. Refused (``ConflictError``) when a unit key already has a
        checkpoint: that progress would be overwritten. The unit rows go in first and the
        retired row last."""
        conn = self._conn
        assert conn is not None, "open() first"
        table = self.settings.table
        try:
            with conn.cursor() as cur:
                cur.execute(
                    sql.SQL(
                        "SELECT pipeline FROM {} WHERE target = %s AND pipeline = ANY(%s)"
                    ).format(self._checkpoints),
                    [table, sorted(units)],
                )
                taken = sorted(row[0] for row in cur.fetchall())
                if taken:
                    raise ConflictError(
                        f"checkpoints {taken} already exist in {self.settings.schema_name}."
                        f"{table}: splitting {self._pipeline!r} would overwrite their progress"
                    )
                for key, checkpoint in units.items():
                    cur.execute(
                        sql.SQL(
                            "INSERT INTO {} (pipeline, target, state) VALUES (%s, %s, %b)"
                        ).format(self._checkpoints),
                        [key, table, checkpoint.encode(STORED_COMPRESSION)],
                    )
                self._upsert_checkpoint(cur, retired)
                conn.commit()
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
            raise

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()  # also releases the writer lock
            self._conn = None

    # -- helpers -------------------------------------------------------------------------
    def _lock(self, conn: psycopg.Connection, pipeline: str) -> None:
        s = self.settings
        key = int.from_bytes(
            hashlib.blake2b(
                f"dataflare-sink:{s.schema_name}.{s.table}\0{pipeline}".encode(), digest_size=8
            ).digest(),
            "big",
            signed=True,
        )
        deadline = time.monotonic() + s.lock_timeout_s
        while True:
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()
            conn.commit()
            if got and got[0]:
                return
            if time.monotonic() >= deadline:
                raise ConflictError(
                    f"another writer of pipeline checkpoint {pipeline!r} holds "
                    f"{s.schema_name}.{s.table} (waited {s.lock_timeout_s:g} s): one running "
                    "writer per table and checkpoint"
                )
            time.sleep(0.2)

    def _existing_columns(self, cur: psycopg.Cursor) -> dict[str, pa.DataType] | None:
        cur.execute(
            "SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
            " WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped"
            " ORDER BY a.attnum",
            [f'"{self.settings.schema_name}"."{self.settings.table}"'],
        )
        rows = cur.fetchall()
        if not rows:
            return None
        columns: dict[str, pa.DataType] = {}
        for name, typname in rows:
            arrow = _ARROW_FOR_PG.get(typname)
            if arrow is not None:
                columns[name] = arrow
        if self.settings.upsert_keys and not self._has_unique_key(cur):
            raise InvalidInputError(
                f"{self.settings.schema_name}.{self.settings.table} exists without a unique"
                f" index on {self.settings.upsert_keys}: an upsert sink needs one"
            )
        return columns

    def _has_unique_key(self, cur: psycopg.Cursor) -> bool:
        cur.execute(
            "SELECT 1 FROM pg_index i WHERE i.indrelid = to_regclass(%s) AND i.indisunique"
            " AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a"
            "      WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)) = %s",
            [
                f'"{self.settings.schema_name}"."{self.settings.table}"',
                sorted(self.settings.upsert_keys or []),
            ],
        )
        return cur.fetchone() is not None

    def _write_output(self, cur: psycopg.Cursor, out: pa.Table) -> None:
        keys = self.settings.upsert_keys or []
        missing_keys = [k for k in keys if k not in out.column_names]
        if missing_keys:
            raise InvalidInputError(f"upsert keys {missing_keys} are not output columns")
        if self._columns is None:
            self._create(cur, out.schema)
        assert self._columns is not None
        unknown = [c for c in out.column_names if c not in self._columns]
        if unknown:
            raise InvalidInputError(
                f"output columns {unknown} are not in {self.settings.schema_name}."
                f"{self.settings.table} (or have a type the sink cannot write)"
            )
        out = _cast_to(out, self._columns)
        if not keys:
            self._copy(cur, self.target, out)
            return
        stage = sql.Identifier("_dataflare_stage")
        cur.execute(
            sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(stage, self.target)
        )
        self._copy(cur, stage, out)
        columns = sql.SQL(", ").join(map(sql.Identifier, out.column_names))
        others = [c for c in out.column_names if c not in keys]
        action = (
            sql.SQL("DO UPDATE SET ")
            + sql.SQL(", ").join(
                sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
                for c in others
            )
            if others
            else sql.SQL("DO NOTHING")
        )
        cur.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ({}) ").format(
                self.target,
                columns,
                columns,
                stage,
                sql.SQL(", ").join(map(sql.Identifier, keys)),
            )
            + action
        )

    def _create(self, cur: psycopg.Cursor, schema: pa.Schema) -> None:
        """The table from the output's Arrow schema (inside the commit's transaction),
        unless another writer of the table (a partition-parallel worker) created it
        meanwhile: the DDL lock orders them, the later one uses the existing table."""
        cur.execute("SELECT pg_advisory_xact_lock(%s)", [_DDL_LOCK])
        self._columns = self._existing_columns(cur)
        if self._columns is not None:
            return
        keys = self.settings.upsert_keys or []
        defs = [
            sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(pg_type(f))) for f in schema
        ]
        if keys:
            defs.append(
                sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, keys)))
            )
        cur.execute(sql.SQL("CREATE TABLE {} ({})").format(self.target, sql.SQL(", ").join(defs)))
        self._columns = self._existing_columns(cur)

    @staticmethod
    def _copy(cur: psycopg.Cursor, target: sql.Identifier, table: pa.Table) -> None:
        columns = sql.SQL(", ").join(map(sql.Identifier, table.column_names))
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(target, columns)
        with cur.copy(statement) as copy:
            for piece in iter_binary(table):
                copy.write(piece)


def _text_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, pa.large_string()) for f in schema])


def _cast_to(table: pa.Table, types: dict[str, pa.DataType]) -> pa.Table:
    """Cast to the table's wire types: safely (an int64 too big for an integer column
    raises), except that times finer than PostgreSQL's microseconds are truncated."""
    columns = []
    for name in table.column_names:
        column, target = table.column(name), types[name]
        temporal = pa.types.is_temporal(column.type) and pa.types.is_temporal(target)
        columns.append(column.cast(target, safe=not temporal))
    return pa.Table.from_arrays(columns, names=table.column_names)
