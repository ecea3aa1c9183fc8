"""The production topology as separate processes on loopback (``make prod-local``, the
production e2e tests): a gRPC code server, the access-control front (writable webserver
in process), a read-only ``dagster-webserver``, the daemon and the instance metrics
exporter, all on one PostgreSQL-backed instance (deployments/production, docs/deploy.md).

Each process is its own process group, so a test can kill or restart one (the code server
mid-run, the daemon, the webserver) while the others keep serving. No Dagster import here:
every part is a child process, as in production.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from dataflare_platform.errors import DataflareError, InvalidInputError
from dataflare_platform.gateway.process import (
    LOOPBACK,
    POLL_EVERY_S,
    SERVE_CEILING_S,
    RunningFront,
    free_port,
    running_front,
    stop_group,
    wait_until_serving,
)
from dataflare_platform.home import PRODUCTION_INSTANCE_MARKER, ProjectHome
from dataflare_platform.sql_names import SQL_IDENTIFIER, quote_identifier

PRODUCTION_DIR = Path(__file__).resolve().parents[2] / "deployments" / "production"


class TopologyError(DataflareError):
    """A process of the topology did not come up (its log tail says why)."""


@dataclass(frozen=True)
class PostgresTarget:
    """Where the instance's storage lives; the password (if any) only ever travels in the
    environment (DAGSTER_PG_PASSWORD), never in a URL or a file."""

    db_name: str
    host: str = LOOPBACK
    port: int = 5432
    username: str = "postgres"
    sslmode: str = "prefer"

    def environ(self, password: str) -> dict[str, str]:
        return {
            "DAGSTER_PG_USERNAME": self.username,
            "DAGSTER_PG_PASSWORD": password,
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_DB": self.db_name,
            "PGSSLMODE": self.sslmode,
        }

    def _admin(self, password: str):
        import psycopg

        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.username,
            password=password or None,
            dbname="postgres",
            autocommit=True,
        )

    def create_if_missing(self, password: str = "") -> None:
        """Create the instance's database (its name is validated before any SQL)."""
        name = self._checked_name()
        with self._admin(password) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if exists.fetchone() is None:
                conn.execute(f"CREATE DATABASE {quote_identifier(name)}")

    def drop(self, password: str = "") -> None:
        """Drop the database (a test's own; open sessions are ended first)."""
        name = self._checked_name()
        with self._admin(password) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {quote_identifier(name)} WITH (FORCE)")

    def _checked_name(self) -> str:
        if not re.fullmatch(SQL_IDENTIFIER, self.db_name):
            raise InvalidInputError(f"db_name: {self.db_name!r} is not a plain SQL identifier")
        return self.db_name


