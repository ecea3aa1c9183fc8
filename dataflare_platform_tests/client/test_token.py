"""The client sends the service token: from $DATAFLARE_TOKEN, else from the home's token
file, to a real HTTP server that records what it received."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from dataflare_platform.client import DataflareClient
from dataflare_platform.client.errors import DataflareClientError
from dataflare_platform.identity.store import security_dir, write_secret_file


class _Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[str | None]] = []
    status = 200

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).seen.append(self.headers.get("Authorization"))
        body = (
            {"data": {"version": "x"}}
            if self.status == 200
            else {"errors": [{"message": "authentication required"}]}
        )
        payload = json.dumps(body).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[int, type[_Recorder]]]:
    handler = type("Recorder", (_Recorder,), {"seen": [], "status": 200})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1], handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_token_comes_from_the_environment_before_the_home(server, home, monkeypatch):
    port, handler = server
    write_secret_file(security_dir(home.root) / "service-token", "dft_file_token\n")
    monkeypatch.setenv("DATAFLARE_TOKEN", "dft_env_token")
    DataflareClient(port=port).query("{ version }")
    monkeypatch.delenv("DATAFLARE_TOKEN")
    DataflareClient(port=port).query("{ version }")
    DataflareClient(port=port, token="dft_given").query("{ version }")
    assert handler.seen == [
        "Bearer dft_env_token",
        "Bearer dft_file_token",
        "Bearer dft_given",
    ]


def test_no_token_sends_no_header_and_a_401_says_what_to_do(server, home, monkeypatch):
    port, handler = server
    monkeypatch.delenv("DATAFLARE_TOKEN", raising=False)
    handler.status = 401
    with pytest.raises(DataflareClientError, match="DATAFLARE_TOKEN"):
        DataflareClient(port=port).query("{ version }")
    assert handler.seen == [None]
