"""``dataflare ui`` as a process (the command itself, not the shared front helper: its
banner, signal handling and group are what is tested): it serves the one code location
name (to the client with the service token the first start stored under the home) and
stops cleanly, its whole front process group (front, daemon, code server) with it, on
SIGTERM and on SIGINT."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dataflare_platform.client import DataflareClient
from dataflare_platform.gateway.process import free_port, port_open
from dataflare_platform.home import LOCATION_NAME
from dataflare_platform_tests.e2e.conftest import wait_until_serving

pytestmark = pytest.mark.e2e

STOP_CEILING_S = 300  # generous: the machine is shared; the command's own grace is 5 s


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for(condition, ceiling_s: float) -> bool:
    deadline = time.monotonic() + ceiling_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_ui_serves_the_location_and_stops_on_signal(home, tmp_path: Path, sig):
    port = free_port()
    log_path = tmp_path / "ui.log"
    dataflare = Path(sys.executable).with_name("dataflare")
    with log_path.open("w") as log:
        # Run outside the repository: the workspace file is written to the home.
        proc = subprocess.Popen(
            [str(dataflare), "ui", "--home", str(home.root), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            start_new_session=True,
        )
    try:
        wait_until_serving(
            proc, port, log_path, "dataflare ui", ceiling_s=STOP_CEILING_S, path="/healthz"
        )
        banner = " ".join(log_path.read_text().split())
        found = re.search(r"front pid (\d+)", banner)
        assert found, banner
        dev_pgid = int(found.group(1))
        assert _alive(dev_pgid) and os.getpgid(dev_pgid) == dev_pgid  # its own group
        # The first start on the home printed an admin account and a token once, and kept
        # the token owner-only for the client.
        assert "admin password:" in banner and "service token:" in banner
        token_file = home.root / "security" / "service-token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        assert (home.root / "workspace.yaml").read_text() == (
            Path(__file__).parents[2] / "workspace.yaml"
        ).read_text()
        locations = {ref.location for ref in DataflareClient(port=port).jobs()}
        assert locations == {LOCATION_NAME}

        os.kill(proc.pid, sig)
        assert proc.wait(timeout=STOP_CEILING_S) == 0, log_path.read_text()[-3000:]
        assert _wait_for(lambda: not port_open(port), STOP_CEILING_S)
        assert _wait_for(lambda: not _alive(dev_pgid), STOP_CEILING_S), log_path.read_text()
    finally:
        for pgid in (proc.pid, locals().get("dev_pgid")):
            if pgid and _alive(pgid):
                os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=60)
