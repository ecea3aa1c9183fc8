"""``dataflare plugin submit | approve`` and the lifecycle side of ``publish | yank |
revoke`` (issue 20 §2, docs/marketplace.md "Walk-through").

Why ``submit`` runs the ``plugin_admission`` job in process against the deployment's
Dagster instance (``<home>/dagster_home``, or ``$DAGSTER_HOME``) rather than through a web
server: a publisher's submission must be scanned with the deployment's settings (registry,
scan key) and end with a verdict the caller can act on (exit 1 when refused), and the run
is still recorded in the instance, so it shows in the web UI with its asset checks like a
launched one. ``dataflare launch plugin_admission --partition ...`` remains the way to
launch it on a running server.

The CLI has no identity provider: it acts as the operating-system user (``user:<name>``,
as every host-side command is audited), with the roles the deployment's role assignment
gives that name: the local account of the same name in the identity store
(``dataflare users add <name> --role publisher@acme --role reviewer``), which is where
the web front reads a local user's roles too. An OS user without such an account has no
role, so every lifecycle step is refused (deny unless allowed). Which role may take which
step, and a publisher only in its own namespaces, is the deployment's Cedar policy's
decision (``marketplace/lifecycle.py``); every transition and refusal is audited under
that id. The registry's signatures (the publisher's key) are what clients check; the
lifecycle records who moved a release and refuses steps out of order or out of role.
"""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dataflare_platform.cli._common import UsageError, print_json

if TYPE_CHECKING:
    from securesystemslib.signer import Key

    from dataflare_platform.access.principal import Principal
    from dataflare_platform.marketplace.lifecycle import LifecycleStore
    from dataflare_platform.marketplace.repository import Repository

SCANNER_KEY_ENV = "DATAFLARE_PLUGIN_SCANNER_PUBLIC_KEY"  # = marketplace.client.SCANNER_KEY_ENV
ScannerKeyOption = Annotated[
    Path | None,
    typer.Option(
        "--scanner-key",
        help=f"The scanner's public key (<key>.pub.json) that signs scan reports (default: "
        f"${SCANNER_KEY_ENV}).",
    ),
]


def cli_principal() -> Principal:
    """The OS user with the roles of the deployment's local account of that name (none
    without one; see the module docstring)."""
    from dataflare_platform.access.principal import Principal
    from dataflare_platform.home import ProjectHome
    from dataflare_platform.identity.local_users import LocalUsers
    from dataflare_platform.identity.store import IdentityStore

    name = getpass.getuser()
    account = LocalUsers(IdentityStore(ProjectHome.resolve().ensure().root)).current(name)
    if account is not None:
        return account
    return Principal(name=name, kind="user", via="local")


def split_release(plugin: str) -> tuple[str, str, str]:
    ref, _, version = plugin.partition("@")
    namespace, _, name = ref.partition("/")
    if not (namespace and name and version):
        raise UsageError("give the plugin as <namespace>/<name>@<version>")
    return namespace, name, version


def public_key(path: Path) -> Key:
    """A public key as ``keygen`` writes it (``<key>.pub.json``)."""
    from securesystemslib.signer import SSlibKey

    raw = json.loads(path.read_text())
    keyid = raw.pop("keyid")
    return SSlibKey.from_dict(keyid, raw)


def repository(repo: Path, keys: Path | None) -> Repository:
    """The registry at ``repo`` with the role keys in ``keys`` (or the setting)."""
    from dataflare_platform.marketplace.repository import Repository, role_signers_from_dir

    return Repository(repo, signers=role_signers_from_dir(keys))


def scanner_keys(path: Path | None) -> list[Key]:
    """The scanner public key the deployment trusts: --scanner-key, else the setting;
    none configured: an empty list (nothing to check reports against)."""
    chosen = path or (
        Path(os.environ[SCANNER_KEY_ENV]) if os.environ.get(SCANNER_KEY_ENV) else None
    )
    return [public_key(chosen)] if chosen else []


def open_store(registry: Path) -> tuple[LifecycleStore, Any] | None:
    """The registry's lifecycle store with the deployment's audit log (the caller closes
    the log), or None when the registry has no lifecycle store."""
    from dataflare_platform.compliance.override_refusals import deployment_audit_log
    from dataflare_platform.home import ProjectHome
    from dataflare_platform.marketplace.lifecycle import LifecycleStore

    if not (Path(registry) / "lifecycle.json").exists():
        return None
    audit = deployment_audit_log(ProjectHome.resolve().root)
    return LifecycleStore.for_registry(registry, audit), audit


