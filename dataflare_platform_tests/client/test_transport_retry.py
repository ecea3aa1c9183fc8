"""A read answered 5xx is asked again; a mutation never is (a launch must not happen
twice). Against a real HTTP server on loopback that fails the first answers."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from dataflare_platform.client import transport
from dataflare_platform.client.errors import DataflareClientError
from dataflare_platform.client.transport import Transport


class FlakyServer(http.server.ThreadingHTTPServer):
    failures = 0
    requests = 0


class Handler(http.server.BaseHTTPRequestHandler):
    server: FlakyServer

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests += 1
        if self.server.requests <= self.server.failures:
            status, body = 500, {"message": "database is locked"}
        else:
            status, body = 200, {"data": {"version": "1"}}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(monkeypatch) -> Iterator[FlakyServer]:
    monkeypatch.setattr(transport, "READ_RETRY_WAITS_S", (0.01, 0.01, 0.01))
    srv = FlakyServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


def test_a_read_answered_500_is_asked_again(server: FlakyServer) -> None:
    server.failures = 2
    t = Transport("127.0.0.1", server.server_address[1], timeout_s=10, token="t")
    assert t.query("query { version }") == {"version": "1"}
    assert server.requests == 3


def test_a_read_failing_every_time_says_the_server_error(server: FlakyServer) -> None:
    server.failures = 100
    t = Transport("127.0.0.1", server.server_address[1], timeout_s=10, token="t")
    with pytest.raises(DataflareClientError, match="HTTP 500: database is locked"):
        t.query("query { version }")
    assert server.requests == 4  # three waits, four asks


def test_a_mutation_answered_500_is_never_repeated(server: FlakyServer) -> None:
    server.failures = 1
    t = Transport("127.0.0.1", server.server_address[1], timeout_s=10, token="t")
    with pytest.raises(DataflareClientError, match="HTTP 500"):
        t.query("mutation { launchRun { __typename } }")
    assert server.requests == 1
