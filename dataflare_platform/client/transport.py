"""HTTP to a Dagster web server: raw GraphQL over a kept-alive session, and calls into
``dagster_graphql.DagsterGraphQLClient`` for what it covers (launch, run status,
termination). Both turn transport failures into ``ServerUnreachableError`` naming the
address and how to start a server, and GraphQL errors into ``DataflareClientError``."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import requests
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from dataflare_platform.client.errors import (
    DataflareClientError,
    LaunchError,
    ServerUnreachableError,
)

T = TypeVar("T")


class Transport:
    """One web server's GraphQL endpoint (``http://host:port/graphql``)."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.url = f"http://{host}:{port}/graphql"
        self.session = requests.Session()
        self.dagster = DagsterGraphQLClient(
            host, port_number=port, timeout=max(1, round(timeout_s))
        )

    def unreachable(self, err: Exception) -> ServerUnreachableError:
        if isinstance(err, requests.exceptions.Timeout):
            what = f"did not answer within {self.timeout_s:g} s"
        else:
            what = "refused the connection or is not running"
        return ServerUnreachableError(
            f"cannot reach the Dagster web server at {self.host}:{self.port}: it {what}. "
            "Start it with `make ui` (or `dataflare ui --port PORT`), or pass --host/--port."
        )

    def query(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Run a raw GraphQL query; return its ``data`` (raise on transport/GraphQL errors)."""
        try:
            response = self.session.post(
                self.url,
                json={"query": query, "variables": dict(variables or {})},
                timeout=self.timeout_s,
            )
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as err:
            raise self.unreachable(err) from err
        try:
            body = response.json()
        except ValueError:
            raise DataflareClientError(
                f"{self.url} answered HTTP {response.status_code} without JSON: "
                "is this a Dagster web server?"
            ) from None
        if body.get("errors"):
            messages = "; ".join(e.get("message", str(e)) for e in body["errors"])
            raise DataflareClientError(f"GraphQL error from {self.url}: {messages}")
        if response.status_code != 200 or "data" not in body:
            raise DataflareClientError(f"{self.url} answered HTTP {response.status_code}")
        return body["data"]

    def call_dagster(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call a DagsterGraphQLClient method, turning its transport errors into ours
        (its other errors are left to the caller, which knows what they mean)."""
        try:
            with warnings.catch_warnings():
                # gql deprecates the call style dagster_graphql uses; not ours to fix.
                warnings.filterwarnings("ignore", category=DeprecationWarning, module="gql")
                return fn(*args, **kwargs)
        except DagsterGraphQLClientError as err:
            cause: BaseException | None = err
            while cause is not None:
                if isinstance(
                    cause, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)
                ):
                    raise self.unreachable(cause) from err  # type: ignore[arg-type]
                cause = cause.__cause__ or cause.__context__
            raise
        except KeyError as err:  # a result type the library's query has no fields for
            raise LaunchError(f"unexpected answer from the server (missing {err})") from err
