"""The web UI's server (behind the front, reached with the home's service token) sees the
code location and what a run recorded in the instance."""

import json
import urllib.request

import dagster as dg
import pytest

from dataflare_platform.client.transport import resolve_token
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


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {resolve_token()}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["data"]


def test_ui_server_lists_the_pipeline_and_its_latest_run(webserver, landed_home):
    with dg.DagsterInstance.get() as instance:
        run = defs.resolve_job_def("nexmark_ingest_job").execute_in_process(instance=instance)
    data = _graphql(webserver, ASSETS_QUERY)
    paths = {"/".join(node["assetKey"]["path"]) for node in data["assetNodes"]}
    assert {"nexmark/bids", "nexmark/daily_seller_stats", "nexmark/landing/bids"} <= paths
    assert data["assetOrError"]["assetMaterializations"] == [{"runId": run.run_id}]
