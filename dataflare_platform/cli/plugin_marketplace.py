"""``dataflare plugin keygen | registry-init | add-publisher | rotate-publisher |
rotate-root | publish | install | verify | deprecate | yank | revoke | kill | info`` (and
``list --from``): the signed plugin registry (docs/marketplace.md). ``cli.plugin``
registers them on its app (:func:`register`); the TUF libraries are imported by the
commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from dataflare_platform.cli._common import print_json
from dataflare_platform.cli.plugin_lifecycle import (
    ScannerKeyOption,
    approve,
    public_key,
    repository,
    submit,
)

RepoOption = Annotated[Path, typer.Option("--repo", help="The registry's repository folder.")]
KeysOption = Annotated[
    Path | None,
    typer.Option(
        "--keys",
        help="Folder of the registry's role keys <role>.pem (default: "
        "$DATAFLARE_REGISTRY_KEYS_DIR).",
    ),
]
SourceOption = Annotated[
    str, typer.Option("--from", help="Registry: an http(s):// URL or a repository folder.")
]
RootOption = Annotated[
    Path | None,
    typer.Option("--root", help="The registry's root.json, trusted out of band (first use)."),
]
PluginDirOption = Annotated[
    Path | None, typer.Option("--dir", help="Plugin folder (default: $DATAFLARE_HOME/plugins).")
]
LockOption = Annotated[
    Path | None,
    typer.Option("--lock", help="Lock file to pin into (default: the deployment's, signed)."),
]


def keygen(
    path: Annotated[Path, typer.Argument(help="Private key file to write (mode 0600).")],
) -> None:
    """Write a new Ed25519 private key and its public key (``<path>.pub.json``); prints the
    key id. The private key is never printed."""
    from securesystemslib.signer import SSlibKey

    from dataflare_platform.marketplace.repository import generate_key_file, load_signer

    keyid = generate_key_file(path)
    public: SSlibKey = load_signer(path).public_key
    pub = path.with_name(path.name + ".pub.json")
    pub.write_text(json.dumps({"keyid": keyid, **public.to_dict()}, indent=2) + "\n")
    print_json({"keyid": keyid, "private_key": str(path), "public_key": str(pub)})


_load_public_key = public_key


ThresholdsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--threshold",
        help="<role>=<n>: signatures a top-level role needs (default: all its keys; repeatable).",
    ),
]


def _thresholds(items: list[str] | None) -> dict[str, int]:
    from dataflare_platform.cli._common import UsageError

    out: dict[str, int] = {}
    for item in items or []:
        role, _, n = item.partition("=")
        if not n.isdigit():
            raise UsageError(f"--threshold {item!r}: give <role>=<n>, e.g. root=2")
        out[role] = int(n)
    return out


def registry_init(
    repo: RepoOption, keys: KeysOption = None, threshold: ThresholdsOption = None
) -> None:
    """Create a registry (root, targets, snapshot, timestamp) signed by the role keys in
    --keys (<role>.pem, and <role>.<n>.pem for a role with several keys; see ``keygen``)."""
    registry = repository(repo, keys)
    registry.init(_thresholds(threshold))
    print_json({"repo": str(repo), "root": str(registry.metadata_dir / "1.root.json")})


ThresholdOption = Annotated[
    int | None,
    typer.Option(
        "--threshold",
        help="Signatures needed (default: 1 for a new publisher, unchanged on rotation).",
    ),
]


def add_publisher(
    namespace: Annotated[str, typer.Argument(help="The publisher's namespace.")],
    public_key: Annotated[
        list[Path], typer.Option("--public-key", help="<key>.pub.json (keygen; repeatable).")
    ],
    repo: RepoOption,
    keys: KeysOption = None,
    threshold: ThresholdOption = None,
) -> None:
    """Delegate ``<namespace>/*/*`` to the publisher's key(s), ``--threshold`` of which
    must sign each change (signed with targets.pem)."""
    pub = [_load_public_key(p) for p in public_key]
    repository(repo, keys).add_publisher(namespace, pub, threshold or 1)
    print_json(
        {"namespace": namespace, "keyids": [k.keyid for k in pub], "threshold": threshold or 1}
    )


def _signers(paths: list[Path]) -> list:
    from dataflare_platform.marketplace.repository import load_signer

    return [load_signer(p) for p in paths]


def rotate_publisher(
    namespace: Annotated[str, typer.Argument(help="The publisher's namespace.")],
    new_key: Annotated[
        list[Path], typer.Option("--new-key", help="The new <key>.pub.json (repeatable).")
    ],
    repo: RepoOption,
    key: Annotated[
        list[Path] | None,
        typer.Option(
            "--key",
            help="The new private key(s) (repeatable): re-sign the namespace's targets at "
            "once, so installed plugins keep verifying without a reinstall.",
        ),
    ] = None,
    keys: KeysOption = None,
    threshold: ThresholdOption = None,
) -> None:
    """Replace a publisher's key(s) (signed with targets.pem): the old keys' signatures
    stop counting once clients refresh."""
    pub = [_load_public_key(p) for p in new_key]
    signers = _signers(key or [])
    repository(repo, keys).rotate_publisher_key(
        namespace, pub, signers or None, threshold=threshold
    )
    print_json(
        {"namespace": namespace, "keyids": [k.keyid for k in pub], "resigned": bool(signers)}
    )


def rotate_root(
    role: Annotated[str, typer.Option("--role", help="root, targets, snapshot or timestamp.")],
    new_keys: Annotated[
        list[Path], typer.Option("--new-keys", help="The role's new private key(s) (repeatable).")
    ],
    repo: RepoOption,
    keys: KeysOption = None,
    threshold: Annotated[
        int | None,
        typer.Option("--threshold", help="Signatures the role needs (default: all new keys)."),
    ] = None,
) -> None:
    """Replace a top-level role's keys in a new root, signed by the old root keys (and
    the new ones when rotating root): clients follow the chain of roots at their next
    refresh, nothing is reinstalled. Replace the files in --keys afterwards."""
    from dataflare_platform.cli._common import UsageError
    from dataflare_platform.marketplace.repository import TOP_ROLES

    if role not in TOP_ROLES:
        raise UsageError(f"--role must be one of {', '.join(TOP_ROLES)}")
    signers = _signers(new_keys)
    registry = repository(repo, keys)
    registry.rotate_root_key(role, signers, threshold=threshold)
    print_json(
        {
            "role": role,
            "keyids": [s.public_key.keyid for s in signers],
            "threshold": threshold or len(signers),
            "root_version": registry.load("root").signed.version,
        }
    )


def publish(
    wasm: Annotated[Path, typer.Argument(help="The module; its manifest <name>.json beside.")],
    namespace: Annotated[str, typer.Option("--namespace", help="The publisher's namespace.")],
    key: Annotated[
        list[Path],
        typer.Option("--key", help="The publisher's private key file (repeatable: threshold)."),
    ],
    repo: RepoOption,
    keys: KeysOption = None,
    platform: Annotated[
        str, typer.Option("--platform", help="Platform versions it runs on.")
    ] = ">=0.1",
    scanner_key: ScannerKeyOption = None,
) -> None:
    """Publish a module as ``<namespace>/<name>/<version>.wasm`` (name and version from
    its manifest), signed with the publisher's key; snapshot and timestamp re-signed.
    When the registry has a lifecycle store the release must be approved, and its signed
    scan report is attached (verified with the scanner key) and linked from the target."""
    from dataflare_platform.cli.plugin_lifecycle import publish_tracked
    from dataflare_platform.plugins.manifest import load_manifest

    custom = publish_tracked(wasm, namespace, key, repo, keys, platform, scanner_key)
    if custom is not None:
        path = f"{namespace}/{custom['name']}/{custom['version']}.wasm"
        target = repository(repo, keys).load(namespace).signed.targets[path]
        print_json(
            {
                "target": path,
                "sha256": target.hashes["sha256"],
                "size": target.length,
                "state": "published",
                "quality_score": custom.get("quality_score"),
                "attestations": [a["path"] for a in custom.get("attestations", [])],
            }
        )
        return

    manifest_path = wasm.with_suffix(".json")
    manifest = load_manifest(manifest_path)
    target = repository(repo, keys).publish(
        namespace,
        manifest.name,
        manifest.version,
        wasm.read_bytes(),
        manifest_path.read_bytes(),
        _signers(key),
        platform=platform,
    )
    print_json({"target": target.path, "sha256": target.hashes["sha256"], "size": target.length})


def _set_status(
    status: str, plugin: str, reason: str, key: list[Path], repo: Path, keys: Path | None
) -> None:
    """The lifecycle moves first (audited; a step out of order changes nothing), then the
    registry's signed status."""
    from dataflare_platform.cli.plugin_lifecycle import lifecycle_step, split_release

    namespace, name, version = split_release(plugin)
    signer = _signers(key)
    state = lifecycle_step(repo, plugin, status, reason)
    repository(repo, keys).set_status(namespace, name, version, status, reason, signer)
    out = {"target": f"{namespace}/{name}/{version}.wasm", "status": status}
    print_json(out | ({"state": state} if state else {}))


PluginVersionArgument = Annotated[str, typer.Argument(help="<namespace>/<name>@<version>")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (shown to installers).")]
PublisherKeyOption = Annotated[
    list[Path],
    typer.Option("--key", help="The publisher's private key file (repeatable: threshold)."),
]


def deprecate(
    plugin: PluginVersionArgument,
    reason: ReasonOption,
    key: PublisherKeyOption,
    repo: RepoOption,
    keys: KeysOption = None,
) -> None:
    """Deprecate a version: still installable (with a warning) and loading, shown as
    deprecated in list, info and the portal."""
    _set_status("deprecated", plugin, reason, key, repo, keys)


def yank(
    plugin: PluginVersionArgument,
    reason: ReasonOption,
    key: PublisherKeyOption,
    repo: RepoOption,
    keys: KeysOption = None,
) -> None:
    """Yank a version: no new installs (unless --allow-yanked); installed copies load."""
    _set_status("yanked", plugin, reason, key, repo, keys)


def revoke(
    plugin: PluginVersionArgument,
    reason: ReasonOption,
    key: PublisherKeyOption,
    repo: RepoOption,
    keys: KeysOption = None,
) -> None:
    """Revoke a version: refused everywhere once clients refresh (final)."""
    _set_status("revoked", plugin, reason, key, repo, keys)


def cli_actor() -> str:
    """The principal a CLI refusal is audited under: the operating-system user."""
    import getpass

    return f"user:{getpass.getuser()}"


def _client(
    source: str,
    root: Path | None,
    plugin_dir: Path | None,
    lock: Path | None,
    scanner_key: Path | None = None,
):
    from dataflare_platform.cli.plugin_lifecycle import scanner_keys
    from dataflare_platform.compliance.plugin_refusals import record_marketplace_refusal
    from dataflare_platform.home import ProjectHome
    from dataflare_platform.marketplace.client import RegistryClient
    from dataflare_platform.plugins.lock import LockAuth
    from dataflare_platform.plugins.registry import PLATFORM_DIR, deployment_config

    home = ProjectHome.resolve().root
    deployment_lock = deployment_config().lock_files[0]
    target = lock or deployment_lock
    auth = LockAuth.for_home(home)
    signed = target.resolve() == deployment_lock.resolve() or auth.covers(target)
    return RegistryClient(
        source,
        state_dir=home / PLATFORM_DIR / "marketplace",
        plugins_dir=plugin_dir or home / "plugins",
        lock_path=target,
        trusted_root=root.read_bytes() if root else None,
        lock_auth=auth if signed else None,
        # Every refused install or verify goes to the audit log (never the key or URL auth).
        on_refused=lambda err: record_marketplace_refusal(err, home, actor=cli_actor()),
        scan_keys=scanner_keys(scanner_key),
    )


def install(
    plugin: Annotated[str, typer.Argument(help="<namespace>/<name>@<version>")],
    source: SourceOption,
    root: RootOption = None,
    plugin_dir: PluginDirOption = None,
    lock: LockOption = None,
    allow_yanked: Annotated[bool, typer.Option("--allow-yanked")] = False,
    scanner_key: ScannerKeyOption = None,
) -> None:
    """Install a plugin version through TUF into the plugin folder and pin it (with a
    scanner key configured: only with a scan report that key signed, admitting it)."""
    from dataflare_platform.cli._common import UsageError

    ref, _, version = plugin.partition("@")
    if not version:
        raise UsageError("give the version: <namespace>/<name>@<version>")
    done = _client(source, root, plugin_dir, lock, scanner_key).install(ref, version, allow_yanked)
    if done.status == "deprecated":
        from dataflare_platform.cli._common import err_console

        err_console().print(
            f"warning: {plugin} is deprecated (see `dataflare plugin info {ref}`)",
            highlight=False,
        )
    _record_install(ref, done.plugin, version)
    print_json(asdict(done))


def _record_install(ref: str, name: str, version: str) -> None:
    """An install usage event, when the deployment turned usage statistics on."""
    from dataflare_platform.events.log import EventLog
    from dataflare_platform.plugins.registry import deployment_config
    from dataflare_platform.plugins.usage import record_install

    config = deployment_config()
    settings = config.usage_settings()
    if settings is not None and config.usage_log_dir is not None:
        namespace = ref.partition("/")[0]
        record_install(EventLog(config.usage_log_dir), settings, name, version, namespace)


def verify(
    name: Annotated[str, typer.Argument(help="An installed plugin's name.")],
    source: SourceOption,
    root: RootOption = None,
    plugin_dir: PluginDirOption = None,
    scanner_key: ScannerKeyOption = None,
) -> None:
    """Re-check an installed plugin against fresh registry metadata (revoked, digest
    mismatch, expired metadata, and with a scanner key configured its scan report:
    refused)."""
    print_json(asdict(_client(source, root, plugin_dir, None, scanner_key).verify(name)))


def kill(
    plugin: PluginVersionArgument,
    reason: ReasonOption,
    repo: RepoOption,
    keys: KeysOption = None,
) -> None:
    """The registry operator's kill list: revoke any version, whoever published it,
    signed with the top-level targets key (targets.pem in --keys). Final."""
    from dataflare_platform.cli._common import UsageError

    ref, _, version = plugin.partition("@")
    namespace, _, name = ref.partition("/")
    if not (namespace and name and version):
        raise UsageError("give the plugin as <namespace>/<name>@<version>")
    repository(repo, keys).kill(namespace, name, version, reason)
    print_json({"target": f"{namespace}/{name}/{version}.wasm", "status": "killed"})


def catalogue(source: str, root: Path | None) -> list[dict]:
    """The registry's versions through the client's verified metadata."""
    return _client(source, root, None, None).catalogue()


def info(
    plugin: Annotated[str, typer.Argument(help="<namespace>/<name>")],
    source: SourceOption,
    root: RootOption = None,
) -> None:
    """One plugin's versions: digests, the key ids that signed them, status and reason,
    licence, capabilities, platform range and attestation links (JSON)."""
    from dataflare_platform.errors import NotFoundError

    namespace, _, name = plugin.partition("/")
    versions = [
        v for v in catalogue(source, root) if (v["namespace"], v["name"]) == (namespace, name)
    ]
    if not versions:
        raise NotFoundError(f"no plugin {plugin!r} in the registry")
    print_json({"plugin": plugin, "versions": versions})


def entitle(
    plugin: Annotated[str, typer.Argument(help="The plugin's name.")],
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant entitled.")],
    expires: Annotated[
        str, typer.Option("--expires", help="ISO 8601 expiry, e.g. 2027-01-01T00:00:00Z.")
    ],
    key: Annotated[Path, typer.Option("--key", help="The issuer's Ed25519 key (keygen).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write <name>.entitlement.json.")],
    max_rows: Annotated[int | None, typer.Option("--max-rows", help="Row limit.")] = None,
    seats: Annotated[int | None, typer.Option("--seats", help="Seats (recorded).")] = None,
    entitlement_id: Annotated[str | None, typer.Option("--id", help="Default: random.")] = None,
    public_key_out: Annotated[
        Path | None,
        typer.Option("--public-key-out", help="Also write the issuer's PEM public key."),
    ] = None,
) -> None:
    """Issue a signed entitlement for a commercial plugin (issuer side)."""
    import secrets
    from datetime import UTC, datetime

    from dataflare_platform.plugins.entitlements import (
        Entitlement,
        load_issuer_private_key,
        public_pem,
        sign_entitlement,
    )

    private = load_issuer_private_key(key)
    ent = Entitlement.validated(
        {
            "id": entitlement_id or f"ent-{secrets.token_hex(8)}",
            "tenant": tenant,
            "plugin": plugin,
            "issued_at": datetime.now(UTC).isoformat(),
            "expires_at": expires,
            "max_rows": max_rows,
            "seats": seats,
        },
        "entitlement",
    )
    doc = sign_entitlement(ent, private)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    if public_key_out is not None:
        public_key_out.write_bytes(public_pem(private))
    print_json({"id": ent.id, "plugin": plugin, "expires_at": ent.expires_at.isoformat(),
                "key_id": doc["key_id"], "path": str(out)})  # fmt: skip


def register(app: typer.Typer) -> None:
    """Add these commands to ``dataflare plugin``."""
    app.command("keygen")(keygen)
    app.command("registry-init")(registry_init)
    app.command("add-publisher")(add_publisher)
    app.command("rotate-publisher")(rotate_publisher)
    app.command("rotate-root")(rotate_root)
    app.command("publish")(publish)
    app.command("install")(install)
    app.command("verify")(verify)
    app.command("deprecate")(deprecate)
    app.command("yank")(yank)
    app.command("revoke")(revoke)
    app.command("kill")(kill)
    app.command("submit")(submit)
    app.command("approve")(approve)
    app.command("info")(info)
    app.command("entitle")(entitle)
