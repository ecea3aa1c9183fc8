"""``dataflare users`` and ``dataflare tokens``: the local accounts and service tokens the
web front accepts, kept under ``<home>/security`` (0600).

Passwords are read from a prompt (asked twice) or from ``$DATAFLARE_PASSWORD`` for
scripts, never from a flag: a flag lands in shell history and in ``ps``. A new token and a
new TOTP secret are printed once; only hashes of passwords and tokens are stored.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from dataflare_platform.cli._common import (
    HomeOption,
    JsonOption,
    UsageError,
    command_group,
    err_console,
    out_console,
    print_json,
    table,
)

PASSWORD_ENV_VAR = "DATAFLARE_PASSWORD"

users_app = command_group(help="Local user accounts of the web UI (argon2 passwords, TOTP).")
tokens_app = command_group(help="Service accounts' API tokens (shown once, revocable).")

RolesOption = Annotated[
    list[str],
    typer.Option(
        "--role",
        help="viewer, launcher, editor or admin; for plugins reviewer, operator, scanner or "
        "publisher@<namespace> (repeatable).",
    ),
]


def _store(home):
    from dataflare_platform.home import ProjectHome
    from dataflare_platform.identity.store import IdentityStore

    return IdentityStore(ProjectHome.resolve(home).ensure().root)


def _password() -> str:
    from_env = os.environ.get(PASSWORD_ENV_VAR)
    if from_env:
        return from_env
    first = typer.prompt("Password", hide_input=True)
    if typer.prompt("Repeat password", hide_input=True) != first:
        raise UsageError("the two passwords differ")
    return first


@users_app.command("add")
def add_user(
    name: Annotated[str, typer.Argument(help="User name.")],
    role: RolesOption,
    totp: Annotated[
        bool, typer.Option(help="Require a TOTP code at sign-in (always on for admins).")
    ] = False,
    home: HomeOption = None,
) -> None:
    """Add a local user; the password is prompted for (or $DATAFLARE_PASSWORD)."""
    from dataflare_platform.identity.local_users import LocalUsers, check_password
    from dataflare_platform.identity.store import check_name, check_roles

    check_name(name, "user name")
    check_roles(frozenset(role))
    users = LocalUsers(_store(home))
    secret = users.add(name, check_password(_password()), frozenset(role), totp=totp)
    err_console().print(f"added user {name} ({', '.join(sorted(role))})")
    if secret is not None:
        out_console().print(
            f"TOTP secret (shown once): {secret}\n{users.provisioning_uri(name, secret)}",
            highlight=False,
            soft_wrap=True,
        )


@users_app.command("list")
def list_users(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """List local users (names, roles, whether a TOTP code is required)."""
    from dataflare_platform.identity.local_users import LocalUsers

    users = LocalUsers(_store(home)).list()
    if as_json:
        print_json(users)
        return
    rows = [
        (u["name"], ",".join(u["roles"]), "yes" if u["totp"] else "no", u["created_at"])
        for u in users
    ]
    table("Users", ("name", "roles", "totp", "created"), rows)


@users_app.command("passwd")
def change_password(
    name: Annotated[str, typer.Argument(help="User name.")], home: HomeOption = None
) -> None:
    """Set a user's password (prompted for, or $DATAFLARE_PASSWORD)."""
    from dataflare_platform.identity.local_users import LocalUsers

    LocalUsers(_store(home)).set_password(name, _password())
    err_console().print(f"password of {name} changed")


@users_app.command("roles")
def set_user_roles(
    name: Annotated[str, typer.Argument(help="User name.")],
    role: RolesOption,
    home: HomeOption = None,
) -> None:
    """Replace a user's roles (signed-in sessions follow from their next request). Making
    an account admin needs one with a TOTP secret: add it with --totp or as admin."""
    from dataflare_platform.identity.local_users import LocalUsers

    users = LocalUsers(_store(home))
    users.set_roles(name, frozenset(role))
    err_console().print(f"roles of {name}: {', '.join(sorted(role))}")


@users_app.command("remove")
def remove_user(
    name: Annotated[str, typer.Argument(help="User name.")], home: HomeOption = None
) -> None:
    """Remove a local user (a signed-in session of theirs ends at its next request)."""
    from dataflare_platform.identity.local_users import LocalUsers

    LocalUsers(_store(home)).remove(name)
    err_console().print(f"removed user {name}")


@tokens_app.command("create")
def create_token(
    account: Annotated[str, typer.Argument(help="Service account name.")],
    role: RolesOption,
    home: HomeOption = None,
) -> None:
    """Create a token for a service account; printed once on stdout (pipe it to where it is
    kept, e.g. a secret store; use it as $DATAFLARE_TOKEN)."""
    from dataflare_platform.identity.tokens import ServiceTokens

    token_id, token = ServiceTokens(_store(home)).create(account, frozenset(role))
    err_console().print(f"token {token_id} for service:{account} ({', '.join(sorted(role))})")
    typer.echo(token)


@tokens_app.command("list")
def list_tokens(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """List tokens (ids, accounts, roles; never the tokens themselves)."""
    from dataflare_platform.identity.tokens import ServiceTokens

    tokens = ServiceTokens(_store(home)).list()
    if as_json:
        print_json(tokens)
        return
    rows = [
        (t["id"], t["account"], ",".join(t["roles"]), t["created_at"], t["revoked_at"] or "")
        for t in tokens
    ]
    table("Tokens", ("id", "account", "roles", "created", "revoked"), rows)


@tokens_app.command("revoke")
def revoke_token(
    token_id: Annotated[str, typer.Argument(help="Token id (see `tokens list`).")],
    home: HomeOption = None,
) -> None:
    """Revoke a token: the front refuses it from the next request on."""
    from dataflare_platform.identity.tokens import ServiceTokens

    ServiceTokens(_store(home)).revoke(token_id)
    err_console().print(f"revoked token {token_id}")
