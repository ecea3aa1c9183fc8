"""Start the front: dagster-webserver's app in this process behind the gateway, served by
uvicorn on the configured address (TLS optional), with the Dagster daemon as a child
process and one shared code server per location (as ``dagster dev`` does).

The daemon and code servers are in this process's group: ``dataflare ui`` stops the group
on SIGTERM/SIGINT.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml

from dataflare_platform.access.decisions import Authorizer
from dataflare_platform.access.policy import load_authorizer
from dataflare_platform.access.principal import Principal
from dataflare_platform.errors import ConfigError
from dataflare_platform.gateway.app import Gateway
from dataflare_platform.gateway.backfills import record_backfill_requesters
from dataflare_platform.gateway.providers import (
    LdapLoginProvider,
    LocalLoginProvider,
    OidcLoginProvider,
    PasswordLoginProvider,
    RedirectLoginProvider,
)
from dataflare_platform.gateway.sessions import LoginFailures, PendingLogins, SessionStore
from dataflare_platform.gateway.settings import FrontSettings
from dataflare_platform.gateway.webserver import GatedWebserver
from dataflare_platform.home import ProjectHome
from dataflare_platform.identity.local_users import LocalUsers
from dataflare_platform.identity.store import IdentityStore
from dataflare_platform.identity.tokens import ServiceTokens
from dataflare_platform.observability import ObservabilitySettings

# As dagster-webserver's defaults.
DB_STATEMENT_TIMEOUT_MS = 15000
DB_POOL_RECYCLE_S = 3600
DB_POOL_MAX_OVERFLOW = 20


def build_front(
    webserver_app,
    settings: FrontSettings,
    project: ProjectHome,
    instance=None,
    login_config: Path | None = None,
    authorizer: Authorizer | None = None,
) -> Gateway:
    """The gateway around ``webserver_app`` with the home's identities, the deployment's
    authorizer (``authorizer``, else loaded: pass the webserver's so the UI's permissions
    and the front decide with one policy) and the home's audit log as decision recorder."""
    from dataflare_platform.compliance.access_log import AuditDecisionRecorder
    from dataflare_platform.compliance.audit import AuditLog
    from dataflare_platform.compliance.audit_keys import AuditSettings

    store = IdentityStore(project.root)
    # The entry key is read now: a front without it fails to start, naming the key,
    # rather than at the first sign-in it cannot record.
    audit_log = AuditLog.open(AuditSettings.resolve(home=project.root))

    def run_location(run_id: str) -> str | None:
        if instance is None:
            return None
        run = instance.get_run_by_id(run_id)
        origin = run.remote_job_origin if run is not None else None
        return origin.location_name if origin is not None else None

    def audit(actor: str, action: str, subject: str, details: dict) -> None:
        audit_log.append(actor, action, subject, details)

    password_providers, redirect_providers = login_providers(project, store, login_config)
    local_users = LocalUsers(store)

    def refresh(principal: Principal) -> Principal | None:
        # Local accounts are re-read on each request; directory and OIDC identities keep
        # what their provider said at sign-in until the session ends.
        return local_users.current(principal.name) if principal.via == "local" else principal

    return Gateway(
        webserver_app,
        settings,
        tokens=ServiceTokens(store),
        authorizer=authorizer if authorizer is not None else load_authorizer(),
        recorder=AuditDecisionRecorder(audit_log),
        audit=audit,
        password_providers=password_providers,
        redirect_providers=redirect_providers,
        run_lookup=run_location,
        refresh_principal=refresh,
        sessions=SessionStore(store, settings.session_ttl_s),
        pending=PendingLogins(store),
        login_failures=LoginFailures(store),
    )


