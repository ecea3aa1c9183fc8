"""HTTP to a Dagster web server: raw GraphQL over a kept-alive session, and calls into
``dagster_graphql.DagsterGraphQLClient`` for what it covers (launch, run status,
termination). Both turn transport failures into ``ServerUnreachableError`` naming the
address and how to start a server, and GraphQL errors into ``DataflareClientError``.

Every request carries ``Authorization: Bearer <token>`` when a service token is known:
``$DATAFLARE_TOKEN``, else the token file the first ``dataflare ui`` wrote under the home
(``<home>/security/service-token``). A token is never taken from a command-line flag (it
would land in shell history and ``ps``)."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import requests
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from dataflare_platform.client.errors import (
    DataflareClientError,
    LaunchError,
    ServerUnreachableError,
)
from dataflare_platform.home import DEFAULT_HOME_DIRNAME, HOME_ENV_VAR
from dataflare_platform.identity.store import SECURITY_DIRNAME, TOKEN_FILENAME

T = TypeVar("T")
TOKEN_ENV_VAR = "DATAFLARE_TOKEN"
# A read (not a mutation) answered 5xx is asked again after these waits: a web server
# under load answers a poll 500 now and then (SQLite storage busy; seen once in CI in
# `dataflare bench pipeline`), which should not end a run watcher or a benchmark.
# Mutations are never repeated (a launch must not happen twice).
READ_RETRY_WAITS_S = (0.5, 1.0, 2.0, 4.0)


def resolve_token() -> str | None:
    """The service token to send: ``$DATAFLARE_TOKEN``, else the home's token file (the
    home of ``$DATAFLARE_HOME``, else ``./.dataflare``), else none."""
    token = os.environ.get(TOKEN_ENV_VAR, "").strip()
    if token:
        return token
    home = Path(os.environ.get(HOME_ENV_VAR) or Path.cwd() / DEFAULT_HOME_DIRNAME)
    try:
        return (home / SECURITY_DIRNAME / TOKEN_FILENAME).read_text().strip() or None
    except OSError:
        return None


class _ServerError(DataflareClientError):
    """The server answered 5xx: worth asking a read again."""


class Transport:
    """One web server's GraphQL endpoint (``http://host:port/graphql``)."""

    def __init__(self, host: str, port: int, timeout_s: float, token: str | None = None) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.url = f"http://{host}:{port}/graphql"
        token = token or resolve_token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.session = requests.Session()
        self.session.headers.update(headers)
        self.dagster = DagsterGraphQLClient(
            host, port_number=port, timeout=max(1, round(timeout_s)), headers=headers or None
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
        """Run a raw GraphQL query; return its ``data`` (raise on transport/GraphQL errors).
        A read answered with a server error is retried (``READ_RETRY_WAITS_S``)."""
        waits = () if query.lstrip().startswith("mutation") else READ_RETRY_WAITS_S
        for wait in waits:
            try:
                return self._query_once(query, variables)
            except _ServerError:
                time.sleep(wait)
        return self._query_once(query, variables)

    def _query_once(self, query: str, variables: Mapping[str, Any] | None) -> dict[str, Any]:
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
        if response.status_code == 401:
            raise DataflareClientError(
                f"{self.url} refused the request: authentication required. Set "
                f"{TOKEN_ENV_VAR} to a service token (`dataflare tokens create`), or run "
                "where the home holds the token `dataflare ui` created"
            )
        if body.get("errors"):
            messages = "; ".join(e.get("message", str(e)) for e in body["errors"])
            raise DataflareClientError(f"GraphQL error from {self.url}: {messages}")
        if response.status_code >= 500:
            said = body.get("message") or body.get("error") if isinstance(body, dict) else None
            detail = f": {str(said)[:200]}" if said else ""
            raise _ServerError(f"{self.url} answered HTTP {response.status_code}{detail}")
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
