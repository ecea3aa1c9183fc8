"""A read answered 5xx is asked again; a mutation never is (a launch must not happen
twice). Against a real HTTP server on loopback that fails the first answers."""

from __future__ import annotations

import http.server
from collections.abc import Iterator

import pytest

from dataflare_platform.client import transport
from dataflare_platform.client.errors import DataflareClientError
from dataflare_platform.client.transport import Transport
from dataflare_platform_tests.client.loopback import JsonHandler, serving


class FlakyServer(http.server.ThreadingHTTPServer):
    failures = 0
    requests = 0


class Handler(JsonHandler):
    server: FlakyServer

    def answer(self, request: dict) -> tuple[int, dict]:
        self.server.requests += 1
        if self.server.requests <= self.server.failures:
            return 500, {"message": "database is locked"}
        return 200, {"data": {"version": "1"}}


@pytest.fixture
def server(monkeypatch) -> Iterator[FlakyServer]:
    monkeypatch.setattr(transport, "READ_RETRY_WAITS_S", (0.01, 0.01, 0.01))
    srv = FlakyServer(("127.0.0.1", 0), Handler)
    with serving(srv):
        yield srv


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
