"""``dataflare plugin keygen -> registry-init -> add-publisher -> publish -> install ->
verify`` over HTTP, into a home whose deployment lock is signed."""

from __future__ import annotations

import json
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dataflare_platform.cli.plugin import plugin_app
from dataflare_platform.events.log import EventLog
from dataflare_platform.marketplace.served import served_directory
from dataflare_platform.plugins.build import SAMPLES_DIR
from dataflare_platform.plugins.lock import LockAuth, read_lock
from dataflare_platform.plugins.usage import usage_topic
from dataflare_platform_tests.marketplace.conftest import WASM

runner = CliRunner()


def ok(*args: str) -> dict:
    result = runner.invoke(plugin_app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    repo = tmp_path / "repo"
    repo.mkdir()
    with served_directory(repo) as url:
        yield repo, url


@dataclass(frozen=True)
class CliRegistry:
    """A registry made with the CLI: top-level keys, ``registry-init``, the publisher
    ``acme`` added, and the sample module and manifest at ``module``."""

    init: dict
    acme: dict
    registry: tuple[str, ...]  # --repo/--keys
    key: tuple[str, ...]  # acme's --key
    module: Path

    @property
    def publisher(self) -> tuple[str, ...]:
        return ("--namespace", "acme", *self.key, *self.registry)


def cli_registry(tmp_path: Path, repo: Path) -> CliRegistry:
    keys = tmp_path / "keys"
    for role in ("root", "targets", "snapshot", "timestamp"):
        assert len(ok("keygen", str(keys / f"{role}.pem"))["keyid"]) == 64
    acme = ok("keygen", str(tmp_path / "acme.pem"))
    init = ok("registry-init", "--repo", str(repo), "--keys", str(keys))
    registry = ("--repo", str(repo), "--keys", str(keys))
    ok("add-publisher", "acme", "--public-key", acme["public_key"], *registry)
    module = tmp_path / "build" / "currency.wasm"
    module.parent.mkdir()
    module.write_bytes(WASM)
    shutil.copy(SAMPLES_DIR / "currency" / "plugin.json", module.with_suffix(".json"))
    return CliRegistry(init, acme, registry, ("--key", str(tmp_path / "acme.pem")), module)


def test_cli_walk_through(home, tmp_path: Path, served: tuple[Path, str], monkeypatch) -> None:
    repo, url = served
    # usage statistics on: the install is recorded as a usage event (issue 20 §4)
    monkeypatch.setenv("DATAFLARE_PLUGIN_USAGE_SALT", "walk-through-salt-0123")
    made = cli_registry(tmp_path, repo)
    init, module = made.init, made.module
    assert stat.S_IMODE((tmp_path / "acme.pem").stat().st_mode) == 0o600
    assert "PRIVATE" not in json.dumps(made.acme)
    published = ok("publish", str(module), *made.publisher)
    assert published["target"] == "acme/currency/1.0.0.wasm"
    installed = ok("install", "acme/currency@1.0.0", "--from", url, "--root", init["root"])
    assert installed["status"] == "published"
    assert (home.root / "plugins" / "currency.wasm").read_bytes() == WASM
    (event,) = usage_topic(EventLog(home.event_log_dir)).read_all().to_pylist()
    assert (event["event"], event["plugin"], event["publisher"], event["version"]) == (
        "install",
        "currency",
        "acme",
        "1.0.0",
    )
    lock_path = home.root / "plugins.lock"
    lock = read_lock(lock_path)
    assert lock is not None and lock.plugins["currency"].sha256 == published["sha256"]
    LockAuth.for_home(home.root).check(lock_path, lock)  # the deployment lock stays signed
    assert ok("verify", "currency", "--from", url)["sha256"] == published["sha256"]
    publisher = (*made.key, *made.registry)
    ok("yank", "acme/currency@1.0.0", "--reason", "rounding", *publisher)
    assert ok("verify", "currency", "--from", url)["status"] == "yanked"
    (home.root / "plugins" / "currency.wasm").write_bytes(WASM + b"\x00")
    result = runner.invoke(plugin_app, ["verify", "currency", "--from", url])
    assert result.exit_code == 2, result.output  # the CLI's error boundary
    assert "digest_mismatch" in " ".join(result.output.split())
    ok("revoke", "acme/currency@1.0.0", "--reason", "CVE-2026-2", *publisher)
    result = runner.invoke(plugin_app, ["verify", "currency", "--from", url])
    assert result.exit_code == 2, result.output
    assert "(revoked): acme/currency/1.0.0.wasm: CVE-2026-2" in " ".join(result.output.split())


def test_cli_list_info_kill_and_audited_refusal(
    audited_home, tmp_path: Path, served: tuple[Path, str]
) -> None:
    from dataflare_platform.compliance.audit import AuditLog
    from dataflare_platform.compliance.override_refusals import deployment_audit_url

    repo, url = served
    made = cli_registry(tmp_path, repo)
    init, acme, module, registry, publisher = (
        made.init,
        made.acme,
        made.module,
        made.registry,
        made.publisher,
    )
    manifest = json.loads(module.with_suffix(".json").read_text())
    for version in ("1.0.0", "1.1.0"):
        module.with_suffix(".json").write_text(json.dumps({**manifest, "version": version}))
        ok("publish", str(module), *publisher)
    module.with_suffix(".json").write_text(json.dumps({**manifest, "version": "1.0.5"}))
    older = runner.invoke(plugin_app, ["publish", str(module), *publisher])
    assert older.exit_code == 2 and "not newer than the published 1.1.0" in older.output

    listed = ok("list", "--from", url, "--root", init["root"], "--json")
    assert [(v["namespace"], v["name"], v["version"], v["status"]) for v in listed] == [
        ("acme", "currency", "1.0.0", "published"),
        ("acme", "currency", "1.1.0", "published"),
    ]
    assert listed[0]["license"] == manifest["license"]
    assert listed[0]["capabilities"] == manifest.get("capabilities", [])
    ok("kill", "acme/currency@1.0.0", "--reason", "malware", *registry)
    info = ok("info", "acme/currency", "--from", url)
    by_version = {v["version"]: v for v in info["versions"]}
    assert (by_version["1.0.0"]["status"], by_version["1.0.0"]["reason"]) == ("killed", "malware")
    assert by_version["1.1.0"]["signed_by"] == [acme["keyid"]]
    assert len(by_version["1.1.0"]["sha256"]) == 64
    assert by_version["1.1.0"]["attestations"] == []
    missing = runner.invoke(plugin_app, ["info", "acme/nothing", "--from", url])
    assert missing.exit_code == 2

    refused = runner.invoke(plugin_app, ["install", "acme/currency@1.0.0", "--from", url])
    assert refused.exit_code == 2 and "killed by the registry operator" in refused.output
    with AuditLog(deployment_audit_url(audited_home.root)) as log:
        (entry,) = [e for e in log.tail(50) if e.action == "plugin_marketplace_refused"]
    details = json.loads(entry.details)
    assert entry.subject == "currency" and entry.actor.startswith("user:")
    assert (details["stage"], details["reason"], details["version"]) == (
        "install",
        "revoked",
        "1.0.0",
    )


def test_deprecate_shows_in_list_and_info_and_installs_with_a_warning(
    home, tmp_path: Path, served: tuple[Path, str]
) -> None:
    repo, url = served
    made = cli_registry(tmp_path, repo)
    init, module, registry, key = made.init, made.module, made.registry, made.key
    ok("publish", str(module), *made.publisher)
    out = ok("deprecate", "acme/currency@1.0.0", "--reason", "use 2.x", *key, *registry)
    assert out == {"target": "acme/currency/1.0.0.wasm", "status": "deprecated"}
    (listed,) = ok("list", "--from", url, "--root", init["root"], "--json")
    assert (listed["status"], listed["reason"]) == ("deprecated", "use 2.x")
    (version,) = ok("info", "acme/currency", "--from", url)["versions"]
    assert version["status"] == "deprecated"
    result = runner.invoke(plugin_app, ["install", "acme/currency@1.0.0", "--from", url])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "deprecated"
    assert "acme/currency@1.0.0 is deprecated" in " ".join(result.stderr.split())
    assert (home.root / "plugins" / "currency.wasm").read_bytes() == WASM
    # still a step on from deprecated: yank, then revoke (final)
    ok("yank", "acme/currency@1.0.0", "--reason", "gone", *key, *registry)
    assert ok("verify", "currency", "--from", url)["status"] == "yanked"
