"""A real OpenLDAP server (Debian's ``slapd``) for the LDAP tests: its own config and mdb
database in a temporary directory, run in the foreground as the current user on
127.0.0.1 at a free port, loaded with users and groups by ``ldapadd``. The system's slapd
service (if any) is neither used nor touched.

Every LDAP test module marks itself ``pytestmark = REQUIRES_SLAPD`` and takes the
module-scoped ``slapd`` fixture of the root conftest (one server per module)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from ldap3.utils.dn import escape_rdn

from dataflare_platform.gateway.process import free_port

SUFFIX = "dc=dataflare,dc=test"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "root-test-password"  # test fixture values, not real secrets
SERVICE_DN = f"cn=reader,{SUFFIX}"
SERVICE_PASSWORD = "reader-test-password"
# dave+ops: "+" is legal in a principal name and special in a DN (it joins RDN parts).
PASSWORDS = {
    "alice": "alice-password",
    "bob": "bob-password",
    "carol": "carol-password",
    "dave+ops": "dave-password",
}
GROUPS = {
    "data-admins": ["alice"],
    "analysts": ["alice", "bob", "dave+ops"],
    "staff": ["carol"],
}
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
START_CEILING_SECONDS = 60.0


@dataclass(frozen=True)
class Slapd:
    url: str  # ldap://127.0.0.1:<port> (StartTLS offered)
    ldaps_url: str  # ldaps://127.0.0.1:<port>
    ca_file: Path  # the CA that signed the server's certificate (IP 127.0.0.1 only)
    suffix: str = SUFFIX

    def people(self) -> str:
        return f"ou=people,{self.suffix}"

    def groups(self) -> str:
        return f"ou=groups,{self.suffix}"


def slapd_available() -> bool:
    return Path("/usr/sbin/slapd").exists() and shutil.which("ldapadd") is not None


# CI (.ci/run) installs slapd and sets DATAFLARE_REQUIRE_SLAPD=1: there a missing slapd
# fails the LDAP tests instead of skipping them.
REQUIRES_SLAPD = pytest.mark.skipif(
    not slapd_available() and os.environ.get("DATAFLARE_REQUIRE_SLAPD") != "1",
    reason="Debian's slapd and ldap-utils are not installed (apt-get install slapd ldap-utils)",
)


def _hash(password: str) -> str:
    """An {SSHA} hash made by Debian's slappasswd (the directory stores no cleartext)."""
    return subprocess.run(
        ["slappasswd", "-s", password], check=True, capture_output=True, text=True, timeout=60
    ).stdout.strip()


# The server certificate's names: by default IP 127.0.0.1 only (so a client connecting by
# the name "localhost" sees a name mismatch), under a common name that is no host name, as
# current certificates are (names live in subjectAltName).
DEFAULT_SERVER_NAMES: tuple[x509.GeneralName, ...] = (
    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
)
DEFAULT_COMMON_NAME = "dataflare test LDAP server"


