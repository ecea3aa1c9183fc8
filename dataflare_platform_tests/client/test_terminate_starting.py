"""Terminating a run that is still STARTING: Dagster's web server answers
``TerminateRunFailure`` ("could not be terminated due to having status STARTING") until
the run has started; the client asks again once it has, and a run that ended meanwhile
has nothing left to stop. Against a loopback HTTP server answering the two GraphQL
operations the way Dagster 1.x's web server does (the state changes are the test's)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from dataflare_platform.client import DataflareClient
from dataflare_platform.client.errors import DataflareClientError


class FakeDagster(http.server.ThreadingHTTPServer):
    statuses: list[str]  # the run's status at each status query, the last one repeated
    terminations: int = 0
    status_queries: int = 0

    def status(self) -> str:
        return self.statuses[min(self.status_queries, len(self.statuses) - 1)]


class Handler(http.server.BaseHTTPRequestHandler):
    server: FakeDagster

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        query = request["query"]
        if "terminateRun" in query:
            self.server.terminations += 1
            status = self.server.status()
            if status == "STARTED":
                data = {"terminateRun": {"__typename": "TerminateRunSuccess", "run": {}}}
            else:
                message = f"Run r1 could not be terminated due to having status {status}."
                data = {"terminateRun": {"__typename": "TerminateRunFailure", "message": message}}
        else:
            status = self.server.status()
            self.server.status_queries += 1
            data = {"pipelineRunOrError": {"__typename": "Run", "status": status}}
        body = json.dumps({"data": data}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def dagster() -> Iterator[FakeDagster]:
    srv = FakeDagster(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


def _client(dagster: FakeDagster) -> DataflareClient:
    return DataflareClient(port=dagster.server_address[1], poll_interval_s=0.01, token="t")


def test_a_starting_run_is_terminated_once_it_has_started(dagster: FakeDagster) -> None:
    dagster.statuses = ["STARTING", "STARTING", "STARTED"]
    _client(dagster).terminate("r1")
    assert dagster.terminations == 3  # refused twice while STARTING, then done


def test_a_run_that_ended_while_starting_needs_no_terminating(dagster: FakeDagster) -> None:
    dagster.statuses = ["STARTING", "FAILURE"]
    _client(dagster).terminate("r1")
    assert dagster.terminations == 2


def test_a_run_still_starting_after_the_ceiling_is_an_error(dagster: FakeDagster) -> None:
    dagster.statuses = ["STARTING"]
    with pytest.raises(DataflareClientError, match="having status STARTING"):
        _client(dagster).terminate("r1", starting_timeout_s=0.2)
    assert dagster.terminations >= 2
