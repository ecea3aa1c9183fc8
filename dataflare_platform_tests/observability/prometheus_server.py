"""A real Prometheus (Debian's ``prometheus`` package) started by a test on loopback.

Not its systemd service: ``/usr/bin/prometheus`` with a generated config scraping the
given targets every second, storage in the test's tmp dir, a free port on 127.0.0.1.
CI (.ci/run) installs the package and sets DATAFLARE_REQUIRE_PROMETHEUS=1, so a missing
binary fails there instead of skipping.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from dataflare_platform.gateway.process import free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def prometheus_available() -> bool:
    return Path(PROMETHEUS).is_file() and os.access(PROMETHEUS, os.X_OK)


requires_prometheus = pytest.mark.skipif(
    not prometheus_available() and os.environ.get("DATAFLARE_REQUIRE_PROMETHEUS") != "1",
    reason="Debian's prometheus package is not installed (CI installs it and requires it)",
)


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict]:
        q = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{q}", timeout=30) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, or None when it has no series."""
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def wait_for(
        self, expr: str, predicate: Callable[[float | None], bool], ceiling_s: float = 120
    ) -> float | None:
        """Poll until ``predicate(value)`` holds: progress decides, the ceiling only
        catches a hang."""
        deadline = time.monotonic() + ceiling_s
        seen = None
        while time.monotonic() < deadline:
            seen = self.value(expr)
            if predicate(seen):
                return seen
            time.sleep(0.5)
        raise AssertionError(f"{expr}: last value {seen} after {ceiling_s:g} s")

    def targets_up(self) -> list[dict]:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=30) as r:
            return json.loads(r.read())["data"]["activeTargets"]


@contextlib.contextmanager
def running_prometheus(
    workdir: Path,
    targets: list[str],
    extra_args: Sequence[str] = (),
    extra_config: str = "",
) -> Iterator[Prometheus]:
    """``extra_args``: more command-line flags (e.g. the console template directories);
    ``extra_config``: more top-level YAML (``rule_files``, ``alerting``) for the alert
    tests."""
    if not prometheus_available():
        pytest.fail(f"{PROMETHEUS} is missing: apt-get install prometheus")
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: dataflare\n    static_configs:\n"
        f"      - targets: {json.dumps(targets)}\n" + extra_config
    )
    port = free_port()
    log = (workdir / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
            *extra_args,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"prometheus exited {proc.returncode}: "
                    + (workdir / "prometheus.log").read_text()[-2000:]
                )
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("prometheus not ready after 120 s")
            time.sleep(0.2)
        yield Prometheus(url)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        log.close()
