"""Key rotation and thresholds from the CLI (``dataflare plugin rotate-publisher`` /
``rotate-root``, ``add-publisher --threshold``, ``publish --key`` repeated): after each
rotation an installed plugin keeps verifying and loading without a reinstall, the old
key's signatures are refused, and a threshold-2 role with one signature is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dataflare_platform.cli.plugin import plugin_app
from dataflare_platform.marketplace.client import MarketplaceError, RegistryClient
from dataflare_platform.marketplace.loadcheck import MarketplaceLoadCheck
from dataflare_platform.marketplace.repository import Repository, load_signer
from dataflare_platform.plugins.registry import PluginRegistry
from dataflare_platform_tests.marketplace.conftest import assert_currency_runs, checked_runtime

runner = CliRunner()
ROLES = ("root", "targets", "snapshot", "timestamp")


def ok(*args: str) -> dict:
    result = runner.invoke(plugin_app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def refused(*args: str) -> str:
    result = runner.invoke(plugin_app, list(args))
    assert result.exit_code != 0, result.output
    return " ".join(result.output.split())


class Setup:
    """A registry made with the CLI, and a client that installed from it."""

    def __init__(self, tmp: Path, currency: Path) -> None:
        self.tmp, self.repo, self.keys = tmp, tmp / "repo", tmp / "keys"
        for role in ROLES:
            ok("keygen", str(self.keys / f"{role}.pem"))
        self.root = ok("registry-init", "--repo", str(self.repo), "--keys", str(self.keys))["root"]
        self.module = tmp / "build" / "currency.wasm"
        self.module.parent.mkdir()
        shutil.copy(currency, self.module)
        self.manifest = json.loads(currency.with_suffix(".json").read_text())

    @property
    def registry(self) -> tuple[str, ...]:
        return ("--repo", str(self.repo), "--keys", str(self.keys))

    def keygen(self, name: str) -> dict:
        return ok("keygen", str(self.tmp / f"{name}.pem"))

    def publish(self, version: str, *keys: str) -> list[str]:
        self.module.with_suffix(".json").write_text(
            json.dumps({**self.manifest, "version": version})
        )
        args = ["publish", str(self.module), "--namespace", "acme", *self.registry]
        for key in keys:
            args += ["--key", str(self.tmp / f"{key}.pem")]
        return args

    def client(self, state: str = "client") -> RegistryClient:
        return RegistryClient(
            self.repo,
            state_dir=self.tmp / state / "state",
            plugins_dir=self.tmp / state / "plugins",
            trusted_root=Path(self.root).read_bytes(),
        )

    def runtime(self, client: RegistryClient) -> PluginRegistry:
        # A refresh interval of 1 ns: every load refreshes through TUF (the rotation is
        # what the load must follow).
        check = MarketplaceLoadCheck(client.state_dir, client.plugins_dir, refresh_s=1e-9)
        return checked_runtime(client, check, self.tmp / "cache")

    def installed(self, publisher: str) -> tuple[RegistryClient, PluginRegistry]:
        """``publisher`` added with a new key, currency 1.0.0 published, installed and
        running: the client and its runtime."""
        key = self.keygen(publisher)
        ok("add-publisher", publisher, "--public-key", key["public_key"], *self.registry)
        ok(*self.publish("1.0.0", publisher))
        client = self.client()
        client.install(f"{publisher}/currency", "1.0.0")
        runtime = self.runtime(client)
        assert_currency_runs(runtime)
        return client, runtime


def test_rotate_publisher_keeps_installed_plugin_and_refuses_the_old_key(
    home, tmp_path: Path, currency: Path
) -> None:
    s = Setup(tmp_path, currency)
    client, runtime = s.installed("acme")

    new = s.keygen("acme-2")
    rotated = ok(
        "rotate-publisher", "acme", "--new-key", new["public_key"], "--key",
        str(tmp_path / "acme-2.pem"), *s.registry,
    )  # fmt: skip
    assert rotated == {"namespace": "acme", "keyids": [new["keyid"]], "resigned": True}
    assert client.verify("currency").status == "published"
    assert_currency_runs(runtime)  # refreshed through TUF at this load, no reinstall

    # The old key's signature no longer counts: a release it signs never reaches clients,
    # and the namespace it signed is refused at verify and at load.
    ok(*s.publish("1.1.0", "acme"))
    with pytest.raises(MarketplaceError) as err:
        s.client("fresh").install("acme/currency", "1.1.0")
    assert err.value.reason == "bad_signature"
    assert "acme was signed by 0/1 keys" in err.value.detail
    with pytest.raises(MarketplaceError, match="bad_signature"):
        client.verify("currency")
    with pytest.raises(MarketplaceError, match="bad_signature"):
        runtime.load("currency")

    # The new key re-signs: everything verifies and loads again.
    ok(*s.publish("1.2.0", "acme-2"))
    assert client.verify("currency").status == "published"
    assert_currency_runs(runtime)
    assert s.client("later").install("acme/currency", "1.2.0").version == "1.2.0"


def test_threshold_two_publisher_needs_two_signatures(home, tmp_path: Path, currency: Path) -> None:
    s = Setup(tmp_path, currency)
    a, b = s.keygen("acme-a"), s.keygen("acme-b")
    added = ok(
        "add-publisher", "acme", "--public-key", a["public_key"], "--public-key",
        b["public_key"], "--threshold", "2", *s.registry,
    )  # fmt: skip
    assert added["threshold"] == 2
    ok(*s.publish("1.0.0", "acme-a"))  # one signature of the two needed
    with pytest.raises(MarketplaceError) as err:
        s.client().install("acme/currency", "1.0.0")
    assert err.value.reason == "bad_signature"
    assert "acme was signed by 1/2 keys" in err.value.detail
    ok(*s.publish("1.1.0", "acme-a", "acme-b"))
    client = s.client("both")
    assert client.install("acme/currency", "1.1.0").version == "1.1.0"
    assert_currency_runs(s.runtime(client))
    # A threshold above the number of keys is refused before anything is signed.
    c = s.keygen("other")
    too_high = refused(
        "add-publisher", "other", "--public-key", c["public_key"], "--threshold", "2",
        *s.registry,
    )  # fmt: skip
    assert "threshold 2 must be between 1 and its 1 key(s)" in too_high


def test_rotate_root_keeps_installed_plugin_and_enforces_the_new_threshold(
    home, tmp_path: Path, currency: Path
) -> None:
    s = Setup(tmp_path, currency)
    client, runtime = s.installed("acme")

    # The online timestamp key: rotated, then the keys folder holds the new one.
    old_timestamp = load_signer(s.keys / "timestamp.pem")
    s.keygen("timestamp-2")
    ok("rotate-root", "--role", "timestamp", "--new-keys", str(tmp_path / "timestamp-2.pem"),
       *s.registry)  # fmt: skip
    (s.keys / "timestamp.pem").unlink()
    shutil.copy2(tmp_path / "timestamp-2.pem", s.keys / "timestamp.pem")
    assert client.verify("currency").status == "published"
    assert_currency_runs(runtime)
    # A timestamp signed by the old key is refused.
    Repository(s.repo, signers={"timestamp": [old_timestamp]}).refresh_timestamp()
    with pytest.raises(MarketplaceError, match="timestamp was signed by 0/1 keys"):
        client.verify("currency")
    current = load_signer(s.keys / "timestamp.pem")
    Repository(s.repo, signers={"timestamp": [current]}).refresh_timestamp()
    assert client.verify("currency").status == "published"

    # Root itself, to two keys with a threshold of two (signed by the old root and both).
    s.keygen("root-2")
    s.keygen("root-3")
    rotated = ok(
        "rotate-root", "--role", "root", "--new-keys", str(tmp_path / "root-2.pem"),
        "--new-keys", str(tmp_path / "root-3.pem"), "--threshold", "2", *s.registry,
    )  # fmt: skip
    assert (rotated["threshold"], rotated["root_version"]) == (2, 3)
    (s.keys / "root.pem").unlink()
    shutil.copy2(tmp_path / "root-2.pem", s.keys / "root.pem")
    shutil.copy2(tmp_path / "root-3.pem", s.keys / "root.1.pem")
    assert client.verify("currency").status == "published"
    assert_currency_runs(runtime)
    assert json.loads((client.metadata_dir / "root.json").read_text())["signed"]["version"] == 3

    # A next root signed by one of the two root keys only: below the threshold, refused.
    one = Repository(
        s.repo,
        signers={
            "root": [load_signer(s.keys / "root.pem")],
            "snapshot": [load_signer(s.keys / "snapshot.pem")],
            "timestamp": [load_signer(s.keys / "timestamp.pem")],
        },
    )
    s.keygen("snapshot-2")
    one.rotate_root_key("snapshot", [load_signer(tmp_path / "snapshot-2.pem")])
    with pytest.raises(MarketplaceError, match="root was signed by 1/2 keys"):
        client.verify("currency")
