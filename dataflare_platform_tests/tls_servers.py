"""Throwaway PostgreSQL, Redis and NATS servers that speak only TLS, started by the tests
on spare ports of 127.0.0.1 with certificates from the shared test CA (``tls_ca``).

Each server requires a client certificate from the test CA where the tests need mutual
TLS: PostgreSQL for the role ``dataflare`` only (``hostssl ... clientcert=verify-full``;
the role ``postgres`` connects with server-side TLS alone), Redis and NATS for everyone.
Nothing listens in plain text: PostgreSQL has ``hostssl`` lines only, Redis ``--port 0``.

PostgreSQL refuses to run as root: when the tests run as root (CI containers), the
cluster is made and run as the ``postgres`` user with ``runuser -u postgres --``, in a
directory under the system temp folder that user can reach (pytest's own temp folders
are 0700 root's), removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dataflare_platform.gateway.process import free_port
from dataflare_platform_tests.tls_ca import CLIENT_NAME, TestCA


def _pg_bindir() -> Path:
    """``DATAFLARE_TEST_PG_BINDIR``, else Debian's newest ``/usr/lib/postgresql/<v>/bin``."""
    if "DATAFLARE_TEST_PG_BINDIR" in os.environ:
        return Path(os.environ["DATAFLARE_TEST_PG_BINDIR"])
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BINDIR = _pg_bindir()
REDIS_SERVER = os.environ.get("DATAFLARE_TEST_REDIS_SERVER", "redis-server")
NATS_SERVER = os.environ.get("DATAFLARE_TEST_NATS_SERVER", "/usr/sbin/nats-server")
READY_CEILING_S = 120.0  # generous: the machine is shared and loaded


def _need(path: str | Path, what: str) -> str:
    found = shutil.which(str(path))
    if found is None:
        raise RuntimeError(f"{what} is not installed ({path}): the TLS connector tests need it")
    return found


