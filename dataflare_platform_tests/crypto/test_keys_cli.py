"""``dataflare keys``: rotate, retire, destroy through the CLI, each audited, no key
material printed."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from dataflare_platform.cli import app
from dataflare_platform.compliance.audit import AuditLog
from dataflare_platform.compliance.audit_keys import provision
from dataflare_platform.crypto.columns import Binding
from dataflare_platform.crypto.keyring import KeyDestroyedError
from dataflare_platform.crypto.settings import CryptoSettings

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "home"
    root.mkdir(mode=0o700)
    monkeypatch.setenv("DATAFLARE_HOME", str(root))
    monkeypatch.setenv("DATAFLARE_KEYRING_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    provision(root)  # key operations are audited: the home's audit entry key
    return root


def _run(*args: str) -> dict:
    result = runner.invoke(app, ["keys", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_rotate_retire_destroy_are_audited(home: Path, tmp_path: Path) -> None:
    cipher = CryptoSettings.resolve().cipher()
    sealed = cipher.encrypt(pa.array(["x"]), Binding("customers", "email"))
    assert _run("rotate", "customers") == {
        "name": "customers",
        "latest": 2,
        "min_decryption_version": 1,
    }
    assert _run("retire", "customers", "--below", "2")["min_decryption_version"] == 2
    assert _run("purge", "customers") == {"name": "customers", "purged": [1]}
    assert sorted(p.name for p in (tmp_path / "keys" / "customers").glob("*.kek")) == ["v2.kek"]
    refused = runner.invoke(app, ["keys", "destroy", "customers"])
    assert refused.exit_code == 2 and "--yes" in refused.output
    assert _run("destroy", "customers", "--yes") == {"name": "customers", "destroyed": True}
    with pytest.raises(KeyDestroyedError):
        CryptoSettings.resolve().cipher().decrypt(sealed, Binding("customers", "email"))
    with AuditLog(f"sqlite:///{home / 'audit.db'}") as log:
        entries = log.tail(4)
    assert [e.action for e in entries] == [
        "key_rotated",
        "key_retired",
        "key_purged",
        "key_destroyed",
    ]
    assert {e.actor for e in entries} == {"system:cli"} and entries[0].subject == "key:customers"
    kek = (tmp_path / "keys").rglob("*.kek")
    assert not list(kek)


def test_a_bad_key_name_is_refused(home: Path) -> None:
    result = runner.invoke(app, ["keys", "rotate", "../etc"])
    assert result.exit_code == 2 and "key name" in result.output
