"""Signed entitlements of commercial plugins, checked at load through the registry with a
real WASM module and real Ed25519 signatures: tampering, foreign tenant or plugin,
untrusted issuer, expiry (stops new runs; the running one finishes every batch), row
limits at the next batch boundary, and the SPDX allow-list."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import wasmtime
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dataflare_platform.plugins.apply import run_batches
from dataflare_platform.plugins.entitlements import (
    Entitlement,
    EntitlementError,
    entitlement_path,
    is_commercial,
    sign_entitlement,
)
from dataflare_platform.plugins.registry import PluginRegistry, RegistryConfig
from dataflare_platform_tests.plugins.hostile import MANIFEST, OK, TRAP, module

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
EXPIRES = NOW + timedelta(days=30)
TENANT = "acme-corp"


@pytest.fixture
def issuer(tmp_path: Path) -> tuple[Ed25519PrivateKey, Path]:
    key = Ed25519PrivateKey.generate()
    pem = tmp_path / "issuer.pub.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key, pem


def _deliver(folder: Path, licence: str = "LicenseRef-Commercial") -> Path:
    """The hostile map plugin (copies x to y; x[0] == TRAP traps) as ``paid``."""
    folder.mkdir(exist_ok=True)
    manifest = MANIFEST.model_dump() | {"name": "paid", "license": licence}
    wasm = folder / "paid.wasm"
    wasm.write_bytes(wasmtime.wat2wasm(module()))
    (folder / "paid.json").write_text(json.dumps(manifest))
    return wasm


def _entitle(wasm: Path, key: Ed25519PrivateKey, **changes: object) -> dict:
    ent = {
        "id": "ent-1",
        "tenant": TENANT,
        "plugin": "paid",
        "issued_at": NOW - timedelta(days=1),
        "expires_at": EXPIRES,
        "max_rows": None,
    } | changes
    doc = sign_entitlement(Entitlement.model_validate(ent), key)
    entitlement_path(wasm).write_text(json.dumps(doc))
    return doc


def _registry(folder: Path, pem: Path, now: list[datetime], **values: object) -> PluginRegistry:
    config = RegistryConfig.load(tenant=TENANT, entitlement_issuer_keys=(pem,), **values)
    registry = PluginRegistry(folder, config)
    registry.clock = lambda: now[0]
    return registry


def _table(n: int, first: int = OK) -> pl.DataFrame:
    x = np.full(n, 7, dtype=np.int64)  # 7: no misbehaviour (hostile.py)
    x[0] = first
    return pl.DataFrame({"x": x})


def test_a_signed_entitlement_lets_the_commercial_plugin_run(tmp_path, issuer):
    key, pem = issuer
    wasm = _deliver(tmp_path / "plugins")
    _entitle(wasm, key)
    plugin = _registry(wasm.parent, pem, [NOW]).load("paid")
    assert plugin.map(_table(10))["y"].to_list() == _table(10)["x"].to_list()


def test_missing_tampered_foreign_and_untrusted_entitlements_are_refused(tmp_path, issuer):
    key, pem = issuer
    wasm = _deliver(tmp_path / "plugins")
    registry = _registry(wasm.parent, pem, [NOW])
    with pytest.raises(EntitlementError, match=r"plugin paid.*no paid\.entitlement\.json"):
        registry.load("paid")

    doc = _entitle(wasm, key, max_rows=100)
    doc["entitlement"]["max_rows"] = 10**12  # the customer raises their own limit
    entitlement_path(wasm).write_text(json.dumps(doc))
    with pytest.raises(EntitlementError, match="bad signature"):
        registry.load("paid")

    _entitle(wasm, key, tenant="someone-else")
    with pytest.raises(EntitlementError, match="another tenant"):
        registry.load("paid")

    _entitle(wasm, key, plugin="other")
    with pytest.raises(EntitlementError, match="for plugin 'other'"):
        registry.load("paid")

    _entitle(wasm, Ed25519PrivateKey.generate())  # a key the deployment does not trust
    with pytest.raises(EntitlementError, match="does not trust"):
        registry.load("paid")

    entitlement_path(wasm).write_text("{not json")
    with pytest.raises(EntitlementError, match="not a signed document"):
        registry.load("paid")


def test_expiry_stops_new_runs_but_never_the_running_one(tmp_path, issuer):
    """Loaded (a run starts) one second before the expiry; the clock passes the expiry as
    the run's first batch ends: every batch of the run still completes with its output;
    the next load (a new run) is refused naming the plugin and the expiry."""
    key, pem = issuer
    wasm = _deliver(tmp_path / "plugins")
    _entitle(wasm, key)
    now = [EXPIRES - timedelta(seconds=1)]
    registry = _registry(wasm.parent, pem, now)
    plugin = registry.load("paid")

    class ExpiresMidBatch:
        """A usage tap (told at the end of every call) moving the clock past the expiry."""

        def record(self, seconds: float, rows: int, error_kind: str | None) -> None:
            now[0] = EXPIRES + timedelta(seconds=1)

    plugin.usage = ExpiresMidBatch()
    table = _table(500)
    run = run_batches(plugin, table, batch_rows=100)
    assert run.batches == 5 and run.failed_batches == 0
    assert run.output["y"].to_list() == table["x"].to_list()
    with pytest.raises(EntitlementError) as refused:
        registry.load("paid")
    message = str(refused.value)
    assert "plugin paid" in message and f"expired at {EXPIRES.isoformat()}" in message


def test_row_limit_refuses_the_batch_after_the_limit(tmp_path, issuer):
    key, pem = issuer
    wasm = _deliver(tmp_path / "plugins")
    _entitle(wasm, key, max_rows=250)
    plugin = _registry(wasm.parent, pem, [NOW]).load("paid")
    done = []
    with pytest.raises(EntitlementError) as refused:
        for _ in range(10):
            done.append(plugin.map(_table(100)))
    # 100, 200 (< 250) and 300 (the batch crossing the limit completes); the fourth is refused
    assert len(done) == 3 and plugin.stats["rows"] == 300
    assert "row limit 250 of entitlement ent-1 reached (300 rows processed)" in str(refused.value)
    # a failing batch counts its rows too (they were handed to the plugin)
    plugin2 = _registry(wasm.parent, pem, [NOW]).load("paid")
    with pytest.raises(Exception, match="trap"):
        plugin2.map(_table(300, first=TRAP))
    with pytest.raises(EntitlementError, match="row limit"):
        plugin2.map(_table(1))


def test_spdx_allow_list_at_load_knows_commercial_ids(tmp_path, issuer):
    key, pem = issuer
    wasm = _deliver(tmp_path / "plugins")
    _entitle(wasm, key)
    allowed = _registry(wasm.parent, pem, [NOW], allowed_licences=("MIT", "LicenseRef-Commercial"))
    assert allowed.load("paid").name == "paid"
    refusing = _registry(wasm.parent, pem, [NOW], allowed_licences=("MIT",))
    with pytest.raises(EntitlementError, match=r"licence refused.*cannot be satisfied"):
        refusing.load("paid")
    # a dual-licensed plugin usable under an allowed free licence needs no entitlement
    dual = "MIT OR LicenseRef-Commercial"
    assert not is_commercial(dual, ["LicenseRef-Commercial"], ["MIT"])
    assert is_commercial(dual, ["LicenseRef-Commercial"], ["Apache-2.0"])
    assert is_commercial("MIT AND LicenseRef-Commercial", ["LicenseRef-Commercial"], ["MIT"])
    free = _deliver(tmp_path / "free", licence=dual)  # no entitlement file beside it
    assert _registry(free.parent, pem, [NOW], allowed_licences=("MIT",)).load("paid")
    with pytest.raises(EntitlementError, match=r"no paid\.entitlement\.json"):
        _registry(
            free.parent, pem, [NOW], allowed_licences=("Apache-2.0", "LicenseRef-Commercial")
        ).load("paid")


def test_cli_issues_an_entitlement_the_deployment_accepts(tmp_path, monkeypatch):
    """``dataflare plugin keygen`` + ``entitle`` on the issuer's side; the deployment trusts
    the PEM through ``DATAFLARE_ENTITLEMENT_ISSUER_KEYS`` and names its tenant."""
    from typer.testing import CliRunner

    from dataflare_platform.cli.plugin import plugin_app
    from dataflare_platform.plugins.registry import deployment_config

    runner = CliRunner()
    wasm = _deliver(tmp_path / "plugins")
    key = tmp_path / "issuer.pem"
    assert runner.invoke(plugin_app, ["keygen", str(key)]).exit_code == 0
    args = ["entitle", "paid", "--tenant", TENANT, "--expires", "2099-01-01T00:00:00Z"]
    args += ["--max-rows", "150", "--key", str(key), "--out", str(entitlement_path(wasm))]
    args += ["--public-key-out", str(tmp_path / "issuer.pub.pem")]
    result = runner.invoke(plugin_app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["plugin"] == "paid"
    monkeypatch.setenv("DATAFLARE_TENANT", TENANT)
    monkeypatch.setenv("DATAFLARE_ENTITLEMENT_ISSUER_KEYS", str(tmp_path / "issuer.pub.pem"))
    config = deployment_config(tmp_path / "home", allow_unpinned=True, lock_files=())
    plugin = PluginRegistry(wasm.parent, config).load("paid")
    plugin.map(_table(100))
    plugin.map(_table(100))
    with pytest.raises(EntitlementError, match="row limit 150"):
        plugin.map(_table(100))
    monkeypatch.setenv("DATAFLARE_TENANT", "another-tenant")
    config = deployment_config(tmp_path / "home", allow_unpinned=True, lock_files=())
    with pytest.raises(EntitlementError, match="another tenant"):
        PluginRegistry(wasm.parent, config).load("paid")


def test_row_limit_spans_runs_through_the_usage_log(tmp_path, issuer):
    """With usage statistics on, rows of earlier runs (flushed usage events since the
    entitlement was issued) count against the limit of the next run."""
    import gc

    from pydantic import SecretStr

    key, pem = issuer
    wasm = _deliver(tmp_path / "plugins")
    _entitle(wasm, key, max_rows=250, issued_at=datetime.now(UTC) - timedelta(hours=1))
    usage = {
        "usage_tenant_salt": SecretStr("a-salt-for-this-test-0001"),
        "usage_log_dir": tmp_path / "log",
    }
    first = _registry(wasm.parent, pem, [NOW], **usage).load("paid", pipeline="p1")
    first.map(_table(100))
    first.map(_table(100))
    del first
    gc.collect()  # the run ends: its last usage window is flushed
    second = _registry(wasm.parent, pem, [NOW], **usage).load("paid", pipeline="p2")
    second.map(_table(100))  # 300 rows since issue: this batch crossed the limit
    with pytest.raises(EntitlementError, match=r"row limit 250 .* \(300 rows processed\)"):
        second.map(_table(100))
