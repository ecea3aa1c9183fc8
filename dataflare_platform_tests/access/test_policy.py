"""The role policy: deny by default, each role its own actions and those below it, and
every decision recorded in the real audit log with principal, action, resource and policy
version."""

import itertools
from pathlib import Path
from typing import get_args

import pytest

from dataflare_platform.access.decisions import Action, Resource
from dataflare_platform.access.default_policy import DEFAULT_POLICY
from dataflare_platform.access.policy import (
    POLICY_ENV_VAR,
    ROLE_ACTIONS,
    CedarAuthorizer,
    load_authorizer,
)
from dataflare_platform.access.principal import Principal
from dataflare_platform.compliance.access_log import AuditDecisionRecorder
from dataflare_platform.compliance.audit import AuditLog
from dataflare_platform.errors import ConfigError
from dataflare_platform_tests.audit_support import ENTRY_KEY

JOB = Resource(kind="job", name="nexmark_ingest_job", location="dataflare_platform")


def who(*roles: str) -> Principal:
    return Principal(name="ana", kind="user", via="local", roles=frozenset(roles))


@pytest.mark.parametrize(
    ("roles", "action", "allowed"),
    [
        ((), "view", False),
        (("viewer",), "view", True),
        (("viewer",), "launch", False),
        (("launcher",), "launch", True),
        (("launcher",), "set_cursor", False),
        (("editor",), "toggle_automation", True),
        (("editor",), "delete_run", False),
        (("admin",), "delete_run", True),
        (("admin",), "decrypt", False),
        (("unknown-role",), "view", False),
        (("viewer", "editor"), "set_cursor", True),
    ],
)
def test_roles_grant_only_their_actions(roles, action, allowed):
    decision = load_authorizer().decide(who(*roles), action, JOB)
    assert decision.allowed is allowed
    assert decision.policy_version
    assert ("deny by default" in decision.reason) is (not allowed)


def test_roles_are_ordered():
    order = ["viewer", "launcher", "editor", "admin"]
    for lower, higher in itertools.pairwise(order):
        assert ROLE_ACTIONS[lower] < ROLE_ACTIONS[higher]


@pytest.mark.parametrize("name", ["", "a b", "x\nuser:admin", "é", "a" * 129, "-lead"])
def test_principal_names_are_safe_for_the_audit_log(name):
    with pytest.raises(Exception) as err:
        Principal.validated({"name": name, "kind": "user", "via": "local"}, "principal")
    assert err.type is ConfigError


SCOPED = """
@id("streaming team launches nexmark")
permit (
  principal in Dataflare::Team::"streaming",
  action in Dataflare::Action::"role/launcher",
  resource
)
when { resource has group && resource.group == "nexmark" };

@id("ops edit their location")
permit (principal in Dataflare::Team::"ops", action in Dataflare::Action::"role/editor", resource)
when { resource has location && resource.location == "batch_location" };

@id("one job")
permit (
  principal == Dataflare::Principal::"user:oidc/bo",
  action == Dataflare::Action::"launch",
  resource
)
when { resource.kind == "job" && resource.name == "nightly_job" };

@id("owners")
permit (principal, action in Dataflare::Action::"role/admin", resource)
when { resource has owner_team && principal.teams.contains(resource.owner_team) };

@id("tenant fence")
forbid (principal, action, resource)
when { resource has tenant && !principal.teams.contains(resource.tenant) };

@id("auditors read pii")
permit (principal in Dataflare::Team::"auditors", action == Dataflare::Action::"decrypt", resource)
when { resource has classification && resource.classification == "pii" };

@id("admins read nothing secret")
forbid (principal, action, resource)
when { resource has classification && resource.classification == "secret" };
"""


def member(name: str, *teams: str, roles=()) -> Principal:
    return Principal(
        name=name, kind="user", via="oidc", groups=frozenset(teams), roles=frozenset(roles)
    )


@pytest.fixture(scope="module")
def scoped():
    return CedarAuthorizer(SCOPED, source="scoped")


