"""The web UI's server sees the code location and what a run recorded in the instance."""

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from dataflare_platform.definitions import defs

pytestmark = pytest.mark.e2e

ASSETS_QUERY = """
{
  assetNodes { assetKey { path } }
  assetOrError(assetKey: {path: ["nexmark", "bids"]}) {
    ... on Asset { assetMaterializations(limit: 1) { runId } }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["data"]


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


def test_ui_server_lists_the_pipeline_and_its_latest_run(webserver, landed_home):
    with dg.DagsterInstance.get() as instance:
        run = defs.resolve_job_def("nexmark_ingest_job").execute_in_process(instance=instance)
    data = _graphql(webserver, ASSETS_QUERY)
    paths = {"/".join(node["assetKey"]["path"]) for node in data["assetNodes"]}
    assert {"nexmark/bids", "nexmark/daily_seller_stats", "nexmark/landing/bids"} <= paths
    assert data["assetOrError"]["assetMaterializations"] == [{"runId": run.run_id}]
