"""The PostgreSQL sink over TLS, against a throwaway PostgreSQL 15 started here with
``ssl = on`` and ``hostssl`` lines only (``tls_servers``; one server for the module):

- a pipeline run commits over verify-full TLS, and the sink contract passes over it;
- a server certificate from an unknown CA, a wrong server name under verify-full, and a
  role that needs a client certificate connecting without one (or with one from another
  CA) are all refused with a one-line error that says why and shows no secret;
- ``verify-ca`` accepts the wrong name (documented: it checks the chain only).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import polars as pl
import psycopg
import pytest

from dataflare_platform.connectors import postgres as postgres_connector
from dataflare_platform.connectors.postgres.sink import (
    PostgresSink,
    PostgresUnavailableError,
    tls_conninfo,
)
from dataflare_platform.connectors.settings import OpenContext
from dataflare_platform.engine import Runner, RunnerConfig
from dataflare_platform.queries.nexmark import BUILDERS
from dataflare_platform.secrets import PlatformSecretRef
from dataflare_platform.sql_names import quote_identifier
from dataflare_platform.tls import TlsSettings
from dataflare_platform_tests.connectors.contract import SinkCase, TransactionalSinkContract
from dataflare_platform_tests.connectors.sink_helpers import collect, same_rows, sources
from dataflare_platform_tests.tls_ca import TestCA
from dataflare_platform_tests.tls_servers import TlsPostgres, running_tls_postgres

pytestmark = pytest.mark.e2e
CONFIG = RunnerConfig(batch_rows=100, checkpoint_every=3)
SECRET = "pg-secret-4f1d"  # a recognisable password (trust auth ignores it)
SECRET_VAR = (
    "DATAFLARE_SECRET_TEST_PG_TLS"  # the password comes from a reference, as settings require
)


@pytest.fixture(autouse=True)
def _secret_in_env(monkeypatch) -> None:
    monkeypatch.setenv(SECRET_VAR, SECRET)


@pytest.fixture(scope="module")
def tls_pg(test_ca: TestCA) -> Iterator[TlsPostgres]:
    with running_tls_postgres(test_ca) as server:
        yield server


def mtls(ca: TestCA, **values) -> TlsSettings:
    return TlsSettings(**ca.client_tls(**values))


def mtls_dsn(server: TlsPostgres) -> str:
    return f"postgresql://{server.mtls_user}@127.0.0.1:{server.port}/{server.dbname}"


@pytest.fixture
def schema(tls_pg, test_ca) -> Iterator[str]:
    name = f"tls_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(tls_conninfo(mtls_dsn(tls_pg), mtls(test_ca)), autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {quote_identifier(name)} CASCADE")


def refused(dsn: str, tls: TlsSettings) -> str:
    sink = PostgresSink(
        dsn, "out", tls=tls, connect_timeout_s=30, password=PlatformSecretRef(env=SECRET_VAR)
    )
    with pytest.raises(PostgresUnavailableError) as caught:
        sink.open("p")
    message = str(caught.value)
    assert SECRET not in message
    return message


def test_a_pipeline_commits_over_mutual_tls(tls_pg, test_ca, schema, small_nexmark):
    settings = postgres_connector.PostgresSinkSettings(
        dsn=mtls_dsn(tls_pg),
        table="q1",
        schema_name=schema,
        tls=mtls(test_ca),
        password={"env": SECRET_VAR},
    )
    sink = postgres_connector.open_sink(settings, OpenContext("tls"))
    result = Runner(BUILDERS["q1"](sources("q1", small_nexmark), sink), CONFIG).run()
    assert result.finished and result.metrics.checkpoints > 1
    sink.close()
    with psycopg.connect(tls_conninfo(settings.dsn, settings.tls), autocommit=True) as conn:
        # The session really is TLS, with this client's certificate.
        ssl_row = conn.execute(
            "SELECT ssl, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone()
        cur = conn.execute(f"SELECT * FROM {quote_identifier(schema)}.q1")
        names = [d.name for d in cur.description]
        got = pl.DataFrame(cur.fetchall(), schema=names, orient="row", infer_schema_length=None)
    assert ssl_row == (True, "/CN=dataflare")
    expected = collect("q1", small_nexmark, CONFIG)
    assert expected.height > 0 and same_rows(got, expected)


def test_server_side_tls_alone_works_for_a_role_without_clientcert(tls_pg, test_ca):
    conn = postgres_connector.connect(tls_pg.dsn(), tls=TlsSettings(ca_file=test_ca.ca))
    with conn:
        assert conn.execute("SHOW ssl").fetchone() == ("on",)
        assert conn.pgconn.ssl_in_use


def test_an_unknown_ca_is_refused(tls_pg, test_ca):
    message = refused(
        mtls_dsn(tls_pg), mtls(test_ca).model_copy(update={"ca_file": test_ca.rogue_ca})
    )
    assert "certificate verify failed" in message
    assert f"127.0.0.1:{tls_pg.port}" in message


def test_a_wrong_server_name_is_refused_under_verify_full(tls_pg, test_ca):
    message = refused(mtls_dsn(tls_pg), mtls(test_ca, server_name="db.elsewhere.example"))
    assert "does not match host name" in message and "db.elsewhere.example" in message
    # verify-ca checks the chain only: the same name passes (why it is not the default).
    sink = PostgresSink(
        mtls_dsn(tls_pg),
        "out",
        tls=mtls(test_ca, server_name="db.elsewhere.example", mode="verify-ca"),
    )
    conn = postgres_connector.connect(sink.settings.dsn, tls=sink.settings.tls)
    conn.close()


def test_mutual_tls_needs_the_client_certificate(tls_pg, test_ca):
    message = refused(mtls_dsn(tls_pg), TlsSettings(ca_file=test_ca.ca))
    assert "requires a valid client certificate" in message
    foreign = TlsSettings(
        ca_file=test_ca.ca, cert_file=test_ca.rogue_client_cert, key_file=test_ca.rogue_client_key
    )
    message = refused(mtls_dsn(tls_pg), foreign)
    assert "unknown ca" in message  # the server refused our certificate's issuer


def test_the_server_speaks_no_plain_text(tls_pg):
    with pytest.raises(PostgresUnavailableError, match=r"no pg_hba\.conf entry"):
        postgres_connector.connect(tls_pg.dsn() + "?sslmode=disable")


class TestPostgresTlsSinkContract(TransactionalSinkContract):
    """The sink contract (stop/resume, uncommitted writes vanish, SIGKILL and restart)
    over mutual TLS, opened through the registry from ``kind:`` settings with a tls block."""

    KIND = "postgres"

    @pytest.fixture
    def sink_case(self, tls_pg, test_ca, schema) -> SinkCase:
        settings = postgres_connector.PostgresSinkSettings(
            dsn=mtls_dsn(tls_pg),
            table="out",
            schema_name=schema,
            tls=mtls(test_ca),
            password={"env": SECRET_VAR},
        )
        conninfo = tls_conninfo(settings.dsn, mtls(test_ca))

        def read() -> pl.DataFrame:
            with psycopg.connect(conninfo) as conn:
                cur = conn.execute(f"SELECT * FROM {quote_identifier(schema)}.out")
                names = [d.name for d in cur.description]
                rows = cur.fetchall()
            return pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None)

        return SinkCase(
            open=lambda: postgres_connector.open_sink(settings, OpenContext("contract")),
            read=read,
            settings=settings.model_dump(mode="json"),
        )