@pytest.mark.parametrize(
    ("who_", "action", "resource", "allowed"),
    [
        # Asset group: launcher on group nexmark only.
        (("ana", "streaming"), "launch", Resource(kind="job", name="q5", group="nexmark"), True),
        (("ana", "streaming"), "view", Resource(kind="asset", name="bids", group="nexmark"), True),
        (("ana", "streaming"), "launch", Resource(kind="job", name="x", group="billing"), False),
        (("ana", "streaming"), "launch", Resource(kind="job", name="x"), False),
        (
            ("ana", "streaming"),
            "set_cursor",
            Resource(kind="sensor", name="s", group="nexmark"),
            False,
        ),
        # Code location: editor there, nothing elsewhere.
        (
            ("oli", "ops"),
            "toggle_automation",
            Resource(kind="sensor", name="s", location="batch_location"),
            True,
        ),
        (
            ("oli", "ops"),
            "toggle_automation",
            Resource(kind="sensor", name="s", location="streams"),
            False,
        ),
        (
            ("oli", "ops"),
            "delete_run",
            Resource(kind="run", name="r1", location="batch_location"),
            False,
        ),
        # One job by name for one principal.
        (("bo",), "launch", Resource(kind="job", name="nightly_job"), True),
        (("bo",), "launch", Resource(kind="job", name="other_job"), False),
        (("bo",), "terminate", Resource(kind="job", name="nightly_job"), False),
        # Owner team: admin on what the team owns.
        (
            ("eve", "search"),
            "wipe_assets",
            Resource(kind="asset", name="idx", owner_team="search"),
            True,
        ),
        (
            ("eve", "search"),
            "wipe_assets",
            Resource(kind="asset", name="idx", owner_team="ads"),
            False,
        ),
        # Tenant attribute: a forbid wins over a permit.
        (
            ("eve", "search"),
            "view",
            Resource(kind="asset", name="idx", owner_team="search", tenant="acme"),
            False,
        ),
        (
            ("eve", "search", "acme"),
            "view",
            Resource(kind="asset", name="idx", owner_team="search", tenant="acme"),
            True,
        ),
        # Classification: decrypt only where a rule names it.
        (
            ("ida", "auditors"),
            "decrypt",
            Resource(kind="column", name="persons.email", classification="pii"),
            True,
        ),
        (
            ("ida", "auditors"),
            "decrypt",
            Resource(kind="column", name="persons.card", classification="secret"),
            False,
        ),
        (("ida", "auditors"), "decrypt", Resource(kind="column", name="persons.id"), False),
        (
            ("ida", "auditors"),
            "view",
            Resource(kind="column", name="persons.email", classification="pii"),
            False,
        ),
    ],
)
def test_scoping_and_attributes(scoped, who_, action, resource, allowed):
    decision = scoped.decide(member(*who_), action, resource)
    assert decision.allowed is allowed, decision.reason
    assert decision.policy_version == scoped.policy_version


def test_a_forbid_names_its_rule(scoped):
    decision = scoped.decide(
        member("eve", "search"),
        "view",
        Resource(kind="asset", name="idx", owner_team="search", tenant="acme"),
    )
    assert "tenant fence" in decision.reason


def test_admin_alone_cannot_decrypt():
    decision = load_authorizer().decide(
        who("admin"), "decrypt", Resource(kind="column", name="p.email", classification="pii")
    )
    assert not decision.allowed
    assert "deny by default" in decision.reason


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("permit (principal, actin, resource);", "syntax"),
        ("", "no rule"),
        ("// only a comment\n", "no rule"),
        (
            '@id("typo") permit (principal, action == Dataflare::Action::"lunch", resource);',
            "lunch",
        ),
        (
            '@id("unguarded") permit (principal, action, resource) when { resource.group == "x" };',
            "unguarded",
        ),
        (
            '@id("attr") permit (principal, action, resource) when { principal.colour == "x" };',
            "attr",
        ),
        ('@id("everything") permit (principal, action, resource);', "decrypt"),
        (
            '@id("plain decrypt") permit '
            '(principal, action == Dataflare::Action::"decrypt", resource);',
            "classification",
        ),
        (
            '@id("list") permit (principal, action in [Dataflare::Action::"view", '
            'Dataflare::Action::"decrypt"], resource);',
            "list",
        ),
        ("permit (principal == ?principal, action, resource);", "template"),
    ],
)
def test_a_bad_policy_is_refused_at_load(tmp_path, text, names):
    path = tmp_path / "policy.cedar"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_authorizer(environ={POLICY_ENV_VAR: str(path)})
    assert names in str(err.value)
    assert str(path) in str(err.value)