@dataclass
class Topology:
    """The running processes, by role; ``restart``/``kill`` act on one of them."""

    home: ProjectHome
    env: dict[str, str]
    log_dir: Path
    code_module: str
    code_port: int
    readonly_port: int
    front: RunningFront | None = None
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    _stack: ExitStack = field(default_factory=ExitStack)

    @property
    def workspace(self) -> Path:
        return PRODUCTION_DIR / "workspace.yaml"

    def _spawn(self, role: str, command: list[str]) -> subprocess.Popen:
        with (self.log_dir / f"{role}.log").open("a") as log:
            proc = subprocess.Popen(
                command,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[role] = proc
        return proc

    def start(self, role: str) -> None:
        """Start one process and wait until it serves (code server, webservers) or is up."""
        bin_dir = Path(sys.executable).parent
        if role == "code_server":
            proc = self._spawn(
                role,
                [
                    *(str(bin_dir / "dagster"), "code-server", "start"),
                    *("-m", self.code_module, "--location-name", "dataflare_platform"),
                    *("-h", LOOPBACK, "-p", str(self.code_port)),
                ],
            )
            self._wait_grpc(proc)
        elif role == "readonly_webserver":
            proc = self._spawn(
                role,
                [
                    *(str(bin_dir / "dagster-webserver"), "--read-only"),
                    *("-w", str(self.workspace), "-h", LOOPBACK, "-p", str(self.readonly_port)),
                ],
            )
            self._wait_http(proc, self.readonly_port, role, "/server_info")
        elif role == "daemon":
            self._spawn(role, [str(bin_dir / "dagster-daemon"), "run", "-w", str(self.workspace)])
        elif role == "exporter":
            self._spawn(
                role, [sys.executable, "-m", "dataflare_platform.cli", "metrics", "instance"]
            )
        elif role == "front":
            port = None if self.front is None else self.front.port
            self.front = self._stack.enter_context(
                running_front(
                    self.home,
                    self.log_dir / "front.log",
                    port=port,
                    workspace=self.workspace,
                    env=self.env,
                    daemon=False,
                )
            )
        else:
            raise InvalidInputError(f"role {role!r}: not a process of the topology ({ROLES})")

    def stop(self, role: str, grace_s: float = 30.0) -> None:
        """Stop one process (SIGTERM, SIGKILL after ``grace_s``; 0 kills it outright)."""
        if role == "front":
            if self.front is not None:
                stop_group(self.front.proc, grace_s)
            return
        proc = self.procs.pop(role, None)
        if proc is not None:
            stop_group(proc, grace_s)

    def kill(self, role: str) -> None:
        """SIGKILL one process's whole group at once, no SIGTERM first: for the code
        server that is the server and every run worker it started (a crash, not a stop)."""
        proc = self.procs.pop(role, None)
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def _wait_http(self, proc: subprocess.Popen, port: int, role: str, path: str) -> None:
        try:
            wait_until_serving(proc, port, self.log_dir / f"{role}.log", role, path=path)
        except DataflareError as err:
            raise TopologyError(str(err)) from None

    def _wait_grpc(self, proc: subprocess.Popen) -> None:
        """Poll ``dagster api grpc-health-check`` until the code server answers."""
        dagster = str(Path(sys.executable).with_name("dagster"))
        deadline = time.monotonic() + SERVE_CEILING_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise TopologyError(f"code server exited: {self._tail('code_server')}")
            check = subprocess.run(
                [dagster, "api", "grpc-health-check", "-p", str(self.code_port), "-h", LOOPBACK],
                env=self.env,
                capture_output=True,
            )
            if check.returncode == 0:
                return
            time.sleep(POLL_EVERY_S)
        raise TopologyError(f"code server not serving: {self._tail('code_server')}")

    def _tail(self, role: str) -> str:
        path = self.log_dir / f"{role}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"


ROLES = ("code_server", "front", "readonly_webserver", "daemon", "exporter")


@contextmanager
def running_topology(
    root: Path,
    target: PostgresTarget,
    *,
    code_module: str = "dataflare_platform.definitions",
    password: str = "",
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[Topology]:
    """Every process of the production topology on a home under ``root`` whose instance
    is ``deployments/production/dagster.yaml`` on ``target`` (created if missing)."""
    target.create_if_missing(password)
    home = ProjectHome.resolve(root / "home").ensure()
    instance_yaml = home.dagster_home / "dagster.yaml"
    shutil.copyfile(PRODUCTION_DIR / "dagster.yaml", instance_yaml)
    instance_yaml.chmod(0o600)
    assert instance_yaml.read_text().startswith(PRODUCTION_INSTANCE_MARKER)
    log_dir = root / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    code_port = free_port()
    env = {
        **os.environ,
        **(extra_env or {}),
        **home.environ(),
        **target.environ(password),
        "DAGSTER_CODE_SERVER_HOST": LOOPBACK,
        "DAGSTER_CODE_SERVER_PORT": str(code_port),
    }
    topology = Topology(home, env, log_dir, code_module, code_port, free_port())
    with topology._stack:
        try:
            for role in ROLES:
                topology.start(role)
            yield topology
        finally:
            for role in reversed(ROLES):
                topology.stop(role)


JOBS_QUERY = """{ workspaceOrError { ... on Workspace { locationEntries { name
  locationOrLoadError { __typename ... on RepositoryLocation { repositories {
  jobs { name } } } } } } } }"""


def _jobs_via(port: int) -> list[str]:
    """The job names the webserver on ``port`` loaded from the code server (GraphQL)."""
    import json
    import urllib.request

    request = urllib.request.Request(
        f"http://{LOOPBACK}:{port}/graphql",
        data=json.dumps({"query": JOBS_QUERY}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        data = json.loads(answer.read())["data"]
    names = []
    for entry in data["workspaceOrError"]["locationEntries"]:
        location = entry["locationOrLoadError"] or {}
        for repository in location.get("repositories", []):
            names += [job["name"] for job in repository["jobs"]]
    return sorted(names)


def main() -> None:  # pragma: no cover - exercised by `make prod-local`
    """``make prod-local``: start the topology, run the smoke check, keep serving until
    Ctrl-C (``--smoke-only`` stops after the check)."""
    import argparse
    import json
    import urllib.request

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--root", type=Path, default=Path(".cache/prod-local"))
    parser.add_argument("--db", default="dataflare_prod")
    parser.add_argument("--smoke-only", action="store_true")
    args = parser.parse_args()
    target = PostgresTarget(db_name=args.db)
    password = os.environ.get("DAGSTER_PG_PASSWORD", "")
    with running_topology(args.root.absolute(), target, password=password) as topology:
        assert topology.front is not None
        with urllib.request.urlopen(
            f"http://{LOOPBACK}:{topology.readonly_port}/server_info", timeout=30
        ) as answer:
            info = json.loads(answer.read())
        jobs = _jobs_via(topology.readonly_port)
        print(
            json.dumps(
                {
                    "front": f"http://{LOOPBACK}:{topology.front.port}",
                    "readonly_webserver": f"http://{LOOPBACK}:{topology.readonly_port}",
                    "code_server": f"{LOOPBACK}:{topology.code_port}",
                    "dagster_webserver_version": info.get("dagster_webserver_version"),
                    "jobs_via_readonly_webserver": len(jobs),
                    "database": target.db_name,
                }
            )
        )
        if not jobs:
            raise SystemExit("smoke: the read-only webserver lists no jobs from the code server")
        print("smoke: OK")
        if args.smoke_only:
            return
        try:
            while all(proc.poll() is None for proc in topology.procs.values()):
                time.sleep(1)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
