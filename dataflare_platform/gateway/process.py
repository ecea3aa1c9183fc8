"""Start the platform's front as ``dataflare ui`` does (front, webserver app in process,
daemon, code server) in a process group of its own on 127.0.0.1, wait until it serves,
hand back its port and a service token, and stop the whole group at the end.

One helper for everything that needs a live UI/GraphQL endpoint: the streaming quickstart
(``make stream``), the pipeline benchmark (handed in by the CLI) and the end-to-end tests'
fixtures. Before it, "start a server and wait until it serves" was written six times, and
most of them started a plain ``dagster dev``: a webserver without the front, whose launches
the run coordinator can only attribute to ``system:webserver``. The default policy refuses
those, so everything the platform itself starts goes through the front with a token.

No Dagster import here: the front is a child process (``python -m
dataflare_platform.gateway``); this module only spawns, polls and signals it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dataflare_platform.errors import DataflareError
from dataflare_platform.home import ProjectHome
from dataflare_platform.identity.bootstrap import FirstCredentials, bootstrap
from dataflare_platform.identity.store import IdentityStore
from dataflare_platform.identity.tokens import ServiceTokens

LOOPBACK = "127.0.0.1"
# Generous: a cold start imports Dagster three times (front, daemon, code server) and
# loads the code location; on a loaded shared 2-core machine that took over a minute.
SERVE_CEILING_S = 300.0
STOP_GRACE_S = 60.0
POLL_EVERY_S = 0.5
LOG_TAIL_CHARS = 3000


class FrontStartError(DataflareError):
    """The front exited before serving, or did not answer within the ceiling."""


class FrontStartCancelledError(FrontStartError):
    """Asked to stop (``cancel`` set) while the front was still starting."""


def free_port() -> int:
    """A port free on the loopback interface now (the child binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((host, port)) == 0


def _tail(log_path: Path | None) -> str:
    if log_path is None:
        return ""
    try:
        return log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return ""


def wait_until_serving(
    proc: subprocess.Popen,
    port: int,
    log_path: Path | None,
    what: str = "the web front",
    ceiling_s: float = SERVE_CEILING_S,
    path: str = "/healthz",
    scheme: str = "http",
    context: ssl.SSLContext | None = None,
    cancel: threading.Event | None = None,
) -> None:
    """Poll ``path`` until the server answers, following its progress: fail at once (with
    the log's tail) if the process exits, and otherwise after ``ceiling_s``, saying how far
    it got (port still closed, or open but not answering ``path``)."""
    deadline = time.monotonic() + ceiling_s
    url = f"{scheme}://{LOOPBACK}:{port}{path}"
    stage = "its port never opened"
    while time.monotonic() < deadline:
        if cancel is not None and cancel.is_set():
            raise FrontStartCancelledError(f"{what}: stopped while starting")
        if proc.poll() is not None:
            raise FrontStartError(f"{what} exited ({proc.returncode}): {_tail(log_path)}")
        if port_open(port):
            stage = f"its port opened but {path} did not answer"
            try:
                urllib.request.urlopen(url, timeout=5, context=context)
                return
            except OSError:
                pass
        time.sleep(POLL_EVERY_S)
    raise FrontStartError(
        f"{what} did not answer within {ceiling_s:g} s ({stage}): {_tail(log_path)}"
    )


def stop_group(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM a process group (started with ``start_new_session``), SIGKILL whatever of it
    is still there after ``grace_s`` (stragglers included: the leader may be gone while a
    daemon or code server lingers)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@dataclass
class RunningFront:
    """A front serving on ``port``; ``token`` is the home's service token (role launcher,
    the one the first start stored 0600 under the home; ``None`` on a home whose users were
    made before its first start: :meth:`service_token` makes one)."""

    port: int
    token: str | None
    project: ProjectHome
    proc: subprocess.Popen
    log_path: Path
    scheme: str = "http"
    first: FirstCredentials | None = None
    _created: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{LOOPBACK}:{self.port}"

    def service_token(self, account: str, roles: Sequence[str]) -> str:
        """A further token (e.g. an editor's, to stop sensors), revoked when the front
        stops."""
        token_id, token = ServiceTokens(IdentityStore(self.project.root)).create(
            account, frozenset(roles)
        )
        self._created.append(token_id)
        return token

    def revoke_created(self) -> None:
        tokens = ServiceTokens(IdentityStore(self.project.root))
        for token_id in self._created:
            with contextlib.suppress(DataflareError):
                tokens.revoke(token_id)
        self._created.clear()


@contextlib.contextmanager
def running_front(
    project: ProjectHome,
    log_path: Path,
    *,
    port: int | None = None,
    workspace: Path | None = None,
    env: Mapping[str, str] | None = None,
    daemon: bool = True,
    tls: tuple[Path, Path] | None = None,
    trust: ssl.SSLContext | None = None,
    login_config: Path | None = None,
    extra_args: Sequence[str] = (),
    cwd: Path | None = None,
    ceiling_s: float = SERVE_CEILING_S,
    stop_grace_s: float = STOP_GRACE_S,
    cancel: threading.Event | None = None,
    on_start: Callable[[subprocess.Popen], None] | None = None,
) -> Iterator[RunningFront]:
    """``dataflare ui`` on ``project`` (bootstrapped first, as ``dataflare ui`` does) at
    ``port`` (default: a free one) on 127.0.0.1, in its own process group, output to
    ``log_path``; yields once ``/healthz`` answers, stops the group on exit.

    ``env``: the child's environment (default: this process's); the home's variables are
    laid over it. ``workspace``: default the home's copy of the shipped one (same location
    name as ``make ui``). ``tls``: (certificate, key) to serve HTTPS; ``trust`` verifies
    it while waiting. ``cancel``: set it to give up waiting (raises
    :class:`FrontStartCancelledError`). ``on_start``: called with the child right after it
    is spawned (e.g. to tell a person its process group while it starts)."""
    from dataflare_platform.compliance.audit_keys import provision_embedded

    child_env = {**(os.environ if env is None else env), **project.environ()}
    # Every audit entry is tagged with the entry key: the embedded default is provisioned
    # where the child will look for it (its XDG_CONFIG_HOME).
    provision_embedded(project.root, environ=child_env)
    first = bootstrap(project.root)
    store = IdentityStore(project.root)
    port = free_port() if port is None else port
    workspace = project.write_workspace() if workspace is None else workspace
    command = [
        *(sys.executable, "-m", "dataflare_platform.gateway"),
        *("--home", str(project.root), "--workspace", str(Path(workspace).absolute())),
        *("--host", LOOPBACK, "--port", str(port)),
    ]
    if not daemon:
        command.append("--no-daemon")
    if tls is not None:
        command += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    if login_config is not None:
        command += ["--login-config", str(login_config)]
    command += list(extra_args)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        # Output to a file: a pipe nobody reads would stall a chatty server.
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env,
            cwd=str(cwd or project.root),
            start_new_session=True,  # one group: front, daemon, code servers, run workers
        )
    if on_start is not None:
        on_start(proc)
    try:
        token: str | None = store.token_file.read_text().strip() or None
    except FileNotFoundError:
        token = None  # a home whose first user was made otherwise: see service_token()
    front = RunningFront(
        port=port,
        token=token,
        project=project,
        proc=proc,
        log_path=log_path,
        scheme="https" if tls else "http",
        first=first,
    )
    try:
        wait_until_serving(
            proc,
            port,
            log_path,
            "the web front",
            ceiling_s=ceiling_s,
            scheme=front.scheme,
            context=trust,
            cancel=cancel,
        )
        yield front
    finally:
        stop_group(proc, stop_grace_s)
        front.revoke_created()
