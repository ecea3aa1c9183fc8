"""A real dagster-webserver on a free loopback port, serving the code location."""

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(proc: subprocess.Popen, port: int, log_path: Path, what: str) -> None:
    """Poll ``/server_info`` until the server answers; fail with its log if it exits or
    stays silent for 120 s."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited: {log_path.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{what} did not answer within 120 s: {log_path.read_text()[-3000:]}")


@pytest.fixture
def webserver(landed_home, tmp_path):
    port = _free_port()
    webserver_bin = Path(sys.executable).with_name("dagster-webserver")
    # Output goes to a file: a pipe nobody reads would stall a chatty server.
    log_path = tmp_path / "webserver.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                *(str(webserver_bin), "-m", "dataflare_platform.definitions"),
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
