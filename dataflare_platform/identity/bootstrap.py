"""The first start of the web front on a fresh home: a local admin account (password and
TOTP secret) and a service token are created and handed back once, to be printed; the
token is also kept 0600 under the home so the client, the demo and tests can use it."""

from __future__ import annotations

import secrets
from pathlib import Path

from dataflare_platform.identity.local_users import LocalUsers
from dataflare_platform.identity.store import IdentityStore, write_secret_file
from dataflare_platform.identity.tokens import ServiceTokens
from dataflare_platform.models import StrictModel

ADMIN_NAME = "admin"
SERVICE_ACCOUNT = "dataflare-cli"
# The token the home's own tools use launches and terminates but cannot administer.
SERVICE_ROLES = frozenset({"launcher"})


class FirstCredentials(StrictModel):
    admin_name: str
    admin_password: str
    admin_totp_secret: str
    admin_totp_uri: str
    token_id: str
    token: str
    token_file: Path


def bootstrap(home_root: Path) -> FirstCredentials | None:
    """Create the first admin and service token when the home has no user yet; ``None``
    when it already has one (nothing is shown again)."""
    store = IdentityStore(home_root)
    users = LocalUsers(store)
    if users.list():
        return None
    password = secrets.token_urlsafe(18)
    secret = users.add(ADMIN_NAME, password, frozenset({"admin"}), totp=True)
    assert secret is not None  # admins always get a second factor
    token_id, token = ServiceTokens(store).create(SERVICE_ACCOUNT, SERVICE_ROLES)
    write_secret_file(store.token_file, token + "\n")
    return FirstCredentials(
        admin_name=ADMIN_NAME,
        admin_password=password,
        admin_totp_secret=secret,
        admin_totp_uri=users.provisioning_uri(ADMIN_NAME, secret),
        token_id=token_id,
        token=token,
        token_file=store.token_file,
    )
