"""The registry operator's kill list (top-level ``targets``): any version, whoever
published it, refused at install, verify and load once clients refresh; its publisher
cannot lift it, neither through its own role file nor by signing ``targets``."""

from __future__ import annotations

from datetime import timedelta

import pytest

from dataflare_platform.errors import ConflictError, NotFoundError
from dataflare_platform.marketplace.client import MarketplaceError
from dataflare_platform.marketplace.loadcheck import MarketplaceLoadCheck
from dataflare_platform_tests.marketplace.conftest import WASM, Registry


def test_operator_kill_refuses_install_verify_and_load(registry: Registry) -> None:
    registry.publish("1.0.0")
    client = registry.client()
    client.install("acme/currency", "1.0.0")
    check = MarketplaceLoadCheck(client.state_dir, client.plugins_dir, refresh_s=0.001)
    sha = client.verify("currency").sha256
    check("currency", sha)
    registry.repo.kill("acme", "currency", "1.0.0", "malware reported")
    with pytest.raises(MarketplaceError, match="killed by the registry operator: malware"):
        client.verify("currency")
    with pytest.raises(MarketplaceError, match="killed") as err:
        check("currency", sha)
    assert err.value.reason == "revoked"
    with pytest.raises(MarketplaceError, match="killed"):
        registry.client(state="other").install("acme/currency", "1.0.0")
    with pytest.raises(ConflictError):
        registry.repo.kill("acme", "currency", "1.0.0", "twice")
    with pytest.raises(NotFoundError):
        registry.repo.kill("nobody", "currency", "1.0.0", "no such publisher")


def test_publisher_cannot_unkill_through_its_own_role(registry: Registry) -> None:
    """The publisher re-signs its namespace with the version ``published`` again (going
    around the repository's own rule, as a hostile publisher would): still killed."""
    registry.publish("1.0.0")
    client = registry.client()
    client.install("acme/currency", "1.0.0")
    registry.repo.kill("acme", "currency", "1.0.0", "malware")
    md = registry.repo.load("acme")
    custom = md.signed.targets["acme/currency/1.0.0.wasm"].unrecognized_fields["custom"]
    custom["dataflare"]["status"] = "published"
    custom["dataflare"]["reason"] = ""
    md.signed.version += 1
    registry.repo._write("acme", md, [registry.publisher])
    registry.repo._commit_snapshot({"acme": md.signed.version})
    with pytest.raises(MarketplaceError, match="killed"):
        client.verify("currency")
    with pytest.raises(MarketplaceError, match="killed"):
        registry.client(state="fresh").install("acme/currency", "1.0.0")


def test_publisher_signing_targets_to_drop_the_kill_is_refused(registry: Registry) -> None:
    registry.publish("1.0.0")
    client = registry.client()
    client.install("acme/currency", "1.0.0")
    registry.repo.kill("acme", "currency", "1.0.0", "malware")
    targets = registry.repo.load("targets")
    targets.signed.unrecognized_fields.pop("x-dataflare-kill-list")
    targets.signed.version += 1
    registry.repo._write("targets", targets, [registry.publisher])  # not the targets key
    registry.repo._commit_snapshot({"targets": targets.signed.version})
    with pytest.raises(MarketplaceError) as err:
        client.verify("currency")
    assert err.value.reason == "bad_signature"


def test_killed_version_stops_loading_after_refresh_only(registry: Registry) -> None:
    """Within the refresh interval the verified view stands; the next refresh kills."""
    from datetime import UTC, datetime

    registry.publish("1.0.0", wasm=WASM)
    client = registry.client()
    client.install("acme/currency", "1.0.0")
    now = [datetime.now(UTC)]
    check = MarketplaceLoadCheck(
        client.state_dir, client.plugins_dir, refresh_s=300, clock=lambda: now[0]
    )
    sha = client.verify("currency").sha256
    registry.repo.kill("acme", "currency", "1.0.0", "malware")
    check("currency", sha)
    now[0] += timedelta(seconds=301)
    with pytest.raises(MarketplaceError, match="killed"):
        check("currency", sha)
