"""The front starter's waiting and stopping, against real child processes (a tiny HTTP
server standing where the front would): it follows the child's progress, fails at once
with the log when the child exits, gives up when cancelled, and stops the whole group.
Starting the real front is exercised by the e2e fixtures and ``test_quickstart``."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dataflare_platform.gateway.process import (
    FrontStartCancelledError,
    FrontStartError,
    free_port,
    port_open,
    stop_group,
    wait_until_serving,
)

HEALTHZ_SERVER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"ok")
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def _spawn(code: str, log_path: Path, *args: str) -> subprocess.Popen:
    with log_path.open("w") as log:
        return subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_waits_until_healthz_answers(tmp_path):
    port = free_port()
    proc = _spawn(HEALTHZ_SERVER, tmp_path / "log", str(port))
    try:
        wait_until_serving(proc, port, tmp_path / "log", "test server", ceiling_s=120)
        assert port_open(port)
    finally:
        stop_group(proc, 30)
    assert proc.returncode is not None and not port_open(port)


def test_a_child_that_exits_fails_at_once_with_its_log(tmp_path):
    proc = _spawn("import sys; print('bad settings: port'); sys.exit(3)", tmp_path / "log")
    with pytest.raises(FrontStartError, match=r"exited \(3\).*bad settings: port") as err:
        wait_until_serving(proc, free_port(), tmp_path / "log", "the web front", ceiling_s=600)
    assert not isinstance(err.value, FrontStartCancelledError)


def test_a_silent_child_fails_at_the_ceiling_saying_how_far_it_got(tmp_path):
    proc = _spawn("import time; time.sleep(600)", tmp_path / "log")
    try:
        with pytest.raises(FrontStartError, match="port never opened"):
            wait_until_serving(proc, free_port(), tmp_path / "log", "the web front", ceiling_s=1)
    finally:
        stop_group(proc, 30)


def test_cancel_gives_up_waiting(tmp_path):
    proc = _spawn("import time; time.sleep(600)", tmp_path / "log")
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    try:
        with pytest.raises(FrontStartCancelledError):
            wait_until_serving(
                proc, free_port(), tmp_path / "log", "the web front", ceiling_s=600, cancel=cancel
            )
    finally:
        stop_group(proc, 30)


def test_stop_group_stops_grandchildren_too(tmp_path):
    # A leader that ignores SIGTERM and has a child (as the front has its daemon): the
    # group is SIGKILLed after the grace, the child with it.
    code = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = _spawn(code, tmp_path / "log")
    deadline = time.monotonic() + 120
    while not (tmp_path / "log").read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int((tmp_path / "log").read_text().split()[0])
    stop_group(proc, grace_s=1)
    assert proc.returncode is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        # A zombie until init reaps it: gone from the group's point of view.
        if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"grandchild {child} still alive")
