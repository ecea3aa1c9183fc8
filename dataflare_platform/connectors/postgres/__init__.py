"""PostgreSQL: a table (plus ``<table>_side`` and the checkpoint) written exactly once,
one transaction per checkpoint (see ``sink``).

    sink:
      kind: postgres
      dsn: postgresql://dataflare@127.0.0.1:5432/dataflare   # or ${ENV} in components
      table: hot_items
      upsert_keys: [auction]                                 # optional
      tls: {ca_file: /etc/dataflare/tls/ca.pem}              # optional: sslmode verify-full

``tls`` (``dataflare_platform.tls.TlsSettings``) also takes a client certificate and key for
mutual TLS and a ``server_name``; docs/security.md, "Transport".
"""

from __future__ import annotations

from dataflare_platform.connectors.postgres.sink import (
    PostgresSink,
    PostgresSinkSettings,
    PostgresUnavailableError,
    connect,
    describe_dsn,
)
from dataflare_platform.connectors.settings import OpenContext

__all__ = [
    "PostgresSink",
    "PostgresSinkSettings",
    "PostgresUnavailableError",
    "connect",
    "describe_dsn",
    "open_sink",
]


def open_sink(settings: PostgresSinkSettings, context: OpenContext) -> PostgresSink:
    return PostgresSink(
        settings.dsn,
        settings.table,
        settings.schema_name,
        settings.upsert_keys,
        connect_timeout_s=settings.connect_timeout_s,
        lock_timeout_s=settings.lock_timeout_s,
        tls=settings.tls,
        password=settings.password,
    )