def test_a_missing_policy_file_is_refused(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_authorizer(tmp_path / "nope.cedar")
    assert "nope.cedar" in str(err.value)


def test_the_version_is_the_hash_of_the_text(tmp_path):
    path = tmp_path / "policy.cedar"
    path.write_text(DEFAULT_POLICY)
    first = load_authorizer(environ={POLICY_ENV_VAR: str(path)})
    assert first.policy_version == load_authorizer().policy_version
    path.write_text(DEFAULT_POLICY + "\n// reviewed\n")
    second = load_authorizer(environ={POLICY_ENV_VAR: str(path)})
    assert second.policy_version != first.policy_version
    decision = second.decide(who("viewer"), "view", JOB)
    assert decision.policy_version == second.policy_version


def test_the_shipped_default_is_the_deployment_file():
    shipped = Path(__file__).parents[2] / "deployments" / "local" / "policy.cedar"
    assert shipped.read_text() == DEFAULT_POLICY


def test_the_schema_roles_are_the_role_table():
    """Every role's action group holds exactly ROLE_ACTIONS[role]: asked of the engine."""
    everyone = [a for a in get_args(Action)]
    for role, actions in ROLE_ACTIONS.items():
        granted = {a for a in everyone if load_authorizer().decide(who(role), a, JOB).allowed}
        assert granted == set(actions)


@pytest.mark.parametrize(
    ("principal", "resource", "allowed"),
    [
        (
            Principal(name="s", kind="sensor", via="daemon", location="streams"),
            Resource(kind="job", name="j", location="streams"),
            True,
        ),
        (
            Principal(name="s", kind="sensor", via="daemon", location="streams"),
            Resource(kind="job", name="j", location="batch"),
            False,
        ),
        (
            Principal(name="s", kind="sensor", via="daemon"),
            Resource(kind="job", name="j", location="streams"),
            False,
        ),
        (
            Principal(name="s", kind="sensor", via="token", location="streams"),
            Resource(kind="job", name="j", location="streams"),
            False,
        ),
        (
            Principal(name="d", kind="schedule", via="daemon", location="batch"),
            Resource(kind="job", name="j", location="batch"),
            True,
        ),
        # A backfill's runs are decided as its requester, not as the daemon's: a bare
        # backfill principal in the daemon gets nothing, one made on the host is out of band.
        (
            Principal(name="b1", kind="backfill", via="daemon"),
            Resource(kind="job", name="j", location="batch"),
            False,
        ),
        (
            Principal(name="b1", kind="backfill", via="host"),
            Resource(kind="job", name="j", location="batch"),
            True,
        ),
        (
            Principal(
                name="ana", kind="user", via="local", roles=frozenset({"launcher"}), backfill="b1"
            ),
            Resource(kind="job", name="j", location="batch"),
            True,
        ),
        (
            Principal(name="ana", kind="user", via="local", backfill="b1"),
            Resource(kind="job", name="j", location="batch"),
            False,
        ),
        (
            Principal(name="host", kind="system", via="host"),
            Resource(kind="job", name="j", location="batch"),
            True,
        ),
        (
            Principal(name="ana", kind="user", via="local"),
            Resource(kind="job", name="j", location="batch"),
            False,
        ),
    ],
)
def test_service_principals_in_the_default_policy(principal, resource, allowed):
    assert load_authorizer().decide(principal, "launch", resource).allowed is allowed
    assert not load_authorizer().decide(principal, "delete_run", resource).allowed


def test_decisions_are_audited(tmp_path):
    log = AuditLog(f"sqlite:///{tmp_path / 'audit.db'}", entry_key=ENTRY_KEY)
    recorder = AuditDecisionRecorder(log)
    authorizer = load_authorizer()
    recorder.record(authorizer.decide(who("viewer"), "launch", JOB))
    recorder.record(authorizer.decide(who("launcher"), "launch", JOB))
    entries = log.tail(10)
    assert [(e.actor, e.action, e.subject) for e in entries] == [
        ("user:ana", "access_denied", "job:nexmark_ingest_job"),
        ("user:ana", "access_allowed", "job:nexmark_ingest_job"),
    ]
    assert entries[0].payload()["policy_version"] == authorizer.policy_version
    assert entries[0].payload()["action"] == "launch"


def test_a_directory_user_is_not_the_local_account_of_the_same_name():
    """The audit log and the policy tell ``alice`` of an OIDC provider or LDAP apart from
    the local ``alice``; no name can spell the qualified form (``/`` is not allowed)."""
    ids = {Principal(name="alice", kind="user", via=via).id for via in ("local", "oidc", "ldap")}
    assert ids == {"user:alice", "user:oidc/alice", "user:ldap/alice"}
    with pytest.raises(ConfigError):
        Principal.validated({"name": "oidc/alice", "kind": "user", "via": "local"}, "principal")


@pytest.mark.parametrize("roles", [(), ("viewer",), ("launcher",), ("editor",), ("admin",)])
def test_a_batch_decides_as_single_decisions_do(roles):
    """``decide_many`` (one engine call for all actions on one resource, what the UI's
    permissions use) answers exactly what ``decide`` answers for each action."""
    authorizer = load_authorizer(environ={})
    actions = list(get_args(Action))
    singles = [authorizer.decide(who(*roles), action, JOB) for action in actions]
    assert authorizer.decide_many(who(*roles), actions, JOB) == singles
    assert any(d.allowed for d in singles) == bool(roles)


def plugin(namespace: str) -> Resource:
    return Resource(kind="plugin", name=f"{namespace}/currency@1.0.0", namespace=namespace)


def test_the_plugin_roles_are_in_the_role_table_and_scoped():
    """publisher / reviewer / operator / scanner: each role's group grants exactly its
    plugin actions (asked of the engine), a publisher only in the namespaces of its
    role assignment, and no other role (admin included) any plugin action."""
    from dataflare_platform.access.cedar_schema import PLUGIN_ROLE_ACTIONS

    authorizer = load_authorizer()
    everyone = list(get_args(Action))
    scanner = Principal(name="plugin-admission", kind="service", via="token", roles={"scanner"})
    holders = {
        "publisher": who("publisher@acme"),
        "reviewer": who("reviewer"),
        "operator": who("operator"),
        "scanner": scanner,
    }
    for role, principal in holders.items():
        granted = {a for a in everyone if authorizer.decide(principal, a, plugin("acme")).allowed}
        assert granted == set(PLUGIN_ROLE_ACTIONS[role]), role
    # the publisher's role assignment names its namespaces
    assert not authorizer.decide(who("publisher@acme"), "plugin_publish", plugin("globex")).allowed
    assert authorizer.decide(
        who("publisher@acme", "publisher@globex"), "plugin_publish", plugin("globex")
    ).allowed
    assert not authorizer.decide(who("publisher"), "plugin_publish", plugin("acme")).allowed
    # separation of duties: admin has none of them, a person holding "scanner" cannot scan
    for action in ("plugin_approve", "plugin_publish", "plugin_revoke", "plugin_scan"):
        assert not authorizer.decide(who("admin"), action, plugin("acme")).allowed
    assert not authorizer.decide(who("scanner"), "plugin_scan", plugin("acme")).allowed
    # and the plugin roles grant nothing on the platform's other resources
    for role in ("publisher@acme", "reviewer", "operator"):
        assert not authorizer.decide(who(role), "view", JOB).allowed
