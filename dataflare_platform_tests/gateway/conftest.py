"""The front around dagster-webserver's real app, in process (Starlette TestClient), on a
real Dagster instance and a tiny in-process code location; identities and the audit log
are the home's real ones."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from dataflare_platform.compliance.audit_keys import provision_embedded
from dataflare_platform.home import ProjectHome
from dataflare_platform.identity.local_users import LocalUsers
from dataflare_platform.identity.store import IdentityStore
from dataflare_platform.identity.tokens import ServiceTokens

PORT = 3000
BASE = f"http://127.0.0.1:{PORT}"
PASSWORD = "correct horse battery staple"


@dataclass
class Front:
    app: object
    project: ProjectHome
    tokens: dict[str, str]  # role -> bearer token
    totp_secret: str
    instance: object
    webserver_app: object

    def client(self, **kwargs) -> TestClient:
        return TestClient(self.app, base_url=BASE, **kwargs)

    def bearer(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def audit_entries(self):
        from dataflare_platform.compliance.audit import AuditLog
        from dataflare_platform.compliance.audit_keys import AuditSettings

        with AuditLog(AuditSettings.resolve(home=self.project.root).url) as log:
            return log.tail(10_000)


@contextmanager
def provisioned_audit_keys(project: ProjectHome) -> Iterator[None]:
    """While open: the home's audit keys provisioned as the first start of `dataflare ui`
    does (every audit append needs the entry key), in a config dir beside the home, with
    no deployment audit settings leaking in from the environment."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("XDG_CONFIG_HOME", str(project.root.parent / "xdg-config"))
        for key in [k for k in os.environ if k.startswith("DATAFLARE_AUDIT_")]:
            env.delenv(key)
        provision_embedded(project.root)
        yield


@contextmanager
def tiny_workspace(project: ProjectHome, locations: Sequence[str] = ("tiny",)):
    """A real Dagster instance in the project's home (its run coordinator records the
    principal of each submitted run) and a workspace context serving `tiny_defs.py` as
    each named code location, in process: what every in-process front test stands on.
    The home's audit keys are provisioned while it is open (``provisioned_audit_keys``)."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import instance_for_test
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

    origins = [
        InProcessCodeLocationOrigin(
            LoadableTargetOrigin(
                python_file=str(Path(__file__).with_name("tiny_defs.py")), attribute="defs"
            ),
            location_name=name,
        )
        for name in locations
    ]
    overrides = {
        "run_coordinator": {
            "module": "dataflare_platform_tests.gateway.recording",
            "class": "PrincipalRecordingCoordinator",
        }
    }
    with (
        provisioned_audit_keys(project),
        instance_for_test(overrides=overrides, temp_dir=str(project.dagster_home)) as instance,
        WorkspaceProcessContext(
            instance, InProcessWorkspaceLoadTarget(origins), version="test"
        ) as context,
    ):
        yield instance, context


@pytest.fixture(scope="module")
def front(tmp_path_factory) -> Iterator[Front]:
    from dataflare_platform.gateway.serve import build_front
    from dataflare_platform.gateway.settings import FrontSettings
    from dataflare_platform.gateway.webserver import GatedWebserver

    root = tmp_path_factory.mktemp("front")
    project = ProjectHome.resolve(root / "home").ensure()
    store = IdentityStore(project.root)
    tokens = {
        role: ServiceTokens(store).create(f"{role}-bot", frozenset({role}))[1]
        for role in ("viewer", "launcher", "editor", "admin")
    }
    users = LocalUsers(store)
    secret = users.add("alice", PASSWORD, frozenset({"admin"}))
    users.add("victor", PASSWORD, frozenset({"viewer"}))
    with tiny_workspace(project) as (instance, context):
        webserver_app = GatedWebserver(context, "", 2000).create_asgi_app()
        app = build_front(webserver_app, FrontSettings(port=PORT), project, instance)
        yield Front(app, project, tokens, secret, instance, webserver_app)