def login_providers(
    project: ProjectHome, store: IdentityStore, login_config: Path | None = None
) -> tuple[list[PasswordLoginProvider], list[RedirectLoginProvider]]:
    """The sign-in methods the front offers: local users always; LDAP and OpenID Connect
    when ``login_config`` (YAML with ``ldap:`` and/or ``oidc:`` sections, the settings of
    ``identity/ldap.py`` and ``identity/oidc.py``; secrets as ``{env: NAME}`` or
    ``{file: path}``) configures them. Bad settings fail here, at start."""
    del project
    password: list[PasswordLoginProvider] = [LocalLoginProvider(LocalUsers(store))]
    redirect: list[RedirectLoginProvider] = []
    if login_config is None:
        return password, redirect
    from dataflare_platform.yaml_files import load_yaml_mapping

    config = load_yaml_mapping(login_config, "login settings")
    unknown = sorted(set(config) - {"ldap", "oidc"})
    if unknown:
        raise ConfigError("login settings", [(k, "unknown section (ldap, oidc)") for k in unknown])
    if "ldap" in config:
        from dataflare_platform.identity.ldap import LdapDirectory, LdapSettings

        settings = LdapSettings.validated(config["ldap"], "LDAP settings")
        password.append(LdapLoginProvider(LdapDirectory(settings)))
    if "oidc" in config:
        from dataflare_platform.identity.oidc import OidcLogin, OidcSettings

        settings = OidcSettings.validated(config["oidc"], "OIDC settings")
        redirect.append(OidcLoginProvider(OidcLogin(settings)))
    return password, redirect


@contextlib.contextmanager
def _shared_code_servers(instance, workspace: Path) -> Iterator[Path]:
    """Code servers started once for the webserver and the daemon; yields a workspace
    file pointing at them (what ``dagster dev`` does)."""
    from dagster._cli.proxy_server_manager import ProxyServerManager
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    with (
        ProxyServerManager(
            instance=instance,
            workspace_load_target=WorkspaceFileTarget([str(workspace)]),
            code_server_log_level="warning",
        ) as manager,
        tempfile.TemporaryDirectory() as temp_dir,
    ):
        shared = Path(temp_dir) / "workspace.yaml"
        shared.write_text(yaml.dump({"load_from": manager.get_code_server_specs()}))
        yield shared


def serve(
    settings: FrontSettings,
    project: ProjectHome,
    workspace: Path,
    daemon: bool = True,
    login_config: Path | None = None,
) -> None:
    """Serve until interrupted (uvicorn handles SIGTERM/SIGINT)."""
    import uvicorn
    from dagster import DagsterInstance
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster_webserver.version import __version__

    os.environ.update(project.environ())
    with contextlib.ExitStack() as stack:
        instance = stack.enter_context(DagsterInstance.get())
        instance.optimize_for_webserver(
            DB_STATEMENT_TIMEOUT_MS, DB_POOL_RECYCLE_S, DB_POOL_MAX_OVERFLOW
        )
        shared = stack.enter_context(_shared_code_servers(instance, workspace))
        if daemon:
            child = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dagster._daemon",
                    "run",
                    "-w",
                    str(shared),
                    "--log-level",
                    "warning",
                ],
                env=os.environ.copy(),
            )
            stack.callback(_stop, child)
            if ObservabilitySettings.from_env().enabled:
                # The orchestrator's own metrics beside the daemon (docs/observability.md):
                # into the same multiprocess directory `dataflare metrics serve` reads.
                exporter = subprocess.Popen(
                    [sys.executable, "-m", "dataflare_platform.cli", "metrics", "instance"],
                    env=os.environ.copy(),
                )
                stack.callback(_stop, exporter)
        context = stack.enter_context(
            WorkspaceProcessContext(
                instance,
                version=__version__,
                read_only=False,
                workspace_load_target=WorkspaceFileTarget([str(shared)]),
                code_server_log_level="warning",
            )
        )
        authorizer = load_authorizer()
        webserver = GatedWebserver(context, "", 2000, authorizer=authorizer)
        front = build_front(
            webserver.create_asgi_app(), settings, project, instance, login_config, authorizer
        )
        record_backfill_requesters(
            instance, front.recorder.record, lambda: authorizer.policy_version
        )
        uvicorn.run(
            front,
            host=settings.host,
            port=settings.port,
            log_level="warning",
            ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
            ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        )


def _stop(child: subprocess.Popen) -> None:
    child.terminate()
    try:
        child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
