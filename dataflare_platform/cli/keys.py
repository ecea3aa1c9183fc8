"""``dataflare keys``: the field-encryption keyring of this deployment (docs/security.md,
"Field encryption"): show a key name's versions, rotate it, retire old versions, destroy
it (crypto-shredding), purge retired versions. Every change is written to the audit log
(``key_rotated``, ``key_retired``, ``key_purged``, ``key_destroyed``, actor
``system:cli``); no key material is printed."""

from __future__ import annotations

from typing import Annotated

import typer

from dataflare_platform.cli._common import HomeOption, command_group, print_json

keys_app = command_group(
    help="Field-encryption keys: status, rotate, retire old versions, destroy (shred)."
)

NameArg = Annotated[str, typer.Argument(help="Key name: a dataset, or a tenant's key.")]
CLI_ACTOR = "system:cli"


def _envelope(home):
    from dataflare_platform.crypto.settings import CryptoSettings

    return CryptoSettings.resolve(home=home).envelope()


def _audit(home, action: str, name: str, details: dict) -> None:
    from dataflare_platform.compliance.audit import AuditLog
    from dataflare_platform.compliance.audit_keys import AuditSettings

    with AuditLog.open(AuditSettings.resolve(home=home)) as log:
        log.append(CLI_ACTOR, action, f"key:{name}", details)


def _state(state) -> dict:
    return {
        "name": state.name,
        "latest": state.latest,
        "min_decryption_version": state.min_decryption_version,
    }


@keys_app.command("status")
def status(name: NameArg, home: HomeOption = None) -> None:
    """The name's newest version and minimum decryption version (JSON)."""
    print_json(_state(_envelope(home).state(name)))


@keys_app.command("rotate")
def rotate(name: NameArg, home: HomeOption = None) -> None:
    """Add a version (and its data key); new data is encrypted with it at once. Then
    materialize governance/encryption_rewrap and retire the old versions."""
    state = _envelope(home).rotate(name)
    _audit(home, "key_rotated", name, _state(state))
    print_json(_state(state))


@keys_app.command("retire")
def retire(
    name: NameArg,
    below: Annotated[int, typer.Option(min=1, help="New minimum decryption version.")],
    home: HomeOption = None,
) -> None:
    """Refuse every version below --below from now on (rewrap first: their data no longer
    decrypts)."""
    state = _envelope(home).retire_below(name, below)
    _audit(home, "key_retired", name, _state(state))
    print_json(_state(state))


@keys_app.command("purge")
def purge(name: NameArg, home: HomeOption = None) -> None:
    """Delete the key-encryption keys of retired versions (their data is then lost for
    good). A PKCS#11 token already destroyed them when they were retired."""
    from dataflare_platform.crypto.settings import CryptoSettings

    keyring = CryptoSettings.resolve(home=home).keyring()
    purged = keyring.purge_retired(name) if hasattr(keyring, "purge_retired") else []
    _audit(home, "key_purged", name, {"name": name, "versions": purged})
    print_json({"name": name, "purged": purged})


@keys_app.command("destroy")
def destroy(
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: the data is lost for good.")] = False,
    home: HomeOption = None,
) -> None:
    """Crypto-shred: delete every version of the key; everything encrypted under it
    becomes unreadable, backups included (shred the keyring's backups too)."""
    from dataflare_platform.cli._common import UsageError

    if not yes:
        raise UsageError(f"destroying key {name!r} makes its data unreadable: add --yes")
    _envelope(home).destroy(name)
    _audit(home, "key_destroyed", name, {"name": name})
    print_json({"name": name, "destroyed": True})
