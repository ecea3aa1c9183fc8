"""``dataflare bench gateway``: what the front adds to a GraphQL query.

One process loads the workspace once and serves two apps on loopback ports (uvicorn, one
thread each): dagster-webserver's own app, bare (Dagster's permissions from its read-only
flag), and the platform's (``GatedWebserver``: permissions from the policy) wrapped by the
front (bearer token check, Host and Origin checks, document parse and the ``view``
decision). The same query is sent, alternating, to the bare app, to the front with a
service token ("front") and to the front with a browser session of a local viewer
("session": the session row read from the home's identity database, the account re-read,
Origin and CSRF token checked) over kept-alive connections; the JSON gives p50/p99 of each
and what each front side adds to the bare one (target: at most 5 ms p99).
``query="permissions"`` sends what the UI asks at each page load, the permissions the
policy decides per request."""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dataflare_platform.errors import DataflareError

QUERY = (
    "{ repositoriesOrError { __typename ... on RepositoryConnection "
    "{ nodes { name location { name } } } } }"
)
# What the UI asks once per page load: the unscoped and per-location permissions (on the
# front's side decided by the policy for the token's principal, ui_permissions.py).
PERMISSIONS_QUERY = (
    "{ permissions { permission value disabledReason } locationStatusesOrError { "
    "... on WorkspaceLocationStatusEntries { entries { name permissions "
    "{ permission value disabledReason } } } } }"
)
QUERIES = {"repositories": QUERY, "permissions": PERMISSIONS_QUERY}
TARGET_ADDED_P99_MS = 5.0


class GatewayBenchError(DataflareError):
    """The benchmark could not run (a server did not start, a query failed)."""


@contextlib.contextmanager
def _serving(app: Any) -> Iterator[int]:
    import socket

    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise GatewayBenchError("benchmark server did not start")
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    import os

    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(
    workspace: Path, requests_per_side: int = 1000, warmup: int = 50, query: str = "repositories"
) -> dict[str, Any]:
    import requests
    from dagster import DagsterInstance
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster_webserver.webserver import DagsterWebserver

    from dataflare_platform.access.policy import load_authorizer
    from dataflare_platform.gateway.serve import build_front
    from dataflare_platform.gateway.sessions import CSRF_HEADER, SESSION_COOKIE
    from dataflare_platform.gateway.settings import FrontSettings
    from dataflare_platform.gateway.webserver import GatedWebserver
    from dataflare_platform.home import ProjectHome
    from dataflare_platform.identity.local_users import LocalUsers
    from dataflare_platform.identity.store import IdentityStore
    from dataflare_platform.identity.tokens import ServiceTokens

    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-gateway-")))
        project = ProjectHome.resolve(root / "home").ensure()
        stack.enter_context(_environ(project.environ()))
        instance = stack.enter_context(DagsterInstance.get())
        context = stack.enter_context(
            WorkspaceProcessContext(
                instance, WorkspaceFileTarget([str(workspace)]), version="bench"
            )
        )
        document = QUERIES[query]
        authorizer = load_authorizer()
        plain_app = DagsterWebserver(context, "", 2000).create_asgi_app()
        app = GatedWebserver(context, "", 2000, authorizer=authorizer).create_asgi_app()
        store = IdentityStore(project.root)
        _, token = ServiceTokens(store).create("bench", frozenset({"viewer"}))
        users = LocalUsers(store)
        users.add("bench-user", "bench-password-not-secret", frozenset({"viewer"}))
        plain_port = stack.enter_context(_serving(plain_app))
        # The front's Host allow-list is built for its own port: serve first, then wrap.
        front_holder: dict[str, Any] = {}

        async def front_app(scope, receive, send):
            await front_holder["front"](scope, receive, send)

        front_port = stack.enter_context(_serving(front_app))
        front = build_front(
            app, FrontSettings(port=front_port), project, instance, authorizer=authorizer
        )
        front_holder["front"] = front
        user = users.current("bench-user")
        assert user is not None
        session_id, session = front.sessions.create(user)
        front_url = f"http://127.0.0.1:{front_port}"
        sides = {
            "plain": (f"http://127.0.0.1:{plain_port}/graphql", {}),
            "front": (f"{front_url}/graphql", {"Authorization": f"Bearer {token}"}),
            "session": (
                f"{front_url}/graphql",
                {
                    "Cookie": f"{SESSION_COOKIE}={session_id}",
                    "Origin": front_url,
                    CSRF_HEADER: session.csrf,
                },
            ),
        }
        sessions = {name: requests.Session() for name in sides}
        timings: dict[str, list[float]] = {name: [] for name in sides}
        for i in range(warmup + requests_per_side):
            for name, (url, headers) in sides.items():
                started = time.perf_counter()
                answer = sessions[name].post(url, json={"query": document}, headers=headers)
                elapsed = time.perf_counter() - started
                if answer.status_code != 200 or "errors" in answer.json():
                    raise GatewayBenchError(
                        f"{name}: HTTP {answer.status_code} {answer.text[:200]}"
                    )
                if i >= warmup:
                    timings[name].append(elapsed * 1000)
    result: dict[str, Any] = {
        "benchmark": "gateway",
        "query": query,
        "document": QUERIES[query],
        "requests": requests_per_side,
    }
    for name, values in timings.items():
        result[name] = {
            "p50_ms": round(statistics.median(values), 3),
            "p99_ms": round(_percentile(values, 0.99), 3),
            "mean_ms": round(statistics.fmean(values), 3),
        }
    result["added_p50_ms"] = round(result["front"]["p50_ms"] - result["plain"]["p50_ms"], 3)
    result["added_p99_ms"] = round(result["front"]["p99_ms"] - result["plain"]["p99_ms"], 3)
    result["session_added_p50_ms"] = round(
        result["session"]["p50_ms"] - result["plain"]["p50_ms"], 3
    )
    result["session_added_p99_ms"] = round(
        result["session"]["p99_ms"] - result["plain"]["p99_ms"], 3
    )
    result["target_added_p99_ms"] = TARGET_ADDED_P99_MS
    result["ok"] = max(result["added_p99_ms"], result["session_added_p99_ms"]) <= (
        TARGET_ADDED_P99_MS
    )
    return result