def _write_certificates(
    root: Path,
    names: tuple[x509.GeneralName, ...] = DEFAULT_SERVER_NAMES,
    common_name: str = DEFAULT_COMMON_NAME,
) -> None:
    """A test CA and a server certificate it signs for ``names`` (subjectAltName) under
    ``common_name``."""
    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("dataflare test CA"))
        .issuer_name(name("dataflare test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(name(common_name))
        .issuer_name(ca.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(list(names)),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (root / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (root / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_path = root / "server.key"
    key_path.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)


def _config(root: Path) -> str:
    schemas = "\n".join(
        f"include {SCHEMA_DIR / name}.schema" for name in ("core", "cosine", "inetorgperson", "nis")
    )
    return f"""{schemas}
pidfile {root / "slapd.pid"}
argsfile {root / "slapd.args"}
TLSCACertificateFile {root / "ca.pem"}
TLSCertificateFile {root / "server.pem"}
TLSCertificateKeyFile {root / "server.key"}
modulepath {MODULE_DIR}
moduleload back_mdb
database mdb
maxsize 10485760
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {_hash(ROOT_PASSWORD)}
directory {root / "db"}
access to attrs=userPassword
  by self =xw
  by anonymous auth
  by * none
access to *
  by users read
  by * none
database monitor
access to *
  by dn.exact="{ROOT_DN}" read
  by * none
"""


def _entries() -> str:
    blocks = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\n"
        "o: DataFlare\ndc: dataflare",
        f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people",
        f"dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups",
        f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: reader\nuserPassword: {_hash(SERVICE_PASSWORD)}",
    ]
    for uid, password in PASSWORDS.items():
        blocks.append(
            f"dn: uid={escape_rdn(uid)},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\n"
            f"uid: {uid}\ncn: {uid.title()}\nsn: {uid.title()}\nuserPassword: {_hash(password)}"
        )
    for group, members in GROUPS.items():
        lines = [f"dn: cn={group},ou=groups,{SUFFIX}", "objectClass: groupOfNames", f"cn: {group}"]
        lines += [f"member: uid={escape_rdn(m)},ou=people,{SUFFIX}" for m in members]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def operation_counts(server: Slapd) -> dict[str, int]:
    """Operations the server has completed, by kind (Bind, Search, ...), from its monitor
    database (``cn=Operations,cn=Monitor``). Reading them is itself one bind and one
    search, counted in the next reading."""
    from ldap3 import NONE, SUBTREE, Connection, Server

    server_at = Server(server.url, get_info=NONE)  # no schema: the counters are operational
    with Connection(server_at, ROOT_DN, ROOT_PASSWORD, auto_bind=True) as conn:
        conn.search(
            "cn=Operations,cn=Monitor",
            "(objectClass=*)",
            search_scope=SUBTREE,
            attributes=["cn", "monitorOpCompleted"],
        )
        counts = {}
        for entry in conn.response or []:
            attributes = entry.get("attributes", {})
            name, done = attributes.get("cn"), attributes.get("monitorOpCompleted")
            if name and done is not None:
                counts[str(name[0] if isinstance(name, list) else name)] = int(
                    done[0] if isinstance(done, list) else done
                )
        return counts


@contextmanager
def running_slapd(
    root: Path,
    names: tuple[x509.GeneralName, ...] = DEFAULT_SERVER_NAMES,
    common_name: str = DEFAULT_COMMON_NAME,
) -> Iterator[Slapd]:
    """slapd serving ``SUFFIX`` from ``root`` until the block ends, its TLS certificate
    issued for ``names`` under ``common_name``."""
    (root / "db").mkdir(parents=True)
    _write_certificates(root, names, common_name)
    conf = root / "slapd.conf"
    conf.write_text(_config(root))
    port, tls_port = free_port(), free_port()
    url = f"ldap://127.0.0.1:{port}"
    ldaps_url = f"ldaps://127.0.0.1:{tls_port}"
    log = (root / "slapd.log").open("wb")
    # -d 0: stay in the foreground (no daemon to chase), log nothing but fatal errors.
    proc = subprocess.Popen(
        ["/usr/sbin/slapd", "-f", str(conf), "-h", f"{url}/ {ldaps_url}/", "-d", "0"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + START_CEILING_SECONDS
        while not (_answers(port) and _answers(tls_port)):
            if proc.poll() is not None:
                raise AssertionError(
                    f"slapd exited ({proc.returncode}): {(root / 'slapd.log').read_text()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"slapd did not answer on {url}")
            time.sleep(0.1)
        ldif = root / "entries.ldif"
        ldif.write_text(_entries())
        subprocess.run(
            ["ldapadd", "-x", "-H", url, "-D", ROOT_DN, "-w", ROOT_PASSWORD, "-f", str(ldif)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield Slapd(url=url, ldaps_url=ldaps_url, ca_file=root / "ca.pem")
    finally:
        proc.terminate()  # slapd shuts down cleanly on SIGTERM
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=60)
        log.close()
