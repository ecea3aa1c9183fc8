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


@pytest.fixture
def webserver(landed_home):
    port = _free_port()
    webserver_bin = Path(sys.executable).with_name("dagster-webserver")
    proc = subprocess.Popen(
        [
            str(webserver_bin),
            "-m",
            "dataflare_platform.definitions",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"webserver exited: {proc.stderr.read()}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("webserver did not answer within 120 s")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)
