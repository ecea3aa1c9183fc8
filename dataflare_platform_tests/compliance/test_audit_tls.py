"""The audit log and the audit anchor, the platform's PostgreSQL connections outside
the connectors, over TLS: libpq's TLS parameters in their urls are checked when they
open with the connectors' rules (``dataflare_platform.tls.check_libpq_url``), a host that is not
loopback needs verified TLS, and both work against a throwaway TLS-only PostgreSQL
(``tls_servers``) while a server certificate from another CA is refused in one line."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from dataflare_platform.compliance.audit import AuditLog
from dataflare_platform.compliance.audit_anchor import (
    AnchorError,
    open_anchor,
    setup_postgres_anchor,
)
from dataflare_platform.errors import ConfigError
from dataflare_platform_tests.tls_ca import TestCA
from dataflare_platform_tests.tls_servers import TlsPostgres, running_tls_postgres

SECRET = "anchor-secret-0b7f"  # a recognisable password in the urls


@pytest.fixture(scope="module")
def tls_pg(test_ca: TestCA) -> Iterator[TlsPostgres]:
    with running_tls_postgres(test_ca) as server:
        yield server


def test_remote_postgres_urls_of_the_audit_trail_need_verified_tls(tmp_path, test_ca):
    with pytest.raises(ConfigError) as caught:
        open_anchor("postgresql://writer:pw-123@db.example.com/audit")
    assert caught.value.fields == ["anchor_url"] and "sslmode=verify-full" in str(caught.value)
    assert "pw-123" not in str(caught.value)
    with pytest.raises(ConfigError, match="not loopback"):
        open_anchor("postgresql://w@db.example.com/audit?sslmode=require")
    with pytest.raises(ConfigError) as caught:
        AuditLog("postgresql://w@db.example.com/audit?sslmode=prefer")
    assert caught.value.fields == ["url"]
    loose = tmp_path / "client.key"
    shutil.copyfile(test_ca.client_key, loose)
    loose.chmod(0o640)
    with pytest.raises(ConfigError) as caught:
        open_anchor(
            f"postgresql://w@db.example.com/audit?sslmode=verify-full&sslrootcert={test_ca.ca}"
            f"&sslcert={test_ca.client_cert}&sslkey={loose}"
        )
    assert caught.value.fields == ["anchor_url sslkey"] and "0640" in str(caught.value)
    # Loopback without TLS stays as it was (the embedded default); verified remote opens.
    open_anchor("postgresql://w@127.0.0.1/audit")
    open_anchor(f"postgresql://w@db.example.com/audit?sslmode=verify-full&sslrootcert={test_ca.ca}")


def libpq_tls_url(server: TlsPostgres, ca: TestCA, user: str, root=None, mutual=True) -> str:
    query = f"sslmode=verify-full&sslrootcert={root or ca.ca}"
    if mutual:
        query += f"&sslcert={ca.client_cert}&sslkey={ca.client_key}"
    return f"postgresql://{user}:{SECRET}@127.0.0.1:{server.port}/{server.dbname}?{query}"


@pytest.mark.e2e
def test_the_audit_anchor_and_log_work_over_verified_tls(tls_pg, test_ca):
    owner = libpq_tls_url(tls_pg, test_ca, tls_pg.tls_user, mutual=False)
    setup_postgres_anchor(owner, tls_pg.mtls_user)
    anchor = open_anchor(libpq_tls_url(tls_pg, test_ca, tls_pg.mtls_user))
    assert anchor.checkpoints() == []
    log = AuditLog(owner.replace("postgresql://", "postgresql+psycopg://", 1))
    assert log.url.startswith("postgresql+psycopg://")
    rogue = open_anchor(libpq_tls_url(tls_pg, test_ca, tls_pg.mtls_user, root=test_ca.rogue_ca))
    with pytest.raises(AnchorError) as caught:
        rogue.checkpoints()
    assert "certificate verify failed" in str(caught.value)
    assert SECRET not in str(caught.value) and "\n" not in str(caught.value)