def _wait_for_port(port: int, proc: subprocess.Popen | None, log: Path) -> None:
    """Until ``port`` accepts connections; fails with the server's log if it died."""
    deadline = time.monotonic() + READY_CEILING_S
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}): {_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing answered on 127.0.0.1:{port}: {_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-8:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


# -- PostgreSQL --------------------------------------------------------------------------
@dataclass(frozen=True)
class TlsPostgres:
    port: int
    mtls_user: str = CLIENT_NAME  # needs a client certificate (clientcert=verify-full)
    tls_user: str = "postgres"  # server-side TLS only
    dbname: str = "postgres"

    def dsn(self, user: str | None = None, host: str = "127.0.0.1") -> str:
        return f"postgresql://{user or self.tls_user}@{host}:{self.port}/{self.dbname}"


@contextlib.contextmanager
def running_tls_postgres(
    ca: TestCA, password_role: tuple[str, str] | None = None
) -> Iterator[TlsPostgres]:
    """``password_role`` (name, password): one more role that signs in with a password
    (SCRAM over server-side TLS), for the tests of a wrong password; the password reaches
    the server on psql's stdin, not in a command line."""
    initdb = _need(PG_BINDIR / "initdb", "PostgreSQL's initdb")
    pg_ctl = _need(PG_BINDIR / "pg_ctl", "PostgreSQL's pg_ctl")
    as_root = os.geteuid() == 0
    run_as: list[str] = ["runuser", "-u", "postgres", "--"] if as_root else []
    root = Path(tempfile.mkdtemp(prefix="dataflare-pg-tls-"))
    data, log = root / "data", root / "server.log"
    port = free_port()
    started = False
    try:
        if as_root:
            owner = pwd.getpwnam("postgres")
            os.chown(root, owner.pw_uid, owner.pw_gid)
        subprocess.run(
            [*run_as, initdb, "-D", str(data), "-U", "postgres", "-A", "reject", "--no-sync"],
            check=True,
            capture_output=True,
        )
        for source, name in (
            (ca.server_cert, "server.pem"),
            (ca.server_key, "server.key"),
            (ca.ca, "ca.pem"),
        ):
            shutil.copyfile(source, data / name)
            (data / name).chmod(0o600)
            if as_root:
                os.chown(data / name, owner.pw_uid, owner.pw_gid)
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {port}\n"
                f"unix_socket_directories = '{root}'\n"
                "ssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\n"
                "ssl_ca_file = 'ca.pem'\nfsync = off\nmax_connections = 30\n"
            )
        role_line = (
            f"hostssl all {password_role[0]} 127.0.0.1/32 scram-sha-256\n" if password_role else ""
        )
        (data / "pg_hba.conf").write_text(
            "local all postgres trust\n"
            + role_line
            + f"hostssl all {CLIENT_NAME} 127.0.0.1/32 trust clientcert=verify-full\n"
            "hostssl all postgres 127.0.0.1/32 trust\n"
        )
        subprocess.run(
            [*run_as, pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "120", "start"],
            check=True,
            capture_output=True,
        )
        started = True
        subprocess.run(
            [
                *run_as,
                str(PG_BINDIR / "psql"),
                "-h",
                str(root),
                "-p",
                str(port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
            ],
            input=(
                f"CREATE ROLE {CLIENT_NAME} LOGIN;"
                f" GRANT CREATE ON DATABASE postgres TO {CLIENT_NAME};\n"
                + (
                    f"CREATE ROLE {password_role[0]} LOGIN PASSWORD "
                    f"'{password_role[1].replace(chr(39), chr(39) * 2)}';\n"
                    if password_role
                    else ""
                )
            ).encode(),
            check=True,
            capture_output=True,
        )
        yield TlsPostgres(port)
    except subprocess.CalledProcessError as err:
        raise RuntimeError(
            f"{Path(err.cmd[len(run_as)]).name} failed: {err.stderr.decode(errors='replace')}"
            f" {_tail(log)}"
        ) from None
    finally:
        if started:
            subprocess.run(
                [*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
            )
        shutil.rmtree(root, ignore_errors=True)


# -- Redis -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TlsRedis:
    port: int

    def url(self, host: str = "127.0.0.1") -> str:
        return f"rediss://{host}:{self.port}/0"


@contextlib.contextmanager
def running_tls_redis(ca: TestCA, workdir: Path) -> Iterator[TlsRedis]:
    """redis-server with TLS only (``--port 0``) and client certificates required."""
    server = _need(REDIS_SERVER, "redis-server")
    workdir.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), workdir / "redis.log"
    proc = subprocess.Popen(
        [
            server,
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(ca.server_cert),
            "--tls-key-file",
            str(ca.server_key),
            "--tls-ca-cert-file",
            str(ca.ca),
            "--tls-auth-clients",
            "yes",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--logfile",
            str(log),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, proc, log)
        yield TlsRedis(port)
    finally:
        _stop(proc)


# -- NATS --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TlsNats:
    port: int

    def url(self, host: str = "127.0.0.1") -> str:
        return f"tls://{host}:{self.port}"


@contextlib.contextmanager
def running_tls_nats(ca: TestCA, workdir: Path) -> Iterator[TlsNats]:
    """nats-server with JetStream and a tls block that verifies client certificates."""
    server = _need(NATS_SERVER, "nats-server")
    workdir.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), workdir / "nats.log"
    config = workdir / "nats.conf"
    config.write_text(
        f'listen: "127.0.0.1:{port}"\n'
        f'jetstream {{ store_dir: "{workdir / "js"}" }}\n'
        "tls {\n"
        f'  cert_file: "{ca.server_cert}"\n  key_file: "{ca.server_key}"\n'
        f'  ca_file: "{ca.ca}"\n  verify: true\n  timeout: 5\n'
        "}\n"
    )
    proc = subprocess.Popen(
        [server, "-c", str(config), "-l", str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, proc, log)
        yield TlsNats(port)
    finally:
        _stop(proc)
