"""``dataflare portal build | serve`` through the CLI."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from dataflare_platform.cli.main import app
from dataflare_platform.cli.plugin import plugin_app
from dataflare_platform_tests.portal.conftest import Portal
from dataflare_platform_tests.portal.conftest import http_url as http_url
from dataflare_platform_tests.portal.conftest import portal_registry as portal_registry
from dataflare_platform_tests.portal.conftest import registry as registry

runner = CliRunner()


def _build(portal: Portal, source: str, tmp_path: Path, *extra: str):
    root = tmp_path / "root.json"
    root.write_bytes(portal.root)
    args = ["portal", "build", "--from", source, "--out", str(tmp_path / "site")]
    args += ["--root", str(root), "--state", str(tmp_path / "state"), *extra]
    return runner.invoke(app, args)


def test_build_from_http_writes_the_site(portal_registry: Portal, http_url, tmp_path):
    usage = tmp_path / "usage.json"
    usage.write_text(json.dumps({"acme/currency": {"days": [{"day": "2026-12-01", "calls": 3}]}}))
    result = _build(portal_registry, http_url, tmp_path, "--usage", str(usage))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary == {
        "out": str(tmp_path / "site"),
        "pages": 4,
        "plugins": 3,
        "publishers": 3,
        "skipped": [],
        "usage": "file",
    }
    page = (tmp_path / "site/plugins/acme/currency.html").read_text()
    assert "3 calls" in page and "2026-12-01" in page


def test_build_refuses_a_tampered_registry_with_exit_2(portal_registry: Portal, tmp_path):
    path = portal_registry.registry.repo.metadata_dir / "evil.json"
    doc = json.loads(path.read_text())
    doc["signed"]["targets"]["evil/pii_mask/1.0.0.wasm"]["length"] += 1
    path.write_text(json.dumps(doc))
    result = _build(portal_registry, str(portal_registry.registry.repo.path), tmp_path)
    assert result.exit_code == 2
    assert "error:" in result.stderr and "refused" in result.stderr
    assert not (tmp_path / "site" / "index.html").exists()


def test_serve_refuses_a_non_loopback_host(tmp_path):
    (tmp_path / "index.html").write_text("x")
    result = runner.invoke(app, ["portal", "serve", str(tmp_path), "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "not a loopback address" in result.stderr and "--allow-remote" in result.stderr


def test_the_quick_start_names_only_real_plugin_commands():
    """The plugin page's SDK quick start is documentation: every ``dataflare plugin X``
    it shows must be a command ``dataflare plugin`` has."""
    template = resources.files("dataflare_platform.portal") / "templates" / "plugin.html"
    shown = set(re.findall(r"dataflare plugin ([a-z][a-z-]*)", template.read_text()))
    commands = set(typer.main.get_command(plugin_app).commands)  # type: ignore[attr-defined]
    assert {"new", "build", "admit", "publish", "install"} <= shown
    assert shown <= commands, shown - commands


@pytest.mark.e2e
def test_the_quick_start_walk_through_ends_on_the_portal(tmp_path, monkeypatch):
    """docs/portal.md's walk-through, command for command: scaffold, vectors, build,
    admit, a registry and a publisher key, publish, portal build; the plugin's page shows
    the published version, its docs and the publisher's key id."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATAFLARE_HOME", str(tmp_path / "home"))

    def run(*args: str) -> dict:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, (args, result.output)
        return json.loads(result.stdout)

    run("plugin", "new", "myplugin", "--kind", "map")
    vectors = {"name": "doubles", "input": {"x": [1.0, -2.5]}, "expected": {"y": [2.0, -5.0]}}
    Path("myplugin/plugin.tests.json").write_text(json.dumps({"vectors": [vectors]}))
    run("plugin", "build", "myplugin")
    admitted = run("plugin", "admit", "myplugin/build/myplugin.wasm", "--json")
    assert admitted["admitted"] is True, admitted
    for role in ("root", "targets", "snapshot", "timestamp"):
        run("plugin", "keygen", f"keys/{role}.pem")
    keyid = run("plugin", "keygen", "acme.pem")["keyid"]
    init = runner.invoke(app, ["plugin", "registry-init", "--repo", "repo", "--keys", "keys"])
    assert init.exit_code == 0, init.output
    add = ["plugin", "add-publisher", "acme", "--public-key", "acme.pem.pub.json"]
    assert runner.invoke(app, [*add, "--repo", "repo", "--keys", "keys"]).exit_code == 0
    run(
        "plugin", "publish", "myplugin/build/myplugin.wasm", "--namespace", "acme",
        "--key", "acme.pem", "--repo", "repo", "--keys", "keys",
    )  # fmt: skip
    summary = run(
        "portal", "build", "--from", "repo", "--root", "repo/metadata/1.root.json",
        "--out", "site",
    )  # fmt: skip
    assert summary["plugins"] == 1 and summary["pages"] == 2
    page = Path("site/plugins/acme/myplugin.html").read_text()
    assert 'data-version="0.1.0" class="status-published"' in page
    assert "y = x * factor" in page and keyid in page
    assert 'data-ref="acme/myplugin"' in Path("site/index.html").read_text()
