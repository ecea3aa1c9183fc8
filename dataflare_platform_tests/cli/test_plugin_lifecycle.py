"""``dataflare plugin approve | publish | yank | revoke`` against a registry with a
lifecycle store: publish only an approved release, with its scan report verified and
attached; yank and revoke move the lifecycle first, so a step out of order leaves the
registry unchanged; every step is audited under the OS user."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dataflare_platform.access.principal import Principal
from dataflare_platform.cli import app
from dataflare_platform.compliance.override_refusals import deployment_audit_log
from dataflare_platform.home import ProjectHome
from dataflare_platform.marketplace.lifecycle import LifecycleStore
from dataflare_platform.marketplace.repository import Repository, load_signer
from dataflare_platform.marketplace.scan import load_submission, scan_submission, store_report
from dataflare_platform.plugins.build import SAMPLES_DIR, build_plugin

runner = CliRunner()
RELEASE = "acme/currency@1.0.0"
SCANNER = Principal(name="plugin-admission", kind="service", via="host", roles={"scanner"})


def assign(home: ProjectHome, *roles: str) -> None:
    """The deployment's role assignment for the OS user the CLI acts as: its local
    account (what ``dataflare users add <name> --role ...`` writes)."""
    from dataflare_platform.identity.local_users import LocalUsers
    from dataflare_platform.identity.store import IdentityStore

    users = LocalUsers(IdentityStore(home.root))
    name = getpass.getuser()
    if any(u["name"] == name for u in users.list()):
        users.set_roles(name, frozenset(roles))
    else:
        users.add(name, "a long test password", frozenset(roles))


def ok(*args: str) -> dict:
    result = runner.invoke(app, ["plugin", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def refused(*args: str) -> str:
    result = runner.invoke(app, ["plugin", *args])
    assert result.exit_code != 0, result.output
    return " ".join(result.output.split())


@pytest.fixture
def scanned(audited_home: ProjectHome, tmp_path: Path) -> dict[str, Path]:
    """A registry with acme, the currency sample submitted and scanned (admitted) by the
    real scan with a signed report staged, as ``plugin submit`` leaves it."""
    keys = tmp_path / "keys"
    for role in ("root", "targets", "snapshot", "timestamp"):
        ok("keygen", str(keys / f"{role}.pem"))
    ok("keygen", str(tmp_path / "acme.pem"))
    ok("keygen", str(tmp_path / "scan.pem"))
    repo = tmp_path / "registry"
    ok("registry-init", "--repo", str(repo), "--keys", str(keys))
    pub = str(tmp_path / "acme.pem.pub.json")
    ok("add-publisher", "acme", "--public-key", pub, "--repo", str(repo), "--keys", str(keys))
    wasm = build_plugin(SAMPLES_DIR / "currency", tmp_path / "build")
    submission = load_submission(wasm, "acme")
    published = Repository(repo).published_versions("acme", "currency")
    result = scan_submission(submission, None, published, load_signer(tmp_path / "scan.pem"))
    assert result.admitted
    store_report(result, submission, repo)
    assign(audited_home, "publisher@acme", "reviewer", "operator")
    publisher = Principal(
        name=getpass.getuser(), kind="user", via="local", roles={"publisher@acme"}
    )
    with deployment_audit_log(audited_home.root) as audit:
        store = LifecycleStore.for_registry(repo, audit)
        store.create(RELEASE, publisher)
        store.transition(RELEASE, "submitted", publisher)
        store.transition(RELEASE, "scanned", SCANNER, admitted=True, score=result.score)
    return {"repo": repo, "keys": keys, "wasm": wasm, "tmp": tmp_path}


def registry_args(s: dict[str, Path]) -> list[str]:
    return ["--key", str(s["tmp"] / "acme.pem"), "--repo", str(s["repo"]), "--keys", str(s["keys"])]


def state(s: dict[str, Path]) -> str:
    return json.loads((s["repo"] / "lifecycle.json").read_text())[RELEASE]["state"]


def test_publish_needs_approval_then_attaches_the_verified_report(
    scanned, monkeypatch: pytest.MonkeyPatch
) -> None:
    scan_pub = str(scanned["tmp"] / "scan.pem.pub.json")
    monkeypatch.setenv("DATAFLARE_PLUGIN_SCANNER_PUBLIC_KEY", scan_pub)
    publish = ["publish", str(scanned["wasm"]), "--namespace", "acme", *registry_args(scanned)]
    assert "is scanned, not approved" in refused(*publish)
    assert Repository(scanned["repo"]).published_versions("acme", "currency") == []
    approved = ok("approve", RELEASE, "--repo", str(scanned["repo"]), "--reason", "read it")
    assert approved["state"] == "approved"
    monkeypatch.delenv("DATAFLARE_PLUGIN_SCANNER_PUBLIC_KEY")
    assert "--scanner-key" in refused(*publish)  # a tracked release carries its report
    done = ok(*publish, "--scanner-key", scan_pub)
    assert done["state"] == "published" and state(scanned) == "published"
    assert done["attestations"] == ["acme/currency/1.0.0.scan.dsse.json"]
    assert (scanned["repo"] / "targets" / "acme" / "currency" / "1.0.0.scan.dsse.json").exists()


def test_a_report_signed_by_another_key_is_not_published(scanned, tmp_path: Path) -> None:
    ok("approve", RELEASE, "--repo", str(scanned["repo"]))
    ok("keygen", str(tmp_path / "other.pem"))
    publish = ["publish", str(scanned["wasm"]), "--namespace", "acme", *registry_args(scanned)]
    out = refused(*publish, "--scanner-key", str(tmp_path / "other.pem.pub.json"))
    assert "signature refused" in out
    assert state(scanned) == "approved"
    assert Repository(scanned["repo"]).published_versions("acme", "currency") == []


def test_yank_and_revoke_move_the_lifecycle_and_out_of_order_changes_nothing(
    scanned, audited_home: ProjectHome
) -> None:
    key = ["--scanner-key", str(scanned["tmp"] / "scan.pem.pub.json")]
    ok("approve", RELEASE, "--repo", str(scanned["repo"]))
    ok("publish", str(scanned["wasm"]), "--namespace", "acme", *registry_args(scanned), *key)
    revoked = ok("revoke", RELEASE, "--reason", "CVE-1", *registry_args(scanned))
    assert revoked == {
        "target": "acme/currency/1.0.0.wasm",
        "status": "revoked",
        "state": "revoked",
    }
    out = refused("yank", RELEASE, "--reason", "late", *registry_args(scanned))
    assert "cannot go from revoked to yanked" in out
    repo = Repository(scanned["repo"])
    assert repo.target_custom("acme", "currency", "1.0.0")["reason"] == "CVE-1"  # unchanged
    from dataflare_platform.compliance.audit import AuditLog

    with AuditLog(f"sqlite:///{audited_home.root / 'audit.db'}") as log:
        steps = [e for e in log.tail(50) if e.subject == RELEASE]
    user = f"user:{getpass.getuser()}"
    moved = [(e.action, e.payload()["to"], e.actor) for e in steps]
    assert ("plugin_lifecycle", "approved", user) in moved
    assert ("plugin_lifecycle", "revoked", user) in moved
    assert ("plugin_lifecycle_refused", "yanked", user) in moved


def test_the_cli_acts_with_the_roles_of_the_deployments_role_assignment(
    scanned, audited_home: ProjectHome
) -> None:
    """The OS user's roles come from its local account: without reviewer it cannot
    approve, a publisher of another namespace cannot deprecate, and with the roles
    assigned the release moves published -> deprecated."""
    scan_key = ["--scanner-key", str(scanned["tmp"] / "scan.pem.pub.json")]
    assign(audited_home, "publisher@acme")
    out = refused("approve", RELEASE, "--repo", str(scanned["repo"]))
    assert "needs the reviewer role" in out and "deny by default" in out
    assert state(scanned) == "scanned"
    assign(audited_home, "reviewer")
    ok("approve", RELEASE, "--repo", str(scanned["repo"]))
    out = refused("publish", str(scanned["wasm"]), "--namespace", "acme",
                  *registry_args(scanned), *scan_key)  # fmt: skip
    assert "needs the publisher role for namespace acme" in out
    assert Repository(scanned["repo"]).published_versions("acme", "currency") == []
    assign(audited_home, "publisher@acme")
    ok("publish", str(scanned["wasm"]), "--namespace", "acme", *registry_args(scanned), *scan_key)
    assign(audited_home, "publisher@globex")
    deprecate = ["deprecate", RELEASE, "--reason", "use 2.x", *registry_args(scanned)]
    assert "needs the publisher role for namespace acme" in refused(*deprecate)
    assert Repository(scanned["repo"]).target_custom("acme", "currency", "1.0.0")["status"] == (
        "published"
    )
    assign(audited_home, "publisher@acme", "publisher@globex")
    assert ok(*deprecate) == {
        "target": "acme/currency/1.0.0.wasm",
        "status": "deprecated",
        "state": "deprecated",
    }


def test_an_untracked_release_is_not_published_where_a_store_exists(
    scanned, tmp_path: Path
) -> None:
    other = build_plugin(SAMPLES_DIR / "pii_mask", tmp_path / "other")
    publish = ["publish", str(other), "--namespace", "acme", *registry_args(scanned)]
    out = refused(*publish, "--scanner-key", str(scanned["tmp"] / "scan.pem.pub.json"))
    assert "no release 'acme/pii_mask@" in out
    assert Repository(scanned["repo"]).published_versions("acme", "pii_mask") == []


@pytest.mark.e2e
def test_submit_of_a_module_failing_its_vectors_exits_1_and_cannot_be_approved(
    audited_home: ProjectHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "keys"
    for role in ("root", "targets", "snapshot", "timestamp"):
        ok("keygen", str(keys / f"{role}.pem"))
    ok("keygen", str(tmp_path / "scan.pem"))
    repo = tmp_path / "registry"
    ok("registry-init", "--repo", str(repo), "--keys", str(keys))
    monkeypatch.setenv("DATAFLARE_REGISTRY_DIR", str(repo))
    monkeypatch.setenv("DATAFLARE_PLUGIN_SCAN_KEY_FILE", str(tmp_path / "scan.pem"))
    monkeypatch.setenv("DAGSTER_HOME", str(audited_home.dagster_home))
    assign(audited_home, "publisher@acme", "reviewer")
    wasm = build_plugin(SAMPLES_DIR / "currency", tmp_path / "build")
    wrong = {
        "vectors": [{"name": "off", "input": {"price": [1000]}, "expected": {"price_eur": [1.0]}}]
    }
    wasm.with_suffix(".tests.json").write_text(json.dumps(wrong))
    result = runner.invoke(app, ["plugin", "submit", str(wasm), "--namespace", "acme"])
    assert result.exit_code == 1, result.output
    verdict = json.loads(result.stdout)
    assert verdict["admitted"] is False and verdict["checks_failed"] == ["self_tests"]
    assert verdict["state"] == "scanned" and verdict["attestation"]  # signed, to fix from
    assert "its scan did not admit it" in refused("approve", RELEASE, "--repo", str(repo))
