"""A real dagster-webserver on a free loopback port, serving the code location, and a
real dagster-daemon next to it (shared by the client and backfill tests)."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dataflare_platform.home import ProjectHome
from dataflare_platform_tests.conftest import REPO_ROOT

# The shipped workspace: its location name is the one the UI, the demo and `dg` show.
WORKSPACE = ("-w", str(REPO_ROOT / "workspace.yaml"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_group(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM a server's process group (it was started with ``start_new_session``), and
    SIGKILL it if it has not exited within ``grace_s``."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_until_serving(
    proc: subprocess.Popen,
    port: int,
    log_path: Path,
    what: str,
    ceiling_s: float = 120,
    path: str = "/server_info",
    scheme: str = "http",
    context=None,
) -> None:
    """Poll ``path`` (``/healthz`` for the authenticating front) until the server answers;
    fail with its log if it exits or stays silent for ``ceiling_s``."""
    deadline = time.monotonic() + ceiling_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited: {log_path.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}{path}", timeout=2, context=context)
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{what} did not answer within {ceiling_s:g} s: {log_path.read_text()[-3000:]}")


@pytest.fixture
def webserver(landed_home, tmp_path):
    with serving_webserver(tmp_path / "webserver.log") as port:
        yield port


@pytest.fixture(scope="module")
def module_webserver(tmp_path_factory) -> Iterator[tuple[int, ProjectHome]]:
    """One web server (no daemon) for a whole test module, on its own project home:
    for tests that only talk to the server (discovery, launch checks, queued runs)."""
    root = tmp_path_factory.mktemp("module_home")
    project = ProjectHome.resolve(root / "home").ensure()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in project.environ().items():
            patch.setenv(key, value)
        with serving_webserver(root / "webserver.log") as port:
            yield port, project


@contextmanager
def serving_webserver(log_path: Path) -> Iterator[int]:
    """``dagster-webserver`` on the code location at a free loopback port, until exit."""
    port = _free_port()
    webserver_bin = Path(sys.executable).with_name("dagster-webserver")
    # Output goes to a file: a pipe nobody reads would stall a chatty server.
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                str(webserver_bin),
                *WORKSPACE,
                *("-h", "127.0.0.1", "-p", str(port)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_serving(proc, port, log_path, "webserver")
            yield port
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.fixture
def dagster_yaml_overrides() -> dict:
    """Settings merged over the home's shipped ``dagster.yaml`` before ``dagster dev``
    starts; a test module overrides this fixture to shorten intervals."""
    return {}


@pytest.fixture
def dagster_dev(home, tmp_path, monkeypatch, dagster_yaml_overrides):
    """``dagster dev`` (web server, daemon, code server) in its own process group, on the
    test's DAGSTER_HOME with the shipped instance settings (plus any overrides)."""
    import yaml

    from dataflare_platform.client import DataflareClient

    if dagster_yaml_overrides:
        instance_yaml = home.dagster_home / "dagster.yaml"
        settings = yaml.safe_load(instance_yaml.read_text())
        for section, values in dagster_yaml_overrides.items():
            settings[section] = {**settings.get(section, {}), **values}
        instance_yaml.write_text(yaml.safe_dump(settings))
    monkeypatch.setenv("DATAFLARE_SENSOR_INTERVAL", "1s")
    port = _free_port()
    dagster_bin = Path(sys.executable).with_name("dagster")
    log_path = tmp_path / "dagster_dev.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [
            *(str(dagster_bin), "dev", *WORKSPACE),
            *("-h", "127.0.0.1", "-p", str(port)),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until_serving(proc, port, log_path, "dagster dev")
        yield DataflareClient(port=port, timeout_s=60)
    finally:
        stop_group(proc, 60)
        log.close()


@pytest.fixture
def daemon(landed_home, tmp_path):
    """``dagster-daemon run`` on the same code location and DAGSTER_HOME as the server."""
    daemon_bin = Path(sys.executable).with_name("dagster-daemon")
    log = (tmp_path / "daemon.log").open("w")
    proc = subprocess.Popen(
        [str(daemon_bin), "run", *WORKSPACE],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its code server dies with it (one process group)
    )
    try:
        yield proc
    finally:
        stop_group(proc, 30)
        log.close()
