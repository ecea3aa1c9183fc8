"""Real receivers on 127.0.0.1 for alerting tests: an HTTP server for webhooks and aiosmtpd
SMTP servers (plain, and STARTTLS with a login), plus a controlled clock. Conftests import
the fixtures they need from here."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dataflare_platform.gateway.process import free_port
from dataflare_platform_tests.tls_ca import TestCA

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A controlled clock: tests move time, the library only ever receives it."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


@dataclass
class HttpReceiver:
    """Records every POST by path; paths listed in ``failing`` answer 500."""

    server: ThreadingHTTPServer
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)
    # Called in the server thread while the sender waits for the response.
    on_request: list[Callable[[str, dict[str, Any]], None]] = field(default_factory=list)

    def url(self, path: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body in self.requests if p == path]


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    received: list[tuple[str, dict[str, Any]]] = []
    failing: set[str] = set()
    hooks: list[Callable[[str, dict[str, Any]], None]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length))
            received.append((self.path, body))
            for hook in hooks:
                hook(self.path, body)
            status = 500 if self.path in failing else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield HttpReceiver(server, received, failing, hooks)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _MailHandler:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        content = envelope.original_content or envelope.content
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(content))
        )
        return "250 Message accepted for delivery"


@dataclass
class SmtpReceiver:
    host: str
    port: int
    handler: _MailHandler

    @property
    def messages(self) -> list[tuple[str, list[str], Message]]:
        return self.handler.messages


@pytest.fixture
def smtp_receiver() -> Iterator[SmtpReceiver]:
    handler = _MailHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield SmtpReceiver(controller.hostname, controller.port, handler)
    finally:
        controller.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@dataclass
class TlsSmtpReceiver(SmtpReceiver):
    ca_file: str = ""
    logins: list[tuple[str, str]] = field(default_factory=list)


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, so STARTTLS is verified like in production."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2100, 1, 1, tzinfo=UTC))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "smtp.crt", tmp_path / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def smtp_tls_receiver(tmp_path: Path) -> Iterator[TlsSmtpReceiver]:
    """SMTP that requires STARTTLS and a login (user ``alerts``, password ``s3cret``)."""
    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = _MailHandler()
    logins: list[tuple[str, str]] = []

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any):
        login, password = data.login.decode(), data.password.decode()
        logins.append((login, password))
        return AuthResult(success=(login, password) == ("alerts", "s3cret"))

    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        authenticator=authenticate,
    )
    controller.start()
    try:
        yield TlsSmtpReceiver(controller.hostname, controller.port, handler, str(cert), logins)
    finally:
        controller.stop()


# --- TLS receivers, with certificates from the shared test CA (``tls_ca``) -------------


@pytest.fixture
def other_ca(test_ca: TestCA) -> TestCA:
    """The shared CA's rogue twin as the trusted CA: a client trusting only it must
    refuse ``test_ca``'s servers."""
    return replace(test_ca, ca=test_ca.rogue_ca)


@dataclass
class HttpsReceiver(HttpReceiver):
    """``HttpReceiver`` over TLS; it also records each request's headers."""

    headers: list[dict[str, str]] = field(default_factory=list)

    def url(self, path: str) -> str:
        host, port = self.server.server_address[:2]
        return f"https://{host}:{port}{path}"


@contextlib.contextmanager
def serving_https(ca: TestCA, require_client_cert: bool = False) -> Iterator[HttpsReceiver]:
    """An HTTPS receiver on a spare loopback port with ``ca``'s server certificate (and,
    with ``require_client_cert``, mutual TLS: no client certificate of ``ca``, no
    request)."""
    received: list[tuple[str, dict[str, Any]]] = []
    headers: list[dict[str, str]] = []
    failing: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            received.append((self.path, json.loads(self.rfile.read(length))))
            headers.append(dict(self.headers.items()))
            self.send_response(500 if self.path in failing else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = ca.server_context(require_client_cert).wrap_socket(
        server.socket, server_side=True
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield HttpsReceiver(server, received, failing, [], headers)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def https_receiver(test_ca: TestCA) -> Iterator[HttpsReceiver]:
    with serving_https(test_ca) as receiver:
        yield receiver


@pytest.fixture
def mtls_https_receiver(test_ca: TestCA) -> Iterator[HttpsReceiver]:
    """An HTTPS receiver that requires a client certificate of the test CA."""
    with serving_https(test_ca, require_client_cert=True) as receiver:
        yield receiver


def start_smtp(
    mode: str, password: str, ca: TestCA | None = None, require_client_cert: bool = False
) -> tuple[Controller, TlsSmtpReceiver]:
    """An aiosmtpd server requiring a login (user ``alerts``) with ``password``: ``mode``
    ``starttls`` (STARTTLS required before AUTH), ``smtps`` (TLS from the first byte) or
    ``plain`` (AUTH allowed without TLS: what a client must refuse to log in to)."""
    handler = _MailHandler()
    logins: list[tuple[str, str]] = []

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any):
        login, given = data.login.decode(), data.password.decode()
        logins.append((login, given))
        return AuthResult(success=(login, given) == ("alerts", password))

    options: dict[str, Any] = {"auth_required": True, "authenticator": authenticate}
    if mode == "starttls":
        assert ca is not None
        options.update(tls_context=ca.server_context(require_client_cert), require_starttls=True)
    elif mode == "smtps":
        assert ca is not None
        options.update(ssl_context=ca.server_context(require_client_cert), auth_require_tls=False)
    else:
        options.update(auth_require_tls=False)
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **options)
    controller.start()
    receiver = TlsSmtpReceiver(
        controller.hostname, controller.port, handler, ca.ca_file if ca else "", logins
    )
    return controller, receiver