def _registry_dir() -> Path:
    from dataflare_platform.defs.plugins.admission import PluginAdmissionResource

    registry = PluginAdmissionResource.resolved_from_environment().registry_dir
    if not registry:
        raise UsageError(
            "no registry configured for admission: set DATAFLARE_REGISTRY_DIR (the "
            "deployment's registry folder; its lifecycle store tracks the submission)"
        )
    return Path(registry)


def submit(
    module: Annotated[
        Path, typer.Argument(help="The built module (<stem>.wasm, manifest and vectors beside).")
    ],
    namespace: Annotated[str, typer.Option("--namespace", help="The publisher's namespace.")],
) -> None:
    """Submit a plugin version for admission: the release enters the registry's lifecycle
    (draft -> submitted) and the plugin_admission job scans it in process against the
    deployment's Dagster instance; exit 1 when a blocking check refuses it."""
    from dataflare_platform.compliance.override_refusals import deployment_audit_log
    from dataflare_platform.defs.plugin_submission import run_submission
    from dataflare_platform.errors import NotFoundError
    from dataflare_platform.home import ProjectHome
    from dataflare_platform.marketplace.lifecycle import LifecycleStore
    from dataflare_platform.marketplace.scan import load_submission

    registry = _registry_dir()
    submission = load_submission(module, namespace)
    key = submission.key
    publisher = cli_principal()
    with deployment_audit_log(ProjectHome.resolve().root) as audit:
        store = LifecycleStore.for_registry(registry, audit)
        try:
            state = store.get(key).state
        except NotFoundError:
            state = store.create(key, publisher).state
        if state == "draft":
            store.transition(key, "submitted", publisher)
    home = ProjectHome.resolve().ensure()
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or home.dagster_home)
    outcome = run_submission(home.root, dagster_home, key, module.resolve())
    outcome["state"] = outcome.pop("lifecycle", None) or state
    print_json({"release": key, **outcome})
    if not outcome["admitted"]:
        raise typer.Exit(1)


def approve(
    plugin: Annotated[str, typer.Argument(help="<namespace>/<name>@<version>")],
    repo: Annotated[Path, typer.Option("--repo", help="The registry's repository folder.")],
    reason: Annotated[str, typer.Option("--reason", help="The review's note.")] = "",
) -> None:
    """Approve a scanned release as a reviewer (refused unless its scan admitted it)."""
    from dataflare_platform.marketplace.lifecycle import release_key

    opened = open_store(repo)
    if opened is None:
        raise UsageError(f"{repo} has no lifecycle store (nothing was submitted there)")
    store, audit = opened
    with audit:
        release = store.transition(
            release_key(*split_release(plugin)), "approved", cli_principal(), reason
        )
    print_json({"release": release.key, "state": release.state, "score": release.score})


def lifecycle_step(repo: Path, plugin: str, to: str, reason: str) -> str | None:
    """Move a release the registry's lifecycle store tracks to ``to`` (audited) before the
    registry is changed; None when there is no store. A store that does not track the
    release refuses: with a store, every release goes through admission."""
    from dataflare_platform.marketplace.lifecycle import release_key

    opened = open_store(repo)
    if opened is None:
        return None
    store, audit = opened
    with audit:
        return store.transition(
            release_key(*split_release(plugin)), to, cli_principal(), reason
        ).state


def publish_tracked(
    wasm: Path,
    namespace: str,
    key: list[Path],
    repo: Path,
    keys: Path | None,
    platform: str,
    scanner_key: Path | None,
) -> dict[str, Any] | None:
    """Publish through the lifecycle when the registry has a lifecycle store: the release
    must be ``approved``; its staged scan report must verify with the scanner key and is
    attached as the target's attestation; the release moves to ``published``. None
    when there is no store (the caller publishes as before)."""
    from dataflare_platform.marketplace.repository import load_signer
    from dataflare_platform.marketplace.scan import load_submission, publish_approved

    opened = open_store(repo)
    if opened is None:
        return None
    store, audit = opened
    submission = load_submission(wasm, namespace)
    trusted = scanner_keys(scanner_key)
    if not trusted:
        audit.close()
        raise UsageError(
            f"publishing a tracked release attaches its scan report: give --scanner-key or "
            f"set {SCANNER_KEY_ENV}"
        )
    with audit:
        return publish_approved(
            repository(repo, keys),
            store,
            submission,
            cli_principal(),
            [load_signer(k) for k in key],
            trusted,
            platform=platform,
        )
