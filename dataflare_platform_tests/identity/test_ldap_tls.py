"""TLS to the directory and Python 3.12: ldap3 2.9.1 checks the server's name with
``ssl.match_hostname``, which Python 3.12 removed; without it ldap3 falls back to its own
backport (``ldap3.utils.tls_backport``), which ignores IP address entries and accepts the
subject's common name when the certificate has no DNS name. This machine runs Python
3.11, so the tests give ldap3 the backport as 3.12 would (the name ldap3's TLS module
looks up) and show, against real slapd servers with certificates from a test CA:

- ldap3's own check then refuses a correct certificate for 127.0.0.1 and accepts one
  issued for another address whose common name spells 127.0.0.1 (why the platform does
  not rely on it);
- the platform's directory (its ``ssl`` context with ``check_hostname``) accepts the
  first and refuses the second over LDAPS and StartTLS, whichever check ldap3 has.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import ldap3.core.tls
import pytest
from cryptography import x509
from ldap3 import NONE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.utils import tls_backport

from dataflare_platform.errors import IdentityProviderError
from dataflare_platform.identity.ldap import LdapDirectory, LdapSettings
from dataflare_platform_tests.identity.slapd_server import (
    PASSWORDS,
    REQUIRES_SLAPD,
    Slapd,
    running_slapd,
)

pytestmark = REQUIRES_SLAPD
# What ldap3 uses to match names: the standard library's (Python <= 3.11) or, where
# ssl.match_hostname is gone (3.12+), its backport.
MATCHERS = {
    "python-3.11-ssl": getattr(ssl, "match_hostname", None),
    "python-3.12-backport": tls_backport.match_hostname,
}


@pytest.fixture(scope="module")
def misissued(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """A certificate issued for another address (10.9.9.9) whose common name is
    "127.0.0.1": it must not be taken for 127.0.0.1's."""
    with running_slapd(
        Path(tmp_path_factory.mktemp("slapd-misissued")),
        names=(x509.IPAddress(ipaddress.ip_address("10.9.9.9")),),
        common_name="127.0.0.1",
    ) as server:
        yield server


@pytest.fixture(params=sorted(MATCHERS))
def matcher(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if MATCHERS[request.param] is None:  # running on 3.12+: the backport is the real one
        monkeypatch.setattr(ldap3.core.tls, "match_hostname", tls_backport.match_hostname)
    else:
        monkeypatch.setattr(ldap3.core.tls, "match_hostname", MATCHERS[request.param])
    return request.param


def _ldap3_alone_accepts(server: Slapd) -> bool:
    """Whether ldap3's own TLS (certificate required, its name check) opens LDAPS."""
    tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(server.ca_file))
    port = int(server.ldaps_url.rsplit(":", 1)[1])
    conn = Connection(Server("127.0.0.1", port=port, use_ssl=True, tls=tls, get_info=NONE))
    try:
        conn.open()
    except LDAPException:
        return False
    conn.unbind()
    return True


def test_ldap3_alone_checks_names_wrongly_without_ssl_match_hostname(
    slapd: Slapd, misissued: Slapd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ldap3.core.tls, "match_hostname", tls_backport.match_hostname)
    assert not _ldap3_alone_accepts(slapd)  # a right certificate refused
    assert _ldap3_alone_accepts(misissued)  # another address's certificate accepted
    if MATCHERS["python-3.11-ssl"] is not None:  # what the standard library did
        monkeypatch.setattr(ldap3.core.tls, "match_hostname", MATCHERS["python-3.11-ssl"])
        assert _ldap3_alone_accepts(slapd)
        assert not _ldap3_alone_accepts(misissued)


def _directory(server: Slapd, start_tls: bool, host: str = "127.0.0.1") -> LdapDirectory:
    url = server.url if start_tls else server.ldaps_url
    settings = {
        "url": url.replace("127.0.0.1", host),
        "start_tls": start_tls,
        "ca_file": str(server.ca_file),
        "user_dn_template": f"uid={{username}},{server.people()}",
        "group_base_dn": server.groups(),
        "timeout_seconds": 30,
    }
    return LdapDirectory(LdapSettings.validated(settings, "LDAP settings"))


@pytest.mark.parametrize("start_tls", [False, True], ids=["ldaps", "start-tls"])
def test_the_directory_checks_the_name_alike_whatever_ldap3_has(
    slapd: Slapd, misissued: Slapd, matcher: str, start_tls: bool
) -> None:
    del matcher  # in place for the test's duration
    alice = _directory(slapd, start_tls).authenticate("alice", PASSWORDS["alice"])
    assert alice.name == "alice"
    for wrong in (_directory(misissued, start_tls), _directory(slapd, start_tls, "localhost")):
        with pytest.raises(IdentityProviderError, match="does not name this host") as err:
            wrong.authenticate("alice", PASSWORDS["alice"])
        assert PASSWORDS["alice"] not in str(err.value)
