"""The publisher-to-pipeline walk-through of docs/walkthrough-plugin.md, replayed end to
end through the real CLI: scaffold, self-test vectors, build, submit (the
``plugin_admission`` job on the deployment's Dagster instance), approve, publish with the
signed scan report, install over HTTP from 127.0.0.1 (pinned in the deployment lock, the
report verified with the scanner key), run a YAML pipeline using the plugin, check its
output against values computed here, then yank, revoke, and the next load is refused.

Every ``dataflare`` command the test runs is one of the doc's, character for character
(``test_the_doc_shows_every_command_the_test_runs``)."""

from __future__ import annotations

import getpass
import hashlib
import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dataflare_platform.cli import app
from dataflare_platform.home import ProjectHome
from dataflare_platform.marketplace.served import served_directory

DOC = Path(__file__).resolve().parents[2] / "docs" / "walkthrough-plugin.md"
runner = CliRunner()

KEYS = [
    f"dataflare plugin keygen keys/{r}.pem" for r in ("root", "targets", "snapshot", "timestamp")
]
SETUP = [
    *KEYS,
    "dataflare plugin keygen acme.pem",
    "dataflare plugin keygen scan.pem",
    "dataflare plugin registry-init --repo registry --keys keys",
    "dataflare plugin add-publisher acme --public-key acme.pem.pub.json"
    " --repo registry --keys keys",
    # The role assignment the CLI's OS user acts with (one person plays every role here).
    'dataflare users add "$(whoami)" --role publisher@acme --role reviewer --role operator',
]
PUBLISHER = "--key acme.pem --repo registry --keys keys"
REGISTRY = "--from $REGISTRY_URL"
COMMANDS = {
    "new": "dataflare plugin new scale --kind map",
    "build": "dataflare plugin build scale",
    "submit": "dataflare plugin submit scale/build/scale.wasm --namespace acme",
    "approve": 'dataflare plugin approve acme/scale@0.1.0 --repo registry --reason "reviewed"',
    "publish": f"dataflare plugin publish scale/build/scale.wasm --namespace acme {PUBLISHER}",
    "install": f"dataflare plugin install acme/scale@0.1.0 {REGISTRY}"
    " --root registry/metadata/1.root.json",
    "info": f"dataflare plugin info acme/scale {REGISTRY}",
    "run": "dataflare pipeline run scaled.yaml",
    "yank": f'dataflare plugin yank acme/scale@0.1.0 --reason "wrong default" {PUBLISHER}',
    "verify": f"dataflare plugin verify scale {REGISTRY}",
    "revoke": f'dataflare plugin revoke acme/scale@0.1.0 --reason "CVE-2026-9" {PUBLISHER}',
}
VECTORS = {
    "vectors": [
        {
            "name": "default factor",
            "input": {"x": [0.0, 1.5, -2.0]},
            "expected": {"y": [0.0, 3.0, -4.0]},
        },
        {
            "name": "factor 3",
            "params": {"factor": 3.0},
            "input": {"x": [2.0]},
            "expected": {"y": [6.0]},
        },
    ]
}
PIPELINE = """\
name: scaled
catalog: {micro_batch: false}
sources:
  readings: {path: readings.parquet, columns: [id, x, date_time]}
streams:
  scaled:
    from: readings
    steps:
      - plugin: {name: scale, params: {factor: 3.0}}
output: scaled
sink: {kind: duckdb, path: scaled.duckdb, table: scaled}
"""


def run(command: str, url: str, expect: int = 0) -> dict:
    command = command.replace("$REGISTRY_URL", url).replace("$(whoami)", getpass.getuser())
    args = shlex.split(command)
    assert args[0] == "dataflare"
    result = runner.invoke(app, args[1:])
    assert result.exit_code == expect, f"{command}\n{result.output}"
    if expect != 0 or not result.stdout.strip().startswith(("{", "[")):
        return {}
    return json.loads(result.stdout)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """The registry folder served by ``http.server`` on a free loopback port."""
    (tmp_path / "work" / "registry").mkdir(parents=True)

    with served_directory(tmp_path / "work" / "registry") as url:
        yield url


def test_the_doc_shows_every_command_the_test_runs() -> None:
    text = DOC.read_text()
    missing = [c for c in [*SETUP, *COMMANDS.values()] if c not in text]
    assert not missing, missing


