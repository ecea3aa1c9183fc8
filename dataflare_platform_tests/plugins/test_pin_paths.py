"""Every load path goes through the same pin check, and the deployment's lock is
authenticated.

Paths: the Python API (``load_plugin``), the CLI (``plugin run`` by name, by file and by
source folder; ``plugin inspect``), YAML pipelines (``load_plugins``) and the Dagster
resource every pipeline run, Python pipeline and component loads through
(``defs/plugins/test_assets.py`` runs it in a real Dagster run). The only way past a
missing pin is ``DATAFLARE_PLUGIN_ALLOW_UNPINNED=true``, and every load it lets through
is audited. The lock carries an HMAC with a key outside the home: a tampered lock, a
swapped digest and a lock copied from another home are refused as a whole and audited.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dataflare_platform.cli import app
from dataflare_platform.compliance.audit import AuditLog
from dataflare_platform.compliance.override_refusals import deployment_audit_url
from dataflare_platform.defs.plugins.resources import PluginRuntimeResource
from dataflare_platform.errors import ConfigError
from dataflare_platform.home import ProjectHome, user_config_dir
from dataflare_platform.plugins import load_plugin
from dataflare_platform.plugins.build import SAMPLES_DIR
from dataflare_platform.plugins.lock import (
    LOCK_FILE,
    LockAuth,
    LockAuthenticationError,
    PluginPinError,
    read_lock,
)
from dataflare_platform.plugins.specs import load_plugins
from dataflare_platform.streams.spec import PipelineSpec
from dataflare_platform_tests.plugins.test_lock import PIPELINE


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def audit_entries(home: ProjectHome, action: str) -> list:
    with AuditLog(deployment_audit_url(home.root)) as log:
        return [e for e in log.tail(200) if e.action == action]


def details(entry) -> dict:
    return json.loads(entry.details)


def swap(plugin_dir: Path) -> str:
    """An attacker with write access to the plugin folder swaps ``currency``'s module."""
    shutil.copy(plugin_dir / "pii_mask.wasm", plugin_dir / "currency.wasm")
    return sha(plugin_dir / "currency.wasm")


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


# -- every path, one check --------------------------------------------------------------


def test_the_python_api_checks_the_deployments_pins(home, plugin_dir):
    assert load_plugin(plugin_dir / "currency.wasm").name == "currency"  # pinned by conftest
    swapped = swap(plugin_dir)
    with pytest.raises(PluginPinError) as err:
        load_plugin(plugin_dir / "currency.wasm")
    assert swapped in str(err.value) and sha(plugin_dir / "pii_mask.wasm") == swapped
    (entry,) = audit_entries(home, "plugin_refused")
    assert entry.subject == "currency" and entry.actor == "system"
    assert details(entry)["reason"] == "digest_mismatch"
    assert details(entry)["sha256"] == swapped


def test_an_unpinned_module_is_refused_by_the_python_api_unless_the_opt_out_is_set(
    home, plugin_dir, monkeypatch
):
    shutil.copy(plugin_dir / "currency.wasm", plugin_dir / "fresh.wasm")
    manifest = json.loads((plugin_dir / "currency.json").read_text())
    (plugin_dir / "fresh.json").write_text(json.dumps({**manifest, "name": "fresh"}))
    with pytest.raises(PluginPinError, match="not pinned by any lock file"):
        load_plugin(plugin_dir / "fresh.wasm")
    assert details(audit_entries(home, "plugin_refused")[-1])["reason"] == "unpinned"
    monkeypatch.setenv("DATAFLARE_PLUGIN_ALLOW_UNPINNED", "true")
    assert load_plugin(plugin_dir / "fresh.wasm").name == "fresh"
    (allowed,) = audit_entries(home, "plugin_unpinned_loaded")
    assert allowed.subject == "fresh"
    assert details(allowed)["setting"] == "DATAFLARE_PLUGIN_ALLOW_UNPINNED"
    # The opt-out never lets a pinned plugin differ from its pin.
    swap(plugin_dir)
    with pytest.raises(PluginPinError):
        load_plugin(plugin_dir / "currency.wasm")
    monkeypatch.setenv("DATAFLARE_PLUGIN_ALLOW_UNPINNED", "maybe")
    with pytest.raises(ConfigError, match="DATAFLARE_PLUGIN_ALLOW_UNPINNED"):
        load_plugin(plugin_dir / "fresh.wasm")


def test_plugin_run_checks_names_files_and_source_folders(home, plugin_dir, tmp_path):
    import polars as pl

    pl.DataFrame({"price": [100, 200]}).write_parquet(tmp_path / "in.parquet")
    io = ["--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out.parquet")]
    assert cli("plugin", "run", "currency", "--dir", str(plugin_dir), *io).exit_code == 0
    assert cli("plugin", "run", str(plugin_dir / "currency.wasm"), *io).exit_code == 0
    # A sample's source folder builds to the module the shipped source compiles to: the
    # same digest as the pinned build, so it runs.
    assert cli("plugin", "run", str(SAMPLES_DIR / "currency"), *io).exit_code == 0
    swapped = swap(plugin_dir)
    for target in ("currency", str(plugin_dir / "currency.wasm")):
        refused = cli("plugin", "run", target, "--dir", str(plugin_dir), *io)
        assert refused.exit_code != 0 and swapped in refused.output
    assert len(audit_entries(home, "plugin_refused")) == 2


