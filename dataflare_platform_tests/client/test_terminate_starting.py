"""Terminating a run that is still STARTING: Dagster's web server answers
``TerminateRunFailure`` ("could not be terminated due to having status STARTING") until
the run has started; the client asks again once it has, and a run that ended meanwhile
has nothing left to stop. Against a loopback HTTP server answering the two GraphQL
operations the way Dagster 1.x's web server does (the state changes are the test's)."""

from __future__ import annotations

import http.server
from collections.abc import Iterator

import pytest

from dataflare_platform.client import DataflareClient
from dataflare_platform.client.errors import DataflareClientError
from dataflare_platform_tests.client.loopback import JsonHandler, serving


class FakeDagster(http.server.ThreadingHTTPServer):
    statuses: list[str]  # the run's status at each status query, the last one repeated
    terminations: int = 0
    status_queries: int = 0

    def status(self) -> str:
        return self.statuses[min(self.status_queries, len(self.statuses) - 1)]


class Handler(JsonHandler):
    server: FakeDagster

    def answer(self, request: dict) -> tuple[int, dict]:
        status = self.server.status()
        if "terminateRun" in request["query"]:
            self.server.terminations += 1
            if status == "STARTED":
                return 200, {"data": {"terminateRun": {"__typename": "TerminateRunSuccess"}}}
            message = f"Run r1 could not be terminated due to having status {status}."
            failure = {"__typename": "TerminateRunFailure", "message": message}
            return 200, {"data": {"terminateRun": failure}}
        self.server.status_queries += 1
        return 200, {"data": {"pipelineRunOrError": {"__typename": "Run", "status": status}}}


@pytest.fixture
def dagster() -> Iterator[FakeDagster]:
    srv = FakeDagster(("127.0.0.1", 0), Handler)
    with serving(srv):
        yield srv


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