@pytest.mark.e2e
def test_publisher_to_pipeline_walk_through(
    audited_home: ProjectHome, tmp_path: Path, served: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    monkeypatch.chdir(work)
    # The operator's deployment settings (docs/walkthrough-plugin.md "Setup").
    monkeypatch.setenv("DATAFLARE_REGISTRY_DIR", str(work / "registry"))
    monkeypatch.setenv("DATAFLARE_PLUGIN_SCAN_KEY_FILE", str(work / "scan.pem"))
    monkeypatch.setenv("DATAFLARE_PLUGIN_SCANNER_PUBLIC_KEY", str(work / "scan.pem.pub.json"))
    monkeypatch.setenv("DAGSTER_HOME", str(audited_home.dagster_home))
    monkeypatch.setenv("DATAFLARE_PASSWORD", "a long walk-through password")
    for command in SETUP:
        run(command, served)

    # Publisher: scaffold, vectors, build, submit.
    run(COMMANDS["new"], served)
    (work / "scale" / "plugin.tests.json").write_text(json.dumps(VECTORS, indent=2))
    built = run(COMMANDS["build"], served)
    assert Path(built["wasm"]) == Path("scale/build/scale.wasm")
    assert (work / "scale" / "build" / "scale.tests.json").exists()
    submitted = run(COMMANDS["submit"], served)
    assert submitted["admitted"] is True and submitted["checks_failed"] == []
    assert submitted["state"] == "scanned"
    assert submitted["quality_score"] == 78  # 6/6 applicable checks, description, 2 vectors
    import dagster as dg

    with dg.DagsterInstance.from_config(str(audited_home.dagster_home)) as instance:
        record = instance.get_run_by_id(submitted["run_id"])
        assert record is not None and record.is_success  # recorded on the deployment's instance

    # Reviewer approves; publisher publishes with the signed scan report.
    assert run(COMMANDS["approve"], served)["state"] == "approved"
    published = run(COMMANDS["publish"], served)
    assert published["state"] == "published"
    assert published["attestations"] == ["acme/scale/0.1.0.scan.dsse.json"]
    wasm = (work / "scale" / "build" / "scale.wasm").read_bytes()
    assert published["sha256"] == hashlib.sha256(wasm).hexdigest()

    # Operator: install over HTTP (report verified with the scanner key), pinned.
    installed = run(COMMANDS["install"], served)
    assert installed["status"] == "published"
    assert (audited_home.root / "plugins" / "scale.wasm").read_bytes() == wasm
    from dataflare_platform.plugins.lock import read_lock

    lock = read_lock(audited_home.root / "plugins.lock")
    assert lock is not None and lock.plugins["scale"].sha256 == published["sha256"]
    (version,) = run(COMMANDS["info"], served)["versions"]
    (link,) = version["attestations"]  # the scan report, linked by digest in signed metadata
    report = (work / "registry" / "targets" / link["path"]).read_bytes()
    assert link["sha256"] == hashlib.sha256(report).hexdigest()

    # A pipeline step uses it; the output is checked against values computed here.
    xs = [0.25, -3.0, None, 7.5, 1e6]
    pq.write_table(
        pa.table(
            {
                "id": pa.array(range(len(xs)), pa.int64()),
                "x": pa.array(xs, pa.float64()),
                "date_time": pa.array(
                    [1_700_000_000_000 + i for i in range(len(xs))], pa.timestamp("ms")
                ),
            }
        ),
        work / "readings.parquet",
    )
    (work / "scaled.yaml").write_text(PIPELINE)
    out = run(COMMANDS["run"], served)
    assert out["events_out"] == len(xs)
    with duckdb.connect(str(work / "scaled.duckdb"), read_only=True) as db:
        rows = dict(db.sql("SELECT id, y FROM scaled").fetchall())
    assert rows == {i: (None if x is None else x * 3.0) for i, x in enumerate(xs)}

    # Yanked: installed copies keep loading; revoked: the next load is refused.
    yanked = run(COMMANDS["yank"], served)
    assert yanked["state"] == "yanked"
    assert run(COMMANDS["verify"], served)["status"] == "yanked"
    revoked = run(COMMANDS["revoke"], served)
    assert revoked["state"] == "revoked"
    monkeypatch.setenv("DATAFLARE_MARKETPLACE_REFRESH_S", "0")  # refresh at the next load
    (work / "scaled.duckdb").unlink()
    refused = runner.invoke(app, ["pipeline", "run", "scaled.yaml"])
    assert refused.exit_code != 0
    text = " ".join(refused.output.split())
    assert "revoked" in text and "CVE-2026-9" in text, text
    print("REFUSED", text)
    assert (
        not (work / "scaled.duckdb").exists()
        or not duckdb.connect(str(work / "scaled.duckdb"), read_only=True)
        .sql("SELECT count(*) FROM information_schema.tables WHERE table_name = 'scaled'")
        .fetchone()[0]
    )