def test_plugin_inspect_loads_through_the_pin_check(home, plugin_dir):
    ok = cli("plugin", "inspect", str(plugin_dir / "currency.wasm"))
    assert ok.exit_code == 0 and json.loads(ok.output)["loads_with_defaults"] is True
    swapped = swap(plugin_dir)
    out = json.loads(cli("plugin", "inspect", str(plugin_dir / "currency.wasm")).output)
    assert swapped in out["loads_with_defaults"]
    assert audit_entries(home, "plugin_refused")[-1].subject == "currency"


def yaml_spec(tmp_path: Path) -> PipelineSpec:
    folder = tmp_path / "pipeline"
    folder.mkdir()
    (folder / "defs.yaml").write_text(textwrap.dedent(PIPELINE))
    return PipelineSpec.from_yaml(folder / "defs.yaml")


def test_a_yaml_pipeline_through_the_deployments_resource(home, plugin_dir, tmp_path):
    spec = yaml_spec(tmp_path)
    resource = PluginRuntimeResource(plugin_dir=str(plugin_dir), build_missing=False)
    assert load_plugins(spec, resource.registry())["currency"].name == "currency"
    swap(plugin_dir)
    with pytest.raises(ConfigError) as err:
        load_plugins(spec, resource.registry())
    assert err.value.fields == ["streams.s.steps[0].plugin.name"]
    assert audit_entries(home, "plugin_refused")[-1].subject == "currency"


# -- the lock is authenticated ----------------------------------------------------------


def test_the_deployment_lock_is_signed_with_a_key_outside_the_home(home, pinned_samples):
    raw = json.loads(pinned_samples.read_text())
    assert raw["mac"].startswith("hmac-sha256:")
    key = user_config_dir(home.root) / "plugins-lock.key"
    assert key.is_file() and (key.stat().st_mode & 0o777) == 0o600
    assert not str(key.resolve()).startswith(str(home.root.resolve()))


def test_a_swapped_digest_in_the_lock_is_refused_and_audited(home, plugin_dir, pinned_samples):
    swapped = swap(plugin_dir)
    raw = json.loads(pinned_samples.read_text())
    raw["plugins"]["currency"]["sha256"] = swapped  # re-pin the evil module by hand
    raw["plugins"]["currency"].pop("manifest_sha256")
    pinned_samples.write_text(json.dumps(raw))
    with pytest.raises(LockAuthenticationError, match="does not match its authenticator"):
        load_plugin(plugin_dir / "currency.wasm")
    entry = audit_entries(home, "plugin_refused")[-1]
    assert details(entry)["reason"] == "lock_unauthenticated"
    assert details(entry)["lock"] == str(pinned_samples)
    # Every plugin of a tampered lock is refused, not only the edited pin.
    with pytest.raises(LockAuthenticationError):
        load_plugin(plugin_dir / "pii_mask.wasm")


def test_an_unsigned_lock_is_refused(home, plugin_dir, pinned_samples):
    raw = json.loads(pinned_samples.read_text())
    del raw["mac"]
    pinned_samples.write_text(json.dumps(raw))
    with pytest.raises(LockAuthenticationError, match="is not signed"):
        load_plugin(plugin_dir / "currency.wasm")


def test_a_lock_copied_from_another_home_is_refused(home, plugin_dir, tmp_path, monkeypatch):
    other = ProjectHome.resolve(tmp_path / "other-home").ensure()
    monkeypatch.setenv("DATAFLARE_HOME", str(other.root))
    assert cli("plugin", "lock", "--dir", str(plugin_dir)).exit_code == 0
    assert read_lock(other.root / LOCK_FILE).mac
    monkeypatch.setenv("DATAFLARE_HOME", str(home.root))
    shutil.copy(other.root / LOCK_FILE, home.root / LOCK_FILE)
    with pytest.raises(LockAuthenticationError, match="another home"):
        load_plugin(plugin_dir / "currency.wasm")
    # Even under one shared key file, the MAC binds the home it was written for.
    shared = LockAuth.for_home(other.root).key_file
    monkeypatch.setenv("DATAFLARE_PLUGIN_LOCK_KEY_FILE", str(shared))
    with pytest.raises(LockAuthenticationError, match="another home"):
        load_plugin(plugin_dir / "currency.wasm")


def test_plugin_lock_resign_signs_a_reviewed_lock_and_refuses_to_merge_into_a_bad_one(
    home, plugin_dir, pinned_samples
):
    raw = json.loads(pinned_samples.read_text())
    del raw["mac"]
    pinned_samples.write_text(json.dumps(raw))
    merged = cli("plugin", "lock", "currency", "--dir", str(plugin_dir))
    assert merged.exit_code != 0 and "is not signed" in merged.output, merged.output
    resigned = cli("plugin", "lock", "--resign")
    assert resigned.exit_code == 0, resigned.output
    assert set(json.loads(resigned.output)["plugins"]) == set(raw["plugins"])
    assert load_plugin(plugin_dir / "currency.wasm").name == "currency"


def test_a_lock_without_its_key_is_refused(home, plugin_dir, pinned_samples):
    LockAuth.for_home(home.root).key_file.unlink()
    with pytest.raises(LockAuthenticationError, match="no lock key"):
        load_plugin(plugin_dir / "currency.wasm")
