"""A test certificate authority made with openssl, shared by every TLS test (the web
front's HTTPS test, the PostgreSQL/Redis/NATS connector tests): a CA, a server
certificate for 127.0.0.1 and localhost, a client certificate for mutual TLS, and a
second, unrelated CA ("rogue") whose trust must not let a client accept the server.

``test_ca`` (in ``conftest``) makes one per session; ``make_test_ca`` makes one in any
directory. Keys are written 0600, as the
connectors' settings require of a private key.
"""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

CLIENT_NAME = "dataflare"  # the client certificate's CN: PostgreSQL maps it to the role


@dataclass(frozen=True)
class TestCA:
    """Paths of the files ``make_test_ca`` wrote."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    directory: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path  # a CA that signed nothing the servers use
    rogue_client_cert: Path  # a client certificate from the rogue CA
    rogue_client_key: Path

    @property
    def ca_file(self) -> str:
        """The CA a client trusts, as the settings' ``ca_file`` takes it."""
        return str(self.ca)

    def client_tls(self, **values) -> dict:
        """A connector's ``tls:`` block for mutual TLS with this CA's client certificate;
        ``values`` override or add fields (``mode``, ``server_name``...)."""
        return {
            "ca_file": str(self.ca),
            "cert_file": str(self.client_cert),
            "key_file": str(self.client_key),
            **values,
        }

    def server_context(self, require_client_cert: bool = False) -> ssl.SSLContext:
        """A server-side TLS context with the server certificate (test receivers); with
        ``require_client_cert`` the handshake needs a client certificate of this CA."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.server_cert, self.server_key)
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=str(self.ca))
        return context


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()}")


def _new_ca(directory: Path, name: str, subject: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "2", "-subj", subject,
        "-keyout", f"{name}.key", "-out", f"{name}.pem",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip


def _issue(directory: Path, ca: str, name: str, subject: str, extensions: str) -> None:
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", subject, "-keyout", f"{name}.key", "-out", f"{name}.csr",
        cwd=directory,
    )  # fmt: skip
    (directory / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
        cwd=directory,
    )  # fmt: skip
    (directory / f"{name}.key").chmod(0o600)


def make_test_ca(directory: Path) -> TestCA:
    """Write the CA, its server and client certificates and the rogue CA to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    _new_ca(directory, "ca", "/CN=DataFlare test CA")
    _issue(
        directory,
        "ca",
        "server",
        "/CN=127.0.0.1",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    _issue(
        directory,
        "ca",
        "client",
        f"/CN={CLIENT_NAME}",
        "extendedKeyUsage=clientAuth\n",
    )
    _new_ca(directory, "rogue", "/CN=Someone else's CA")
    _issue(
        directory,
        "rogue",
        "rogue-client",
        f"/CN={CLIENT_NAME}",
        "extendedKeyUsage=clientAuth\n",
    )
    for key in directory.glob("*.key"):
        key.chmod(0o600)
    return TestCA(
        directory=directory,
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        rogue_ca=directory / "rogue.pem",
        rogue_client_cert=directory / "rogue-client.pem",
        rogue_client_key=directory / "rogue-client.key",
    )
